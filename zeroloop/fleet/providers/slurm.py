"""The Slurm provider: one batch job per node, running `zeroloop worker` on whatever node Slurm picks.

`launch` pipes a generated batch script to `sbatch --parsable` on its standard input (no
script file is written). The script only `exec`s the spec's argv; the worker's
environment, secrets included, travels through sbatch's `--export=ALL` from the
environment of the sbatch process, so it never appears in the script, in Slurm's stored
copy of it, or in a log. The job's name is `<prefix>.<pool>.<node id>`, which is how
`machines()` (one `squeue --me --states=all` call) maps jobs back to zeroloop's nodes;
`terminate` is `scancel`. Resources come from the spec, else from the pool:
`--cpus-per-task`, `--mem` and `--gres` (`gpu:N` from the pool's `gpus` unless the
`gres` option says otherwise).

Every command runs with a timeout (`command_timeout_s`) and an environment that carries
`SLURM_CONF` through (or the `slurm_conf` option), and every failure is one
ProviderError line with Slurm's own message, secrets redacted. docs/providers/slurm.md
is the user's guide.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from zeroloop.config import PoolSettings, Settings, redact
from zeroloop.errors import ConfigError
from zeroloop.fleet.providers.base import Launched, LaunchSpec, Machine, MachineState, Offer, Provider, ProviderError

Tool = Literal["sbatch", "squeue", "scancel", "sinfo"]
TOOLS: tuple[Tool, ...] = ("sbatch", "squeue", "scancel", "sinfo")

# Slurm's time formats: minutes, minutes:seconds, hours:minutes:seconds, days-hours,
# days-hours:minutes, days-hours:minutes:seconds; or no limit at all.
_TIME_LIMIT = re.compile(r"^(?:(?P<days>\d+)-)?(?P<first>\d+)(?::(?P<second>\d+))?(?::(?P<third>\d+))?$")
_UNLIMITED = ("unlimited", "infinite")
_NAME_PART = re.compile(r"^[A-Za-z0-9_-]+$")
_JOB_ID = re.compile(r"^\d+$")
_SQUEUE_JOB_ID = re.compile(r"^\d+(?:[_+][\w\[\]\-,%]+)?$")  # arrays (123_4, 123_[1-3]) and het jobs (123+0)
_SQUEUE_STATE = re.compile(r"^[A-Z_]+$")
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL|URL|DSN|AUTH", re.IGNORECASE)
SQUEUE_FORMAT = "%i|%T|%r|%N|%j"  # the name last: it is the only field a user's own jobs may fill with '|'

# squeue's job states, as machine states. A requeued job goes back to pending; a
# suspended one still holds its allocation (and its worker is frozen, so zeroloop soon
# finds the node lost). Anything not listed is reported as failed, with Slurm's state.
STATES: dict[str, MachineState] = {
    "PENDING": MachineState.PENDING,
    "CONFIGURING": MachineState.PENDING,
    "REQUEUED": MachineState.PENDING,
    "REQUEUE_FED": MachineState.PENDING,
    "REQUEUE_HOLD": MachineState.PENDING,
    "RESV_DEL_HOLD": MachineState.PENDING,
    "RESIZING": MachineState.PENDING,
    "RUNNING": MachineState.RUNNING,
    "SUSPENDED": MachineState.RUNNING,
    "STOPPED": MachineState.RUNNING,
    "COMPLETING": MachineState.STOPPING,
    "SIGNALING": MachineState.STOPPING,
    "STAGE_OUT": MachineState.STOPPING,
    "COMPLETED": MachineState.GONE,
    "CANCELLED": MachineState.GONE,
    "TIMEOUT": MachineState.GONE,
    "PREEMPTED": MachineState.GONE,
    "REVOKED": MachineState.GONE,
    "SPECIAL_EXIT": MachineState.GONE,
    "FAILED": MachineState.FAILED,
    "NODE_FAIL": MachineState.FAILED,
    "BOOT_FAIL": MachineState.FAILED,
    "OUT_OF_MEMORY": MachineState.FAILED,
    "DEADLINE": MachineState.FAILED,
}


def parse_time_limit(value: str) -> str:
    """`value` if it is one of Slurm's time-limit formats; ValueError naming the formats otherwise."""
    text = value.strip()
    if text.lower() in _UNLIMITED:
        return text
    match = _TIME_LIMIT.match(text)
    if match is None:
        raise ValueError(
            f"{value!r} is not a Slurm time limit: use MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS or UNLIMITED"
        )
    fields = [match[name] for name in ("second", "third") if match[name] is not None]
    if any(int(field) >= 60 for field in fields):
        raise ValueError(f"{value!r} is not a Slurm time limit: minutes and seconds must be below 60")
    if not any(int(match[name] or 0) for name in ("days", "first", "second", "third")):
        raise ValueError(f"{value!r} is not a Slurm time limit: it is zero")
    return text


class SlurmOptions(BaseModel):
    """Options of a Slurm pool (`[providers.NAME.options]`)."""

    model_config = {"extra": "forbid"}

    partition: str | None = Field(default=None, description="partition the jobs go to; unset: Slurm's default")
    gres: str | None = Field(
        default=None, description='generic resources per job, e.g. "gpu:a100:2"; unset: "gpu:N" from the pool\'s gpus'
    )
    time_limit: str | None = Field(
        default=None, description='job time limit in Slurm\'s formats ("HH:MM:SS", "D-HH:MM", minutes, "UNLIMITED")'
    )
    account: str | None = Field(default=None, description="account the jobs are charged to")
    qos: str | None = Field(default=None, description="quality of service of the jobs")
    extra_args: list[str] = Field(
        default_factory=list, description='more sbatch arguments, one per item, e.g. ["--constraint=a100"]'
    )
    job_name_prefix: str = Field(
        default="zeroloop", description="first part of every job name; tell two clusters of one Slurm user apart"
    )
    workdir: Path | None = Field(default=None, description="the jobs' working directory; unset: sbatch's own")
    log_dir: Path | None = Field(
        default=None, description="where job output goes (<node id>-<job id>.log); unset: <data_dir>/logs/slurm"
    )
    zeroloop: str | None = Field(
        default=None,
        description="command that runs zeroloop on the compute nodes, e.g. /shared/venv/bin/zeroloop; "
        "unset: this Python with -m zeroloop (right when the nodes share this installation)",
    )
    slurm_conf: Path | None = Field(default=None, description="slurm.conf to use; unset: SLURM_CONF or Slurm's own")
    sbatch: str = Field(default="sbatch", description="the sbatch command (a name on PATH or a path)")
    squeue: str = Field(default="squeue", description="the squeue command")
    scancel: str = Field(default="scancel", description="the scancel command")
    sinfo: str = Field(default="sinfo", description="the sinfo command")
    command_timeout_s: float = Field(default=30.0, gt=0, description="time each Slurm command may take (seconds)")

    @field_validator("time_limit")
    @classmethod
    def _time_limit(cls, value: str | None) -> str | None:
        return None if value is None else parse_time_limit(value)

    @field_validator("gres")
    @classmethod
    def _gres(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c.isspace() for c in value)):
            raise ValueError(f'{value!r} is not a GRES specification: use e.g. "gpu:1" or "gpu:a100:2"')
        return value

    @field_validator("job_name_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _NAME_PART.match(value):
            raise ValueError(f"{value!r} may hold only letters, digits, '_' and '-' (it is part of every job name)")
        return value


def _secret_values(env: Mapping[str, str]) -> list[str]:
    return [value for name, value in env.items() if _SECRET_NAME.search(name) and len(value) >= 4]


def _gpus_in(gres: str) -> tuple[int, str]:
    """GPU count and type in a node's GRES as sinfo prints it ("gpu:a100:4(S:0-1),shard:8")."""
    count, kind = 0, ""
    for item in gres.split(","):
        parts = re.sub(r"\(.*?\)", "", item).split(":")
        if parts[0] != "gpu" or len(parts) < 2:
            continue
        if parts[-1].isdigit():
            count += int(parts[-1])
            kind = kind or (parts[1] if len(parts) > 2 else "")
    return count, kind


class SlurmProvider(Provider):
    """Starts each node as a Slurm batch job running `zeroloop worker`; lists and stops them with squeue and scancel."""

    kind = "slurm"
    Options = SlurmOptions

    def __init__(self, name: str, pool: PoolSettings, *, data_dir: Path) -> None:
        """`data_dir` holds job output unless the pool's options name another log directory."""
        super().__init__(name, pool)
        if not _NAME_PART.match(name):
            raise ConfigError(
                f"providers.{name}: a slurm pool's name may hold only letters, digits, '_' and '-' "
                "(it is part of every job name)"
            )
        self.data_dir = data_dir
        self.log_dir: Path = self.options.log_dir or data_dir / "logs" / "slurm"
        self.job_prefix = f"{self.options.job_name_prefix}.{name}."

    # -- running Slurm's commands ---------------------------------------------------------

    @classmethod
    def from_settings(cls, name: str, pool: PoolSettings, settings: Settings) -> SlurmProvider:
        """Job logs go under the data directory unless the pool's options name a directory."""
        return cls(name, pool, data_dir=settings.data_dir)

    def _env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {**os.environ, **(extra or {})}
        if self.options.slurm_conf is not None:
            env["SLURM_CONF"] = str(self.options.slurm_conf)
        return env

    def _redact(self, text: str, env: Mapping[str, str]) -> str:
        for secret in sorted(_secret_values({**self.pool.env, **env}), key=len, reverse=True):
            text = text.replace(secret, "***")
        return redact(text)

    def _run(
        self, tool: Tool, args: Sequence[str], *, env: Mapping[str, str] | None = None, stdin: str | None = None
    ) -> str:
        """Run one Slurm command; its standard output, or ProviderError with its message."""
        command = getattr(self.options, tool)
        argv = [command, *args]
        extra = env or {}
        try:
            done = subprocess.run(
                argv,
                input=stdin,
                env=self._env(extra),
                capture_output=True,
                text=True,
                timeout=self.options.command_timeout_s,
                check=False,
            )
        except FileNotFoundError:
            raise ProviderError(self._missing(tool)) from None
        except subprocess.TimeoutExpired:
            raise ProviderError(
                f"slurm pool {self.name}: {tool} did not answer within {self.options.command_timeout_s:g} s; "
                "is slurmctld reachable? (raise command_timeout_s if it is just slow)"
            ) from None
        except OSError as exc:
            raise ProviderError(f"slurm pool {self.name}: cannot run {command}: {exc}") from None
        if done.returncode != 0:
            said = " ".join((done.stderr.strip() or done.stdout.strip() or "no output").split())
            raise ProviderError(
                f"slurm pool {self.name}: {tool} failed (exit {done.returncode}): {self._redact(said, extra)}"
            )
        return done.stdout

    def _missing(self, tool: Tool) -> str:
        command = getattr(self.options, tool)
        return (
            f"slurm pool {self.name}: {tool} not found ({command!r} is not an executable file or on PATH); "
            f"install Slurm's client commands or set providers.{self.name}.options.{tool}"
        )

    def partitions(self) -> list[str]:
        """The partitions Slurm knows (sinfo), the default one without its '*'."""
        lines = self._run("sinfo", ["--noheader", "--format=%P"]).split()
        return list(dict.fromkeys(line.rstrip("*") for line in lines))

    def check(self) -> None:
        """The four commands exist, Slurm answers, and the partition (if set) is one it knows."""
        for tool in TOOLS:
            if shutil.which(getattr(self.options, tool), path=self._env().get("PATH")) is None:
                raise ProviderError(self._missing(tool))
        known = self.partitions()
        partition = self.options.partition
        if partition is not None and partition not in known:
            raise ProviderError(
                f"slurm pool {self.name}: partition {partition!r} does not exist "
                f"(sinfo knows: {', '.join(known) or 'none'})"
            )

    # -- the provider operations -------------------------------------------------------------

    def job_name(self, node_id: str) -> str:
        """The Slurm job name of node `node_id` in this pool."""
        return f"{self.job_prefix}{node_id}"

    def worker_argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` with a leading `zeroloop` replaced by the command that runs zeroloop on the nodes."""
        if not argv or argv[0] != "zeroloop":
            return list(argv)
        if self.options.zeroloop is not None:
            return [*shlex.split(self.options.zeroloop), *argv[1:]]
        return [sys.executable, "-m", "zeroloop", *argv[1:]]

    def batch_script(self, spec: LaunchSpec) -> str:
        """The batch script of `spec`: only the worker's command line; its environment comes from sbatch."""
        return (
            "#!/bin/sh\n"
            f"# zeroloop node {spec.node_id} of pool {self.name}; the environment comes from sbatch --export\n"
            f"exec {shlex.join(self.worker_argv(spec.argv))}\n"
        )

    def sbatch_args(self, spec: LaunchSpec) -> list[str]:
        """sbatch's arguments for `spec` (resources from the spec, else from the pool)."""
        options, pool = self.options, self.pool
        args = [
            "--parsable",
            f"--job-name={self.job_name(spec.node_id)}",
            f"--output={self.log_dir / spec.node_id}-%j.log",
            "--open-mode=append",
            "--export=ALL",
            "--nodes=1",
            "--ntasks=1",
            "--no-requeue",  # zeroloop replaces a lost node itself, under a new node id
        ]
        cpus = spec.cpus or pool.cpus
        if cpus:
            args.append(f"--cpus-per-task={cpus}")
        memory_bytes = spec.memory_bytes or int(pool.memory_gb * 2**30)
        if memory_bytes:
            args.append(f"--mem={math.ceil(memory_bytes / 2**20)}M")
        gpus = spec.gpus or pool.gpus
        gres = options.gres or (f"gpu:{gpus}" if gpus else None)
        if gres:
            args.append(f"--gres={gres}")
        for flag, value in (
            ("partition", options.partition),
            ("time", options.time_limit),
            ("account", options.account),
            ("qos", options.qos),
            ("chdir", options.workdir),
        ):
            if value is not None:
                args.append(f"--{flag}={value}")
        return [*args, *options.extra_args]

    def launch(self, spec: LaunchSpec) -> Launched:
        """Submit the node's batch job; ProviderError with sbatch's message when Slurm refuses it."""
        if not spec.node_id or not spec.node_id.isprintable() or any(c.isspace() or c == "%" for c in spec.node_id):
            raise ProviderError(
                f"slurm pool {self.name}: node id {spec.node_id!r} cannot be part of a job name and log file name "
                "(no spaces, control characters or '%')"
            )
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ProviderError(f"slurm pool {self.name}: cannot create log directory {self.log_dir}: {exc}") from None
        env = {**spec.env, "ZEROLOOP_CLUSTER__POOL": self.name}
        out = self._run("sbatch", self.sbatch_args(spec), env=env, stdin=self.batch_script(spec))
        job_id = out.strip().split(";")[0]  # --parsable: "<job id>" or "<job id>;<cluster>"
        if not _JOB_ID.match(job_id):
            raise ProviderError(
                f"slurm pool {self.name}: sbatch answered {self._redact(out.strip()[:200], env)!r}, not a job id"
            )
        return Launched(provider_id=job_id, price_per_hour=self.pool.price_per_hour)

    def terminate(self, provider_id: str) -> None:
        """`scancel` the job (Slurm sends its worker SIGTERM, then SIGKILL after KillWait); gone already is fine."""
        if not _JOB_ID.match(provider_id):
            raise ProviderError(f"slurm pool {self.name}: {provider_id!r} is not a Slurm job id")
        try:
            self._run("scancel", [provider_id])
        except ProviderError as exc:
            # Older Slurm releases exit non-zero for a job that has already finished.
            if "invalid job id" in str(exc).lower() or "already completing or completed" in str(exc).lower():
                return
            raise

    def machines(self) -> list[Machine]:
        """This pool's jobs as squeue lists them (this user's, finished ones while Slurm still shows them)."""
        out = self._run("squeue", ["--noheader", "--me", "--states=all", f"--format={SQUEUE_FORMAT}"])
        return self.parse_squeue(out)

    def parse_squeue(self, out: str) -> list[Machine]:
        """The machines of this pool in squeue output of SQUEUE_FORMAT; ProviderError on a line it cannot read."""
        found = []
        for line in out.splitlines():
            if not line.strip():
                continue
            fields = line.split("|", 4)
            if len(fields) != 5 or not _SQUEUE_JOB_ID.match(fields[0]) or not _SQUEUE_STATE.match(fields[1]):
                raise ProviderError(
                    f"slurm pool {self.name}: cannot read squeue line {self._redact(line[:200], {})!r} "
                    f"(expected {SQUEUE_FORMAT}); is {self.options.squeue!r} Slurm's squeue?"
                )
            job_id, slurm_state, reason, nodes, name = fields
            if not name.startswith(self.job_prefix) or not _JOB_ID.match(job_id):
                continue  # another pool's, another cluster's, or the user's own job
            state = STATES.get(slurm_state, MachineState.FAILED)
            if nodes:
                detail = f"{slurm_state} on {nodes}"
            elif reason and reason not in ("None", "(null)"):
                detail = f"{slurm_state} ({reason})"
            else:
                detail = slurm_state
            found.append(Machine(job_id, state, node_id=name[len(self.job_prefix) :], detail=detail))
        return found

    def offers(self) -> list[Offer]:
        """One offer per node shape in the pool's partition (sinfo): what a job of this pool is carved from."""
        args = ["--noheader", "--format=%P|%c|%m|%G"]
        if self.options.partition is not None:
            args.append(f"--partition={self.options.partition}")
        offers = []
        for line in self._run("sinfo", args).splitlines():
            fields = line.strip().split("|")
            if len(fields) != 4 or not fields[1].isdigit():
                continue
            partition, cpus, memory_mb, gres = fields
            if self.options.partition is None and not partition.endswith("*"):
                continue  # the pool's jobs go to the default partition
            gpus, gpu_type = _gpus_in(gres)
            offers.append(
                Offer(
                    name=f"{self.name}:{partition.rstrip('*')}:{cpus}cpu-{memory_mb}M"
                    + (f"-{gpus}gpu" if gpus else ""),
                    gpus=gpus,
                    gpu_type=gpu_type,
                    cpus=int(cpus),
                    memory_bytes=int(memory_mb) * 2**20 if memory_mb.isdigit() else 0,
                    price_per_hour=self.pool.price_per_hour,
                    labels=tuple(self.pool.labels),
                )
            )
        return offers or super().offers()
