"""A user command's output, read with bounded memory and written to the log with bounded volume.

A command may print anything: 100 MB on one line, or a million lines. `CommandOutput`
reads it in chunks, logs at most `log_lines` lines of at most `line_chars` characters
each (then one line saying the rest is not logged), and keeps only the last
`tail_bytes` bytes for the error message, with a marker saying how much came before.
Memory stays within about `tail_bytes + line_chars` bytes whatever the command prints.
"""

from __future__ import annotations

import logging
from typing import IO

TAIL_BYTES = 64 * 1024  # output kept for an error message (bytes)
LOG_LINES = 1000  # lines of one command's output written to the log
LINE_CHARS = 2000  # longest line written to the log (characters; longer ones are cut with a marker)
_CHUNK = 64 * 1024  # bytes read at a time


class CommandOutput:
    """Reads one command's output: logs a bounded head of it and keeps a bounded tail."""

    def __init__(
        self,
        prefix: str,
        log: logging.Logger,
        *,
        tail_bytes: int = TAIL_BYTES,
        log_lines: int = LOG_LINES,
        line_chars: int = LINE_CHARS,
    ) -> None:
        """Lines go to `log` at INFO as '<prefix> | <line>'; the bounds are in bytes, lines and characters."""
        self.prefix = prefix
        self.log = log
        self.tail_bytes = tail_bytes
        self.log_lines = log_lines
        self.line_chars = line_chars
        self.total_bytes = 0
        self.lines = 0
        self.lines_logged = 0
        self._tail = bytearray()
        self._line = bytearray()  # the current line, at most line_chars bytes of it
        self._line_cut = 0  # bytes of the current line beyond what is kept

    def pump(self, stream: IO[bytes]) -> None:
        """Read `stream` to its end (a thread runs this while the command runs)."""
        read = getattr(stream, "read1", stream.read)
        while chunk := read(_CHUNK):
            self.feed(chunk)
        self.finish()

    def feed(self, chunk: bytes) -> None:
        """Take the next piece of output."""
        self.total_bytes += len(chunk)
        self._tail += chunk
        if len(self._tail) > self.tail_bytes:
            del self._tail[: len(self._tail) - self.tail_bytes]
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            self._keep(chunk[start:end])
            self._end_line()
            start = end + 1
        self._keep(chunk[start:])

    def finish(self) -> None:
        """End of output: log a last unterminated line, and say how much was not logged."""
        if self._line or self._line_cut:
            self._end_line()
        if self.lines > self.lines_logged:
            self.log.info(
                "%s | [output ended: %d lines, %d bytes; %d lines were not logged]",
                self.prefix,
                self.lines,
                self.total_bytes,
                self.lines - self.lines_logged,
            )

    @property
    def dropped_bytes(self) -> int:
        """Bytes of output no longer kept (before the tail)."""
        return self.total_bytes - len(self._tail)

    def tail_text(self) -> str:
        """The kept tail as text, after a marker when earlier output was dropped."""
        text = self._tail.decode("utf-8", "replace")
        if self.dropped_bytes:
            return f"[... {self.dropped_bytes} earlier bytes dropped ...]\n{text}"
        return text

    def summary(self, lines: int = 20, line_chars: int = 300) -> str:
        """The last `lines` lines of the tail, each cut to `line_chars`, joined by ' / ' for a one-line error."""
        kept = [line for line in self.tail_text().splitlines() if line.strip()][-lines:]
        shown = [line if len(line) <= line_chars else line[:line_chars] + "..." for line in kept]
        return " / ".join(shown) or "(no output)"

    def _keep(self, piece: bytes) -> None:
        room = self.line_chars - len(self._line)
        self._line += piece[:room]
        self._line_cut += max(0, len(piece) - room)

    def _end_line(self) -> None:
        self.lines += 1
        if self.lines_logged < self.log_lines:
            self.lines_logged += 1
            text = self._line.decode("utf-8", "replace").rstrip("\r")
            cut = f" [... {self._line_cut} more bytes on this line not logged]" if self._line_cut else ""
            self.log.info("%s | %s%s", self.prefix, text, cut)
            if self.lines_logged == self.log_lines:
                self.log.info("%s | [%d lines logged; the rest is not logged]", self.prefix, self.log_lines)
        self._line.clear()
        self._line_cut = 0
