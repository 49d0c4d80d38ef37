"""Providers: the one way zeroloop starts and stops machines (local processes, Slurm, SkyPilot, commands).

One module per kind; `zeroloop.fleet.pools` names the built-in kinds and resolves a pool's
`kind` (docs/cluster.md, "Adding a provider").
"""
