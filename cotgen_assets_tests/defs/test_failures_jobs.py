"""Nothing lost, nothing paid twice: whole jobs that fail, bad result lines, flaky HTTP.

In-process against the emulator with the `Pipeline` harness. Source problems are copied from a
per-session cache instead of materialized per test: the batch asset only reads the Parquet file.
"""

import logging
import time
from collections import Counter

import pytest

from cotgen_assets_tests.harness.asks import generation_ask
from cotgen_assets_tests.harness.pipeline import finish_generation, read_jsonl, requested_ids

pytestmark = pytest.mark.pipeline


def error_logs(instance, run_id: str) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id) if e.level >= logging.ERROR]


def check_passed(result, check_name: str) -> bool:
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == check_name]
    return evaluation.passed


# --------------------------------------------------------------------------- whole jobs


def test_failed_expired_and_cancelled_jobs_lose_nothing(pipeline, emulator, sources, data_dir, instance):
    sources("easy")
    first_ids = None
    for state in ("failed", "expired"):
        emulator.set_faults(job_state=state, job_count=1)
        pipeline.submit_generation("easy", limit=4, ask="missing")
        batch = pipeline.metadata("generation_batch", "easy")
        ids = requested_ids(batch)
        first_ids = first_ids or ids
        assert ids == first_ids, "the next fill asks for exactly the problems of the failed job"

        result = finish_generation(pipeline, "easy")
        results = pipeline.metadata("generation_results", "easy")
        assert results["job_state"] == f"JOB_STATE_{state.upper()}"
        assert results["num_failed_jobs"] == 1 and batch["batch_names"][0] in results["job_errors"]
        assert not check_passed(result, "batch_succeeded")
        [error] = error_logs(instance, result.run_id)
        assert f"ended JOB_STATE_{state.upper()}" in error and "Nothing is lost" in error
        cot = pipeline.metadata("cot_samples", "easy")
        assert cot["num_new"] == 0 and cot["num_samples"] == 0
        assert read_jsonl(data_dir / "cot_easy.jsonl") == []

    # A cancelled job hands back the answers it finished: they are kept, not asked (and paid) again.
    emulator.set_faults(job_state="cancelled", job_count=1)
    pipeline.submit_generation("easy", limit=4, ask="missing")
    assert requested_ids(pipeline.metadata("generation_batch", "easy")) == first_ids
    result = finish_generation(pipeline, "easy")
    assert pipeline.metadata("generation_results", "easy")["job_state"] == "JOB_STATE_CANCELLED"
    assert not check_passed(result, "batch_succeeded")
    kept = [r["id"] for r in read_jsonl(data_dir / "cot_easy.jsonl")]
    assert kept and set(kept) < set(first_ids), "the cancelled job's finished answers are saved"

    pipeline.submit_generation("easy", limit=4, ask="missing")
    resubmitted = requested_ids(pipeline.metadata("generation_batch", "easy"))
    assert sorted(resubmitted) == sorted(set(first_ids) - set(kept))
    finish_generation(pipeline, "easy")
    final = [r["id"] for r in read_jsonl(data_dir / "cot_easy.jsonl")]
    assert sorted(final) == sorted(first_ids) and len(final) == len(set(final))
    assert pipeline.metadata("cot_samples", "easy")["num_samples"] == 4


def test_a_dry_run_while_a_batch_is_in_flight_loses_nothing(pipeline, sources, data_dir):
    """A dry run plans the same problems (same submission id) while the real batch awaits ingestion."""
    sources("medium")
    pipeline.submit_generation("medium", limit=3)
    sent = pipeline.metadata("generation_batch", "medium")
    pipeline.submit_generation("medium", limit=3, dry_run=True)
    dry = pipeline.metadata("generation_batch", "medium")
    assert dry["submission_id"] == sent["submission_id"] and dry["batch_names"] == []

    finish_generation(pipeline, "medium")
    assert pipeline.metadata("generation_results", "medium")["batch_names"] == sent["batch_names"]
    assert sorted(r["id"] for r in read_jsonl(data_dir / "cot_medium.jsonl")) == sorted(requested_ids(sent))


def test_a_shard_sent_to_a_new_job_drops_the_results_of_the_old_one(emulator, sources, data_dir):
    """Else the new job's answers would never be downloaded, and the next fill would pay again."""
    from cotgen_assets.backends.lifecycle import download_finished, submit
    from cotgen_assets.backends.resource import GeminiBatchResource
    from cotgen_assets.core.prepare import prepare_generation

    sources("easy")
    gemini = GeminiBatchResource(base_url=emulator.base_url, backoff_seconds=0.05)
    emulator.set_faults(job_state="failed", job_count=1)
    ask = generation_ask(limit=2, max_requests_per_job=100, ask_enough=False)
    first = prepare_generation(ask, offline=True).submission
    submit(first, gemini.batch_api())
    download_finished(first, gemini.batch_api())
    stale = first.results_path(first.shards[0])
    stale.write_bytes(b"")  # as if the failed job had handed back an empty results file

    again = prepare_generation(ask, offline=True).submission
    submit(again, gemini.batch_api())
    assert again.submission_id == first.submission_id and again.batch_names != first.batch_names
    assert [job.state for job in download_finished(again, gemini.batch_api())] == ["JOB_STATE_SUCCEEDED"]
    assert len(stale.read_bytes().splitlines()) == 2, "the new job's answers were downloaded"


# --------------------------------------------------------------------------- bad result lines


def outcomes_of(data_dir, scenario: str, meta: dict) -> list[dict]:
    return read_jsonl(
        data_dir / scenario / "submissions" / f"generation-{meta['submission_id']}" / "outcomes.jsonl"
    )


def test_bad_lines_are_recorded_retried_up_to_max_tries_then_given_up(
    pipeline, emulator, sources, data_dir, instance
):
    sources("easy")
    emulator.set_faults(
        line_error_rate=0.15, truncate_rate=0.15, no_thoughts_rate=0.2, garbage_line_rate=0.25
    )
    good, failed_tries, reasons = set(), Counter(), Counter()
    for _ in range(2):
        pipeline.submit_generation("easy", limit=10, max_tries=2, ask="missing")
        batch = pipeline.metadata("generation_batch", "easy")
        asked = requested_ids(batch)
        assert not set(asked) & good, "a problem whose sample was good is never asked again"
        finish_generation(pipeline, "easy")

        outcomes = outcomes_of(data_dir, "easy", batch)
        assert sorted(o["id"] for o in outcomes) == sorted(asked), "every request has one outcome"
        failed = [o for o in outcomes if o["status"] != "ok"]
        assert all(o["reason"] for o in failed)
        cot = pipeline.metadata("cot_samples", "easy")
        assert cot["num_failed"] == len(failed)
        assert cot["failed_by_reason"] == dict(Counter(o["status"] for o in failed))
        reasons.update(o["status"] for o in failed)
        failed_tries.update(o["id"] for o in failed)
        good |= {o["id"] for o in outcomes if o["status"] == "ok"}

        records = read_jsonl(data_dir / "cot_easy.jsonl")
        assert {r["id"] for r in records} == good, "only good answers become samples"
        for record in records:
            thought = record["cot"].removeprefix("<thought>").partition("</thought>")[0]
            assert thought.strip() and record["generation"]["finish_reason"] == "STOP"
    assert set(reasons) == {"line_error", "truncated", "no_thoughts", "not_json"}

    result = pipeline.submit_generation("easy", limit=10, max_tries=2, ask="missing")
    batch = pipeline.metadata("generation_batch", "easy")
    given_up = sorted(p for p, n in failed_tries.items() if n >= 2 and p not in good)
    assert given_up and batch["num_given_up"] == len(given_up)
    assert not set(requested_ids(batch)) & (good | set(given_up))
    assert batch["num_new_problems"] == batch["num_requests"] == len(given_up)  # topped up with new ones
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    assert any("given up" in w and given_up[0] in w for w in warnings)


# --------------------------------------------------------------------------- flaky HTTP

CALL_KINDS = {
    "upload": "/upload/",
    "create": ":batchGenerateContent",
    "get": "GET /v1beta/batches/",
    "list": "GET /v1beta/batches?",
    "download": ":download",
}


def api_calls(emulator) -> list[tuple[str, str]]:
    """(kind of call, HTTP status) of every API call in the emulator's log."""
    calls = []
    for line in emulator.log_path.read_text().splitlines():
        kind = next((k for k, pattern in CALL_KINDS.items() if pattern in line), None)
        if kind and '" ' in line:
            calls.append((kind, line.rsplit('" ', 1)[1].split()[0]))
    return calls


def test_transient_http_errors_are_ridden_through_by_a_whole_run(pipeline, emulator, sources, data_dir):
    """Half the calls fail; with the resource's small backoff and enough attempts nothing is lost."""
    from cotgen_assets.backends.resource import GeminiBatchResource

    pipeline.resources["gemini"] = GeminiBatchResource(
        base_url=emulator.base_url, backoff_seconds=0.01, max_attempts=12
    )
    sources("easy")
    emulator.set_faults(http_error_rate=0.5)
    pipeline.submit_generation("easy", limit=5, ask="missing")
    assert finish_generation(pipeline, "easy").success
    deadline = time.monotonic() + 30
    while not (data_dir / "cod_easy.jsonl").exists() and time.monotonic() < deadline:
        for request in pipeline.tick_until_launch():
            assert pipeline.run(request).success
    assert len(read_jsonl(data_dir / "cot_easy.jsonl")) == len(read_jsonl(data_dir / "cod_easy.jsonl")) == 5

    errors = Counter(kind for kind, status in api_calls(emulator) if status in ("429", "500"))
    assert sum(errors.values()) >= 5 and len(errors) >= 3, f"the faults did fire: {errors}"
    emulator.set_faults(http_error_rate=0.0)
    names = [b.display_name for b in pipeline.resources["gemini"].list_batches()]
    assert len(names) == len(set(names)) == 2, "one generation and one summarization batch, none twice"


def test_a_lost_create_response_makes_exactly_one_batch(pipeline, emulator, sources, data_dir):
    sources("hard")
    emulator.set_faults(lose_create_count=1)
    pipeline.submit_generation("hard", limit=2, ask="missing")
    batch = pipeline.metadata("generation_batch", "hard")
    assert [b.name for b in pipeline.resources["gemini"].list_batches()] == batch["batch_names"]
    assert "answering 500" in emulator.log_tail(100), "the fault did fire"
    finish_generation(pipeline, "hard")
    assert len(read_jsonl(data_dir / "cot_hard.jsonl")) == 2
