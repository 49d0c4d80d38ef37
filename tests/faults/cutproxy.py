"""A TCP proxy on loopback that can cut its connections mid-transfer: an object store endpoint that flaps.

Put it in front of the moto S3 server and point `endpoint_url` at it. While `cut_after`
is set, each connection is closed (both ways, with a reset) once the client has sent
that many bytes through it: an upload dies half way, as when a link drops.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit

ACCEPT_POLL_S = 0.1  # how often the accepting thread looks whether the proxy closed (seconds)
IO_TIMEOUT_S = 30.0  # a connection idle this long is dropped (seconds)
_CHUNK = 65536


class CutProxy:
    """Forwards loopback connections to `upstream` (http://host:port); cuts them when told to."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", int(parts.port or 80))
        self.cut_after: int | None = None  # bytes from the client per connection before it is cut; None: never
        self.cuts = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(ACCEPT_POLL_S)
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The endpoint URL clients use."""
        return f"http://127.0.0.1:{self._server.getsockname()[1]}"

    def close(self) -> None:
        """Stop accepting and wait for the accepting thread."""
        self._closed.set()
        self._thread.join(timeout=10)
        self._server.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=IO_TIMEOUT_S)
        except OSError:
            client.close()
            return
        client.settimeout(IO_TIMEOUT_S)
        limit = self.cut_after
        back = threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True)
        back.start()
        self._pipe(client, upstream, limit)
        back.join(timeout=IO_TIMEOUT_S)

    def _pipe(self, source: socket.socket, target: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while chunk := source.recv(_CHUNK):
                if limit is not None and sent + len(chunk) > limit:
                    self.cuts += 1
                    for sock in (source, target):  # a reset, not a clean close: the link dropped
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    break
                target.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with suppress(OSError):
                    sock.close()


@contextmanager
def cut_proxy(upstream: str) -> Iterator[CutProxy]:
    """A proxy to `upstream` while the block runs."""
    proxy = CutProxy(upstream)
    try:
        yield proxy
    finally:
        proxy.close()
