"""Settings: unknown variables, settings that contradict each other, devices and command files, refused at start."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zeroloop.cli.main import app
from zeroloop.config import Settings, check_environment, load_settings
from zeroloop.errors import ConfigError, WorkloadError


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("ZEROLOOP_DATADIR", "ZEROLOOP_DATA_DIR"),
        ("ZEROLOOP_STORE_URL", "ZEROLOOP_STORE__URL"),
        ("ZEROLOOP_QUEUE__LEASE", "ZEROLOOP_QUEUE__LEASE_S"),
        ("ZEROLOOP_CONFIG", "ZEROLOOP_CONFIG_FILE"),
    ],
)
def test_a_mistyped_variable_is_refused_with_the_closest_real_one(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, name: str, suggestion: str
) -> None:
    monkeypatch.setenv(name, "x")
    with pytest.raises(ConfigError, match=f"unknown environment variable {name}: did you mean {suggestion}\\?"):
        load_settings()


def test_an_unlike_variable_is_refused_without_a_guess() -> None:
    with pytest.raises(ConfigError, match="ZEROLOOP_BANANA: zeroloop has no such setting"):
        check_environment({"ZEROLOOP_BANANA": "1"})


def test_real_variables_and_the_allowed_extras_pass() -> None:
    check_environment(
        {
            "ZEROLOOP_DATA_DIR": "/tmp/x",
            "ZEROLOOP_STORE__URL": "sqlite:///x.db",
            "ZEROLOOP_STORE": "{}",
            "ZEROLOOP_IDLE__THRESHOLD_S__VAST": "10",
            "ZEROLOOP_CONFIG_FILE": "z.toml",
            "ZEROLOOP_TEST_POSTGRES_URL": "postgresql://x/y",
            "zeroloop_log_level": "DEBUG",
            "PATH": "/bin",
        }
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cluster": {"heartbeat_interval_s": 10, "node_lost_after_s": 15}}, "node_lost_after_s .* at least 2 x"),
        ({"queue": {"lease_s": 2, "reaper_interval_s": 5}}, "reaper_interval_s .* must not exceed lease_s"),
        ({"daemons": {"restart_initial_s": 60, "restart_max_s": 10}}, "restart_initial_s .* restart_max_s"),
        ({"events": {"retry_initial_s": 60, "retry_max_s": 10}}, "retry_initial_s .* retry_max_s"),
        ({"pipeline": {"eval_games": 4, "min_eval_games": 10}}, "min_eval_games .* eval_games"),
        ({"workload": {"sprt_elo0": 40, "sprt_elo1": 10}}, "sprt_elo0 .* below sprt_elo1"),
        ({"workload": {"device": "banana"}}, "'banana' is not a torch device"),
        ({"workload": {"device": "cuda:x"}}, "not a torch device"),
        ({"workload": {"kind": "command"}}, "command_file is not set"),
        ({"events": {"max_payload_bytes": 10}}, "max_payload_bytes"),
        ({"cluster": {"node_id": "a\x00b"}}, "control characters"),
        ({"cluster": {"labels": ["gpu\n"]}}, "control characters"),
        ({"pipeline": {"baselines": ["random", "alphabeta"]}}, r"unknown baselines \['alphabeta'\]: choose random"),
        ({"pipeline": {"baselines": ["mctsbot-0"]}}, r"unknown baselines \['mctsbot-0'\]"),
        ({"pipeline": {"baselines": ["mctsbot-30", "mctsbot-30"]}}, "a baseline is named twice"),
    ],
)
def test_settings_that_contradict_each_other_are_refused(settings: Settings, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(**overrides)


def test_a_heartbeat_twice_within_the_lost_timeout_is_accepted(settings: Settings) -> None:
    loaded = load_settings(cluster={"heartbeat_interval_s": 10, "node_lost_after_s": 20}, workload={"device": "cuda:7"})
    assert loaded.cluster.node_lost_after_s == 20 and loaded.workload.device == "cuda:7"


def test_a_missing_or_broken_command_file_fails_zeroloop_config(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    monkeypatch.setenv("ZEROLOOP_WORKLOAD__KIND", "command")
    monkeypatch.setenv("ZEROLOOP_WORKLOAD__COMMAND_FILE", str(tmp_path / "missing.toml"))
    missing = runner.invoke(app, ["config"])
    assert isinstance(missing.exception, ConfigError) and "does not exist" in str(missing.exception)
    broken = tmp_path / "commands.toml"
    broken.write_text('[selfplay]\ncommand = "engine {output} {bogus}"\n')
    monkeypatch.setenv("ZEROLOOP_WORKLOAD__COMMAND_FILE", str(broken))
    for command in (["config"], ["doctor"]):
        result = runner.invoke(app, command)
        assert isinstance(result.exception, WorkloadError), result.output
        assert "unknown placeholder {bogus}" in str(result.exception)


def test_doctor_fails_a_gpu_this_machine_does_not_have(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    import torch

    from zeroloop.cli import doctor

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert doctor.device_problem("cuda:1") is None
    assert doctor.device_problem("cuda:7") == (
        "workload.device is cuda:7 but this machine has 2 CUDA GPU(s): cuda:0 to cuda:1"
    )
    findings = doctor.run_checks(load_settings(workload={"device": "cuda:7"}), (doctor.check_dependencies,))
    assert [f.verdict for f in findings if f.name == "device"] == [doctor.Verdict.FAIL]


def test_a_worker_refuses_to_start_on_a_missing_device(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("ZEROLOOP_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("ZEROLOOP_WORKLOAD__DEVICE", "cuda:7")
    result = CliRunner().invoke(app, ["worker"])
    assert isinstance(result.exception, ConfigError)
    assert "cuda:7 but torch sees no CUDA GPU" in str(result.exception)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[providers.x]\nkind = "nope"\n', "invalid setting providers.x.kind: unknown provider kind 'nope'"),
        ('[providers.c]\nkind = "command"\n', "providers.c.options.launch: Field required"),
        (
            '[providers.c]\nkind = "command"\n[providers.c.options]\nlaunch = "up {nonsense}"\n'
            'terminate = "down {provider_id}"\nlist = "ls {pool}"\n',
            "providers.c.options.launch: Value error, unknown placeholder {nonsense}",
        ),
        (
            '[providers.gpu]\nkind = "local"\nmin_nodes = 3\nmax_nodes = 1\n',
            r"invalid setting providers.gpu \[ZEROLOOP_PROVIDERS__GPU\]: .*max_nodes \(1\) is below min_nodes \(3\)",
        ),
        (
            '[providers.gpu]\nkind = "local"\nmin_nodez = 3\n',
            r"invalid setting providers.gpu.min_nodez \[ZEROLOOP_PROVIDERS__GPU__MIN_NODEZ\]",
        ),
        ('[providers."../evil pool"]\nkind = "local"\n', "pool name '../evil pool' is not a plain name"),
        ('[[alerts.webhooks]]\nurl = "ftp://hooks.example/t0k3n"\n', "a webhook URL must be http"),
        ('[[alerts.webhooks]]\nurl = "not a url"\n', "a webhook URL must be http"),
    ],
)
def test_every_table_is_checked_when_the_settings_are_read(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, message: str
) -> None:
    """`zeroloop config` and `zeroloop doctor` refuse what a later command would, naming the setting in one line."""
    path = tmp_path / "zeroloop.toml"
    path.write_text(toml)
    monkeypatch.setenv("ZEROLOOP_CONFIG_FILE", str(path))
    for command in (["config"], ["doctor"]):
        result = CliRunner().invoke(app, command)
        assert isinstance(result.exception, ConfigError), (command, result.output)
        text = str(result.exception)
        assert re.search(message, text), text
        assert "\n" not in text and "[ZEROLOOP_]" not in text
        assert "t0k3n" not in text  # a webhook URL is a secret: never repeated
