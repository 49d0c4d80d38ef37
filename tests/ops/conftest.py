"""Fixtures of the operations tests."""

from __future__ import annotations

import time

import pytest

from tests.helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at the real time, so files written now have sensible ages against it."""
    return FakeClock(time.time())
