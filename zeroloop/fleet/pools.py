"""A pool's provider, from its settings: the kind resolved, its options checked, the provider built.

A pool's `kind` is a built-in name (`BUILT_IN`), a `package.module:ClassName`, or an entry
point of group `zeroloop.providers` (zeroloop.plugins). `check_pools` loads each pool's
class and validates its `options` without building anything: every command runs it when
it reads the settings, so `zeroloop config` and `zeroloop doctor` refuse a pool that a
later command would (an unknown kind, a command pool without its commands or with an
unknown placeholder). `build_providers` builds them, when the App opens.
"""

from __future__ import annotations

from zeroloop import plugins
from zeroloop.config import Settings
from zeroloop.fleet.providers.base import Provider

# The built-in kinds; a kind's module is imported only when a pool uses it.
BUILT_IN = {
    "local": "zeroloop.fleet.providers.local:LocalProvider",
    "command": "zeroloop.fleet.providers.command:CommandProvider",
    "skypilot": "zeroloop.fleet.providers.skypilot:SkyPilotProvider",
    "slurm": "zeroloop.fleet.providers.slurm:SlurmProvider",
}


def provider_class(name: str, kind: str) -> type[Provider]:
    """The Provider subclass pool `name`'s `kind` names; ConfigError (one line) when it does not load or fit."""
    found: type[Provider] = plugins.resolve(
        kind,
        what="provider",
        setting=f"providers.{name}.kind",
        group=plugins.PROVIDER_GROUP,
        built_in=BUILT_IN,
        check=plugins.subclass_of(Provider),
    )
    return found


def check_pools(settings: Settings) -> None:
    """Load every pool's provider class and validate its options; ConfigError naming the first bad one."""
    for name, pool in settings.providers.items():
        provider_class(name, pool.kind).parse_options(name, pool.options)


def build_providers(settings: Settings) -> dict[str, Provider]:
    """One provider per configured pool; ConfigError for a kind that does not load or fit, or bad options."""
    return {
        name: provider_class(name, pool.kind).from_settings(name, pool, settings)
        for name, pool in settings.providers.items()
    }
