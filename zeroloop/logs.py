"""Where a process's log records go, and how they read: never a terminal render in a file.

`configure(settings, terminal)` installs one root handler:

- `logs.file` set: that file, rotated at `logs.max_bytes` (bytes) keeping `logs.backups`
  old files, in plain or JSON lines (`logs.format`); nothing goes to stderr;
- else stderr: rich lines when stderr is a terminal and the format is plain, plain or JSON
  lines otherwise (a pipe, a file the shell redirected to, a service manager's journal).

A plain line is `<UTC time> <LEVEL> <logger>: <message>`; a JSON line holds time, level,
logger and message, the exception if any, and trace_id and span_id when it was logged
inside a span (see zeroloop.tracing), so logs and traces can be joined.
"""

from __future__ import annotations

import json
import logging
import time
from logging.handlers import RotatingFileHandler
from typing import Any

from rich.console import Console
from rich.logging import RichHandler

from zeroloop.config import LogSettings, Settings
from zeroloop.errors import ConfigError
from zeroloop.tracing import current_ids

# Libraries that narrate at INFO what zeroloop reports itself: alembic every migration context.
_QUIETER = ("alembic",)


def _utc(created: float) -> str:
    """An epoch time as ISO 8601 UTC with milliseconds."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{whole}.{int(created % 1 * 1000):03d}Z"


class PlainFormatter(logging.Formatter):
    """`<UTC time> <LEVEL> <logger>: <message>`, then the traceback if any; never padded or wrapped."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line (more only for a traceback)."""
        line = f"{_utc(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message; exception, trace_id and span_id when there are."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (newlines inside strings are escaped)."""
        body: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        ids = current_ids()  # formatted in the logging thread: the span active where the record was made
        if ids is not None:
            body["trace_id"], body["span_id"] = ids
        return json.dumps(body, default=str)


class ConsoleLines(logging.Handler):
    """Prints each record through a rich Console as the formatted text, unwrapped, unpadded, without markup.

    Through the Console rather than to its file, so the lines stay out of the way of a live
    display on that console (see zeroloop.cli.quickstart.logs_through).
    """

    def __init__(self, console: Console) -> None:
        """Print to `console`."""
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        """Print one record; a failure goes to logging's own error report."""
        try:
            text = self.format(record)
            self.console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging.Handler's contract: report, never raise
            self.handleError(record)


def formatter(options: LogSettings) -> logging.Formatter:
    """The formatter of `logs.format` for files and pipes."""
    return JsonFormatter() if options.format == "json" else PlainFormatter()


def handler(options: LogSettings, terminal: Console) -> logging.Handler:
    """The one handler the settings ask for; `terminal` is the stderr console rich lines go to."""
    if options.file is not None:
        try:
            options.file.parent.mkdir(parents=True, exist_ok=True)
            chosen: logging.Handler = RotatingFileHandler(
                options.file, maxBytes=options.max_bytes, backupCount=options.backups, encoding="utf-8"
            )
        except OSError as exc:
            raise ConfigError(f"cannot open the log file {options.file}: {exc.strerror or exc}; fix logs.file") from exc
    elif terminal.is_terminal and options.format == "plain":
        chosen = RichHandler(console=terminal, show_path=False)
        # Rich draws the time and level itself: the text is the logger and the message. Set here, so
        # basicConfig gives it no formatter of its own (the first lines once read `INFO INFO:zeroloop...`).
        chosen.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        return chosen
    else:
        chosen = ConsoleLines(terminal)
    chosen.setFormatter(formatter(options))
    return chosen


def configure(settings: Settings, terminal: Console) -> None:
    """Send this process's log records where `settings.logs` says, at `settings.log_level`."""
    logging.basicConfig(level=settings.log_level, handlers=[handler(settings.logs, terminal)], force=True)
    level = max(logging.WARNING, logging.getLevelName(settings.log_level))
    for name in _QUIETER:
        logging.getLogger(name).setLevel(level)
