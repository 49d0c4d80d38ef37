"""The command provider keeps the provider contract through a fake provider CLI, and refuses bad input clearly.

The fake CLI is a small Python script the tests write into tmp_path: it keeps its
machines in a JSON file and really runs each one as a detached process group, so a
launch and a terminate are observable from outside.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.fleet.providers.contract import ProviderContract, wait_until
from zeroloop.config import PoolSettings
from zeroloop.errors import ConfigError
from zeroloop.fleet.providers.base import LaunchSpec, MachineState, ProviderError
from zeroloop.fleet.providers.command import CommandProvider

FAKE_CLI = textwrap.dedent(
    '''
    """A fake provider CLI: `fake STATE VERB ARGS...`, machines kept in the JSON file STATE."""
    import json, os, signal, subprocess, sys, time

    state_path, verb, *args = sys.argv[1:]

    def load():
        if not os.path.exists(state_path):
            return {"next": 1, "machines": {}}
        with open(state_path) as handle:
            return json.load(handle)

    def save(state):
        with open(state_path + ".tmp", "w") as handle:
            json.dump(state, handle)
        os.replace(state_path + ".tmp", state_path)

    def alive(machine):
        import psutil
        try:
            process = psutil.Process(machine["pid"])
            return process.create_time() == machine["started"] and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    if verb == "launch":
        pool, node_id, command, env_file = args
        import psutil
        state = load()
        provider_id = "fake-%d" % state["next"]
        state["next"] += 1
        process = subprocess.Popen(
            ["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )
        names = os.environ["ZEROLOOP_WORKER_ENV_NAMES"].split(",")
        env_file_text = open(env_file).read() if env_file else None
        state["machines"][provider_id] = {
            "pid": process.pid, "started": psutil.Process(process.pid).create_time(), "pool": pool,
            "node_id": node_id, "argv": sys.argv, "env": {name: os.environ[name] for name in names},
            "env_file": env_file, "env_file_text": env_file_text, "terminated": False,
        }
        save(state)
        print(json.dumps({"provider_id": provider_id, "host": "127.0.0.1"}))
    elif verb == "terminate":
        machine = load()["machines"].get(args[0])
        if machine is None or not alive(machine):
            sys.exit("no such instance: " + args[0])
        os.killpg(machine["pid"], signal.SIGTERM)
    elif verb == "list":
        listed = [
            {"provider_id": provider_id, "state": "running" if alive(m) else "gone", "node_id": m["node_id"],
             "detail": "pid %d" % m["pid"]}
            for provider_id, m in load()["machines"].items() if m["pool"] == args[0]
        ]
        print(json.dumps(listed))
    elif verb == "offers":
        print(json.dumps([{"name": "fake-a100", "gpus": 1, "gpu_type": "A100", "memory_gb": 80,
                           "price_per_hour": 1.5, "spot": True, "labels": ["gpu"], "region": "ignored"}]))
    elif verb == "say":
        print(args[0])
    elif verb == "fail":
        sys.exit("quota exceeded for " + args[0])
    elif verb == "hang":
        child = subprocess.Popen(["sleep", "60"])
        with open(state_path + ".hang", "w") as handle:
            handle.write(str(child.pid))
        time.sleep(60)
    '''
)


def fake_cli(tmp_path: Path) -> str:
    """Write the fake CLI into tmp_path; the command prefix that runs it on a state file there."""
    script = tmp_path / "fakecloud.py"
    script.write_text(FAKE_CLI)
    return shlex.join([sys.executable, str(script), str(tmp_path / "machines.json")])


def options(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    fake = fake_cli(tmp_path)
    found: dict[str, Any] = {
        "launch": f"{fake} launch {{pool}} {{node_id}} {{command}} ''",
        "terminate": f"{fake} terminate {{provider_id}}",
        "list": f"{fake} list {{pool}}",
        "offers": f"{fake} offers",
        "timeout_s": 30,
    }
    found.update(overrides)
    return found


def provider(tmp_path: Path, name: str = "fake", **overrides: Any) -> CommandProvider:
    pool = PoolSettings(kind="command", max_nodes=2, price_per_hour=0.5, options=options(tmp_path, **overrides))
    return CommandProvider(name, pool)


def spec(env: dict[str, str] | None = None) -> LaunchSpec:
    return LaunchSpec(
        node_id="n1",
        pool="fake",
        profile="selfplay",
        argv=(sys.executable, "-c", "import time; time.sleep(600)"),
        env=env or {},
    )


def state(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "machines.json").read_text())
    return data


class TestCommandContract(ProviderContract):
    settle_s = 10.0

    @pytest.fixture
    def provider(self, tmp_path: Path) -> CommandProvider:
        return provider(tmp_path)


def test_the_worker_environment_reaches_the_launch_command_but_never_its_command_line(tmp_path: Path) -> None:
    fake = provider(tmp_path)
    secret = "postgresql://zl:s3cret-pw@db.example:5432/zl"
    launched = fake.launch(spec({"ZEROLOOP_STORE__URL": secret, "ZEROLOOP_CLUSTER__NODE_ID": "n1"}))
    try:
        machine = state(tmp_path)["machines"][launched.provider_id]
        assert machine["env"] == {
            "ZEROLOOP_STORE__URL": secret,
            "ZEROLOOP_CLUSTER__NODE_ID": "n1",
            "ZEROLOOP_CLUSTER__POOL": "fake",
        }
        assert not any("s3cret" in word for word in machine["argv"])
        assert machine["argv"][-2] == shlex.join(spec().argv)  # {command} stays one argument
        assert launched.host == "127.0.0.1"
        assert launched.price_per_hour == 0.5  # not printed: the pool's own price
    finally:
        fake.terminate(launched.provider_id)


def test_env_file_holds_the_worker_environment_privately_and_is_removed_afterwards(tmp_path: Path) -> None:
    fake_prefix = fake_cli(tmp_path)
    fake = provider(tmp_path, launch=f"{fake_prefix} launch {{pool}} {{node_id}} {{command}} {{env_file}}")
    launched = fake.launch(spec({"ZEROLOOP_SERVER__TOKEN": "tok en"}))
    try:
        machine = state(tmp_path)["machines"][launched.provider_id]
        assert machine["env_file_text"] == "ZEROLOOP_CLUSTER__POOL=fake\nZEROLOOP_SERVER__TOKEN=tok en\n"
        assert not os.path.exists(machine["env_file"])
        assert "tok en" not in machine["argv"]
    finally:
        fake.terminate(launched.provider_id)


def test_offers_come_from_the_offers_command_or_else_from_the_pool(tmp_path: Path) -> None:
    [offer] = provider(tmp_path).offers()
    assert (offer.name, offer.gpus, offer.gpu_type, offer.spot, offer.labels) == (
        "fake-a100",
        1,
        "A100",
        True,
        ("gpu",),
    )
    assert offer.memory_bytes == 80 * 2**30
    assert offer.price_per_hour == 1.5
    [own] = provider(tmp_path, offers=None).offers()
    assert own.name == "fake:training_node"
    assert own.price_per_hour == 0.5


def test_terminate_of_a_machine_still_listed_reports_the_failure(tmp_path: Path) -> None:
    fake_prefix = fake_cli(tmp_path)
    fake = provider(tmp_path)
    launched = fake.launch(spec())
    failing = provider(tmp_path, terminate=f"{fake_prefix} fail {{provider_id}}")
    try:
        with pytest.raises(
            ProviderError, match=rf"terminate command .* exited 1: quota exceeded for {launched.provider_id}"
        ):
            failing.terminate(launched.provider_id)
        assert any(m.provider_id == launched.provider_id and m.state is MachineState.RUNNING for m in fake.machines())
    finally:
        fake.terminate(launched.provider_id)
    assert wait_until(lambda: all(m.state is MachineState.GONE for m in fake.machines()), 10)
    fake.terminate(launched.provider_id)  # the fake CLI fails for a gone machine; the list says it is gone


def test_an_unknown_placeholder_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"providers\.vast\.options\.terminate: .*unknown placeholder \{node_id\}"
    ) as caught:
        provider(tmp_path, name="vast", terminate="vastai destroy instance {node_id}")
    assert "{provider_id}" in str(caught.value)  # it says what may be used instead
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"options\.launch: .*unknown placeholder \{gpu\}"):
        provider(tmp_path, launch="vastai create {gpu}")
    with pytest.raises(ConfigError, match=r"options\.list: .*cannot be split into words"):
        provider(tmp_path, list="vastai show 'instances")
    with pytest.raises(ConfigError, match=r"options\.list: .*must be a plain \{name\}"):
        provider(tmp_path, list="vastai show {pool!r}")
    with pytest.raises(ConfigError, match=r"options\.list: .*placeholder \{id: \.id\} must be a plain \{name\}"):
        provider(tmp_path, list="jq '{id: .id}'")
    with pytest.raises(ConfigError, match=r"options\.list: .*malformed placeholder in '.x}'"):
        provider(tmp_path, list="jq '.x}'")
    provider(tmp_path, list="jq '{{id: .id}}' {pool}")  # doubled braces are literal


def test_a_missing_binary_is_one_clear_line_at_check_and_at_launch(tmp_path: Path) -> None:
    missing = provider(tmp_path, name="vast", launch="vastai-not-installed create {node_id}")
    with pytest.raises(ProviderError, match=r"launch command's program 'vastai-not-installed' is not on PATH"):
        missing.check()
    with pytest.raises(ProviderError, match=r"launch command `vastai-not-installed create n1` cannot be started"):
        missing.launch(spec())
    not_executable = tmp_path / "plain.txt"
    not_executable.write_text("")
    with pytest.raises(ProviderError, match=r"list command's program .*plain\.txt' is not an executable file"):
        provider(tmp_path, list=f"{not_executable} {{pool}}").check()


def test_output_that_is_not_json_names_the_command_and_what_came(tmp_path: Path) -> None:
    fake_prefix = fake_cli(tmp_path)
    fake = provider(tmp_path, list=f"{fake_prefix} say 'Instances: none'")
    with pytest.raises(ProviderError) as caught:
        fake.machines()
    message = str(caught.value)
    assert "command pool fake: list command" in message
    assert "did not print JSON" in message
    assert "a JSON array of" in message
    assert message.endswith("got: Instances: none")


def test_output_of_the_wrong_shape_says_what_was_expected(tmp_path: Path) -> None:
    fake_prefix = fake_cli(tmp_path)
    wrong_state = provider(tmp_path, list=fake_prefix + """ say '[{{"provider_id": "i-1", "state": "up"}}]'""")
    with pytest.raises(
        ProviderError, match=r"list command .* breaks its contract \(0\.state: Input should be 'pending'"
    ):
        wrong_state.machines()
    an_object = provider(tmp_path, launch=fake_prefix + """ say '{{"id": 7}}'""")
    with pytest.raises(ProviderError, match=r'provider_id: Field required.*expected one JSON object \{"provider_id"'):
        an_object.launch(spec())
    long_output = "x" * 5000
    too_long = provider(tmp_path, list=f"{fake_prefix} say {long_output}")
    with pytest.raises(ProviderError, match=r"\(4700 more characters\)$") as caught:
        too_long.machines()
    assert len(str(caught.value)) < 1000  # a bounded excerpt, not the whole output


def test_a_non_zero_exit_shows_its_error_output(tmp_path: Path) -> None:
    fake_prefix = fake_cli(tmp_path)
    fake = provider(tmp_path, launch=f"{fake_prefix} fail {{node_id}}")
    with pytest.raises(
        ProviderError, match=r"command pool fake: launch command `.* fail n1` exited 1: quota exceeded for n1$"
    ):
        fake.launch(spec())


def test_a_command_past_its_timeout_is_killed_with_what_it_started(tmp_path: Path) -> None:
    fake_prefix = fake_cli(tmp_path)
    fake = provider(tmp_path, launch=f"{fake_prefix} hang", timeout_s=1.5)
    with pytest.raises(ProviderError, match=r"launch command .* did not finish within 1\.5 s and was killed"):
        fake.launch(spec())
    child = int((tmp_path / "machines.json.hang").read_text())

    def gone() -> bool:
        try:
            return psutil.Process(child).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    assert wait_until(gone, 10)


def test_bad_options_are_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"providers\.fake\.options\.timeout_s"):
        provider(tmp_path, timeout_s=0)
    with pytest.raises(ConfigError, match=r"providers\.fake\.options\.launch: Field required"):
        CommandProvider("fake", PoolSettings(kind="command", options={"terminate": "x", "list": "y"}))
