"""A failed sensor-launched run is launched again with no person acting, and the end is said once.

In-process, the sensor's decisions are driven tick by tick with a chosen clock (decide_launches
takes `now`), so the growing delays are checked without waiting for them. The done-when test runs
`dagster dev` and the emulator as real processes: the daemon alone must carry a download that
fails more times than the client retries through to the samples.
"""

import csv
from datetime import UTC, datetime

import dagster as dg
import pytest

from cotgen_assets.defs.assets.results import generation_results
from cotgen_assets.defs.assets.samples import cot_samples
from cotgen_assets.defs.assets.sources import source_problems
from cotgen_assets.defs.sensors import decide_launches
from cotgen_assets.defs.sensors.cursor import SensorCursor
from cotgen_assets.defs.sensors.run_retries import ATTEMPT_TAG, RETRY_KEY_TAG, retry_delay_seconds, why_failed
from cotgen_assets_tests.harness.dagster import wait_for
from cotgen_assets_tests.harness.pipeline import failure_message, read_jsonl
from cotgen_assets_tests.harness.platform import latest_metadata, offline_platform

pytestmark = pytest.mark.pipeline

CLIENT_ATTEMPTS = 6  # GeminiBatchResource.max_attempts: one failed run uses this many downloads
NEVER = 10**6  # downloads that fail: a fault that does not clear


@pytest.fixture(autouse=True)
def default_retry_settings(monkeypatch):
    for name in ("COTGEN_RUN_ATTEMPTS", "COTGEN_RETRY_DELAY_SECONDS"):
        monkeypatch.delenv(name, raising=False)


def at(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def tick(pipeline, cursor: SensorCursor, now: datetime | None = None):
    return decide_launches(pipeline.instance, pipeline.resources["gemini"], ["easy"], cursor, now)


def first_launch(pipeline, cursor: SensorCursor) -> dg.RunRequest:
    """Tick until the sensor sees the batch ended and launches its results run."""
    [request] = wait_for(lambda: tick(pipeline, cursor).run_requests, timeout=60, interval=0.1)
    return request


def fail(pipeline, request: dg.RunRequest):
    """Run what the sensor asked for, as the daemon would; it must fail. Returns its run record."""
    with pytest.raises(Exception):  # noqa: B017 - whatever the step raised; the run's status is checked
        pipeline.run(request)
    tags = {key: request.tags[key] for key in (RETRY_KEY_TAG, ATTEMPT_TAG)}
    [record] = pipeline.instance.get_run_records(dg.RunsFilter(tags=tags))
    assert record.dagster_run.status == dg.DagsterRunStatus.FAILURE
    return record


def test_a_results_run_that_keeps_failing_is_retried_with_growing_delays_then_reported_once(
    pipeline, emulator, data_dir
):
    pipeline.materialize([source_problems], "easy")
    pipeline.submit_generation("easy", limit=2, ask="missing")
    submission_id = pipeline.metadata("generation_batch", "easy")["submission_id"]
    emulator.set_faults(download_error_count=NEVER)
    cursor = SensorCursor()
    request = first_launch(pipeline, cursor)
    key = request.run_key
    assert request.tags[RETRY_KEY_TAG] == key and request.tags[ATTEMPT_TAG] == "1"
    assert request.tags["dagster/max_retries"] == "0", "the daemon's run retries leave it to the sensor"

    assert [retry_delay_seconds(n) for n in (1, 2, 3)] == [60, 120, 240]
    for attempt in (1, 2, 3):
        ended = fail(pipeline, request).end_time
        delay = retry_delay_seconds(attempt)
        early = tick(pipeline, cursor, at(ended + delay - 5))
        assert early.run_requests == [] and early.alerts == []
        assert any(f"attempt {attempt + 1} of 4 in 5 s" in m for m in early.messages), early.messages
        assert any("503 UNAVAILABLE" in m for m in early.messages), "the message says why it failed"
        [request] = tick(pipeline, cursor, at(ended + delay + 1)).run_requests
        assert request.tags[ATTEMPT_TAG] == str(attempt + 1) and request.tags[RETRY_KEY_TAG] == key
        assert request.run_key == f"{key}|attempt-{attempt + 1}", "a new run key: Dagster launches it"
        assert request.tags["cotgen/submission_id"] == submission_id
        assert request.tags["cotgen/job_state"] == "JOB_STATE_SUCCEEDED"
        assert tick(pipeline, cursor, at(ended + delay + 2)).run_requests == [], "requested once"

    last = fail(pipeline, request)
    end = tick(pipeline, cursor, at(last.end_time + 10_000))
    assert end.run_requests == []
    [alert] = end.alerts
    assert "GAVE UP after 4 runs" in alert and submission_id in alert and last.dagster_run.run_id in alert
    assert "re-execute the last run" in alert and "503 UNAVAILABLE" in alert
    [observation] = end.observations
    assert (observation.asset_key, observation.partition) == (dg.AssetKey("generation_results"), "easy")
    metadata = {k: v.value for k, v in observation.metadata.items()}
    assert metadata["run_failed"] is True and metadata["retried"] is True and metadata["attempts"] == 4
    assert metadata["last_run"] == last.dagster_run.run_id and "503" in metadata["reason"]

    later = tick(pipeline, cursor, at(last.end_time + 100_000))
    assert (later.run_requests, later.alerts, later.observations) == ([], [], []), "said once"
    runs = pipeline.instance.get_runs(dg.RunsFilter(tags={RETRY_KEY_TAG: key}))
    assert len(runs) == 4 and all(r.status == dg.DagsterRunStatus.FAILURE for r in runs)

    # A new fill is refused and says what to do; once the API is back, the advice works.
    refused = failure_message(
        pipeline.submit_generation("easy", limit=2, raise_on_error=False), "generation_batch"
    )
    assert "not saved yet" in refused and "GAVE UP" in refused and "re-execute the last run" in refused
    emulator.set_faults(download_error_count=0)
    pipeline.materialize([generation_results, cot_samples], "easy")
    assert len(read_jsonl(data_dir / "cot_easy.jsonl")) == 2


def expensive_prices(tmp_path) -> str:
    """The shipped price table with every price a million times higher."""
    from cotgen_assets.core.pricing import default_prices_path

    with open(default_prices_path(), newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [
            {k: (str(float(v) * 1e6) if k.endswith("_per_1m") and v else v) for k, v in row.items()}
            for row in reader
        ]
    path = tmp_path / "expensive_prices.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=reader.fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def test_a_refusal_is_not_retried_and_is_reported_once(pipeline, data_dir, tmp_path, monkeypatch):
    pipeline.materialize([source_problems], "easy")
    pipeline.submit_generation("easy", limit=2, ask="missing", max_cost_usd=150)  # the drafts' budget too
    monkeypatch.setenv("COTGEN_PRICES_FILE", expensive_prices(tmp_path))  # summarization over budget
    cursor = SensorCursor()
    results_run = first_launch(pipeline, cursor)
    refused, reason = why_failed(pipeline.instance, fail(pipeline, results_run).dagster_run.run_id)
    assert (
        refused
        and reason.startswith("summarization_batch: projected cost")
        and "above max_cost_usd $150.00" in reason
    )
    assert len(read_jsonl(data_dir / "cot_easy.jsonl")) == 2, "the samples were saved before the refusal"

    # The CoT samples are saved: the summarization left undone is the catch-up's, launched once.
    [catch_up] = tick(pipeline, cursor).run_requests
    assert catch_up.job_name == "summarization_batch_job" and catch_up.tags[ATTEMPT_TAG] == "1"
    refused = fail(pipeline, catch_up)

    end = tick(pipeline, cursor, at(refused.end_time + 10_000))
    assert end.run_requests == [], "a refusal is not retried, however long one waits"
    [alert] = end.alerts
    assert "NOT RETRIED" in alert and "above max_cost_usd $150.00" in alert and "raise max_cost_usd" in alert
    assert "materialize summarization_batch for partition 'easy'" in alert
    [observation] = end.observations
    assert (observation.asset_key, observation.partition) == (dg.AssetKey("summarization_batch"), "easy")
    metadata = {k: v.value for k, v in observation.metadata.items()}
    assert metadata["retried"] is False and metadata["attempts"] == 1

    later = tick(pipeline, cursor, at(refused.end_time + 100_000))
    assert (later.run_requests, later.alerts, later.observations) == ([], [], []), "said once"
    assert len(pipeline.instance.get_runs(dg.RunsFilter(tags={RETRY_KEY_TAG: catch_up.run_key}))) == 1


def test_the_budget_given_at_the_click_lets_its_drafts_go_too(pipeline, data_dir, tmp_path, monkeypatch):
    """A budget raised to send a large generation batch covers the drafts the sensor submits for
    its samples: no second click with a raised budget (the default $100 would refuse them)."""
    monkeypatch.setenv("COTGEN_PRICES_FILE", expensive_prices(tmp_path))  # both batches cost > $100
    pipeline.materialize([source_problems], "easy")
    budget = 10**9
    pipeline.submit_generation("easy", limit=2, ask="missing", max_cost_usd=budget)
    cursor = SensorCursor()
    assert pipeline.run(first_launch(pipeline, cursor)).success, "CoT saved and the drafts submitted"
    drafts = latest_metadata(pipeline.instance, "summarization_batch", "easy")
    assert 100 < drafts["projected_cost_usd"] <= budget and drafts["num_requests"] == 2
    assert pipeline.run(first_launch(pipeline, cursor)).success
    cod = read_jsonl(data_dir / "cod_easy.jsonl")
    assert sorted(r["id"] for r in cod) == sorted(r["id"] for r in read_jsonl(data_dir / "cot_easy.jsonl"))


# --------------------------------------------------------------------------- under dagster dev


SENSOR = {
    "repositoryLocationName": "cotgen_assets",
    "repositoryName": "__repository__",
    "sensorName": "batch_completion_sensor",
}
TICKS = """query($sensor: SensorSelector!) { sensorOrError(sensorSelector: $sensor) { ... on Sensor {
  sensorState { ticks(limit: 200) { tickId status skipReason runIds logEvents { events { message level } } } }
} } }"""
RUNS = """query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) { ... on Runs {
  results { runId status tags { key value } } } } }"""


def tag(run: dict, key: str) -> str | None:
    return next((t["value"] for t in run["tags"] if t["key"] == key), None)


def sensor_runs(dev, partition: str, stage: str) -> list[tuple[str, str]]:
    """(attempt, status) of the sensor's runs for a stage and partition, as the UI's Runs page has them."""
    tags = [{"key": "dagster/partition", "value": partition}]
    runs = dev.graphql(RUNS, {"tags": tags})["runsOrError"]["results"]
    return sorted(
        (tag(r, ATTEMPT_TAG), r["status"])
        for r in runs
        if (tag(r, RETRY_KEY_TAG) or "").startswith(f"{stage}|")
    )


def ticks(dev) -> list[dict]:
    """The sensor's ticks, newest first, with their log messages, as its page in the UI shows them."""
    return dev.graphql(TICKS, {"sensor": SENSOR})["sensorOrError"]["sensorState"]["ticks"]


@pytest.mark.e2e
def test_under_dagster_dev_a_download_outage_heals_itself_and_one_that_never_ends_is_reported_once(
    tmp_path,
):
    data = tmp_path / "data"
    env = {
        "COTGEN_SENSOR_INTERVAL_SECONDS": "2",
        "COTGEN_RUN_ATTEMPTS": "2",  # one retry: enough to heal, and a short way to the give-up
        "COTGEN_RETRY_DELAY_SECONDS": "3",
        "COTGEN_API_BACKOFF_SECONDS": "0.05",  # the client's own retries only add waiting here
    }
    # with scripts/dagster.yaml, the instance config start.sh installs
    with offline_platform(tmp_path, env) as platform:
        instance, emulator, dev = platform.instance, platform.emulator, platform.dev

        # 1. Downloads fail once more than one run's client tries: the retry run saves the samples.
        emulator.set_faults(download_error_count=CLIENT_ATTEMPTS + 1)
        platform.wait_run(platform.submit_generation("easy", with_sources=True, limit=3, ask="missing"))
        platform.wait_samples(instance, "cod_samples", "easy", 3)
        assert len(read_jsonl(data / "cot_easy.jsonl")) == 3
        assert emulator.get_faults()["download_error_count"] == 0
        expected = {"generation": [("1", "FAILURE"), ("2", "SUCCESS")], "summarization": [("1", "SUCCESS")]}
        wait_for(  # the run that saved the CoD may still be finishing
            lambda: {stage: sensor_runs(dev, "easy", stage) for stage in expected} == expected,
            timeout=platform.remaining(),
            message=f"the sensor's runs for easy to be {expected}",
        )

        # 2. A fault that never clears: one retry, then the sensor gives up and says so once.
        emulator.set_faults(download_error_count=NEVER)
        platform.wait_run(platform.submit_generation("medium", with_sources=True, limit=3, ask="missing"))

        def gave_up():
            return [t for t in ticks(dev) if "GAVE UP" in (t["skipReason"] or "")]

        [report] = wait_for(gave_up, timeout=platform.remaining(), interval=1, message="the give-up")
        assert (
            "generation|medium" in report["skipReason"] and "re-execute the last run" in report["skipReason"]
        )
        errors = [e["message"] for e in report["logEvents"]["events"] if e["level"] == "ERROR"]
        assert len(errors) == 1 and "GAVE UP after 2 runs" in errors[0] and "503 UNAVAILABLE" in errors[0]
        submission_id = latest_metadata(instance, "generation_batch", "medium")["submission_id"]
        assert f"submission {submission_id}" in errors[0]
        assert sensor_runs(dev, "medium", "generation") == [("1", "FAILURE"), ("2", "FAILURE")]

        # Three ticks later: still one report and one observation, and no third run.
        wait_for(
            lambda: [t["tickId"] for t in ticks(dev)].index(report["tickId"]) >= 3,
            timeout=platform.remaining(),
            message="three more sensor ticks",
        )
        assert len(gave_up()) == 1
        observations = instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("generation_results"), asset_partitions=["medium"]),
            limit=10,
        ).records
        assert len(observations) == 1
        metadata = {k: v.value for k, v in observations[0].asset_observation.metadata.items()}
        assert metadata["attempts"] == 2 and metadata["retried"] is True and "503" in metadata["reason"]
        assert sensor_runs(dev, "medium", "generation") == [("1", "FAILURE"), ("2", "FAILURE")]
