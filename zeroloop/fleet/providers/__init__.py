"""Providers: the one way zeroloop starts and stops machines (local processes, Slurm, SkyPilot, commands).

`BUILT_IN` names the built-in kinds; a pool's `kind` may also be a `package.module:ClassName`
of one's own, or an entry point of group `zeroloop.providers` (see zeroloop.plugins and
docs/cluster.md, "Adding a provider"). A kind's module is imported only when a pool uses it.
"""

from __future__ import annotations

BUILT_IN = {
    "local": "zeroloop.fleet.providers.local:LocalProvider",
    "command": "zeroloop.fleet.providers.command:CommandProvider",
    "skypilot": "zeroloop.fleet.providers.skypilot:SkyPilotProvider",
    "slurm": "zeroloop.fleet.providers.slurm:SlurmProvider",
}
