"""Evaluation jobs are seeded by their job id: two matches of the same pair play different games."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from zeroloop.app import App
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.config import Settings, StoreSettings, WorkloadSettings
from zeroloop.pipeline import jobs
from zeroloop.pipeline.executor import JobExecutor
from zeroloop.queue.jobs import JobStatus

MATCH = """
import json, sys
seed, out = int(sys.argv[1]), sys.argv[2]
json.dump({"wins": 1, "draws": 0, "losses": 0, "seed": seed}, open(out, "w"))
"""


def test_two_evaluations_of_the_same_pair_get_different_seeds(store_url: str, tmp_path: Path) -> None:
    code = tmp_path / "match.py"
    code.write_text(MATCH)
    commands = tmp_path / "commands.toml"
    commands.write_text(f'[evaluate]\ncommand = "{sys.executable} {code} {{seed}} {{output}}"\n')
    settings = Settings(
        data_dir=tmp_path / "data",
        store=StoreSettings(url=store_url),
        workload=WorkloadSettings(kind="command", command_file=commands),
    )
    with App(settings, upgrade=False) as app:
        model = tmp_path / "model.bin"
        model.write_bytes(b"a model")
        sha = app.artifacts.put(model, ArtifactKind.MODEL, config_key="ringrift_2p").sha256
        payload = jobs.EvaluateJob(
            iteration=1, model_id="m1", model_sha256=sha, opponent="mcts", opponent_kind="mcts", games=4, seed=1
        ).model_dump()
        queued = [app.queue.enqueue(jobs.EVALUATE, "ringrift_2p", payload) for _ in range(2)]
        executor = JobExecutor(app.models, app.bus, app.queue, app.artifacts, app.settings, node="w1")
        try:
            for _ in range(2):
                assert asyncio.run(executor.run_once())
        finally:
            executor.close()
        seeds = []
        for job in queued:
            done = app.queue.get(job.id)
            assert done.status is JobStatus.COMPLETED
            seeds.append(json.loads(app.artifacts.fetch(done.result["artifact_sha256"]).read_text())["seed"])
        # Same pair, same payload: the job ids tell the matches apart.
        assert seeds == [job.id for job in queued]
        assert seeds[0] != seeds[1]
