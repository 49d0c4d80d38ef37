from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zeroloop.config import PipelineSettings, Settings, env_name, load_settings, redact
from zeroloop.errors import ConfigError


def test_defaults_fill_in_the_embedded_store_and_artifacts(settings: Settings) -> None:
    assert settings.store_url == f"sqlite:///{settings.data_dir / 'zeroloop.db'}"
    assert settings.artifacts_url == (settings.data_dir / "artifacts").as_uri()


def test_nested_environment_variables_override_defaults(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEROLOOP_EVENTS__POLL_INTERVAL_S", "0.5")
    monkeypatch.setenv("ZEROLOOP_QUEUE__CONCURRENCY_PER_CONFIG", '{"train": 2}')
    loaded = load_settings()
    assert loaded.events.poll_interval_s == 0.5
    assert loaded.queue.concurrency_per_config == {"train": 2}


def test_toml_file_is_read_and_environment_wins_over_it(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "zeroloop.toml").write_text('log_level = "DEBUG"\n[queue]\nlease_s = 12.0\nsoft_limit = 7\n')
    monkeypatch.setenv("ZEROLOOP_QUEUE__SOFT_LIMIT", "9")
    loaded = load_settings()
    assert loaded.log_level == "DEBUG"
    assert loaded.queue.lease_s == 12.0
    assert loaded.queue.soft_limit == 9


def test_invalid_value_names_the_setting_and_what_it_accepts(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZEROLOOP_QUEUE__LEASE_S", "-3")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    assert "queue.lease_s" in message
    assert "ZEROLOOP_QUEUE__LEASE_S" in message
    assert "greater than 0" in message


def test_unknown_setting_in_toml_is_refused(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "zeroloop.toml").write_text("[queue]\nleese_s = 3\n")
    with pytest.raises(ConfigError, match=r"queue\.leese_s"):
        load_settings()


def test_named_config_file_must_exist(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ZEROLOOP_CONFIG_FILE", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_settings()


def test_redaction_hides_url_passwords_and_secret_query_parameters() -> None:
    assert redact("postgresql://alice:s3cret@db:5432/zl") == "postgresql://alice:***@db:5432/zl"
    assert redact("s3://bucket/x?token=abc&region=eu") == "s3://bucket/x?token=***&region=eu"
    assert redact("sqlite:////var/lib/zl.db") == "sqlite:////var/lib/zl.db"


def test_redacted_settings_contain_no_password(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEROLOOP_STORE__URL", "postgresql://alice:s3cret@db/zl")
    shown = load_settings().redacted()
    assert "s3cret" not in repr(shown)
    assert shown["store"]["url"] == "postgresql://alice:***@db/zl"


def test_env_name_joins_sections_with_double_underscore() -> None:
    assert env_name(("events", "poll_interval_s")) == "ZEROLOOP_EVENTS__POLL_INTERVAL_S"


def test_a_config_key_sees_its_own_pipeline_and_evaluation_settings() -> None:
    settings = Settings()
    connect_four = settings.pipeline.for_key("connect_four_2p")
    variant = settings.pipeline.for_key("connect_four_2p~t1v2")
    assert (connect_four.train_after_samples, connect_four.train_samples_per_sample) == (2048, 18.0)
    assert variant == connect_four  # a variant key sees its base key's presets
    assert settings.pipeline.for_key("tic_tac_toe_2p") is settings.pipeline  # no override: the section itself
    assert settings.evaluation.for_key("connect_four_2p").gate == "none"
    assert settings.evaluation.for_key("hex_2p").gate == "non_inferior"
    own = PipelineSettings(overrides={"hex_2p": {"eval_games": 20}, "hex_2p~t1v1": {"eval_games": 16}})
    assert (own.for_key("hex_2p").eval_games, own.for_key("hex_2p~t1v1").eval_games) == (20, 16)


@pytest.mark.parametrize(
    ("section", "overrides", "message"),
    [
        ("pipeline", {"k": {"selfplay_queue_target": 3}}, r"names \['selfplay_queue_target'\], which no config key"),
        ("pipeline", {"k": {"train_after_samples": "lots"}}, r"overrides\['k'\]: train_after_samples: Input should"),
        ("pipeline", {"k": {"eval_games": 2, "min_eval_games": 5}}, r"min_eval_games \(5\) must not exceed"),
        ("evaluation", {"k": {"gate": "maybe"}}, r"overrides\['k'\]: gate: Input should be"),
        ("pipeline", {"k": {"min_eval_games": 30}, "k~t1v1": {"eval_games": 20}}, r"overrides\['k~t1v1'\]: .*must not"),
    ],
)
def test_a_bad_per_key_override_is_refused_naming_it(section: str, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings(**{section: {"overrides": overrides}})
