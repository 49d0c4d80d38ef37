"""The provider interface: how zeroloop starts, stops and lists machines, whatever runs them.

A provider is one class with four operations, and nothing else in zeroloop starts or
stops a machine:

- `launch(spec)`: start one machine that runs `spec.argv` (a `zeroloop worker`) with
  `spec.env`; return the provider's handle for it. It returns once the provider has
  accepted the request; the worker registers itself later through the store or server.
- `terminate(provider_id)`: stop it. Idempotent: a machine already gone is not an error.
- `machines()`: every machine the provider says exists for this pool, so zeroloop can
  reconcile (a machine still billed but forgotten by zeroloop is found).
- `offers()`: what can be launched and at what price.

`check()` validates the provider's options and environment (a binary on PATH, a Slurm
partition that exists) before anything is launched. Each implementation lives in its
own module of this package and is named in `zeroloop.fleet.pools.BUILT_IN`; its
kind-specific options are a pydantic model, `Options`, filled from the pool's
`options` table. docs/cluster.md shows how to add one.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from zeroloop.config import PoolSettings, Settings
from zeroloop.errors import ConfigError, ZeroloopError


class ProviderError(ZeroloopError):
    """A provider could not launch, terminate or list machines; the message says which and why."""


class MachineState(StrEnum):
    """What a provider says about one of its machines."""

    PENDING = "pending"  # accepted, not running yet (queued in Slurm, provisioning in a cloud)
    RUNNING = "running"
    STOPPING = "stopping"
    GONE = "gone"  # finished, cancelled or deleted: no longer billed
    FAILED = "failed"  # the provider gave up on it


@dataclass(frozen=True)
class LaunchSpec:
    """One machine to launch for node `node_id` (sizes in bytes; `cpus` 0 = the provider's default)."""

    node_id: str
    pool: str
    profile: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    gpus: int = 0
    cpus: int = 0
    memory_bytes: int = 0
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Launched:
    """The provider's answer to a launch: its handle for the machine, and where it runs if known."""

    provider_id: str
    host: str = ""
    price_per_hour: float | None = None


@dataclass(frozen=True)
class Machine:
    """One machine as the provider lists it; `node_id` is zeroloop's node id when the provider knows it."""

    provider_id: str
    state: MachineState
    node_id: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class Offer:
    """Something a provider can launch (memory in bytes, price in currency units per hour)."""

    name: str
    gpus: int = 0
    gpu_type: str = ""
    cpus: int = 0
    memory_bytes: int = 0
    price_per_hour: float | None = None
    spot: bool = False
    labels: tuple[str, ...] = ()


class NoOptions(BaseModel):
    """A provider kind without options of its own."""

    model_config = {"extra": "forbid"}


class Provider(abc.ABC):
    """One pool's provider. Subclasses set `kind`, may set `Options`, and implement the operations."""

    kind: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, name: str, pool: PoolSettings) -> None:
        """`name` is the pool's name in settings; its `options` table is validated against `Options`."""
        self.name = name
        self.pool = pool
        self.options = self.parse_options(name, pool.options)

    @classmethod
    def from_settings(cls, name: str, pool: PoolSettings, settings: Settings) -> Provider:
        """Build the provider of pool `name`; override to take more from the settings (e.g. the data directory)."""
        return cls(name, pool)

    @classmethod
    def parse_options(cls, name: str, options: Mapping[str, Any]) -> Any:
        """The pool's options as `cls.Options`; ConfigError naming each bad option."""
        try:
            return cls.Options.model_validate(dict(options))
        except ValidationError as exc:
            problems = "; ".join(
                f"providers.{name}.options.{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
                for error in exc.errors()
            )
            raise ConfigError(f"invalid {cls.kind} provider options: {problems}") from None

    def check(self) -> None:  # noqa: B027 - most providers have nothing to check
        """Raise ProviderError when this provider cannot work here (missing binary, unknown partition)."""

    @abc.abstractmethod
    def launch(self, spec: LaunchSpec) -> Launched:
        """Start one machine for `spec`; ProviderError when the provider refuses."""

    @abc.abstractmethod
    def terminate(self, provider_id: str) -> None:
        """Stop the machine `provider_id`; a machine already gone is fine. ProviderError on failure."""

    @abc.abstractmethod
    def machines(self) -> list[Machine]:
        """Every machine of this pool the provider knows of, gone ones optional."""

    def offers(self) -> list[Offer]:
        """What this pool launches: by default one offer made of the pool's own settings."""
        pool = self.pool
        return [
            Offer(
                name=f"{self.name}:{pool.profile}",
                gpus=pool.gpus,
                cpus=pool.cpus,
                memory_bytes=int(pool.memory_gb * 2**30),
                price_per_hour=pool.price_per_hour,
                labels=tuple(pool.labels),
            )
        ]
