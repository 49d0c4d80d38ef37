"""Finding the class behind a provider's or a workload's `kind`: a built-in name, `module:Class`, or an entry point.

A kind is resolved in this order:

1. a built-in name (`local`, `slurm`, ... for providers; `alphazero`, `command` for workloads);
2. `package.module:ClassName`: imported from the Python path as it is;
3. the name of an installed entry point in the group (`zeroloop.providers`,
   `zeroloop.workloads`), which a package declares in its `pyproject.toml`:

       [project.entry-points."zeroloop.providers"]
       mycloud = "mycloud_zeroloop:MyCloudProvider"

What loads is checked against the interface (a `Provider` subclass; a class with the
workload operations and `from_settings`), and anything wrong is one ConfigError line
naming the setting, the kind and what went wrong, at start, before anything runs.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

from zeroloop.errors import ConfigError

PROVIDER_GROUP = "zeroloop.providers"
WORKLOAD_GROUP = "zeroloop.workloads"

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_TARGET = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")


def check_syntax(kind: str) -> str:
    """`kind` if it can name a class (a plain name or `module:Class`); ValueError otherwise (for settings)."""
    if _NAME.match(kind) or _TARGET.match(kind):
        return kind
    raise ValueError(f"{kind!r} is neither a kind's name nor a `package.module:ClassName`")


def _import(target: str, setting: str) -> Any:
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"invalid setting {setting}: cannot import {module_name}: {type(exc).__name__}: {exc}"
        ) from exc
    found = getattr(module, attribute, None)
    if found is None:
        raise ConfigError(f"invalid setting {setting}: module {module_name} has no {attribute}")
    return found


def resolve(
    kind: str,
    *,
    what: str,
    setting: str,
    group: str,
    built_in: Mapping[str, str],
    check: Callable[[Any], str | None],
) -> Any:
    """The class `kind` names; ConfigError (one line, naming `setting`) when it does not load or fit.

    `what` names the extension point in messages (provider, workload). `built_in` maps
    names to `module:Class` targets (imported only when chosen); `check`
    returns why a loaded object does not satisfy the interface, or None.
    """
    if kind in built_in:
        target = built_in[kind]
    elif ":" in kind:
        target = kind
    else:
        found = [point for point in entry_points(group=group) if point.name == kind]
        if not found:
            known = ", ".join(sorted(built_in))
            raise ConfigError(
                f"invalid setting {setting}: unknown {what} kind {kind!r}; known kinds: {known}, "
                f"a `package.module:ClassName`, or an entry point of group {group}"
            )
        target = found[0].value
    loaded = _import(target, setting)
    problem = check(loaded)
    if problem is not None:
        raise ConfigError(f"invalid setting {setting}: {target} {problem}")
    return loaded


def subclass_of(base: type) -> Callable[[Any], str | None]:
    """A check that the loaded object is a concrete subclass of `base`."""

    def check(found: Any) -> str | None:
        if not isinstance(found, type) or not issubclass(found, base):
            return f"is not a subclass of {base.__module__}.{base.__qualname__}"
        missing = sorted(getattr(found, "__abstractmethods__", ()))
        if missing:
            return f"does not implement {', '.join(missing)}"
        return None

    return check


def has_methods(*names: str) -> Callable[[Any], str | None]:
    """A check that the loaded object is a class with each of `names` callable on it."""

    def check(found: Any) -> str | None:
        if not isinstance(found, type):
            return "is not a class"
        missing = [name for name in names if not callable(getattr(found, name, None))]
        return f"lacks {', '.join(missing)}" if missing else None

    return check
