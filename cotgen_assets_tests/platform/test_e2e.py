"""End to end: `dagster dev` and the emulator as real processes, driven over GraphQL.

One platform, one flow: the test only submits generation batches; the running daemon's
batch_completion_sensor alone must carry every scenario through CoT to CoD, drafting only the
correct CoT samples (one `hard` answer is planted wrong). Then a second `fill` asks for nothing, an
`extend` adds new problems that the sensor carries through as well, and one `hf_dataset` run
exports what is correct, with HF_TOKEN set and shown nowhere.
"""

import os
import shutil
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cotgen_assets_tests.harness.pipeline import read_jsonl
from cotgen_assets_tests.harness.platform import LIMIT, check_partition, latest_metadata, offline_platform
from cotgen_assets_tests.harness.publish import FAKE_TOKEN, expected_ids, load

pytestmark = pytest.mark.e2e

SCENARIOS = {"easy": "easy", "medium": "medium", "hard": "hard"}  # partition -> file suffix


def test_the_sensor_alone_carries_every_scenario_from_batch_to_cod_then_it_is_exported(tmp_path, monkeypatch):
    source = Path(os.environ["COTGEN_DATASETS_DIR"])
    planted = plant_wrong_reference(tmp_path / "datasets", source)
    data = tmp_path / "data"
    env = {
        "COTGEN_DATASETS_DIR": str(tmp_path / "datasets"),  # the emulator reads the real datasets
        "HF_TOKEN": FAKE_TOKEN,  # no hub_repo: nothing is pushed, and the token shows nowhere
    }
    with offline_platform(tmp_path, env, latency=2.0) as platform:
        instance = platform.instance
        nodes = platform.dev.graphql("{ assetNodes { assetKey { path } partitionKeys } }")["assetNodes"]
        partitions = {"/".join(n["assetKey"]["path"]): n["partitionKeys"] for n in nodes}
        assert partitions["source_problems"] == list(SCENARIOS), "the UI offers one partition per scenario"

        submissions = {p: platform.submit_generation(p, with_sources=True, ask="missing") for p in SCENARIOS}
        for partition, run_id in submissions.items():
            platform.wait_run(run_id)
            batch = latest_metadata(instance, "generation_batch", partition)
            assert batch["num_requests"] == LIMIT and batch["batch_names"] and batch["offline"] is True

        # From here on the test only waits: the sensor launches every other run.
        cod_meta = platform.wait_samples(instance, "cod_samples", "easy", LIMIT)
        cot, cod = check_partition(instance, data, "easy", "easy", LIMIT)
        cot_meta = latest_metadata(instance, "cot_samples", "easy")
        assert cot_meta["num_samples"] == cot_meta["num_new"] == LIMIT
        assert cot_meta["cost_usd"] == pytest.approx(sum(r["generation"]["cost_usd"] for r in cot))
        assert cod_meta["cost_usd"] == pytest.approx(sum(r["summarization"]["cost_usd"] for r in cod))
        assert cot_meta["cost_usd"] > 0 and cod_meta["cost_usd"] > 0

        # A second fill finds every problem answered correctly and submits nothing.
        assert all(r["correct"] for r in cot), "the emulator answers GSM8K with the reference"
        platform.wait_run(platform.submit_generation("easy"))
        fill = latest_metadata(instance, "generation_batch", "easy")
        assert fill["num_requests"] == 0 and fill["batch_names"] == []

        # An extend asks for new problems only; the sensor carries them through to CoD too.
        platform.wait_run(platform.submit_generation("easy", mode="extend"))
        extend = latest_metadata(instance, "generation_batch", "easy")
        assert extend["num_requests"] == extend["num_new_problems"] == LIMIT

        cod_meta = platform.wait_samples(instance, "cod_samples", "medium", LIMIT)
        cot, cod = check_partition(instance, data, "medium", "medium", LIMIT)
        cot_meta = latest_metadata(instance, "cot_samples", "medium")
        assert cot_meta["cost_usd"] == pytest.approx(sum(r["generation"]["cost_usd"] for r in cot))
        assert cod_meta["cost_usd"] == pytest.approx(sum(r["summarization"]["cost_usd"] for r in cod))
        assert all("level" in r["source"] and "type" in r["source"] for r in cot)

        # hard, with one planted wrong answer: LIMIT CoT samples, drafts only of the correct ones.
        cod_meta = platform.wait_samples(instance, "cod_samples", "hard", LIMIT - 1)
        cot = read_jsonl(data / "cot_hard.jsonl")
        cod = read_jsonl(data / "cod_hard.jsonl")
        assert len(cot) == LIMIT and [r["id"] for r in cot if not r["correct"]] == [planted]
        assert sorted(r["id"] for r in cod) == sorted(r["id"] for r in cot if r["correct"])
        assert all(r["correct"] for r in cod) and cod_meta["num_samples"] == LIMIT - 1
        assert all("level" in r["source"] and "type" in r["source"] for r in cot)
        batch = latest_metadata(instance, "summarization_batch", "hard")
        assert batch["num_requests"] == LIMIT - 1 and batch["num_skipped_incorrect"] == 1
        assert batch["skipped_projected_cost_usd"] > 0

        platform.wait_samples(instance, "cod_samples", "easy", 2 * LIMIT)
        cot, cod = check_partition(instance, data, "easy", "easy", 2 * LIMIT)
        assert not {r["id"] for r in cot[:LIMIT]} & {r["id"] for r in cot[LIMIT:]}
        cot_meta = latest_metadata(instance, "cot_samples", "easy")
        assert cot_meta["num_samples"] == 2 * LIMIT and cot_meta["num_new"] == LIMIT
        assert cot_meta["total_cost_usd"] == pytest.approx(sum(r["generation"]["cost_usd"] for r in cot))

        # Every run after the submissions was launched by the sensor, once per submission.
        launched = platform.wait_sensor_runs(instance, 8)
        by_job = {}
        for run in launched:
            assert run.status == dg.DagsterRunStatus.SUCCESS, f"{run.job_name} {run.tags} ended {run.status}"
            by_job.setdefault(run.job_name, []).append(run.tags["dagster/partition"])
        assert sorted(by_job["generation_results_job"]) == ["easy", "easy", "hard", "medium"]
        assert sorted(by_job["summarization_results_job"]) == ["easy", "easy", "hard", "medium"]

        # One click on hf_dataset exports the correct samples of every scenario, the planted one not.
        run_id = platform.client.submit_job_execution(
            "__ASSET_JOB", repository_location_name="cotgen_assets", asset_selection=["hf_dataset"]
        )
        platform.wait_run(run_id)
        monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        for config, split, count in (("cot", "easy", 2 * LIMIT), ("cod", "hard", LIMIT - 1)):
            rows = load(data / "export", config, split, tmp_path / "cache")
            assert rows["id"] == expected_ids(data, split) and len(rows) == count
        assert planted not in load(data / "export", "cot", "hard", tmp_path / "cache")["id"]
        logs = instance.all_logs(run_id)
        assert logs and not any(FAKE_TOKEN in str(record) for record in logs)
        assert FAKE_TOKEN not in platform.dev.log()
        assert not any(FAKE_TOKEN.encode() in p.read_bytes() for p in data.rglob("*") if p.is_file())


def plant_wrong_reference(datasets: Path, source: Path) -> str:
    """A copy of the datasets whose first clean `hard` problem has a wrong reference answer.

    The emulator, which reads the real copy, answers that problem with its true answer, so its
    CoT sample grades as wrong, as if the model had erred. Returns the planted problem's id.
    """
    from cotgen_assets.core.scenarios import get_scenario, load_benchmarks
    from cotgen_assets_tests.harness.sources import decontaminate, load_source_problems

    hard = get_scenario("hard")
    clean, _ = decontaminate(load_source_problems(hard)[0], hard, load_benchmarks())
    first = clean.slice(0, 1).to_pylist()[0]
    datasets.mkdir()
    for name in ("gsm8k", "hendrycks_math", "MATH-500"):
        (datasets / name).symlink_to(source / name)
    math = datasets / "competition_math"
    math.mkdir()
    for name in ("README.md", "LICENSE"):
        shutil.copy(source / "competition_math" / name, math / name)
    table = pq.read_table(source / "competition_math" / "train.parquet")
    solutions = table["solution"].to_pylist()
    row = first["source_row"]
    wrong = f"{first['answer']}1"  # "12" becomes "121": never equal to the true answer
    solutions[row] = solutions[row][: solutions[row].rindex("\\boxed{")] + f"\\boxed{{{wrong}}}"
    pq.write_table(
        table.set_column(table.schema.get_field_index("solution"), "solution", pa.array(solutions)),
        math / "train.parquet",
    )
    return first["problem_id"]
