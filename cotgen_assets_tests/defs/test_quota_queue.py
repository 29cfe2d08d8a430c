"""The queue of shards in-process, against an emulator that enforces a quota of 2 jobs in flight:
a click creates what fits and queues the rest, the sensor creates the rest as jobs end, every
scenario and stage sharing one quota, and everything asked is answered once."""

import json
from pathlib import Path

import dagster as dg
import pytest

from cotgen_assets import cli
from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets_tests.harness.dagster import wait_for
from cotgen_assets_tests.harness.emulator import start_emulator
from cotgen_assets_tests.harness.pipeline import Pipeline, finish_generation, read_jsonl

pytestmark = pytest.mark.pipeline

JOBS_OF_4 = {"ask": "missing", "max_requests_per_job": 4}


@pytest.fixture
def emu(tmp_path):
    """Two jobs in flight at most; the first two stay PENDING until the test releases them, so the
    quota is met however slow the machine is (a latency of a few seconds was not, on a busy one)."""
    extra_args = ["--max-active-jobs", "2", "--fault-hold-count", "2"]
    with start_emulator(tmp_path / "emulator", latency=0.0, extra_args=extra_args) as emulator:
        yield emulator


@pytest.fixture
def quota_pipeline(instance, emu, data_dir):
    return Pipeline(instance, emu.base_url)


def assert_each_shard_made_once_within(emu, max_active: int) -> list[dict]:
    created = emu.created_jobs()
    names = [job["display_name"] for job in created]
    assert len(names) == len(set(names)), "a shard was made into two jobs"
    assert max(job["active"] for job in created) <= max_active
    return created


def test_two_scenarios_submitted_at_once_share_the_quota_and_both_finish(
    quota_pipeline, emu, data_dir, sources, monkeypatch
):
    monkeypatch.setenv("COTGEN_MAX_ACTIVE_JOBS", "2")  # the platform knows the quota: no 429 at all
    for scenario in ("easy", "medium"):
        sources(scenario)
    quota_pipeline.submit_generation("easy", limit=8, **JOBS_OF_4)
    quota_pipeline.submit_generation("medium", limit=8, **JOBS_OF_4)
    easy, medium = (quota_pipeline.metadata("generation_batch", s) for s in ("easy", "medium"))
    assert (easy["num_jobs_created"], easy["num_jobs_queued"]) == (2, 0)
    assert (medium["num_jobs_created"], medium["num_jobs_queued"]) == (0, 2), "the quota is easy's"

    emu.release()
    quota_pipeline.drain(timeout=240)

    for scenario in ("easy", "medium"):
        cot, cod = (
            read_jsonl(data_dir / f"cot_{scenario}.jsonl"),
            read_jsonl(data_dir / f"cod_{scenario}.jsonl"),
        )
        assert len({r["id"] for r in cot}) == len(cot) == 8
        assert sorted(r["id"] for r in cod) == sorted(r["id"] for r in cot if r["correct"])
    created = assert_each_shard_made_once_within(emu, 2)
    assert len(created) == 6  # per scenario, 2 generation jobs of 4 and 1 summarization job
    assert "quota: refused" not in emu.log_path.read_text()


def test_a_429_on_create_leaves_the_shard_queued_and_the_sensor_creates_it_later(
    quota_pipeline, emu, data_dir, sources
):
    """The platform's quota setting is the documented 100; the API's is 2: it refuses the third."""
    sources("easy")
    quota_pipeline.submit_generation("easy", limit=12, **JOBS_OF_4)
    batch = quota_pipeline.metadata("generation_batch", "easy")
    assert (batch["num_jobs_created"], batch["num_jobs_queued"]) == (2, 1)
    assert batch["batch_names"][2] == ""

    emu.release()
    quota_pipeline.drain(timeout=240)

    cot = read_jsonl(data_dir / "cot_easy.jsonl")
    assert sorted(r["id"] for r in cot) == sorted(f"easy-{i}" for i in range(12))
    assert len(read_jsonl(data_dir / "cod_easy.jsonl")) == sum(r["correct"] for r in cot)
    assert_each_shard_made_once_within(emu, 2)
    assert emu.log_path.read_text().count("quota: refused") >= 1


def test_cotgen_cancel_drops_the_queue_its_shards_are_never_created_and_asked_again_later(
    tmp_path, sources, data_dir, monkeypatch, capsys
):
    """`cotgen cancel` against an on-disk instance found through DAGSTER_HOME, like a user's."""
    monkeypatch.setenv("COTGEN_MAX_ACTIVE_JOBS", "1")
    home = tmp_path / "dagster_home"
    home.mkdir()
    sources("easy")
    held = start_emulator(
        tmp_path / "held", latency=0.0, extra_args=["--max-active-jobs", "1", "--fault-hold"]
    )
    with held as emu, dg.DagsterInstance.local_temp(str(home)) as instance:
        pipeline = Pipeline(instance, emu.base_url)
        pipeline.submit_generation("easy", limit=8, **JOBS_OF_4)
        batch = pipeline.metadata("generation_batch", "easy")
        assert (batch["num_jobs_created"], batch["num_jobs_queued"]) == (1, 1)
        assert "1 shard(s) wait for the batch quota" in pipeline.tick().skip_message

        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("COTGEN_GEMINI_BASE_URL", emu.base_url)
        monkeypatch.delenv("GEMINI_API_KEY", raising=False)
        assert cli.main(["cancel", "easy", "generation"]) == 0
        printed = capsys.readouterr().out
        assert f"cancelled ['{batch['batch_names'][0]}'] and dropped 1 queued shard(s)" in printed

        finish_generation(pipeline, "easy")
        ended = pipeline.metadata("generation_results", "easy")["job_state"]
        assert ended == "MIXED(DROPPED_FROM_QUEUE, JOB_STATE_CANCELLED)"  # the dropped shard, the job
        assert len(emu.created_jobs()) == 1, "the dropped shard was never created"

        emu.release()  # and hold no more
        pipeline.submit_generation("easy", limit=8, **JOBS_OF_4)
        again = pipeline.metadata("generation_batch", "easy")
        assert again["num_requests"] == 8, "nothing of the cancelled submission was answered: asked again"


# --------------------------------------------------------------------------- hand damage, a flaky API


def submit_easy_then_medium(pipeline, sources, monkeypatch, easy_limit: int = 8) -> None:
    """easy's first two jobs fill the quota of 2 (held by the emulator); medium's shards queue."""
    monkeypatch.setenv("COTGEN_MAX_ACTIVE_JOBS", "2")
    for scenario in ("easy", "medium"):
        sources(scenario)
    pipeline.submit_generation("easy", limit=easy_limit, **JOBS_OF_4)
    pipeline.submit_generation("medium", limit=8, **JOBS_OF_4)


def saved_submission(data_dir, scenario: str) -> tuple[Path, dict]:
    [path] = (data_dir / scenario / "submissions").glob("generation-*/submission.json")
    return path, json.loads(path.read_text())


def tick_until_created(pipeline, data_dir, scenario: str, jobs: int) -> list:
    """Tick until `scenario` has `jobs` jobs created; what each tick said."""
    said = []

    def created():
        said.append(pipeline.tick().skip_message or "")
        return sum(1 for name in saved_submission(data_dir, scenario)[1]["batch_names"] if name) >= jobs

    wait_for(created, 120, interval=0.05, message=f"{jobs} job(s) of {scenario} created")
    return said


def test_a_deleted_request_file_of_a_job_in_flight_is_said_and_the_queue_goes_on(
    quota_pipeline, emu, data_dir, sources, monkeypatch
):
    submit_easy_then_medium(quota_pipeline, sources, monkeypatch)
    gone = saved_submission(data_dir, "easy")[0].parent / "shard-000.requests.jsonl"
    gone.unlink()

    said = quota_pipeline.tick().skip_message
    assert said.count(str(gone)) == 1 and "2 shard(s) wait for the batch quota" in said

    emu.release()
    tick_until_created(quota_pipeline, data_dir, "medium", 2)
    assert_each_shard_made_once_within(emu, 2)


def test_a_batch_name_this_backend_rejects_stops_only_its_submission(
    quota_pipeline, emu, data_dir, sources, monkeypatch
):
    """A Vertex AI job's name in a Developer API submission (the backend switched, or a hand edit):
    said once, its queued shard waits, and the younger submission gets the room."""
    submit_easy_then_medium(quota_pipeline, sources, monkeypatch, easy_limit=12)  # easy: 2 jobs, 1 queued
    path, saved = saved_submission(data_dir, "easy")
    vertex_name = "projects/p/locations/us-central1/batchPredictionJobs/1"
    saved["batch_names"][0] = vertex_name
    path.write_text(json.dumps(saved))

    said = quota_pipeline.tick().skip_message
    assert said.count(vertex_name) == 1, said
    assert "COTGEN_GEMINI_BACKEND=vertex" in said and "generation|easy" in said

    emu.release()  # easy's other job ends; the rejected one is still counted in flight
    tick_until_created(quota_pipeline, data_dir, "medium", 1)
    assert saved_submission(data_dir, "easy")[1]["batch_names"][2] == ""
    assert_each_shard_made_once_within(emu, 2)


def test_a_queued_shard_whose_file_was_deleted_is_said_and_younger_submissions_go_on(
    quota_pipeline, emu, data_dir, sources, monkeypatch
):
    submit_easy_then_medium(quota_pipeline, sources, monkeypatch, easy_limit=12)  # easy: 2 jobs, 1 queued
    gone = saved_submission(data_dir, "easy")[0].parent / "shard-002.requests.jsonl"
    gone.unlink()

    said = quota_pipeline.tick().skip_message
    assert said.count(str(gone)) == 1 and "put it back" in said, said

    emu.release()
    tick_until_created(quota_pipeline, data_dir, "medium", 2)
    assert saved_submission(data_dir, "easy")[1]["batch_names"][2] == "", "still queued, for when it is back"
    assert_each_shard_made_once_within(emu, 2)


def test_the_sensor_tries_a_queued_create_once_a_tick_and_a_lost_one_is_never_made_twice(
    quota_pipeline, emu, data_dir, sources, monkeypatch
):
    """A create that stalls past the client's timeout, then makes its job: the tick does not wait
    nor retry (it says so once, the shard stays queued); later ticks look the job up by its display
    name until the create timeout has passed, and record it, instead of creating it again."""
    quota_pipeline.resources["gemini"] = GeminiBatchResource(
        base_url=emu.base_url, backoff_seconds=0.05, create_timeout_seconds=3
    )
    submit_easy_then_medium(quota_pipeline, sources, monkeypatch)
    emu.set_faults(slow_create_seconds=6, slow_create_count=1)
    emu.release()

    def said_lost():
        said = quota_pipeline.tick().skip_message or ""
        return said if "could not create queued batch jobs" in said else None

    said = wait_for(said_lost, 120, interval=0.05, message="a tick to lose a create")
    assert said.count("could not create queued batch jobs") == 1
    assert saved_submission(data_dir, "medium")[1]["batch_names"] == ["", ""], "one attempt, then queued"

    emu.wait_for_stalled_creates()
    tick_until_created(quota_pipeline, data_dir, "medium", 2)
    assert_each_shard_made_once_within(emu, 2)


def test_queued_shards_of_a_submission_sent_to_the_other_backend_wait_for_it(
    quota_pipeline, emu, data_dir, sources, monkeypatch
):
    """Its request files are in the other API's format: the sensor never sends them here."""
    submit_easy_then_medium(quota_pipeline, sources, monkeypatch, easy_limit=12)  # easy: 2 jobs, 1 queued
    path, saved = saved_submission(data_dir, "easy")
    path.write_text(json.dumps(saved | {"backend": "vertex"}))

    said = quota_pipeline.tick().skip_message
    assert said.count("COTGEN_GEMINI_BACKEND is 'vertex' again") == 1, said

    emu.release()
    tick_until_created(quota_pipeline, data_dir, "medium", 2)
    assert saved_submission(data_dir, "easy")[1]["batch_names"][2] == ""
    assert_each_shard_made_once_within(emu, 2)


def test_a_tick_reads_each_live_submission_once_for_the_queue(
    quota_pipeline, emu, data_dir, sources, monkeypatch
):
    """On a bucket each read is a paid call: the queue reads a submission once a tick (and the
    results step its scenario's newest once more, fresh, since it saves its jobs' states)."""
    submit_easy_then_medium(quota_pipeline, sources, monkeypatch)
    easy, medium = (str(saved_submission(data_dir, scenario)[0]) for scenario in ("easy", "medium"))
    reads: list[str] = []
    read_text = Path.read_text

    def counted(path, *args, **kwargs):
        if path.name == "submission.json":
            reads.append(str(path))
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counted)
    assert "2 shard(s) wait for the batch quota" in quota_pipeline.tick().skip_message
    assert (reads.count(easy), reads.count(medium)) == (2, 2), reads
