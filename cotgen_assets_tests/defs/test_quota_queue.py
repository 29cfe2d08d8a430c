"""The queue of shards in-process, against an emulator that enforces a quota of 2 jobs in flight:
a click creates what fits and queues the rest, the sensor creates the rest as jobs end, every
scenario and stage sharing one quota, and everything asked is answered once."""

import dagster as dg
import pytest

from cotgen_assets import cli
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
