"""Providers: the one way zeroloop starts and stops machines (local processes, Slurm, SkyPilot, commands)."""
