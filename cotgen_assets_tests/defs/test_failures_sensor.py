"""Failures around the sensor: stale jobs and `cotgen cancel`, the API down, two clicks at once, and
an end-to-end fill through a quarter of bad lines."""

import json
import os
import subprocess
import sys
import time

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef

from cotgen_assets import cli
from cotgen_assets.core.stages import GENERATION
from cotgen_assets.defs.assets.batches import summarization_batch
from cotgen_assets.defs.assets.results import generation_results
from cotgen_assets.defs.assets.samples import cot_samples
from cotgen_assets.defs.data_folder import OWNER_FILE
from cotgen_assets.defs.locks import submission_lock
from cotgen_assets_tests.harness.dagster import ROOT
from cotgen_assets_tests.harness.emulator import start_emulator
from cotgen_assets_tests.harness.pipeline import (
    Pipeline,
    failure_message,
    finish_generation,
    read_jsonl,
    requested_ids,
)

pytestmark = pytest.mark.pipeline

RESULTS_RUN = [generation_results, cot_samples, summarization_batch]


def test_a_stale_job_is_reported_once_then_cancelled_and_resubmitted(
    tmp_path, emulator, sources, data_dir, monkeypatch, capsys
):
    """`cotgen cancel` runs against a real on-disk instance, found through DAGSTER_HOME like a user's."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("COTGEN_STALE_AFTER_SECONDS", "1")
    sources("easy")
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        pipeline = Pipeline(instance, emulator.base_url)
        emulator.set_faults(slow_latency=600, slow_count=1)
        pipeline.submit_generation("easy", limit=3)
        batch = pipeline.metadata("generation_batch", "easy")
        [name] = batch["batch_names"]

        deadline = time.monotonic() + 20
        while "STALE" not in ((data := pipeline.tick()).skip_message or ""):
            assert data.run_requests == [] and not [e for e in data.asset_events if e.metadata.get("stale")]
            assert time.monotonic() < deadline, f"never reported stale: {data.skip_message}"
            time.sleep(0.2)
        assert name in data.skip_message and "cotgen cancel easy generation" in data.skip_message
        [observation] = [e for e in data.asset_events if e.metadata.get("stale")]
        assert observation.asset_key == dg.AssetKey("generation_batch") and observation.partition == "easy"
        assert observation.metadata["stale"].value is True
        again = pipeline.tick()
        assert "STALE" not in again.skip_message, "reported once per submission"
        assert not [e for e in again.asset_events if e.metadata.get("stale")]

        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("COTGEN_GEMINI_BASE_URL", emulator.base_url)
        monkeypatch.delenv("GEMINI_API_KEY", raising=False)
        assert cli.main(["cancel", "easy", "generation"]) == 0
        printed = capsys.readouterr().out
        assert f"cancelled ['{name}']" in printed and batch["submission_id"] in printed

        assert cli.main(["cancel", "easy", "generation"]) == 0
        printed = capsys.readouterr().out
        assert (
            "nothing to cancel" in printed and "JOB_STATE_CANCELLED" in printed and "not saved yet" in printed
        )

        result = finish_generation(pipeline, "easy")
        assert pipeline.metadata("generation_results", "easy")["job_state"] == "JOB_STATE_CANCELLED"
        assert not result.get_asset_check_evaluations()[0].passed
        assert cli.main(["cancel", "easy", "generation"]) == 0
        assert "nothing to cancel" in capsys.readouterr().out

        pipeline.submit_generation("easy", limit=3)
        resubmitted = pipeline.metadata("generation_batch", "easy")
        assert requested_ids(resubmitted) == requested_ids(batch) and resubmitted["batch_names"] != [name]
        finish_generation(pipeline, "easy")
        assert sorted(r["id"] for r in read_jsonl(data_dir / "cot_easy.jsonl")) == sorted(
            requested_ids(batch)
        )


def test_the_api_down_during_a_tick_launches_nothing_and_forgets_nothing(
    pipeline, emulator, sources, data_dir
):
    sources("hard")
    pipeline.submit_generation("hard", limit=2, ask="missing")
    emulator.stop()
    try:
        data = pipeline.tick()
        assert data.run_requests == []
        assert (
            "could not reach the Gemini API" in data.skip_message
            and "try again next tick" in data.skip_message
        )
    finally:
        emulator.start()
    [request] = pipeline.tick_until_launch()
    assert request.job_name == "generation_results_job"

    # The API goes down again while the launched run downloads: the run fails. Until the sensor's
    # retries (test_recovery.py) succeed or give up, a new fill is refused: re-execute, it says.
    emulator.stop()
    try:
        assert not pipeline.materialize(RESULTS_RUN, "hard", raise_on_error=False).success
    finally:
        emulator.start()
    assert pipeline.tick().run_requests == []
    refused = pipeline.submit_generation("hard", limit=2, raise_on_error=False)
    message = failure_message(refused, "generation_batch")
    assert (
        "JOB_STATE_SUCCEEDED" in message and "re-execute" in message and "generation_results_job" in message
    )

    assert pipeline.run(request).success  # the re-execution
    assert len(read_jsonl(data_dir / "cot_hard.jsonl")) == 2


CLICK = """
import json, os, sys, time
import dagster as dg
from cotgen_assets.defs.assets.batches import generation_batch
from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets_tests.harness.pipeline import ALL_ASSETS

print("ready", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
with dg.DagsterInstance.get() as instance:
    result = dg.materialize(
        ALL_ASSETS, selection=[generation_batch], partition_key="medium", instance=instance,
        resources={"gemini": GeminiBatchResource(base_url=sys.argv[1], backoff_seconds=0.05)},
        run_config={"ops": {"generation_batch": {"config": {"limit": 3}}}}, raise_on_error=False)
if result.success:
    meta = result.asset_materializations_for_node("generation_batch")[0].metadata
    print(json.dumps({"batch_names": meta["batch_names"].value}))
else:
    print(json.dumps({"refused": result.failure_data_for_node("generation_batch").error.message}))
"""


def test_two_submissions_at_once_make_one_batch(tmp_path, pipeline, emulator, sources, data_dir):
    sources("medium")
    with submission_lock(pipeline.instance, "medium", GENERATION):  # another run is submitting right now
        refused = pipeline.submit_generation("medium", limit=3, raise_on_error=False)
    assert not refused.success
    assert "is submitting right now; this one submits nothing" in failure_message(refused, "generation_batch")
    assert list(pipeline.resources["gemini"].list_batches()) == []

    # Two real processes click at the same moment, on one Dagster instance and one data dir. That
    # instance is not the test instance above, which claimed the data folder: release the claim,
    # as a user whose old instance is gone does (docs/failures.md).
    (data_dir / OWNER_FILE).unlink()
    home, go = tmp_path / "dagster_home", tmp_path / "go"
    home.mkdir()
    # The instance's SQLite schema exists before the race, as it would on a running platform.
    dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))).dispose()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    clicks = [
        subprocess.Popen(
            [sys.executable, "-c", CLICK, emulator.base_url, str(go)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for click in clicks:
            assert click.stdout.readline().strip() == "ready"
        go.touch()
        answers = [json.loads(click.communicate(timeout=120)[0].strip().splitlines()[-1]) for click in clicks]
    finally:
        for click in clicks:
            click.kill()
    batches = [b.name for b in pipeline.resources["gemini"].list_batches()]
    assert len(batches) == 1, f"exactly one batch exists: {answers}"
    assert any("batch_names" in a for a in answers)
    for answer in answers:
        if "batch_names" in answer:
            assert answer["batch_names"] == batches
        else:
            refusal = answer["refused"]
            # refused by the lock, or after the first click submitted (its job may have ended already)
            assert "submitting right now" in refusal or (
                batches[0] in refusal
                and ("still in flight" in refusal or "results are not saved yet" in refusal)
            )


def run_until_ingested(pipeline: Pipeline, partition: str) -> None:
    """Tick and run everything the sensor launches until the newest generation batch is saved."""
    from cotgen_assets.defs.history import pending_submission

    deadline = time.monotonic() + 60
    while pending_submission(pipeline.instance, partition, GENERATION) is not None:
        assert time.monotonic() < deadline, "the generation batch was never ingested"
        for request in pipeline.tick().run_requests:
            assert pipeline.run(request).success
        time.sleep(0.05)


def test_repeated_fill_through_a_quarter_of_bad_lines_reaches_the_limit(
    tmp_path, instance, sources, data_dir
):
    emulator = start_emulator(tmp_path / "emulator-25", extra_args=["--fault-line-error-rate", "0.25"])
    try:
        pipeline = Pipeline(instance, emulator.base_url)
        sources("easy")
        good, rounds = set(), 0
        while True:
            pipeline.submit_generation("easy", limit=20, ask="missing")
            batch = pipeline.metadata("generation_batch", "easy")
            if batch["num_requests"] == 0:
                break
            rounds += 1
            assert rounds <= 6, "fill should reach the limit in a few rounds"
            asked = requested_ids(batch)
            assert len(asked) == 20 - len(good) and not set(asked) & good, "nothing good is asked again"
            run_until_ingested(pipeline, "easy")
            good = {r["id"] for r in read_jsonl(data_dir / "cot_easy.jsonl") if r["correct"]}
        records = read_jsonl(data_dir / "cot_easy.jsonl")
        ids = [r["id"] for r in records]
        assert len(ids) == len(set(ids)) == 20 and all(r["correct"] for r in records)
        assert rounds >= 2, "the faults did make some lines fail"
        assert pipeline.metadata("cot_samples", "easy")["num_samples"] == 20
    finally:
        emulator.stop()


def test_a_damaged_submission_file_stops_only_its_own_scenario(pipeline, emulator, sources, data_dir):
    """A hand-damaged `submission.json` of one scenario: the tick says so and still launches the
    results run of the other scenario, instead of failing for every scenario."""
    for scenario in ("easy", "hard"):
        sources(scenario)
        pipeline.submit_generation(scenario, limit=2, ask="missing")
    [damaged] = (data_dir / "easy" / "submissions").glob("generation-*/submission.json")
    damaged.write_text('{"submission_id": "cut sh')

    launched = pipeline.tick_until_launch()
    assert [request.partition_key for request in launched] == ["hard"]
    data = pipeline.tick()
    assert "generation|easy" in data.skip_message and str(damaged) in data.skip_message
    assert damaged.read_text() == '{"submission_id": "cut sh', "left for a person to look at"
