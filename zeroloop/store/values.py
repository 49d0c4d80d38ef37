"""What the store accepts in a value, the same on both backends.

PostgreSQL refuses NUL characters in text and in JSON strings, SQLite stores them;
rather than let the backends differ (or a driver error escape), the boundaries that take
values from users and other code (publish, enqueue, complete, a pipeline's config key)
check them here first and raise the caller's own error type. JSON documents also have
a size limit (bytes of their compact encoding), so a runaway payload is refused at the
producer instead of slowing every reader of the log or the queue.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from zeroloop.errors import ZeroloopError

NUL = "\x00"


def check_text(value: str | None, what: str, error: Callable[[str], ZeroloopError]) -> None:
    """Raise `error` naming `what` when `value` holds a NUL character or an unpaired surrogate."""
    if value is None:
        return
    if NUL in value:
        raise error(f"{what} contains a NUL character (\\x00), which the store cannot keep: remove it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"{what} contains an unpaired UTF-16 surrogate, which is not valid text: remove it") from None


def check_json(value: Any, what: str, max_bytes: int, error: Callable[[str], ZeroloopError]) -> int:
    """Check a JSON document's strings and its encoded size; return its size (bytes).

    Raise `error` naming `what` when it holds a NUL in a key or string, is not JSON
    (NaN, infinities, other types), or encodes to more than `max_bytes` bytes.
    """
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise error(f"{what} is not a JSON document: {exc}") from None
    size = len(text)  # json.dumps escapes non-ASCII, so characters are bytes
    if size > max_bytes:
        raise error(
            f"{what} is {size} bytes of JSON, more than the limit of {max_bytes}: store large data as an "
            "artifact and pass its sha256, or raise the max_payload_bytes setting"
        )
    # A NUL or a lone UTF-16 surrogate shows in the escaped text as \u0000 or \udXXX; only
    # then is the document walked to find (and name) the bad string.
    if "\\u0000" in text or "\\ud" in text:
        _walk(value, what, error)
    return size


def _walk(value: Any, what: str, error: Callable[[str], ZeroloopError]) -> None:
    pending = [value]  # iterative: a deeply nested document must not exhaust the stack
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            check_text(item, what, error)
        elif isinstance(item, dict):
            for key, inner in item.items():
                check_text(str(key), f"{what} (a key)", error)
                pending.append(inner)
        elif isinstance(item, list | tuple):
            pending.extend(item)
