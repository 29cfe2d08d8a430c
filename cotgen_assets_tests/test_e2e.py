"""End to end: `dagster dev` and the emulator as real processes, driven over GraphQL.

The test only submits generation batches; the running daemon's batch_completion_sensor alone
must carry every scenario through CoT to CoD. Then a second `fill` asks for nothing and an
`extend` adds new problems that the sensor carries through as well.
"""

import os
import shutil
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cotgen_assets_tests.pipeline_harness import read_jsonl
from cotgen_assets_tests.platform_harness import LIMIT, check_partition, latest_metadata, offline_platform

pytestmark = pytest.mark.e2e

SCENARIOS = {"easy": "easy", "medium": "medium", "hard": "hard"}  # partition -> file suffix


def test_the_sensor_alone_carries_every_scenario_from_batch_to_cod(tmp_path):
    data = tmp_path / "data"
    with offline_platform(tmp_path, latency=2.0) as platform:
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

        for partition, suffix in SCENARIOS.items():
            if partition == "easy":
                continue
            cod_meta = platform.wait_samples(instance, "cod_samples", partition, LIMIT)
            cot, cod = check_partition(instance, data, partition, suffix, LIMIT)
            cot_meta = latest_metadata(instance, "cot_samples", partition)
            assert cot_meta["cost_usd"] == pytest.approx(sum(r["generation"]["cost_usd"] for r in cot))
            assert cod_meta["cost_usd"] == pytest.approx(sum(r["summarization"]["cost_usd"] for r in cod))
            assert all("level" in r["source"] and "type" in r["source"] for r in cot)

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


def plant_wrong_reference(datasets: Path, source: Path) -> str:
    """A copy of the datasets whose first clean `hard` problem has a wrong reference answer.

    The emulator, which reads the real copy, answers that problem with its true answer, so its
    CoT sample grades as wrong, as if the model had erred. Returns the planted problem's id.
    """
    from cotgen_assets.core.decontamination import decontaminate
    from cotgen_assets.core.scenarios import get_scenario, load_benchmarks
    from cotgen_assets.core.sources import load_source_problems

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


def test_a_wrong_cot_is_not_summarized(tmp_path):
    """hard, with one planted wrong answer: the sensor saves 5 CoT samples, drafts only the 4 correct."""
    source = Path(os.environ["COTGEN_DATASETS_DIR"])
    planted = plant_wrong_reference(tmp_path / "datasets", source)
    data = tmp_path / "data"
    env = {"COTGEN_DATASETS_DIR": str(tmp_path / "datasets")}
    with offline_platform(tmp_path, env) as platform:  # the emulator reads the real datasets
        instance = platform.instance
        platform.wait_run(platform.submit_generation("hard", with_sources=True, limit=5, ask="missing"))
        cod_meta = platform.wait_samples(instance, "cod_samples", "hard", 4)

        cot = read_jsonl(data / "cot_hard.jsonl")
        cod = read_jsonl(data / "cod_hard.jsonl")
        assert len(cot) == 5 and [r["id"] for r in cot if not r["correct"]] == [planted]
        assert sorted(r["id"] for r in cod) == sorted(r["id"] for r in cot if r["correct"])
        assert all(r["correct"] for r in cod) and cod_meta["num_samples"] == 4
        batch = latest_metadata(instance, "summarization_batch", "hard")
        assert batch["num_requests"] == 4 and batch["num_skipped_incorrect"] == 1
        assert batch["skipped_projected_cost_usd"] > 0
