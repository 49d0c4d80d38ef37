from __future__ import annotations

import zeroloop


def test_the_public_surface_is_pinned() -> None:
    assert zeroloop.__all__ == [
        "App",
        "BackpressureLevel",
        "Settings",
        "ZeroloopError",
        "__version__",
        "check_backpressure",
        "get_system_health",
        "get_trace_id",
        "initialize_all_coordinators",
        "load_settings",
        "publish",
        "shutdown_all_coordinators",
        "span",
        "traced",
    ]
    for name in zeroloop.__all__:
        assert hasattr(zeroloop, name)
