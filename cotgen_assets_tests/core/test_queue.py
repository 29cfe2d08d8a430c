"""The queue of shards as plain functions: what counts as in flight project-wide (from the data
folder), what fits the quota, which submission goes first, what cancel drops, how long a run waited."""

import time

import orjson
import pytest

from cotgen_assets.backends.developer import DeveloperWire
from cotgen_assets.backends.vertex import VertexWire
from cotgen_assets.core.model_io import CANCELLED, SUCCEEDED
from cotgen_assets.core.queue import (
    DROPPED,
    GONE,
    QUEUED,
    REFUSAL_KEPT_SECONDS,
    InFlight,
    Quota,
    all_submissions,
    drop_queue,
    in_flight,
    job_counts,
    live_jobs,
    live_submissions,
    queued_shards,
    quota_wait_seconds,
    recorded_as,
    shard_tokens,
    waiting_order,
)
from cotgen_assets.core.settings import SettingError
from cotgen_assets.core.shards import write_shards
from cotgen_assets.core.stages import GENERATION, SUMMARIZATION
from cotgen_assets.core.submissions import Submission

MODEL = "gemini-3.1-pro-preview"
RUNNING = ""  # a live state is the job's neutral end, "" while it runs


def submission(data_dir, name: str, shards: int, stage=GENERATION, model: str = MODEL) -> Submission:
    """A saved submission of `shards` shards of 2 requests (each 100 bytes: 25 tokens), all queued."""
    made = Submission("easy", stage, name, model, "v1", 2 * shards)
    lines = [(padded(f"{name}-{i}"), {"id": i}) for i in range(2 * shards)]
    assert all(len(line) == 100 for line, _ in lines)
    write_shards(made, iter(lines), 2, 10**9)
    made.batch_names = [QUEUED] * shards
    made.live_states = [""] * shards
    made.save()
    return made


def padded(key: str) -> bytes:
    """A request line of exactly 100 bytes."""
    bare = len(orjson.dumps({"key": key, "pad": ""})) + 1
    return orjson.dumps({"key": key, "pad": "x" * (100 - bare)}) + b"\n"


def create(made: Submission, index: int, state: str = RUNNING) -> None:
    made.batch_names[index] = f"batches/{made.submission_id}-{index}"
    made.live_states[index] = state
    made.save()


def test_a_shards_tokens_are_its_request_files_bytes_over_four(data_dir):
    made = submission(data_dir, "a", 1)
    assert shard_tokens(made, "shard-000") == 50  # 200 bytes


def test_in_flight_counts_every_scenario_and_stages_created_jobs_not_seen_to_end(data_dir):
    first, second = submission(data_dir, "a", 3), submission(data_dir, "b", 2, stage=SUMMARIZATION)
    create(first, 0, RUNNING)
    create(first, 1, SUCCEEDED)  # ended: holds nothing
    create(second, 0)
    create(second, 1, GONE)  # the API no longer has it
    held = in_flight(all_submissions())
    assert (held.jobs, held.tokens) == (2, {MODEL: 100})
    assert live_jobs(first) == ["shard-000"] and queued_shards(first) == ["shard-002"]


def test_a_submission_whose_jobs_all_ended_holds_nothing_whatever_its_last_seen_states(data_dir):
    made = submission(data_dir, "a", 2)
    create(made, 0, RUNNING)
    create(made, 1, RUNNING)
    made.job_states = [SUCCEEDED, SUCCEEDED]  # saved by the download once every job ended
    made.save()
    assert in_flight(all_submissions()).jobs == 0


@pytest.mark.parametrize(
    "jobs, tokens, new_tokens, fits",
    [
        (1, 0, 10, True),
        (2, 0, 10, False),  # no job slot left
        (0, 95, 5, True),  # exactly the token quota
        (0, 95, 6, False),
    ],
)
def test_a_job_fits_while_both_quotas_hold(jobs, tokens, new_tokens, fits):
    held = InFlight(jobs, {MODEL: tokens, "other-model": 10**9})  # tokens count per model
    assert held.fits(Quota(max_active_jobs=2, max_enqueued_tokens=100), MODEL, new_tokens) is fits


def test_after_a_429_no_create_is_tried_until_a_job_ends_or_a_while_has_passed(data_dir, monkeypatch):
    made = submission(data_dir, "a", 4)
    create(made, 0, RUNNING)
    create(made, 1, RUNNING)
    quota = Quota(max_active_jobs=100, max_enqueued_tokens=10**9)  # the setting; the API's is 2
    held = in_flight(all_submissions())
    held.refused()
    assert not in_flight(all_submissions()).fits(quota, MODEL, 1), "remembered for the next tick"
    create(made, 1, SUCCEEDED)
    assert in_flight(all_submissions()).fits(quota, MODEL, 1), "one ended: room for one"
    create(made, 1, RUNNING)
    later = time.time() + REFUSAL_KEPT_SECONDS + 1
    monkeypatch.setattr(time, "time", lambda: later)
    assert in_flight(all_submissions()).fits(quota, MODEL, 1), "forgotten after a while: asked again"


def test_the_submission_queued_first_goes_first_and_one_with_nothing_queued_not_at_all(data_dir):
    late, early, done = (
        submission(data_dir, "late", 1),
        submission(data_dir, "early", 1),
        submission(data_dir, "done", 1),
    )
    late.queued_at, early.queued_at = "2026-12-06T08:00:00+00:00", "2026-12-06T07:00:00+00:00"
    late.save(), early.save()
    create(done, 0)
    assert [s.submission_id for s in waiting_order(all_submissions())] == ["early", "late"]


def test_cancel_drops_the_queue_and_the_counts_say_what_is_where(data_dir):
    made = submission(data_dir, "a", 4)
    create(made, 0, SUCCEEDED)
    create(made, 1, RUNNING)
    states = {"shard-000": SUCCEEDED, "shard-001": RUNNING}
    assert job_counts(made, states) == {
        "jobs_created": 2,
        "jobs_queued": 2,
        "jobs_running": 1,
        "jobs_done": 1,
    }
    assert drop_queue(made) == 2
    assert queued_shards(all_submissions()[0]) == [] and drop_queue(made) == 0
    assert job_counts(made, states)["jobs_queued"] == 0
    # as a job cancelled before it ran: not answered, so ingestion marks its requests NOT_RUN
    assert all(wire.job_end(DROPPED) == CANCELLED for wire in (DeveloperWire, VertexWire))


def test_a_recorded_submission_is_still_itself_once_the_sensor_created_its_queued_jobs(data_dir):
    made = submission(data_dir, "a", 3)
    create(made, 0)
    recorded = list(made.batch_names)  # what the click's materialization saw
    create(made, 1)  # since, by the sensor
    assert recorded_as(made, recorded)
    assert not recorded_as(made, ["batches/other", QUEUED, QUEUED])  # another job for shard 0
    assert not recorded_as(made, recorded[:2])


def test_the_wait_on_the_quota_is_from_the_first_queued_to_the_last_created(data_dir):
    made = submission(data_dir, "a", 1)
    assert quota_wait_seconds(made) == 0.0
    made.queued_at, made.dequeued_at = "2026-12-06T07:00:00+00:00", "2026-12-06T07:12:30+00:00"
    assert quota_wait_seconds(made) == 750.0


def test_quotas_are_settings_with_the_documented_defaults_and_a_bad_one_is_one_error(monkeypatch):
    monkeypatch.delenv("COTGEN_MAX_ACTIVE_JOBS", raising=False)
    monkeypatch.delenv("COTGEN_MAX_ENQUEUED_TOKENS", raising=False)
    assert Quota.from_env() == Quota(100, 50_000_000)
    monkeypatch.setenv("COTGEN_MAX_ACTIVE_JOBS", "0")
    with pytest.raises(
        SettingError, match=r"COTGEN_MAX_ACTIVE_JOBS='0' is not valid: it takes a whole number"
    ):
        Quota.from_env()


def test_a_job_in_flight_whose_request_file_is_gone_holds_its_slot_not_its_tokens(data_dir):
    made = submission(data_dir, "a", 2)
    create(made, 0)
    create(made, 1)
    made.requests_path("shard-000").unlink()
    held = in_flight(live_submissions())
    assert (held.jobs, held.tokens) == (2, {MODEL: 50})
    [unreadable] = held.unreadable
    assert str(made.requests_path("shard-000")) in unreadable


def test_only_submissions_holding_or_waiting_for_the_quota_are_live(data_dir):
    running, ended, waiting = (submission(data_dir, name, 1) for name in ("running", "ended", "waiting"))
    create(running, 0)
    create(ended, 0, SUCCEEDED)
    assert [s.submission_id for s in live_submissions()] == ["running", "waiting"]
