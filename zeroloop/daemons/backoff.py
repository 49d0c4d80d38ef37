"""Restart backoff and crash-loop detection, as a pure object driven by the manager's clock.

Delays double from `restart_initial_s` up to `restart_max_s`; a daemon that stayed up
`restart_reset_after_s` before crashing starts again from the first delay. When
`crash_loop_restarts` restarts fall within `crash_loop_window_s`, the next crash is a
crash loop: the manager marks the daemon FAILED instead of restarting it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from zeroloop.config import DaemonSettings


@dataclass
class RestartTracker:
    """The restart history of one daemon (all times epoch seconds, delays seconds)."""

    settings: DaemonSettings
    consecutive: int = 0
    restarts: deque[float] = field(default_factory=deque)
    delays: list[float] = field(default_factory=list)

    def on_crash(self, now: float, started_at: float | None) -> float | None:
        """The delay before the next restart, or None when this crash completes a crash loop."""
        if started_at is not None and now - started_at >= self.settings.restart_reset_after_s:
            self.consecutive = 0  # it ran healthy long enough: this is a fresh failure, not a loop
        window_start = now - self.settings.crash_loop_window_s
        while self.restarts and self.restarts[0] < window_start:
            self.restarts.popleft()
        if len(self.restarts) >= self.settings.crash_loop_restarts:
            return None
        delay = min(self.settings.restart_initial_s * 2.0**self.consecutive, self.settings.restart_max_s)
        self.consecutive += 1
        self.restarts.append(now)
        self.delays.append(delay)
        return delay

    def reset(self) -> None:
        """Forget the history (after a person resets a failed daemon)."""
        self.consecutive = 0
        self.restarts.clear()
