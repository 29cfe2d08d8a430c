"""Nothing paid twice, no history lost, bad input refused, and the
resource's messages where a person looks. Each at the layer a user meets it: a materialization on
a test instance against the real emulator, or the `cotgen` command."""

import csv
import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import orjson
import pyarrow.parquet as pq
import pytest

import cotgen_assets
from cotgen_assets.backends.lifecycle import submit
from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets.core.prepare import prepare_generation
from cotgen_assets.core.scenarios import get_scenario
from cotgen_assets.defs.assets.results import generation_results
from cotgen_assets.defs.assets.samples import cot_samples
from cotgen_assets_tests.harness.asks import generation_ask
from cotgen_assets_tests.harness.pipeline import Pipeline, finish_generation, read_jsonl, requested_ids
from cotgen_assets_tests.harness.sources import load_source_problems

pytestmark = pytest.mark.pipeline

MODEL = "gemini-3.1-pro-preview"
COTGEN = Path(sys.executable).with_name("cotgen")
UNREACHABLE = "http://127.0.0.1:9"
RESULTS_RUN = [generation_results, cot_samples]


def failure(result, node: str):
    return result.failure_data_for_node(node).error


def run_logs(instance, result, level=logging.INFO) -> list[str]:
    return [e.user_message for e in instance.all_logs(result.run_id) if e.level >= level]


def submission_folder(data_dir, meta: dict, stage: str = "generation") -> Path:
    return data_dir / "easy" / "submissions" / f"{stage}-{meta['submission_id']}"


@pytest.fixture
def ingested(pipeline, sources, data_dir):
    """easy: one fill of 3 problems, answered and saved; returns its batch metadata."""
    sources("easy")
    pipeline.submit_generation("easy", limit=3, ask="missing")
    batch = pipeline.metadata("generation_batch", "easy")
    assert finish_generation(pipeline, "easy").success
    assert len(read_jsonl(data_dir / "cot_easy.jsonl")) == 3
    return batch


# --------------------------------------------------------------------------- 1. failed ingestion


def test_a_failed_ingestion_refuses_a_new_fill_until_its_samples_are_saved(
    pipeline, sources, data_dir, tmp_path, monkeypatch
):
    sources("easy")
    pipeline.submit_generation("easy", limit=3, ask="missing")
    batch = pipeline.metadata("generation_batch", "easy")
    pipeline.tick_until_launch()  # the job has ended

    # cot_samples fails after generation_results succeeded: here a price file lacking the model
    prices = tmp_path / "prices.csv"
    rows = list(csv.reader(open(Path(cotgen_assets.__file__).with_name("prices.csv"))))
    with open(prices, "w", newline="") as out:
        csv.writer(out).writerows([row for row in rows if row[0] != MODEL])
    monkeypatch.setenv("COTGEN_PRICES_FILE", str(prices))
    result = pipeline.materialize(RESULTS_RUN, "easy", raise_on_error=False)
    assert not result.success
    error = failure(result, "cot_samples")
    assert error.cls_name == "Failure" and f"no price for model {MODEL!r}" in error.message
    assert pipeline.metadata("generation_results", "easy")["submission_id"] == batch["submission_id"]
    monkeypatch.delenv("COTGEN_PRICES_FILE")

    refused = pipeline.submit_generation("easy", limit=3, raise_on_error=False)
    assert not refused.success, "a new fill would ask (and pay for) the same problems again"
    message = failure(refused, "generation_batch").message
    assert batch["submission_id"] in message and "results are not saved yet" in message
    assert len(list(pipeline.resources["gemini"].list_batches())) == 1

    pipeline.materialize([cot_samples], "easy")  # the repair the message names
    cot = pipeline.metadata("cot_samples", "easy")
    assert cot["num_samples"] == 3 and cot["total_cost_usd"] > 0
    pipeline.submit_generation("easy", limit=3)
    assert pipeline.metadata("generation_batch", "easy")["num_requests"] == 0


# --------------------------------------------------------------------------- 2. submission identity


def thinking_levels(meta: dict) -> set[str]:
    return {
        orjson.loads(line)["request"]["generationConfig"]["thinkingConfig"]["thinkingLevel"]
        for f in meta["request_files"]
        for line in open(f, "rb")
    }


def test_a_changed_thinking_level_or_job_split_is_a_new_submission(pipeline, emulator, sources):
    sources("easy")
    emulator.set_faults(job_state="failed", job_count=2)  # both jobs: the next fill asks the same problems
    pipeline.submit_generation("easy", limit=4, thinking_level="low", max_requests_per_job=2, ask="missing")
    first = pipeline.metadata("generation_batch", "easy")
    assert first["num_shards"] == 2 and thinking_levels(first) == {"low"}
    finish_generation(pipeline, "easy")

    pipeline.submit_generation("easy", limit=4, thinking_level="high", max_requests_per_job=4, ask="missing")
    second = pipeline.metadata("generation_batch", "easy")
    assert requested_ids(second) == requested_ids(first), "the same problems, at the same tries"
    assert second["submission_id"] != first["submission_id"]
    assert thinking_levels(second) == {"high"}, "asked as configured, not with the old request files"
    assert second["num_shards"] == 1 and second["reused_batches"] == []
    assert not set(second["batch_names"]) & set(first["batch_names"])


def test_a_second_deployment_with_other_questions_submits_its_own_batch(
    pipeline, emulator, sources, tmp_path, monkeypatch
):
    """Two deployments on one API key, same scenario name, ids and settings, other questions. The
    first deployment's job has the same problems in its name, but not these requests: never reused."""
    sources("easy")
    pipeline.submit_generation("easy", limit=3)
    first = pipeline.metadata("generation_batch", "easy")
    assert finish_generation(pipeline, "easy").success

    # The second deployment: its own data folder and Dagster instance; its copy of the dataset
    # holds other questions under the same ids (here GSM8K's test split).
    data_b = tmp_path / "data-b"
    monkeypatch.setenv("COTGEN_DATA_DIR", str(data_b))
    other, _, _ = load_source_problems(dataclasses.replace(get_scenario("easy"), split="test"))
    (data_b / "easy").mkdir(parents=True)
    pq.write_table(other, data_b / "easy" / "source_problems.parquet")
    questions = dict(zip(other["problem_id"].to_pylist(), other["question"].to_pylist()))
    answers = dict(zip(other["problem_id"].to_pylist(), other["answer"].to_pylist()))
    with dg.instance_for_test() as instance_b:
        second_deployment = Pipeline(instance_b, emulator.base_url)
        result = second_deployment.submit_generation("easy", limit=3)
        second = second_deployment.metadata("generation_batch", "easy")
        assert requested_ids(second) == requested_ids(first), "the same ids at the same tries"
        assert second["reused_batches"] == [] and second["batch_names"] != first["batch_names"]
        generation_jobs = [
            b.name for b in pipeline.resources["gemini"].list_batches() if "-generation-" in b.display_name
        ]
        assert sorted(generation_jobs) == sorted(first["batch_names"] + second["batch_names"])
        [why] = [m for m in run_logs(instance_b, result, logging.WARNING) if "NOT REUSED" in m]
        assert first["batch_names"][0] in why and "requests differ" in why
        assert finish_generation(second_deployment, "easy").success

    records = read_jsonl(data_b / "cot_easy.jsonl")
    assert [r["id"] for r in records] == requested_ids(first)
    for record in records:
        assert record["question"] == questions[record["id"]] != ""
        assert record["generation"]["batch"] == second["batch_names"][0]
        assert (record["predicted_answer"], record["correct"]) == (answers[record["id"]], True), (
            "answers to its own questions"
        )


def test_a_reused_batch_is_a_warning_in_the_run_log_and_in_the_metadata(pipeline, sources, instance):
    """A run that created its job and then died before materializing: the re-execution finds it."""
    sources("easy")
    gemini = pipeline.resources["gemini"]
    crashed = prepare_generation(generation_ask(limit=2, mode="fill"), offline=True).submission
    submit(crashed, gemini.batch_api())
    result = pipeline.submit_generation("easy", limit=2)
    meta = pipeline.metadata("generation_batch", "easy")
    assert meta["batch_names"] == crashed.batch_names == meta["reused_batches"]
    warnings = [m for m in run_logs(instance, result, logging.WARNING) if "REUSED" in m]
    assert warnings and all(crashed.batch_names[0] in w for w in warnings)
    assert [b.name for b in gemini.list_batches()] == crashed.batch_names, "nothing was sent twice"


# --------------------------------------------------------------------------- 3. a results file gone


def test_a_missing_results_file_is_refused_then_downloaded_again_keeping_history(
    pipeline, emulator, data_dir, ingested
):
    folder = submission_folder(data_dir, ingested)
    results = folder / "shard-000.results.jsonl"
    history = {name: (folder / name).read_bytes() for name in ("outcomes.jsonl", "summary.json")}
    assert json.loads(history["summary.json"])["cost_usd"] > 0

    results.unlink()
    refused = pipeline.materialize([cot_samples], "easy", raise_on_error=False)
    error = failure(refused, "cot_samples")
    assert error.cls_name == "Failure" and f"the results file {results}" in error.message
    assert "is missing" in error.message and "materialize generation_results" in error.message
    assert {name: (folder / name).read_bytes() for name in history} == history, "outcomes and cost kept"

    emulator.stop()  # the API cannot hand it back now: the results run fails, history stays
    try:
        result = pipeline.materialize(RESULTS_RUN, "easy", raise_on_error=False)
    finally:
        emulator.start()
    assert not result.success and not results.exists()
    assert {name: (folder / name).read_bytes() for name in history} == history

    pipeline.materialize(RESULTS_RUN, "easy")  # the API keeps result files for 48 h
    assert results.exists(), "downloaded again from the API"
    assert {name: (folder / name).read_bytes() for name in history} == history
    assert pipeline.metadata("cot_samples", "easy")["num_samples"] == 3
    assert len(read_jsonl(data_dir / "cot_easy.jsonl")) == 3


# --------------------------------------------------------------------------- 4. a damaged samples file


def test_a_damaged_samples_file_stops_planning_and_ingestion_naming_its_lines(pipeline, data_dir, ingested):
    cot_file = data_dir / "cot_easy.jsonl"
    lines = cot_file.read_bytes().splitlines(keepends=True)
    torn_id = orjson.loads(lines[-1])["id"]
    damaged = lines[:1] + [b"{not json\n"] + lines[1:-1] + [lines[-1][: len(lines[-1]) // 2]]
    cot_file.write_bytes(b"".join(damaged))

    batches_before = list(pipeline.resources["gemini"].list_batches())
    refused = pipeline.submit_generation("easy", limit=3, raise_on_error=False)
    error = failure(refused, "generation_batch")
    assert error.cls_name == "Failure"
    assert f"{cot_file} is damaged: line(s) 2, 4 are not JSON objects" in error.message
    assert torn_id in error.message and "Repair those lines" in error.message
    assert list(pipeline.resources["gemini"].list_batches()) == batches_before, "nothing asked again"

    result = pipeline.materialize([cot_samples], "easy", raise_on_error=False)
    error = failure(result, "cot_samples")
    assert error.cls_name == "Failure" and f"{cot_file} is damaged: line(s) 2, 4" in error.message
    assert cot_file.read_bytes() == b"".join(damaged), "left as it is"


# --------------------------------------------------------------------------- 7, 8. bad config


@pytest.mark.parametrize(
    "config, message",
    [
        (
            {"max_requests_per_job": 0},
            "max_requests_per_job: Input should be greater than or equal to 1, got 0",
        ),
        (
            {"max_requests_per_job": -3},
            "max_requests_per_job: Input should be greater than or equal to 1, got -3",
        ),
        ({"max_cost_usd": -1.0}, "max_cost_usd: Input should be greater than or equal to 0, got -1.0"),
        ({"model": "gemini-9-ultra"}, "no price for model 'gemini-9-ultra'; known models:"),
        ({"model": "gemini-9-ultra", "dry_run": True}, "no price for model 'gemini-9-ultra'"),
    ],
)
def test_bad_job_settings_are_refused_before_anything_is_written(data_dir, sources, config, message):
    sources("easy")
    pipeline = Pipeline(dg.DagsterInstance.ephemeral(), UNREACHABLE)
    result = pipeline.submit_generation("easy", raise_on_error=False, limit=3, **config)
    error = failure(result, "generation_batch")
    assert error.cls_name == "Failure" and message in error.message
    assert not (data_dir / "easy" / "submissions").exists()


# --------------------------------------------------------------------------- 9. cotgen cancel


def cotgen(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(COTGEN), *args], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )


def test_cotgen_cancel_of_an_unknown_scenario_names_it(tmp_path):
    done = cotgen("cancel", "nosuch", "generation", DAGSTER_HOME=str(tmp_path))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("cotgen: unknown scenario 'nosuch'; scenarios: [")
    assert "Traceback" not in done.stderr


def test_cotgen_cancel_with_the_api_down_is_one_clear_line(tmp_path, emulator, sources, data_dir):
    home = tmp_path / "dagster_home"
    home.mkdir()
    sources("easy")
    emulator.set_faults(hold_count=1)
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        Pipeline(instance, emulator.base_url).submit_generation("easy", limit=2)
    emulator.stop()
    done = cotgen(
        "cancel", "easy", "generation", DAGSTER_HOME=str(home), COTGEN_GEMINI_BASE_URL=emulator.base_url
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    *notices, line = done.stderr.splitlines()
    assert line.startswith("cotgen: get of batches/") and "failed after 3 attempts" in line
    progress = ("; retrying (", "offline mode", "No dagster instance configuration file")
    assert all(any(p in n for p in progress) for n in notices), notices  # notices, no error before it


def test_cotgen_cancel_from_another_folder_is_one_clear_line(tmp_path, emulator, sources, data_dir):
    """The instance knows a batch in flight, but ./data of the folder the command runs in lacks its files."""
    home, elsewhere = tmp_path / "dagster_home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    sources("easy")
    emulator.set_faults(hold_count=1)
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        pipeline = Pipeline(instance, emulator.base_url)
        pipeline.submit_generation("easy", limit=2)
        submission = pipeline.metadata("generation_batch", "easy")["submission_id"]
    env = {k: v for k, v in os.environ.items() if k != "COTGEN_DATA_DIR"}
    done = subprocess.run(
        [str(COTGEN), "cancel", "easy", "generation"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=elsewhere,
        env={**env, "DAGSTER_HOME": str(home), "COTGEN_GEMINI_BASE_URL": emulator.base_url},
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    line = done.stderr.splitlines()[-1]
    assert line.startswith("cotgen: ") and submission in line
    assert f"COTGEN_DATA_DIR ({elsewhere / 'data'})" in line, line
    [job] = pipeline.resources["gemini"].list_batches()
    assert not job.done, "nothing cancelled"
    assert list(elsewhere.iterdir()) == [], "no ./data made where the command ran"

    env.pop("DAGSTER_HOME", None)  # a new shell: start.sh's DAGSTER_HOME is not set there
    done = subprocess.run(
        [str(COTGEN), "cancel", "easy", "generation"], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("cotgen: DAGSTER_HOME is not set:") and len(done.stderr.splitlines()) == 1


# --------------------------------------------------------------------------- 10. damaged outcomes


def test_a_damaged_outcomes_file_is_a_clear_error_in_planning_and_trace(pipeline, data_dir, ingested):
    outcomes = submission_folder(data_dir, ingested) / "outcomes.jsonl"
    lines = outcomes.read_bytes().splitlines(keepends=True)
    first = orjson.loads(lines[0])

    outcomes.write_bytes(b"".join([b"garbage\n", *lines[1:]]))
    refused = pipeline.submit_generation("easy", limit=3, raise_on_error=False)
    error = failure(refused, "generation_batch")
    assert error.cls_name == "Failure" and f"{outcomes} is damaged: line(s) 1 " in error.message

    no_status = {k: v for k, v in first.items() if k != "status"}
    outcomes.write_bytes(b"".join([orjson.dumps(no_status) + b"\n", *lines[1:]]))
    refused = pipeline.submit_generation("easy", limit=3, raise_on_error=False)
    error = failure(refused, "generation_batch")
    assert error.cls_name == "Failure"
    assert f"{outcomes} is damaged: line(s) 1 are not JSON objects with 'id', 'status'" in error.message

    traced = cotgen("trace", first["id"], COTGEN_DATA_DIR=str(data_dir))
    assert traced.returncode == 1 and "Traceback" not in traced.stderr
    assert f"{outcomes} is damaged: line(s) 1" in traced.stderr and "'status'" in traced.stderr


# --------------------------------------------------------------------------- 11. the run's log


def test_retries_and_a_lost_create_reach_the_runs_log(pipeline, emulator, sources, instance):
    pipeline.resources["gemini"] = GeminiBatchResource(
        base_url=emulator.base_url, backoff_seconds=0.01, max_attempts=12
    )
    sources("easy")
    emulator.set_faults(http_error_rate=0.5)
    flaky = pipeline.submit_generation("easy", limit=2)
    retries = [m for m in run_logs(instance, flaky, logging.WARNING) if "; retrying (" in m]
    assert retries, "each retried call is a warning in the run"

    sources("hard")
    emulator.set_faults(http_error_rate=0.0, lose_create_count=1)
    lost = pipeline.submit_generation("hard", limit=2)
    assert any("failed, but the job exists" in m for m in run_logs(instance, lost, logging.WARNING))
