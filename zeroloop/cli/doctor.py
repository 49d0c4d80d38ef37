"""Health checks of an installation: what is wrong, precisely, and how to fix it.

`run_checks(settings)` never changes anything on disk or in the store: a store that
does not exist yet is reported as created on first start, not created here.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from zeroloop.config import Settings, redact
from zeroloop.errors import ZeroloopError
from zeroloop.store import migrate
from zeroloop.store.database import Store, parse_store_url, sqlite_path
from zeroloop.workload.factory import ALPHAZERO_INSTALL, installed


class Verdict(StrEnum):
    """How one check came out; only FAIL makes `zeroloop doctor` exit non-zero."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    """The outcome of one check: what was checked, what was found, and the fix if any."""

    name: str
    verdict: Verdict
    detail: str
    fix: str = ""


CheckFn = Callable[[Settings], Iterator[Check]]


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_data_dir(settings: Settings) -> Iterator[Check]:
    """The data directory exists and is writable, or can be created."""
    path = settings.data_dir
    if path.exists() and not path.is_dir():
        yield Check("data directory", Verdict.FAIL, f"{path} exists and is not a directory", "set ZEROLOOP_DATA_DIR")
    elif path.exists():
        if os.access(path, os.W_OK | os.X_OK):
            yield Check("data directory", Verdict.OK, str(path))
        else:
            yield Check("data directory", Verdict.FAIL, f"{path} is not writable", f"chmod u+w {path}")
    else:
        parent = _nearest_existing(path)
        if os.access(parent, os.W_OK | os.X_OK):
            yield Check("data directory", Verdict.OK, f"{path} (created on first start)")
        else:
            yield Check(
                "data directory",
                Verdict.FAIL,
                f"{path} does not exist and {parent} is not writable",
                "set ZEROLOOP_DATA_DIR",
            )


def check_store(settings: Settings) -> Iterator[Check]:
    """The store URL parses, the store is reachable, and its schema matches this code."""
    url = settings.store_url
    try:
        backend, parsed = parse_store_url(url)
    except ZeroloopError as exc:
        yield Check("store", Verdict.FAIL, str(exc), "set ZEROLOOP_STORE__URL")
        return
    if backend == "sqlite" and not sqlite_path(parsed).exists():
        directory = sqlite_path(parsed).parent
        if settings.store.url is not None and not directory.is_dir():
            yield Check("store", Verdict.FAIL, f"the directory {directory} does not exist", f"mkdir -p {directory}")
        else:
            yield Check("store", Verdict.OK, f"{redact(url)} (created and migrated on first start)")
        return
    try:
        with Store.for_settings(settings) as store:
            state = migrate.status(store)
    except ZeroloopError as exc:
        yield Check("store", Verdict.FAIL, str(exc))
        return
    if state.up_to_date:
        yield Check("store", Verdict.OK, f"{redact(url)} (schema {state.current})")
    elif backend == "sqlite" and settings.store.auto_upgrade:
        yield Check("store", Verdict.OK, f"{redact(url)} (schema {state.current} -> {state.head} on next start)")
    else:
        yield Check(
            "store",
            Verdict.FAIL,
            f"{redact(url)} is at schema {state.current}, needs {state.head}",
            "zeroloop db upgrade",
        )


# Object stores whose first path segment is a bucket (container) that must exist beforehand.
_BUCKET_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "oss"})


def check_artifacts(settings: Settings) -> Iterator[Check]:
    """The artifact location's backend is installed, its bucket exists, and a test object round-trips.

    On a store other than a local directory the check writes a small test object, reads it
    back, deletes it, and confirms it is gone; each failure names the step that failed.
    """
    from zeroloop.artifacts.transfer import open_location, scheme_of

    url = settings.artifacts_url
    shown = redact(url)
    scheme = scheme_of(url)
    try:
        fs, root = open_location(url, settings.artifacts.storage_options)
    except ZeroloopError as exc:
        yield Check("artifacts", Verdict.FAIL, str(exc), "set ZEROLOOP_ARTIFACTS__URL (and artifacts.storage_options)")
        return
    if scheme in ("file", "local"):
        local = Path(root)
        if not local.exists():
            parent = _nearest_existing(local)
            ok = os.access(parent, os.W_OK | os.X_OK)
            verdict, detail = (Verdict.OK, "created on first write") if ok else (Verdict.FAIL, f"{parent} not writable")
            yield Check("artifacts", verdict, f"{shown} ({detail})")
            return
    where = ""
    if scheme in _BUCKET_SCHEMES:
        bucket = root.split("/", 1)[0]
        where = f"bucket {bucket}: "
        try:
            fs.info(bucket)
        except FileNotFoundError:
            yield Check(
                "artifacts",
                Verdict.FAIL,
                f"{shown}: bucket {bucket} does not exist (or these credentials cannot see it)",
                (f"aws s3 mb s3://{bucket}" if scheme in ("s3", "s3a") else f"create bucket {bucket}")
                + ", or correct ZEROLOOP_ARTIFACTS__URL",
            )
            return
        except Exception as exc:  # noqa: BLE001 - any backend failure is the finding itself
            yield Check("artifacts", Verdict.FAIL, f"{shown}: cannot reach bucket {bucket}: {_one_line(exc)}", _FIX)
            return
    problem = _round_trip(fs, f"{root.rstrip('/')}/.zeroloop-doctor-{uuid.uuid4().hex}")
    if problem is not None:
        yield Check("artifacts", Verdict.FAIL, f"{shown}: {where}{problem}", _FIX)
        return
    yield Check("artifacts", Verdict.OK, f"{shown} ({where}write, read back, delete ok)")


_FIX = "check the credentials, permissions, endpoint and artifacts.storage_options"


def _round_trip(fs: Any, probe: str) -> str | None:
    """Write, read back, delete and re-check a test object; what went wrong, or None."""
    payload = f"zeroloop doctor {uuid.uuid4().hex}".encode()
    step = "write"
    try:
        fs.pipe_file(probe, payload)
        step = "read back"
        if fs.cat_file(probe) != payload:
            return "a test object read back differs from what was written"
        step = "delete"
        fs.rm_file(probe)
        fs.invalidate_cache()
        if fs.exists(probe):
            return f"a deleted test object is still there ({probe})"
    except Exception as exc:  # noqa: BLE001 - any backend failure is the finding itself
        return f"cannot {step} a test object: {_one_line(exc)}"
    return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return redact(text.splitlines()[0])


_OPTIONAL = (
    ("torch", "torch", ALPHAZERO_INSTALL, "the built-in AlphaZero workload"),
    ("pyspiel", "open-spiel", "pip install 'zeroloop[alphazero]'", "the built-in OpenSpiel games"),
    ("psycopg", "psycopg[binary]", "pip install 'psycopg[binary]'", "PostgreSQL stores"),
)


def check_dependencies(settings: Settings) -> Iterator[Check]:
    """The libraries the configured workload and store need are importable."""
    needed = {"psycopg"} if settings.store_url.startswith("postgres") else set()
    if settings.workload.kind == "alphazero":
        needed |= {"torch", "pyspiel"}
    for module, package, fix, purpose in _OPTIONAL:
        if not installed(module):
            verdict = Verdict.FAIL if module in needed else Verdict.WARN
            yield Check(f"package {package}", verdict, f"not installed (needed for {purpose})", fix)
            continue
        version = getattr(importlib.import_module(module), "__version__", "installed")
        yield Check(f"package {package}", Verdict.OK, str(version))
    device = settings.workload.device
    if device != "cpu" and settings.workload.kind == "alphazero":
        problem = device_problem(device)
        if problem is None:
            yield Check("device", Verdict.OK, device)
        else:
            yield Check("device", Verdict.FAIL, problem, "set ZEROLOOP_WORKLOAD__DEVICE=cpu or to a device torch sees")


def device_problem(device: str) -> str | None:
    """Why torch cannot use `device` on this machine (auto, cpu, cuda, cuda:N, mps), or None when it can."""
    if device in ("cpu", "auto"):  # auto falls back to the CPU when there is no GPU
        return None
    try:
        import torch
    except ImportError:
        return f"workload.device is {device} but torch is not installed"
    if device == "mps":
        return None if torch.backends.mps.is_available() else "workload.device is mps but torch sees no MPS device"
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if count == 0:
        return f"workload.device is {device} but torch sees no CUDA GPU"
    if index >= count:
        return f"workload.device is {device} but this machine has {count} CUDA GPU(s): cuda:0 to cuda:{count - 1}"
    return None


def check_workload(settings: Settings) -> Iterator[Check]:
    """A workload class of one's own loads and has the operations; the command workload's file parses."""
    from zeroloop.workload.factory import BUILT_IN, workload_class

    kind = settings.workload.kind
    if kind not in BUILT_IN:
        try:
            found = workload_class(kind)
        except ZeroloopError as exc:
            yield Check("workload", Verdict.FAIL, str(exc), "see docs/workload.md, 'A workload of your own'")
            return
        yield Check("workload", Verdict.OK, f"{kind}: {found.__module__}.{found.__qualname__}")
        return
    if kind != "command" or settings.workload.command_file is None:
        return
    from zeroloop.workload.command import load_command_specs

    path = settings.workload.command_file
    try:
        specs = load_command_specs(path, settings.workload.command_timeout_s)
    except ZeroloopError as exc:
        yield Check("command file", Verdict.FAIL, str(exc), "fix the file; see docs/workload.md")
        return
    yield Check("command file", Verdict.OK, f"{path}: {', '.join(specs) or 'no operations'}")


def check_event_wiring(settings: Settings) -> Iterator[Check]:
    """Every event type published has a consumer and every type consumed has a producer."""
    from zeroloop.app import event_participants
    from zeroloop.events import wiring

    participants = event_participants()
    report = wiring.check_wiring(participants)
    for event_type, names in report.unconsumed.items():
        yield Check(f"event {event_type}", Verdict.FAIL, f"published by {', '.join(names)}, consumed by nobody")
    for event_type, names in report.unpublished.items():
        yield Check(f"event {event_type}", Verdict.FAIL, f"consumed by {', '.join(names)}, published by nobody")
    for event_type in report.undeclared:
        yield Check(
            f"event {event_type}",
            Verdict.FAIL,
            "in the catalogue, but no participant declares publishing or consuming it",
            "declare it where it is published and consumed, or remove it from zeroloop/events/catalogue.py",
        )
    if report.ok:
        yield Check("event wiring", Verdict.OK, f"{len(wiring.declarations(participants))} participants declared")


CHECKS: tuple[CheckFn, ...] = (
    check_data_dir,
    check_store,
    check_artifacts,
    check_dependencies,
    check_workload,
    check_event_wiring,
)


def run_checks(settings: Settings, checks: tuple[CheckFn, ...] = CHECKS) -> list[Check]:
    """Run every check, in order, and return all findings."""
    return [finding for check in checks for finding in check(settings)]
