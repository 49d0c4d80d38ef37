"""The Slurm provider over tiny fake sbatch/squeue/scancel/sinfo scripts: arguments, parsing, every error line."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from zeroloop.config import PoolSettings
from zeroloop.errors import ConfigError
from zeroloop.fleet.providers.base import LaunchSpec, MachineState, ProviderError
from zeroloop.fleet.providers.slurm import SQUEUE_FORMAT, SlurmProvider, parse_time_limit

SECRET = "s3cr3t-token-value"


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory first on PATH, for fake Slurm commands."""
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", f"{path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("SLURM_CONF", raising=False)
    return path


def fake(bin_dir: Path, name: str, body: str) -> Path:
    """Write the fake command `name` as a shell script."""
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def provider(tmp_path: Path, name: str = "gpu", **options: object) -> SlurmProvider:
    pool = PoolSettings(kind="slurm", gpus=2, cpus=4, memory_gb=1.5, options=options)
    return SlurmProvider(name, pool, data_dir=tmp_path)


def spec(node_id: str = "n1", argv: tuple[str, ...] = ("zeroloop", "worker", "--profile", "selfplay")) -> LaunchSpec:
    env = {"ZEROLOOP_SERVER__TOKEN": SECRET, "ZEROLOOP_CLUSTER__NODE_ID": node_id}
    return LaunchSpec(node_id, "gpu", "selfplay", argv, env)


def test_launch_passes_resources_as_arguments_and_secrets_only_through_the_environment(
    bin_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "seen"
    fake(
        bin_dir,
        "sbatch",
        f'printf "%s\\n" "$@" > {out}.args; cat > {out}.script; '
        f'echo "$ZEROLOOP_SERVER__TOKEN $ZEROLOOP_CLUSTER__POOL $SLURM_CONF" > {out}.env; echo "42;main"',
    )
    slurm = provider(
        tmp_path,
        partition="gpu",
        time_limit="1-02:00:00",
        account="proj",
        qos="high",
        workdir=str(tmp_path),
        extra_args=["--constraint=a100"],
        zeroloop="/shared/venv/bin/zeroloop",
        slurm_conf="/etc/other/slurm.conf",
    )
    launched = slurm.launch(spec())
    assert launched.provider_id == "42"
    args = (tmp_path / "seen.args").read_text().splitlines()
    assert args == [
        "--parsable",
        "--job-name=zeroloop.gpu.n1",
        f"--output={tmp_path / 'logs' / 'slurm' / 'n1'}-%j.log",
        "--open-mode=append",
        "--export=ALL",
        "--nodes=1",
        "--ntasks=1",
        "--no-requeue",
        "--cpus-per-task=4",
        "--mem=1536M",
        "--gres=gpu:2",
        "--partition=gpu",
        "--time=1-02:00:00",
        "--account=proj",
        "--qos=high",
        f"--chdir={tmp_path}",
        "--constraint=a100",
    ]
    script = (tmp_path / "seen.script").read_text()
    assert script.startswith("#!/bin/sh\n")
    assert script.rstrip().endswith("exec /shared/venv/bin/zeroloop worker --profile selfplay")
    assert SECRET not in script
    assert (tmp_path / "seen.env").read_text().split() == [SECRET, "gpu", "/etc/other/slurm.conf"]
    assert (tmp_path / "logs" / "slurm").is_dir()


def test_the_spec_sizes_win_over_the_pool_and_gres_option_over_gpus(bin_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "args"
    fake(bin_dir, "sbatch", f'printf "%s\\n" "$@" > {out}; echo 7')
    slurm = provider(tmp_path, gres="gpu:a100:1")
    sized = LaunchSpec("n2", "gpu", "selfplay", (sys.executable, "-c", "pass"), {}, gpus=8, cpus=2, memory_bytes=2**20)
    slurm.launch(sized)
    args = out.read_text().splitlines()
    assert {"--cpus-per-task=2", "--mem=1M", "--gres=gpu:a100:1"} <= set(args)
    assert not any(arg.startswith(("--partition", "--time", "--account", "--qos", "--chdir")) for arg in args)


def test_by_default_the_worker_runs_with_this_python(tmp_path: Path) -> None:
    script = provider(tmp_path).batch_script(spec())
    assert f"exec {sys.executable} -m zeroloop worker --profile selfplay" in script
    assert "exec /bin/echo 'a b'" in provider(tmp_path).batch_script(spec(argv=("/bin/echo", "a b")))


def test_a_refused_launch_is_one_line_with_slurm_message_and_no_secret(bin_dir: Path, tmp_path: Path) -> None:
    fake(bin_dir, "sbatch", 'echo "sbatch: error: bad account for $ZEROLOOP_SERVER__TOKEN\nline two" >&2; exit 1')
    with pytest.raises(ProviderError) as refused:
        provider(tmp_path).launch(spec())
    message = str(refused.value)
    assert message == "slurm pool gpu: sbatch failed (exit 1): sbatch: error: bad account for *** line two"
    fake(bin_dir, "sbatch", "echo 'Submitted batch job'")
    with pytest.raises(ProviderError, match=r"sbatch answered 'Submitted batch job', not a job id"):
        provider(tmp_path).launch(spec())


@pytest.mark.parametrize("node_id", ["two words", "line\nbreak", "50%", ""])
def test_a_node_id_that_cannot_name_a_job_is_refused_before_sbatch(bin_dir: Path, tmp_path: Path, node_id: str) -> None:
    called = tmp_path / "called"
    fake(bin_dir, "sbatch", f"touch {called}; echo 1")
    with pytest.raises(ProviderError, match=r"^slurm pool gpu: node id .* cannot be part of a job name"):
        provider(tmp_path).launch(spec(node_id))
    assert not called.exists()


def test_sbatch_missing_is_one_clear_line(bin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(bin_dir))  # nothing of Slurm's on PATH
    expected = (
        "slurm pool gpu: sbatch not found ('sbatch' is not an executable file or on PATH); "
        "install Slurm's client commands or set providers.gpu.options.sbatch"
    )
    with pytest.raises(ProviderError) as refused:
        provider(tmp_path).check()
    assert str(refused.value) == expected
    with pytest.raises(ProviderError) as refused:
        provider(tmp_path).launch(spec())
    assert str(refused.value) == expected
    for tool in ("sbatch", "squeue", "scancel"):
        fake(bin_dir, tool, "exit 0")
    with pytest.raises(ProviderError, match=r"^slurm pool gpu: sinfo not found "):
        provider(tmp_path).check()
    with pytest.raises(ProviderError, match=r"'/nowhere/squeue' is not an executable"):
        provider(tmp_path, squeue="/nowhere/squeue").machines()
    unrunnable = bin_dir / "squeue-text"
    unrunnable.write_text("not a program")
    with pytest.raises(ProviderError, match=r"^slurm pool gpu: cannot run .*squeue-text: .*Permission denied"):
        provider(tmp_path, squeue=str(unrunnable)).machines()


def test_a_log_directory_that_cannot_be_made_is_one_line(bin_dir: Path, tmp_path: Path) -> None:
    fake(bin_dir, "sbatch", "echo 1")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ProviderError, match=r"^slurm pool gpu: cannot create log directory .*a-file/logs: "):
        provider(tmp_path, log_dir=str(blocker / "logs")).launch(spec())


def test_check_names_the_partitions_slurm_knows(bin_dir: Path, tmp_path: Path) -> None:
    for tool in ("sbatch", "squeue", "scancel"):
        fake(bin_dir, tool, "exit 0")
    fake(bin_dir, "sinfo", 'printf "debug*\\ngpu\\ngpu\\n"')
    provider(tmp_path, partition="gpu").check()
    provider(tmp_path).check()
    with pytest.raises(ProviderError) as refused:
        provider(tmp_path, partition="nope").check()
    assert str(refused.value) == "slurm pool gpu: partition 'nope' does not exist (sinfo knows: debug, gpu)"
    fake(bin_dir, "sinfo", "echo 'sinfo: error: Unable to contact slurm controller' >&2; exit 1")
    with pytest.raises(ProviderError, match=r"^slurm pool gpu: sinfo failed \(exit 1\): .*Unable to contact"):
        provider(tmp_path, partition="gpu").check()


def test_squeue_lines_map_to_this_pool_machines_and_states(bin_dir: Path, tmp_path: Path) -> None:
    args = tmp_path / "squeue.args"
    lines = [
        "11|PENDING|Resources||zeroloop.gpu.n1",
        "12|RUNNING|None|node07|zeroloop.gpu.n2",
        "13|COMPLETING|None|node07|zeroloop.gpu.n3.with.dots",
        "14|CANCELLED|None|node07|zeroloop.gpu.n4",
        "15|NODE_FAIL|NodeDown|node08|zeroloop.gpu.n5",
        "16|SOMETHING_NEW|None||zeroloop.gpu.n6",
        "17|RUNNING|None|node07|zeroloop.gpu2.other-pool",
        "18|RUNNING|None|node07|my own | job",
        "19_3|RUNNING|None|node07|zeroloop.gpu.an-array-task",
        "",
    ]
    fake(bin_dir, "squeue", f'printf "%s\\n" "$@" > {args}; printf "%s\\n" ' + " ".join(f"'{x}'" for x in lines))
    found = {m.provider_id: (m.state, m.node_id, m.detail) for m in provider(tmp_path).machines()}
    assert found == {
        "11": (MachineState.PENDING, "n1", "PENDING (Resources)"),
        "12": (MachineState.RUNNING, "n2", "RUNNING on node07"),
        "13": (MachineState.STOPPING, "n3.with.dots", "COMPLETING on node07"),
        "14": (MachineState.GONE, "n4", "CANCELLED on node07"),
        "15": (MachineState.FAILED, "n5", "NODE_FAIL on node08"),
        "16": (MachineState.FAILED, "n6", "SOMETHING_NEW"),
    }
    assert args.read_text().splitlines() == ["--noheader", "--me", "--states=all", f"--format={SQUEUE_FORMAT}"]


def test_garbage_squeue_output_is_one_clear_line(bin_dir: Path, tmp_path: Path) -> None:
    fake(bin_dir, "squeue", "echo '12|RUNNING|None|n|zeroloop.gpu.n1'; echo 'Segmentation fault (core dumped)'")
    with pytest.raises(ProviderError) as refused:
        provider(tmp_path).machines()
    assert str(refused.value) == (
        "slurm pool gpu: cannot read squeue line 'Segmentation fault (core dumped)' "
        f"(expected {SQUEUE_FORMAT}); is 'squeue' Slurm's squeue?"
    )


def test_a_slurm_command_that_hangs_times_out(bin_dir: Path, tmp_path: Path) -> None:
    fake(bin_dir, "squeue", "exec sleep 30")
    with pytest.raises(ProviderError) as refused:
        provider(tmp_path, command_timeout_s=0.3).machines()
    assert str(refused.value) == (
        "slurm pool gpu: squeue did not answer within 0.3 s; is slurmctld reachable? "
        "(raise command_timeout_s if it is just slow)"
    )


def test_terminate_is_scancel_and_a_finished_job_is_fine(bin_dir: Path, tmp_path: Path) -> None:
    args = tmp_path / "scancel.args"
    fake(bin_dir, "scancel", f'echo "$@" >> {args}')
    provider(tmp_path).terminate("42")
    assert args.read_text() == "42\n"
    fake(bin_dir, "scancel", "echo 'scancel: error: Kill job error on job id 42: Invalid job id specified' >&2; exit 1")
    provider(tmp_path).terminate("42")
    fake(bin_dir, "scancel", "echo 'scancel: error: Unable to contact slurm controller' >&2; exit 1")
    with pytest.raises(ProviderError, match=r"^slurm pool gpu: scancel failed \(exit 1\): .*Unable to contact"):
        provider(tmp_path).terminate("42")
    with pytest.raises(ProviderError, match=r"^slurm pool gpu: '42; rm -rf /' is not a Slurm job id$"):
        provider(tmp_path).terminate("42; rm -rf /")


def test_offers_describe_the_partition_node_shapes(bin_dir: Path, tmp_path: Path) -> None:
    args = tmp_path / "sinfo.args"
    fake(
        bin_dir,
        "sinfo",
        f'printf "%s\\n" "$@" > {args}; printf "%s\\n" "gpu|64|512000|gpu:a100:4(S:0-1)" "gpu|32|256000|(null)" "odd"',
    )
    offers = provider(tmp_path, partition="gpu").offers()
    assert [(o.name, o.gpus, o.gpu_type, o.cpus, o.memory_bytes) for o in offers] == [
        ("gpu:gpu:64cpu-512000M-4gpu", 4, "a100", 64, 512000 * 2**20),
        ("gpu:gpu:32cpu-256000M", 0, "", 32, 256000 * 2**20),
    ]
    assert "--partition=gpu" in args.read_text().splitlines()
    fake(bin_dir, "sinfo", 'printf "%s\\n" "debug*|2|1000|gpu:1" "other|8|9000|(null)"')
    (default,) = provider(tmp_path).offers()  # no partition: the default one
    assert (default.name, default.gpus) == ("gpu:debug:2cpu-1000M-1gpu", 1)


@pytest.mark.parametrize("good", ["30", "30:00", "01:30:00", "2-12", "2-12:30", "2-12:30:15", "UNLIMITED", "infinite"])
def test_time_limits_in_slurm_formats_are_accepted(good: str) -> None:
    assert parse_time_limit(good) == good


@pytest.mark.parametrize(
    ("bad", "why"),
    [("1h", "is not a Slurm time limit"), ("01:75:00", "below 60"), ("00:00:00", "is zero"), ("", "not a Slurm")],
)
def test_bad_options_are_one_clear_config_error(tmp_path: Path, bad: str, why: str) -> None:
    with pytest.raises(ConfigError, match=rf"providers\.gpu\.options\.time_limit: Value error, .*{why}"):
        provider(tmp_path, time_limit=bad)


def test_bad_names_and_unknown_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"providers\.gpu\.options\.gres: .*not a GRES"):
        provider(tmp_path, gres="gpu: 1")
    with pytest.raises(ConfigError, match=r"providers\.gpu\.options\.job_name_prefix: .*only letters"):
        provider(tmp_path, job_name_prefix="zero.loop")
    with pytest.raises(ConfigError, match=r"providers\.gpu\.options\.partiton: Extra inputs"):
        provider(tmp_path, partiton="gpu")
    with pytest.raises(ConfigError, match=r"^providers\.a\.b: a slurm pool's name may hold only"):
        provider(tmp_path, name="a.b")
