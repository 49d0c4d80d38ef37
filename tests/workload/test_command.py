"""The command adapter with small Python scripts standing in for a user's engine."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from zeroloop.config import WorkloadSettings
from zeroloop.errors import ConfigError, WorkloadError
from zeroloop.workload.command import CommandWorkload
from zeroloop.workload.factory import make_workload
from zeroloop.workload.protocol import (
    EvaluateRequest,
    ExportRequest,
    FileKind,
    Player,
    SelfplayRequest,
    TrainRequest,
    file_sha256,
)

PY = sys.executable

SELFPLAY = """
import sys, numpy as np
out, games = sys.argv[1], int(sys.argv[2])
print("playing", games, "games")
print("done")
np.savez(out, num_games=np.asarray(games), obs=np.zeros((games, 2)))
"""
EXPORT = """
import sys, numpy as np
out, inputs = sys.argv[1], sys.argv[2:]
np.savez(out, inputs=np.asarray(len(inputs)))
"""
TRAIN = """
import sys
open(sys.argv[1], "wb").write(b"weights")
"""
EVALUATE = """
import sys, json
json.dump({"wins": 3, "draws": 1, "losses": 2, "candidate": sys.argv[2]}, open(sys.argv[1], "w"))
"""


def _toml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "commands.toml"
    path.write_text(body)
    return path


def _script(tmp_path: Path, name: str, code: str) -> str:
    path = tmp_path / name
    path.write_text(code)
    return str(path)


@pytest.fixture
def engine(tmp_path: Path) -> CommandWorkload:
    s, e, t, v = (
        _script(tmp_path, f"{n}.py", c) for n, c in [("s", SELFPLAY), ("e", EXPORT), ("t", TRAIN), ("v", EVALUATE)]
    )
    path = _toml(
        tmp_path,
        f"""
[selfplay]
command = "{PY} {s} {{output}} {{games}}"
timeout_s = 60

[export]
command = "{PY} {e} {{output}} {{inputs}}"

[train]
command = "{PY} {t} {{output}} --window={{window}} --steps={{steps}}"

[evaluate]
command = "{PY} {v} {{output}} {{candidate}} {{opponent}}"
""",
    )
    return CommandWorkload(path, default_timeout_s=60)


def test_all_operations_run_and_verify(
    engine: CommandWorkload, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="zeroloop.workload.command")
    batch = tmp_path / "out dir with spaces.npz"
    evidence = engine.selfplay(SelfplayRequest("ringrift_2p", batch, games=7))
    assert evidence.counts["num_games"] == 7
    assert evidence.counts["samples"] == 7  # the leading axis of `obs`: what the pipeline counts toward training
    assert evidence.outputs[0].sha256 == file_sha256(batch)
    assert evidence.outputs[0].kind is FileKind.GAME_BATCH
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.endswith("| playing 7 games") for line in lines)
    assert any(line.endswith("| done") for line in lines)

    window = tmp_path / "window.npz"
    engine.export(ExportRequest("ringrift_2p", (batch, batch, batch), window, window_samples=10))
    with np.load(window) as data:
        assert int(data["inputs"]) == 3

    model = tmp_path / "model.bin"
    evidence = engine.train(TrainRequest("ringrift_2p", window, model))
    assert evidence.outputs[0].size_bytes == len(b"weights")

    result = tmp_path / "match.json"
    evidence = engine.evaluate(EvaluateRequest("ringrift_2p", Player.of_model(model), Player("random"), result, 6))
    assert evidence.counts == {"wins": 3.0, "draws": 1.0, "losses": 2.0}
    assert json.loads(result.read_text())["candidate"] == str(model)


def test_exit_zero_without_output_fails_naming_the_file(tmp_path: Path) -> None:
    path = _toml(tmp_path, f'[train]\ncommand = "{PY} -c pass {{output}}"\n')
    with pytest.raises(WorkloadError, match=r"did not write its model output .*missing\.pt"):
        CommandWorkload(path, 60).train(TrainRequest("x_2p", tmp_path / "w.npz", tmp_path / "missing.pt"))


def test_unparseable_outputs_fail(tmp_path: Path) -> None:
    bad_npz = "open(__import__('sys').argv[1], 'w').write('not npz')"
    bad_json = "open(__import__('sys').argv[1], 'w').write('{{{{not json')"
    path = _toml(
        tmp_path,
        f'[selfplay]\ncommand = "{PY} -c \\"{bad_npz}\\" {{output}}"\n'
        f'[evaluate]\ncommand = "{PY} -c \\"{bad_json}\\" {{output}}"\n',
    )
    engine = CommandWorkload(path, 60)
    with pytest.raises(WorkloadError, match=r"b\.npz is truncated or corrupt"):
        engine.selfplay(SelfplayRequest("x_2p", tmp_path / "b.npz", games=1))
    with pytest.raises(WorkloadError, match=r"r\.json, which is not valid JSON"):
        engine.evaluate(EvaluateRequest("x_2p", Player("random"), Player("mcts"), tmp_path / "r.json", 2))


def test_nonzero_exit_reports_status_and_output(tmp_path: Path) -> None:
    code = "print('engine exploded'); raise SystemExit(3)"
    path = _toml(tmp_path, f'[selfplay]\ncommand = "{PY} -c \\"{code}\\""\n')
    with pytest.raises(WorkloadError, match=r"exited with status 3; last output: engine exploded"):
        CommandWorkload(path, 60).selfplay(SelfplayRequest("x_2p", tmp_path / "b.npz", games=1))


def test_timeout_kills_the_command(tmp_path: Path) -> None:
    path = _toml(tmp_path, f'[selfplay]\ntimeout_s = 0.3\ncommand = "{PY} -c \\"import time; time.sleep(30)\\""\n')
    with pytest.raises(WorkloadError, match=r"ran past its timeout of 0.3 s"):
        CommandWorkload(path, 60).selfplay(SelfplayRequest("x_2p", tmp_path / "b.npz", games=1))


def test_missing_program_is_a_clear_error(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[selfplay]\ncommand = "/no/such/engine {output}"\n')
    with pytest.raises(WorkloadError, match="cannot start '/no/such/engine'"):
        CommandWorkload(path, 60).selfplay(SelfplayRequest("x_2p", tmp_path / "b.npz", games=1))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[train]\ncommand = "run {output} {modle}"\n', r"unknown placeholder \{modle\}; allowed: \{config_key\}"),
        ('[train]\ncommand = "run {games}"\n', r"\[train\] uses unknown placeholder \{games\}"),
        ('[train]\ncommand = "run {output"\n', r"malformed placeholder in '\{output'"),
        ('[train]\ncommand = "run {output:>5}"\n', r"placeholder \{output:>5\} must be a plain name"),
        ('[train]\ncommand = "run {}"\n', r"placeholder \{\} must be a plain name"),
        ('[train]\ncmd = "run"\n', r"unknown keys \['cmd'\]"),
        ('[training]\ncommand = "run"\n', r"unknown sections \['training'\]"),
        ('[train]\ncommand = "run"\ntimeout_s = 0\n', r"timeout_s must be positive"),
        ('[train\ncommand = "run"\n', r"cannot read command file"),
    ],
)
def test_bad_command_files_are_refused_at_load(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(WorkloadError, match=message):
        CommandWorkload(_toml(tmp_path, body), 60)


def test_unconfigured_operation_is_named(tmp_path: Path) -> None:
    engine = CommandWorkload(_toml(tmp_path, '[train]\ncommand = "run {output}"\n'), 60)
    with pytest.raises(WorkloadError, match=r"has no \[export\] section"):
        engine.export(ExportRequest("x_2p", (), tmp_path / "w.npz", 10))


def test_escaped_braces_pass_through(tmp_path: Path) -> None:
    code = "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"
    path = _toml(tmp_path, f"""[evaluate]\ncommand = "{PY} -c \\"{code}\\" {{output}} '{{{{\\"wins\\": 1}}}}'"\n""")
    result = tmp_path / "r.json"
    CommandWorkload(path, 60).evaluate(EvaluateRequest("x_2p", Player("random"), Player("random"), result, 2))
    assert json.loads(result.read_text()) == {"wins": 1}


def test_factory_picks_the_workload(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[train]\ncommand = "run {output}"\n')
    assert isinstance(make_workload(WorkloadSettings(kind="command", command_file=path)), CommandWorkload)
    with pytest.raises(ConfigError, match="command_file is not set"):
        WorkloadSettings(kind="command")
    with pytest.raises(ConfigError, match="does not exist"):
        WorkloadSettings(kind="command", command_file=tmp_path / "missing.toml")
    assert type(make_workload(WorkloadSettings())).__name__ == "AlphaZeroWorkload"
