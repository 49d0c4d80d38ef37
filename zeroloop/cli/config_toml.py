"""The effective settings written as TOML that pastes into `zeroloop.toml` as it stands.

Scalars of a table come before its sub-tables, as TOML requires; a setting that is unset
(None, which TOML cannot spell) is written as a comment so the key stays discoverable.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else json.dumps(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(str(k))} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) and bool(value)


def to_toml(data: dict[str, Any]) -> str:
    """`data` (plain JSON-like values) as a TOML document; None values become `# key = (unset)` comments."""
    lines: list[str] = []
    _table(data, (), lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(data: dict[str, Any], path: tuple[str, ...], lines: list[str]) -> None:
    if path:
        lines.extend(("", "[" + ".".join(_key(part) for part in path) + "]"))
    for name, value in data.items():
        if value is None:
            lines.append(f"# {_key(name)} = (unset)")
        elif not _is_table(value):
            lines.append(f"{_key(name)} = {_value(value)}")
    for name, value in data.items():
        if _is_table(value):
            _table(value, (*path, name), lines)
