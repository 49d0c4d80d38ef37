"""One headless Chromium driven over its DevTools pipe: load pages, read their DOM, screenshot each chart.

Chromium's `--remote-debugging-pipe` reads DevTools commands (JSON, each ended by a NUL)
from file descriptor 3 and writes answers and events to descriptor 4. One browser serves
a whole test, so every page and every chart costs a navigation, not a browser start.
Every wait is bounded by `timeout_s`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

_TRAMPOLINE = (
    "import os, sys; ends = [int(sys.argv[1]), int(sys.argv[2])]; spare = [os.dup(fd) for fd in ends]; "
    "[(os.dup2(fd, target), os.set_inheritable(target, True)) for fd, target in zip(spare, (3, 4))]; "
    "[os.close(fd) for fd in {*ends, *spare} - {3, 4}]; os.execv(sys.argv[3], sys.argv[3:])"
)  # dup2 onto itself keeps the close-on-exec flag of a dup: hence set_inheritable
_CHART_BOXES = (
    "JSON.stringify([...document.querySelectorAll('svg.chart')].map(e => {"
    " const r = e.getBoundingClientRect();"
    " return [e.dataset.chart, r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]; }))"
)


class Browser:
    """A headless Chromium with one tab; `open(url)` loads a page and returns its DOM."""

    def __init__(self, binary: str, profile: Path, *, width: int = 1280, height: int = 1000, timeout_s: float = 90):
        self.timeout_s = timeout_s
        self.width, self.height = width, height
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        os.set_inheritable(to_browser_read, True)
        os.set_inheritable(from_browser_write, True)
        # Chromium wants the command pipe at fd 3 and the answer pipe at fd 4: a small Python trampoline
        # puts them there and execs it (no preexec_fn, which is unsafe beside the server's threads).
        self.process = subprocess.Popen(
            [
                sys.executable, "-c", _TRAMPOLINE, str(to_browser_read), str(from_browser_write), binary,
                "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--remote-debugging-pipe",
                f"--user-data-dir={profile}", "about:blank",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(to_browser_read, from_browser_write),
        )  # fmt: skip
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._ids = 0
        self._events: list[dict[str, Any]] = []
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self._call("Page.enable", session=True)
        self._resize(height)

    def _resize(self, height: int) -> None:
        metrics = {"width": self.width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self._call("Emulation.setDeviceMetricsOverride", metrics, session=True)

    def _send(self, message: dict[str, Any]) -> None:
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")

    def _next(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_browser], [], [], max(0.0, left))
            if not ready:
                raise TimeoutError(f"chromium answered nothing within {self.timeout_s} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed its pipe (exit status {self.process.poll()})")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        found: dict[str, Any] = json.loads(message)
        return found

    def _call(self, method: str, params: dict[str, Any] | None = None, *, session: bool = False) -> dict[str, Any]:
        self._ids += 1
        message: dict[str, Any] = {"id": self._ids, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        self._send(message)
        deadline = time.monotonic() + self.timeout_s
        while True:
            answer = self._next(deadline)
            if answer.get("id") == self._ids:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result
            self._events.append(answer)

    def _evaluate(self, expression: str) -> Any:
        found = self._call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True)
        return found["result"].get("value")

    def open(self, url: str) -> str:
        """Load `url`, wait for its load event, and return its DOM."""
        self._events.clear()
        self._call("Page.navigate", {"url": url}, session=True)
        deadline = time.monotonic() + self.timeout_s
        while not any(event.get("method") == "Page.loadEventFired" for event in self._events):
            self._events.append(self._next(deadline))
        dom: str = self._evaluate("document.documentElement.outerHTML")
        return dom

    def screenshot(self, path: Path) -> None:
        """The whole page as a PNG at `path`."""
        height = int(self._evaluate("document.documentElement.scrollHeight"))
        self._resize(max(height, self.height))
        try:
            shot = self._call("Page.captureScreenshot", {"format": "png"}, session=True)
        finally:
            self._resize(self.height)
        path.write_bytes(base64.b64decode(shot["data"]))

    def chart_shots(self, folder: Path, prefix: str = "") -> dict[str, Path]:
        """A PNG of each chart of the loaded page, clipped to it, in `folder`; by chart name."""
        found = {}
        for name, x, y, width, height in json.loads(self._evaluate(_CHART_BOXES)):
            clip = {"x": x, "y": y, "width": width, "height": height, "scale": 1}
            params = {"format": "png", "clip": clip, "captureBeyondViewport": True}
            shot = self._call("Page.captureScreenshot", params, session=True)
            path = folder / f"{prefix}{name}.png"
            path.write_bytes(base64.b64decode(shot["data"]))
            found[name] = path
        return found

    def close(self) -> None:
        """Ask the browser to quit; kill it if it does not within the timeout."""
        with contextlib.suppress(OSError):  # already gone: nothing to ask
            self._send({"id": self._ids + 1, "method": "Browser.close"})
        try:
            self.process.wait(timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=self.timeout_s)
        os.close(self._to_browser)
        os.close(self._from_browser)

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
