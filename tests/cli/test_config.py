"""`zeroloop config` prints TOML that reads back as the very same settings."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zeroloop.cli.config_toml import to_toml
from zeroloop.cli.main import app
from zeroloop.config import load_settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in list(os.environ):
        if key.startswith("ZEROLOOP_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_config_output_pastes_into_zeroloop_toml_and_loads_back(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZEROLOOP_DATA_DIR", str(clean_env / "data"))
    monkeypatch.setenv("ZEROLOOP_QUEUE__LEASE_S", "120")
    monkeypatch.setenv("ZEROLOOP_CLUSTER__LABELS", '["gpu", "fast"]')
    expected = load_settings()
    result = CliRunner().invoke(app, ["config"], terminal_width=80)
    assert result.exit_code == 0, result.output
    parsed = tomllib.loads(result.output)
    assert parsed["store"]["url"] == expected.store_url
    assert parsed["queue"]["lease_s"] == 120.0
    assert parsed["workload"]["overrides"]["tic_tac_toe_2p"]["train_steps"] > 0
    assert "# command = (unset)" in result.output
    for key in list(os.environ):
        if key.startswith("ZEROLOOP_"):
            monkeypatch.delenv(key)
    (clean_env / "zeroloop.toml").write_text(result.output)
    assert load_settings().redacted() == expected.redacted()


def test_config_json_is_plain_json(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEROLOOP_DATA_DIR", str(clean_env / "data"))
    result = CliRunner().invoke(app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    assert '"store": {' in result.output


def test_to_toml_orders_tables_after_scalars_and_quotes_odd_keys() -> None:
    text = to_toml({"section": {"inner": {"x": 1}, "y": 2.5, "odd key": "v"}, "top": True, "none": None, "e": {}})
    assert tomllib.loads(text) == {"section": {"inner": {"x": 1}, "y": 2.5, "odd key": "v"}, "top": True, "e": {}}
    assert text.index("top = true") < text.index("[section]") < text.index("[section.inner]")
    assert "# none = (unset)" in text
    assert tomllib.loads(to_toml({"f": float("inf"), "g": -0.0}))["f"] == float("inf")
    with pytest.raises(TypeError, match="cannot write"):
        to_toml({"bad": object()})
