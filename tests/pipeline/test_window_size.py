"""The training window grows with the samples played (KataGo's taper), up to its most."""

from __future__ import annotations

from zeroloop.config import PipelineSettings
from zeroloop.pipeline.coordinator import window_size


def test_the_window_holds_everything_up_to_its_minimum_then_grows_slower_than_the_data() -> None:
    settings = PipelineSettings(window_min_samples=10_000, window_samples=100_000)
    assert window_size(0, settings) == 10_000
    assert window_size(8_000, settings) == 10_000
    sizes = [window_size(n, settings) for n in (10_000, 20_000, 50_000, 100_000, 200_000)]
    assert sizes == sorted(sizes) and sizes[0] == 10_000
    # Growing like n^0.75 with slope 0.4: 200k samples played keep about 55k, not 100k.
    assert 50_000 < window_size(200_000, settings) < 60_000
    assert window_size(10**9, settings) == 100_000


def test_a_minimum_at_the_maximum_is_a_fixed_window() -> None:
    settings = PipelineSettings(window_min_samples=100_000, window_samples=100_000)
    assert {window_size(n, settings) for n in (0, 5_000, 10**6)} == {100_000}
    assert window_size(10**6, PipelineSettings(window_samples=15)) == 15
