"""A run killed after it created its batch, before it recorded it.

Its submission is on disk (`submission.json`) and its job exists at the API, but no materialization
names it, so the sensor never looks at it and a fill would ask (and pay) for its problems again.
The next fill adopts it instead: it counts as in flight, the sensor ingests it like any other, and
nothing of it is asked again. The kill is real (`dagster asset materialize`, SIGKILLed as soon as
it prints "submitted ["); the rest runs in-process on the same Dagster home, as in the other tests.
"""

import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import orjson
import pytest

from cotgen_assets.backends.lifecycle import submit
from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets.core.ask import GenerationAsk
from cotgen_assets.core.prepare import prepare_generation
from cotgen_assets_tests.harness.asks import generation_ask
from cotgen_assets_tests.harness.dagster import ROOT
from cotgen_assets_tests.harness.pipeline import Pipeline, finish_generation, read_jsonl, requested_ids

pytestmark = pytest.mark.pipeline

MODEL = "gemini-3.1-pro-preview"

# Loaded by every Python process of the killed command (it is on their PYTHONPATH): the moment a
# line saying "submitted [" is written, the whole process group is SIGKILLed, as a person watching
# the output would do, only without a person's delay.
KILL_SWITCH = """
import os, signal, sys


class KillOnSubmitted:
    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        written = self._stream.write(text)
        if "submitted [" in text:
            with open(os.environ["KILLED_AT"], "w") as note:  # the captured output may die with us
                note.write(text)
            os.killpg(os.getpgid(0), signal.SIGKILL)
        return written

    def __getattr__(self, name):
        return getattr(self._stream, name)


sys.stdout, sys.stderr = KillOnSubmitted(sys.stdout), KillOnSubmitted(sys.stderr)
"""


def warnings_of(instance, result) -> list[str]:
    return [e.user_message for e in instance.all_logs(result.run_id) if e.level >= logging.WARNING]


def generation_jobs(gemini: GeminiBatchResource) -> list:
    return [job for job in gemini.list_batches() if "-generation-" in job.display_name]


def answered_keys(gemini: GeminiBatchResource, job, folder: Path) -> list[str]:
    """The request keys a job answered, read from its results file as the API hands it back."""
    path = gemini.download_results(job.result_file, folder / f"{job.name.replace('/', '-')}.jsonl")
    return sorted(orjson.loads(line)["key"] for line in path.read_bytes().splitlines())


def materialize_cli(home: Path, emulator, limit: int, **env: str) -> subprocess.CompletedProcess:
    """`dagster asset materialize` of generation_batch, in its own process group."""
    config = orjson.dumps(
        {"ops": {"generation_batch": {"config": {"limit": limit, "ask": "missing"}}}}
    ).decode()
    return subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "cotgen_assets.definitions"]
        + ["--select", "generation_batch", "--partition", "easy", "--config-json", config],
        cwd=ROOT,
        env={
            **os.environ,
            "DAGSTER_HOME": str(home),
            "COTGEN_GEMINI_BASE_URL": emulator.base_url,
            "GEMINI_API_KEY": "",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )


def three_problems_of_easy() -> GenerationAsk:
    """A fill of exactly three problems of `easy`, the submission a dead run left behind."""
    return generation_ask(limit=3, ask_enough=False)


def test_a_batch_made_by_a_killed_run_is_adopted_ingested_and_never_asked_again(
    tmp_path, emulator, sources, data_dir
):
    sources("easy")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "scripts" / "dagster.yaml", home / "dagster.yaml")
    kill_switch = tmp_path / "kill_switch"
    kill_switch.mkdir()
    (kill_switch / "sitecustomize.py").write_text(KILL_SWITCH)

    killed_at = tmp_path / "killed_at.txt"
    killed = materialize_cli(home, emulator, limit=7, PYTHONPATH=str(kill_switch), KILLED_AT=str(killed_at))
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:] + killed.stderr[-3000:]
    assert "submitted [" in killed_at.read_text()
    gemini = GeminiBatchResource(base_url=emulator.base_url, backoff_seconds=0.05)
    [orphan] = generation_jobs(gemini)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        pipeline = Pipeline(instance, emulator.base_url)
        [dead] = instance.get_runs()
        assert dead.status == dg.DagsterRunStatus.STARTED, "killed: Dagster still shows it running"
        assert instance.fetch_materializations(dg.AssetKey("generation_batch"), limit=1).records == []

        refused = pipeline.submit_generation("easy", limit=9, ask="missing", raise_on_error=False)
        message = refused.failure_data_for_node("generation_batch").error.message
        # its lock is broken (its process is gone from this host), but its batch is not taken over
        # while Dagster still shows its run running: the message names the run and what to do
        assert "still in flight" in message and dead.run_id in message and "terminate it" in message
        assert [job.name for job in generation_jobs(gemini)] == [orphan.name], "the refused fill sent nothing"

        instance.report_run_canceled(dead)  # what the UI's Terminate does for a run whose process is gone
        adopting = pipeline.submit_generation("easy", limit=9, ask="missing")
        batch = pipeline.metadata("generation_batch", "easy")
        assert batch["batch_names"] == [orphan.name] and batch["adopted"] is True
        assert batch["num_requests"] == 7
        [adopted] = [w for w in warnings_of(instance, adopting) if w.startswith("ADOPTED")]
        assert orphan.name in adopted and batch["submission_id"] in adopted and dead.run_id in adopted
        assert [job.name for job in generation_jobs(gemini)] == [orphan.name], "nothing sent again"

        assert finish_generation(pipeline, "easy").success  # the sensor launches its results run
        first_seven = [f"easy-{i}" for i in range(7)]
        assert sorted(r["id"] for r in read_jsonl(data_dir / "cot_easy.jsonl")) == sorted(first_seven)
        assert pipeline.metadata("cot_samples", "easy")["submission_id"] == batch["submission_id"]

        pipeline.submit_generation("easy", limit=9, ask="missing")  # asks only for the rest
        rest = pipeline.metadata("generation_batch", "easy")
        assert requested_ids(rest) == ["easy-7", "easy-8"] and rest["adopted"] is False

    jobs = {job.name: job for job in generation_jobs(gemini)}
    assert sorted(jobs) == sorted([orphan.name, *rest["batch_names"]])
    assert answered_keys(gemini, jobs[orphan.name], tmp_path) == sorted(first_seven)


def test_a_job_whose_create_answer_the_kill_cut_off_is_found_by_its_name(pipeline, sources, instance):
    """Killed while the create call was in flight: the job exists, submission.json names no batch."""
    sources("easy")
    gemini = pipeline.resources["gemini"]
    orphan = prepare_generation(three_problems_of_easy(), offline=True).submission
    orphan.sent_by = "a-run-that-died"
    orphan.save()
    [shard], [display_name] = orphan.shards, orphan.display_names
    created = gemini.create_batch(
        MODEL, gemini.upload_jsonl(orphan.requests_path(shard), display_name), display_name
    )

    result = pipeline.submit_generation("easy", limit=5, ask="missing")
    batch = pipeline.metadata("generation_batch", "easy")
    assert (batch["submission_id"], batch["batch_names"]) == (orphan.submission_id, [created.name])
    assert requested_ids(batch) == ["easy-0", "easy-1", "easy-2"] and batch["adopted"] is True
    assert any(w.startswith("ADOPTED") and created.name in w for w in warnings_of(instance, result))
    assert [job.name for job in gemini.list_batches()] == [created.name]


def test_a_submission_whose_jobs_were_never_created_is_left_alone(pipeline, sources, instance):
    """Killed before its create: nothing to adopt, so the fill plans as usual and the log says why."""
    sources("easy")
    never_sent = prepare_generation(three_problems_of_easy(), offline=True).submission
    never_sent.sent_by = "a-run-that-died"
    never_sent.save()

    result = pipeline.submit_generation("easy", limit=5, ask="missing")
    batch = pipeline.metadata("generation_batch", "easy")
    assert batch["adopted"] is False and batch["num_requests"] == 5
    assert batch["submission_id"] != never_sent.submission_id
    notes = [
        e.user_message for e in instance.all_logs(result.run_id) if never_sent.submission_id in e.user_message
    ]
    assert any("never created" in n and "left alone" in n for n in notes), notes
    assert len(list(pipeline.resources["gemini"].list_batches())) == 1


def test_a_submission_whose_run_still_shows_running_is_not_taken_over(pipeline, sources, instance):
    """Its run may record it yet (or it died and awaits Terminate): the fill refuses, naming that run."""
    sources("easy")
    running = dg.DagsterRun(job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED)
    instance.add_run(running)
    sending = prepare_generation(three_problems_of_easy(), offline=True).submission
    submit(sending, pipeline.resources["gemini"].batch_api(), running.run_id)

    refused = pipeline.submit_generation("easy", limit=5, raise_on_error=False)
    message = refused.failure_data_for_node("generation_batch").error.message
    assert f"submission {sending.submission_id} is being sent by run {running.run_id}" in message
    assert "is still in flight" in message and "terminate it" in message
    assert [job.name for job in pipeline.resources["gemini"].list_batches()] == sending.batch_names
