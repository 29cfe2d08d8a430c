"""batch_completion_sensor, one decision at a time (the sensor-tick test layer).

Each test drives the real emulator through the in-process `Pipeline` harness and evaluates
sensor ticks as the daemon would. API calls are counted in the emulator's own request log.
"""

import re

import orjson
import pytest

from cotgen_assets.defs.assets.batches import summarization_batch
from cotgen_assets.defs.assets.samples import cot_samples
from cotgen_assets.defs.assets.sources import source_problems
from cotgen_assets_tests.harness.dagster import wait_for
from cotgen_assets_tests.harness.pipeline import Pipeline, read_jsonl

pytestmark = pytest.mark.pipeline

BATCH_GET = re.compile(r'"GET /v1beta/batches/[^"?\s]+"')
HEALTH = '"GET /_emulator/health"'
GENERATION_JOB = "generation_results_job"
SUMMARIZATION_JOB = "summarization_results_job"
CATCH_UP_JOB = "summarization_batch_job"


def request_keys(batch_metadata: dict) -> list[str]:
    """The problem ids a generation_batch materialization asked for, from its request files."""
    return [
        orjson.loads(line)["key"] for path in batch_metadata["request_files"] for line in open(path, "rb")
    ]


class ApiCalls:
    """Counts the `batches.get` calls the emulator logged since the last `mark()`."""

    def __init__(self, emulator):
        self.emulator = emulator
        self.mark()

    def _text(self) -> str:
        with open(self.emulator.log_path, "rb") as log:
            log.seek(self.offset)
            return log.read().decode(errors="replace")

    def mark(self) -> None:
        self.offset = self.emulator.log_path.stat().st_size

    def batch_gets(self) -> int:
        """The count since `mark()`, once every earlier request has been logged."""
        # A request the emulator answers after everything before it is a barrier: its log line
        # comes after the lines of the calls the sensor already got answers to.
        self.emulator.admin("GET", "health")

        def logged():
            text = self._text()
            return text if HEALTH in text else None

        text = wait_for(logged, timeout=10, interval=0.05, message="the emulator to log the barrier request")
        return len(BATCH_GET.findall(text.split(HEALTH)[0]))


@pytest.fixture
def calls(emulator):
    return ApiCalls(emulator)


def tick_until(pipeline: Pipeline, job_name: str, timeout: float = 60) -> list:
    """Tick until the sensor asks for `job_name`; returns every request of that tick."""
    last = {}

    def launched():
        data = pipeline.tick()
        last["skip"] = data.skip_message
        return data.run_requests if any(r.job_name == job_name for r in data.run_requests) else None

    try:
        return wait_for(launched, timeout=timeout, interval=0.1, message=f"a {job_name} run request")
    except TimeoutError as error:
        raise AssertionError(f"{error}; last tick: {last.get('skip')}") from None


def only(requests: list, job_name: str):
    matching = [r for r in requests if r.job_name == job_name]
    assert len(matching) == 1, f"expected one {job_name} request, got {requests}"
    return matching[0]


# --------------------------------------------------------------------------- nothing to do


def test_nothing_submitted_skips_with_a_message(pipeline, calls):
    pipeline.materialize([source_problems], "easy")
    calls.mark()
    data = pipeline.tick()
    assert data.run_requests == []
    assert data.skip_message == "no batch in flight"
    assert calls.batch_gets() == 0


def test_a_dry_run_launches_nothing_and_calls_no_api(pipeline, calls):
    pipeline.materialize([source_problems], "easy")
    pipeline.submit_generation("easy", limit=3, dry_run=True)
    calls.mark()
    data = pipeline.tick()
    assert data.run_requests == [] and data.skip_message == "no batch in flight"
    assert calls.batch_gets() == 0


# --------------------------------------------------------------------------- pending, then done


def test_pending_jobs_are_polled_once_each_then_launched_once(
    pipeline, emulator, calls, data_dir, monkeypatch
):
    pipeline.materialize([source_problems], "easy")
    # Two jobs (two requests per job) that stay in flight until released.
    emulator.set_faults(hold_count=2)
    pipeline.submit_generation("easy", limit=4, max_requests_per_job=2, ask="missing")
    batch = pipeline.metadata("generation_batch", "easy")
    assert len(batch["batch_names"]) == 2
    monkeypatch.setenv("COTGEN_STALE_AFTER_SECONDS", "0")  # "far longer than usual" is now

    for tick in range(2):  # every tick asks again, once per pending job
        calls.mark()
        data = pipeline.tick()
        assert data.run_requests == []
        assert re.search(r"generation\|easy: JOB_STATE_(PENDING|RUNNING) for \d+ min", data.skip_message), (
            data.skip_message
        )
        assert calls.batch_gets() == 2
        stale = [e for e in data.asset_events if e.metadata.get("stale")]
        if tick == 0:  # reported once, with what to do
            assert "STALE" in data.skip_message and "cotgen cancel easy generation" in data.skip_message
            assert [(e.asset_key.path, e.partition) for e in stale] == [(["generation_batch"], "easy")]
        else:
            assert "STALE" not in data.skip_message and stale == []

    emulator.release()
    [request] = tick_until(pipeline, GENERATION_JOB)
    assert request.partition_key == "easy" and request.tags["dagster/partition"] == "easy"
    assert batch["submission_id"] in request.run_key
    assert request.tags["cotgen/job_state"] == "JOB_STATE_SUCCEEDED"
    assert request.tags["cotgen/gemini"] == "offline-emulator", "offline mode shows on the run"

    calls.mark()
    data = pipeline.tick()
    assert data.run_requests == [], "a handled submission is launched once"
    assert calls.batch_gets() == 0, "a handled submission is not polled again"

    assert pipeline.run(request).success
    cot = read_jsonl(data_dir / "cot_easy.jsonl")
    assert sorted(r["id"] for r in cot) == sorted(request_keys(batch))


# --------------------------------------------------------------------------- jobs that end badly


@pytest.mark.parametrize("fault", ["failed", "expired", "cancelled"])
def test_a_job_that_ends_badly_is_recorded_and_the_next_fill_asks_again(pipeline, emulator, data_dir, fault):
    state = f"JOB_STATE_{fault.upper()}"
    pipeline.materialize([source_problems], "easy")
    emulator.set_faults(job_state=fault, job_count=1)
    pipeline.submit_generation("easy", limit=3, ask="missing")
    first = pipeline.metadata("generation_batch", "easy")
    asked = request_keys(first)
    assert len(asked) == 3

    request = only(tick_until(pipeline, GENERATION_JOB), GENERATION_JOB)
    assert request.tags["cotgen/job_state"] == state
    result = pipeline.run(request)
    assert result.success, "a batch that ended badly is recorded, not a crash"
    results = pipeline.metadata("generation_results", "easy")
    assert results["job_state"] == state and results["num_failed_jobs"] == 1
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "batch_succeeded"]
    assert check.passed is False and state in check.description
    cot_file = data_dir / "cot_easy.jsonl"
    saved = {r["id"] for r in read_jsonl(cot_file)} if cot_file.exists() else set()
    if fault == "cancelled":  # a cancelled job hands back the answers it finished: they are kept
        assert saved and saved < set(asked)
    else:
        assert saved == set()

    pipeline.submit_generation("easy", limit=3, ask="missing")
    second = pipeline.metadata("generation_batch", "easy")
    assert sorted(request_keys(second)) == sorted(set(asked) - saved), "the same problems, nothing else"
    assert second["batch_names"] != first["batch_names"], "a new batch job, not the one that ended badly"

    # The resubmission is carried through like any other.
    request = only(tick_until(pipeline, GENERATION_JOB), GENERATION_JOB)
    assert request.tags["cotgen/job_state"] == "JOB_STATE_SUCCEEDED"
    assert pipeline.run(request).success
    assert pipeline.metadata("generation_results", "easy")["job_state"] == "JOB_STATE_SUCCEEDED"
    assert sorted(r["id"] for r in read_jsonl(data_dir / "cot_easy.jsonl")) == sorted(asked)


# --------------------------------------------------------------------------- new submissions


def test_a_new_submission_after_ingest_is_launched_with_a_new_run_key(pipeline, data_dir):
    pipeline.materialize([source_problems], "medium")
    pipeline.submit_generation("medium", limit=2, ask="missing")
    first = only(tick_until(pipeline, GENERATION_JOB), GENERATION_JOB)
    assert pipeline.run(first).success

    pipeline.submit_generation("medium", limit=2, mode="extend", dry_run=True)
    assert not [r for r in pipeline.tick().run_requests if r.job_name == GENERATION_JOB], (
        "a dry run is not a submission"
    )

    pipeline.submit_generation("medium", limit=2, mode="extend")
    batch = pipeline.metadata("generation_batch", "medium")
    second = only(tick_until(pipeline, GENERATION_JOB), GENERATION_JOB)
    assert second.run_key != first.run_key and batch["submission_id"] in second.run_key
    assert pipeline.run(second).success
    ids = [r["id"] for r in read_jsonl(data_dir / "cot_medium.jsonl")]
    assert len(ids) == len(set(ids)) == 4


def test_a_dry_run_while_a_batch_is_in_flight_does_not_lose_it(pipeline, emulator, data_dir):
    pipeline.materialize([source_problems], "easy")
    emulator.set_faults(hold_count=1)
    pipeline.submit_generation("easy", limit=2)
    real = pipeline.metadata("generation_batch", "easy")
    pipeline.submit_generation("easy", limit=5, dry_run=True)
    emulator.release()

    request = only(tick_until(pipeline, GENERATION_JOB), GENERATION_JOB)
    assert real["submission_id"] in request.run_key
    assert pipeline.run(request).success
    assert sorted(r["id"] for r in read_jsonl(data_dir / "cot_easy.jsonl")) == sorted(request_keys(real))


# --------------------------------------------------------------------------- summarization catch-up


def test_cot_saved_while_a_summarization_is_in_flight_is_summarized_later(pipeline, emulator, data_dir):
    pipeline.materialize([source_problems], "easy")
    pipeline.submit_generation("easy", limit=3, ask="missing")
    first = only(tick_until(pipeline, GENERATION_JOB), GENERATION_JOB)
    # The summarization this run submits stays in flight (held) while the next generation is ingested.
    emulator.set_faults(hold_count=1)
    assert pipeline.run(first).success
    summarization = pipeline.metadata("summarization_batch", "easy")
    assert summarization["num_requests"] == 3

    pipeline.submit_generation("easy", limit=3, mode="extend")
    second = only(tick_until(pipeline, GENERATION_JOB), GENERATION_JOB)
    in_flight = pipeline.resources["gemini"].get_batch(summarization["batch_names"][0])
    assert not in_flight.done, "the test needs the summarization still in flight here"
    result = pipeline.run(second)
    assert result.success, "waiting for the summarization in flight is not a failure"
    assert result.asset_materializations_for_node("summarization_batch") == []
    assert pipeline.metadata("summarization_batch", "easy")["submission_id"] == summarization["submission_id"]
    assert len(read_jsonl(data_dir / "cot_easy.jsonl")) == 6
    assert not [r for r in pipeline.tick().run_requests if r.job_name == CATCH_UP_JOB], (
        "no catch-up before the summarization in flight is ingested"
    )
    # Someone looks at the projected cost meanwhile: a dry run must not stand in for the catch-up.
    pipeline.materialize(
        [summarization_batch], "easy", {"ops": {"summarization_batch": {"config": {"dry_run": True}}}}
    )
    assert pipeline.metadata("summarization_batch", "easy")["dry_run"] is True

    emulator.release()
    ingest = only(tick_until(pipeline, SUMMARIZATION_JOB), SUMMARIZATION_JOB)
    assert pipeline.run(ingest).success
    assert len(read_jsonl(data_dir / "cod_easy.jsonl")) == 3

    catch_up = only(tick_until(pipeline, CATCH_UP_JOB), CATCH_UP_JOB)
    assert catch_up.partition_key == "easy"
    again = [r for r in pipeline.tick().run_requests if r.job_name == CATCH_UP_JOB]
    assert [r.run_key for r in again] in ([], [catch_up.run_key]), "the daemon dedupes on the run key"
    assert pipeline.run(catch_up).success
    assert pipeline.metadata("summarization_batch", "easy")["num_requests"] == 3

    last = tick_until(pipeline, SUMMARIZATION_JOB)
    assert not [r for r in last if r.job_name == CATCH_UP_JOB], "the catch-up is launched once"
    assert pipeline.run(only(last, SUMMARIZATION_JOB)).success
    assert not [r for r in pipeline.tick().run_requests if r.job_name == CATCH_UP_JOB]

    cot_ids = sorted(r["id"] for r in read_jsonl(data_dir / "cot_easy.jsonl"))
    cod_ids = sorted(r["id"] for r in read_jsonl(data_dir / "cod_easy.jsonl"))
    assert cod_ids == cot_ids and len(cod_ids) == 6


def test_no_catch_up_while_the_run_that_saves_cot_is_still_going(pipeline, data_dir):
    """The daemon may tick between a run's cot_samples and summarization_batch steps."""
    import dagster as dg

    from cotgen_assets.defs.sensors.catch_up import summarization_catch_up

    pipeline.materialize([source_problems], "easy")
    pipeline.submit_generation("easy", limit=2)
    pipeline.run(pipeline.tick_until_launch()[0])
    pipeline.materialize([cot_samples], "easy")  # CoT newer than the last summarization plan
    assert summarization_catch_up(pipeline.instance, "easy") is None, "a summarization is in flight"
    pipeline.run(pipeline.tick_until_launch()[0])  # ingest it: now CoT is ahead
    assert summarization_catch_up(pipeline.instance, "easy") is not None

    run = pipeline.instance.create_run_for_job(
        job_def=dg.define_asset_job("generation_results_job", selection=[cot_samples]).resolve(
            asset_graph=dg.Definitions(assets=[cot_samples]).get_repository_def().asset_graph
        ),
        tags={"dagster/partition": "easy"},
        status=dg.DagsterRunStatus.STARTED,
    )
    assert summarization_catch_up(pipeline.instance, "easy") is None
    pipeline.instance.report_run_failed(run)
    assert summarization_catch_up(pipeline.instance, "easy") is not None
