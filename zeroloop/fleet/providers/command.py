"""The command provider: machines started and stopped by the user's own commands.

A pool of kind `command` names four command templates, typically calls of a provider's
CLI (vastai, runpodctl, a site script): `launch`, `terminate`, `list` and, optionally,
`offers`. Each template is split into words like a shell would (shlex) and run without
a shell; placeholders such as `{node_id}` are filled in word by word, so a value with
spaces stays one argument. Each template accepts only its own placeholders, and an
unknown one is refused when the settings are read. Write `{{` and `}}` for a literal
brace (a jq filter, say).

The worker's environment (the cluster's address and credentials) goes into the launch
command's own environment, never onto its command line, where `ps` would show it;
`ZEROLOOP_WORKER_ENV_NAMES` lists those variables' names, comma-separated, and
`{env_file}` names a private file holding them as KEY=VALUE lines, removed when the
command returns.

Each command prints JSON on stdout, and that output is a contract:

- launch: one object `{"provider_id": str, "host"?: str, "price_per_hour"?: number}`
- list: an array of `{"provider_id": str, "state": "pending|running|stopping|gone|failed",
  "node_id"?: str, "detail"?: str}`, the machines of pool `{pool}`
- offers: an array of `{"name": str, "gpus"?: int, "gpu_type"?: str, "cpus"?: int,
  "memory_gb"?: number, "price_per_hour"?: number, "spot"?: bool, "labels"?: [str]}`
- terminate: nothing; its exit status alone counts

Output that breaks the contract, a non-zero exit or a command running past `timeout_s`
is a ProviderError that names the command, what was expected and what came.
docs/providers/command.md walks through a pool.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import string
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator

from zeroloop.fleet.providers.base import (
    Launched,
    LaunchSpec,
    Machine,
    MachineState,
    Offer,
    Provider,
    ProviderError,
)

log = logging.getLogger(__name__)

# The placeholders each template may use; anything else is refused when settings are read.
PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "launch": ("node_id", "pool", "profile", "gpus", "cpus", "memory_gb", "labels", "command", "env_file"),
    "terminate": ("provider_id", "pool"),
    "list": ("pool",),
    "offers": ("pool", "profile", "gpus", "cpus", "memory_gb"),
}
WORKER_ENV_NAMES = "ZEROLOOP_WORKER_ENV_NAMES"
EXCERPT_CHARS = 300
LIVE_STATES = (MachineState.PENDING, MachineState.RUNNING, MachineState.STOPPING, MachineState.FAILED)


def placeholders(template: str) -> list[str]:
    """The placeholder names in `template`; ValueError when it cannot be split or a placeholder is malformed."""
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise ValueError(f"cannot be split into words ({exc})") from None
    if not words:
        raise ValueError("is empty")
    names = []
    for word in words:
        try:
            parsed = list(string.Formatter().parse(word))
        except ValueError as exc:
            raise ValueError(
                f"has a malformed placeholder in {word!r} ({exc}; write {{{{ and }}}} for braces)"
            ) from None
        for _literal, name, spec, conversion in parsed:
            if name is None:
                continue
            if not name.isidentifier() or spec or conversion:
                written = name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
                raise ValueError(
                    f"placeholder {{{written}}} must be a plain {{name}} (write {{{{ and }}}} for literal braces)"
                )
            names.append(name)
    return names


def render(template: str, fields: Mapping[str, str]) -> list[str]:
    """`template` split into words, each with its placeholders filled from `fields`."""
    return [word.format_map(fields) for word in shlex.split(template)]


class CommandOptions(BaseModel):
    """Options of a command pool: its command templates and how long each may run."""

    model_config = {"extra": "forbid"}

    launch: str = Field(
        description="starts one machine and prints {provider_id, host?, price_per_hour?} as JSON; "
        "placeholders: " + ", ".join(PLACEHOLDERS["launch"])
    )
    terminate: str = Field(description="stops machine {provider_id}; placeholders: provider_id, pool")
    list: str = Field(description="prints this pool's machines as a JSON array; placeholder: pool")
    offers: str | None = Field(
        default=None,
        description="prints what can be launched as a JSON array; unset: one offer made of the pool's settings",
    )
    timeout_s: float = Field(default=300.0, gt=0, description="time one command may run before it is killed (seconds)")

    @field_validator("launch", "terminate", "list", "offers")
    @classmethod
    def _known_placeholders(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        allowed = PLACEHOLDERS[str(info.field_name)]
        unknown = sorted(set(placeholders(value)) - set(allowed))
        if unknown:
            names = ", ".join("{" + name + "}" for name in unknown)
            may = ", ".join("{" + name + "}" for name in allowed)
            raise ValueError(f"unknown placeholder {names}; this command may use {may}")
        return value


class _Launched(BaseModel):
    provider_id: str = Field(min_length=1)
    host: str = ""
    price_per_hour: float | None = Field(default=None, ge=0)


class _Machine(BaseModel):
    provider_id: str = Field(min_length=1)
    state: MachineState
    node_id: str | None = None
    detail: str = ""


class _Offer(BaseModel):
    name: str = Field(min_length=1)
    gpus: int = Field(default=0, ge=0)
    gpu_type: str = ""
    cpus: int = Field(default=0, ge=0)
    memory_gb: float = Field(default=0.0, ge=0)
    price_per_hour: float | None = Field(default=None, ge=0)
    spot: bool = False
    labels: tuple[str, ...] = ()


_T = TypeVar("_T")
_LAUNCHED = TypeAdapter(_Launched)
_MACHINES = TypeAdapter(tuple[_Machine, ...])
_OFFERS = TypeAdapter(tuple[_Offer, ...])
CONTRACTS = {
    "launch": 'one JSON object {"provider_id": str, "host"?: str, "price_per_hour"?: number}',
    "list": 'a JSON array of {"provider_id": str, "state": "pending|running|stopping|gone|failed", '
    '"node_id"?: str, "detail"?: str}',
    "offers": 'a JSON array of {"name": str, "gpus"?: int, "gpu_type"?: str, "cpus"?: int, '
    '"memory_gb"?: number, "price_per_hour"?: number, "spot"?: bool, "labels"?: [str]}',
}


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text` on one line, at most `limit` characters of it, for an error message."""
    flat = " ".join(text.split())
    if not flat:
        return "(nothing)"
    if len(flat) <= limit:
        return flat
    return f"{flat[:limit]}... ({len(flat) - limit} more characters)"


class CommandProvider(Provider):
    """Launches, stops and lists machines by running the pool's command templates."""

    kind = "command"
    Options = CommandOptions

    def _templates(self) -> dict[str, str]:
        found = {"launch": self.options.launch, "terminate": self.options.terminate, "list": self.options.list}
        if self.options.offers is not None:
            found["offers"] = self.options.offers
        return found

    def check(self) -> None:
        """ProviderError when a command's program cannot be found or run."""
        for what, template in self._templates().items():
            program = shlex.split(template)[0]
            if "{" in program:
                continue  # chosen per call; nothing to look up now
            if os.sep in program:
                found = os.path.isfile(program) and os.access(program, os.X_OK)
            else:
                found = shutil.which(program) is not None
            if not found:
                raise ProviderError(
                    f"command pool {self.name}: the {what} command's program {program!r} is not "
                    f"{'an executable file' if os.sep in program else 'on PATH'}; install it or give its full "
                    f"path in providers.{self.name}.options.{what}"
                )

    def launch(self, spec: LaunchSpec) -> Launched:
        """Run the launch command with the worker's environment in its own; ProviderError when it fails."""
        worker_env = {**spec.env, "ZEROLOOP_CLUSTER__POOL": self.name}
        fields = {
            "node_id": spec.node_id,
            "pool": self.name,
            "profile": spec.profile,
            "gpus": str(spec.gpus),
            "cpus": str(spec.cpus),
            "memory_gb": f"{spec.memory_bytes / 2**30:g}",
            "labels": ",".join(spec.labels),
            "command": shlex.join(spec.argv),
        }
        env = {**os.environ, **worker_env, WORKER_ENV_NAMES: ",".join(sorted(worker_env))}
        with self._env_file(worker_env) as env_file:
            fields["env_file"] = env_file
            stdout = self._run("launch", fields, env)
        result = self._parse("launch", stdout, _LAUNCHED)
        price = result.price_per_hour if result.price_per_hour is not None else self.pool.price_per_hour
        log.info("command pool %s: launched %s for node %s", self.name, result.provider_id, spec.node_id)
        return Launched(provider_id=result.provider_id, host=result.host, price_per_hour=price)

    def terminate(self, provider_id: str) -> None:
        """Run the terminate command; a failure for a machine the list no longer shows is not an error."""
        try:
            self._run("terminate", {"provider_id": provider_id, "pool": self.name})
        except ProviderError as failure:
            try:
                still_there = any(m.provider_id == provider_id and m.state in LIVE_STATES for m in self.machines())
            except ProviderError:
                raise failure from None
            if still_there:
                raise
            log.info("command pool %s: %s is already gone (%s)", self.name, provider_id, failure)

    def machines(self) -> list[Machine]:
        """The machines the list command prints for this pool."""
        listed = self._parse("list", self._run("list", {"pool": self.name}), _MACHINES)
        return [Machine(provider_id=m.provider_id, state=m.state, node_id=m.node_id, detail=m.detail) for m in listed]

    def offers(self) -> list[Offer]:
        """What the offers command prints, or one offer made of the pool's settings when there is none."""
        if self.options.offers is None:
            return super().offers()
        pool = self.pool
        fields = {
            "pool": self.name,
            "profile": pool.profile,
            "gpus": str(pool.gpus),
            "cpus": str(pool.cpus),
            "memory_gb": f"{pool.memory_gb:g}",
        }
        return [
            Offer(
                name=o.name,
                gpus=o.gpus,
                gpu_type=o.gpu_type,
                cpus=o.cpus,
                memory_bytes=int(o.memory_gb * 2**30),
                price_per_hour=o.price_per_hour,
                spot=o.spot,
                labels=o.labels,
            )
            for o in self._parse("offers", self._run("offers", fields), _OFFERS)
        ]

    @contextlib.contextmanager
    def _env_file(self, worker_env: Mapping[str, str]) -> Iterator[str]:
        """A private KEY=VALUE file of the worker's environment when the launch template asks for one."""
        if "env_file" not in placeholders(self.options.launch):
            yield ""
            return
        for key, value in worker_env.items():
            if "\n" in value or "\n" in key:
                raise ProviderError(
                    f"command pool {self.name}: worker variable {key} holds a line break and cannot go in {{env_file}}"
                )
        descriptor, path = tempfile.mkstemp(prefix=f"zeroloop-{self.name}-", suffix=".env")  # mode 0600
        try:
            with os.fdopen(descriptor, "w") as handle:
                handle.writelines(f"{key}={value}\n" for key, value in sorted(worker_env.items()))
            yield path
        finally:
            os.unlink(path)

    def _run(self, what: str, fields: Mapping[str, str], env: Mapping[str, str] | None = None) -> str:
        """Run the `what` command; its stdout, or ProviderError naming the command and what went wrong."""
        argv = render(self._templates()[what], fields)
        shown = excerpt(shlex.join(argv), 200)
        where = f"command pool {self.name}: {what} command `{shown}`"
        try:
            # Its own session, so a timeout kills whatever it started as well.
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                env=None if env is None else dict(env),
                start_new_session=True,
            )
        except OSError as exc:
            raise ProviderError(f"{where} cannot be started: {exc.strerror or exc}") from exc
        try:
            stdout, stderr = process.communicate(timeout=self.options.timeout_s)
        except subprocess.TimeoutExpired:
            _kill(process)
            raise ProviderError(
                f"{where} did not finish within {self.options.timeout_s:g} s and was killed "
                f"(providers.{self.name}.options.timeout_s)"
            ) from None
        if process.returncode != 0:
            raise ProviderError(f"{where} exited {process.returncode}: {excerpt(stderr or stdout)}")
        return stdout

    def _parse(self, what: str, stdout: str, adapter: TypeAdapter[_T]) -> _T:
        """`stdout` read against the `what` command's contract; ProviderError showing what came instead."""
        where = f"command pool {self.name}: {what} command `{excerpt(self._templates()[what], 200)}`"
        try:
            data: Any = json.loads(stdout)
        except json.JSONDecodeError:
            raise ProviderError(
                f"{where} did not print JSON; expected {CONTRACTS[what]}, got: {excerpt(stdout)}"
            ) from None
        try:
            return adapter.validate_python(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or 'output'}: {error['msg']}" for error in exc.errors()[:3]
            )
            raise ProviderError(
                f"{where} printed JSON that breaks its contract ({problems}); expected {CONTRACTS[what]}, "
                f"got: {excerpt(stdout)}"
            ) from None


def _kill(process: subprocess.Popen[str]) -> None:
    """SIGKILL the command's process group and reap it, closing its pipes."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()
