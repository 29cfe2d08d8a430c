"""End to end (DESIGN §9.5): `dagster dev` and the emulator as real processes, driven over GraphQL.

The test only submits generation batches; the running daemon's batch_completion_sensor alone
must carry every scenario through CoT to CoD. Then a second `fill` asks for nothing and an
`extend` adds new problems that the sensor carries through as well.
"""

import os
import shutil
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster_graphql import DagsterGraphQLClient

from cotgen_assets_tests.dagster_harness import start_dagster_dev, wait_for
from cotgen_assets_tests.emulator_harness import start_emulator
from cotgen_assets_tests.pipeline_harness import read_jsonl

pytestmark = pytest.mark.e2e

SCENARIOS = {"easy": "easy", "medium": "medium", "hard": "hard"}  # partition -> file suffix
LIMIT = 30
DEADLINE_SECONDS = 170  # the whole flow after startup; ~60 s on an idle 2-core box


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


class Platform:
    """The running platform as a user sees it: GraphQL to act, files and the instance to check."""

    def __init__(self, dev, data, deadline: float):
        self.dev, self.data, self.deadline = dev, data, deadline
        self.client = DagsterGraphQLClient("127.0.0.1", port_number=dev.port, timeout=60)

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 1.0)

    def submit_generation(self, partition: str, with_sources: bool = False, **config) -> str:
        """What a click on "Materialize" for generation_batch (and maybe source_problems) does."""
        selection = ["source_problems", "generation_batch"] if with_sources else ["generation_batch"]
        return self.client.submit_job_execution(
            "__ASSET_JOB",
            repository_location_name="cotgen_assets",
            asset_selection=selection,
            tags={"dagster/partition": partition},
            run_config={"ops": {"generation_batch": {"config": {"limit": LIMIT, **config}}}},
        )

    def wait_run(self, run_id: str) -> None:
        def finished():
            status = self.client.get_run_status(run_id)
            return (
                status
                if status
                in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
                else None
            )

        status = wait_for(finished, timeout=self.remaining(), interval=1, message=f"run {run_id}")
        assert status == dg.DagsterRunStatus.SUCCESS, f"run {run_id} ended {status}"

    def wait_samples(self, instance, asset: str, partition: str, count: int) -> dict:
        """Wait for a materialization of `asset` holding `count` samples; returns its metadata."""

        def materialized():
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
            ).records
            if not records:
                return None
            metadata = {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
            return metadata if metadata["num_samples"] >= count else None

        return wait_for(
            materialized,
            timeout=self.remaining(),
            interval=1,
            message=f"{asset} of {partition} with {count} samples",
        )

    def wait_sensor_runs(self, instance, count: int) -> list:
        """Wait until the sensor has launched `count` runs and all of them have ended."""

        def ended():
            runs = instance.get_runs(
                filters=dg.RunsFilter(tags={"dagster/sensor_name": "batch_completion_sensor"})
            )
            return runs if len(runs) >= count and all(r.is_finished for r in runs) else None

        return wait_for(ended, timeout=self.remaining(), interval=1, message=f"{count} sensor runs to end")


def latest_metadata(instance: dg.DagsterInstance, asset: str, partition: str) -> dict:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    assert records, f"{asset} has no materialization for {partition}"
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def check_partition(instance, data, partition: str, suffix: str, count: int) -> tuple[list, list]:
    """The files hold `count` matching records and the metadata costs add up."""
    cot = read_jsonl(data / f"cot_{suffix}.jsonl")
    cod = read_jsonl(data / f"cod_{suffix}.jsonl")
    cot_ids = [r["id"] for r in cot]
    assert len(cot_ids) == len(set(cot_ids)) == count, f"{partition}: CoT ids {cot_ids}"
    assert sorted(r["id"] for r in cod) == sorted(cot_ids), f"{partition}: CoD ids differ from CoT ids"
    assert all(r["scenario"] == partition for r in cot + cod)
    return cot, cod


def test_the_sensor_alone_carries_every_scenario_from_batch_to_cod(tmp_path):
    data = tmp_path / "data"
    home = tmp_path / "dagster_home"
    emulator = start_emulator(tmp_path / "emulator", latency=2.0)
    dev = instance = None
    try:
        dev = start_dagster_dev(
            home,
            env={
                "COTGEN_DATA_DIR": str(data),
                "COTGEN_GEMINI_BASE_URL": emulator.base_url,
                "COTGEN_SENSOR_INTERVAL_SECONDS": "5",
                "GEMINI_API_KEY": "",  # offline: the emulator, whatever the caller's shell holds
            },
        )
        platform = Platform(dev, data, time.monotonic() + DEADLINE_SECONDS)
        instance = dg.DagsterInstance.from_config(str(home))

        submissions = {p: platform.submit_generation(p, with_sources=True) for p in SCENARIOS}
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
    except BaseException:
        print("---- dagster dev log (tail) ----")
        print(tail(dev.log()) if dev else "(not started)")
        print("---- emulator log (tail) ----")
        print(emulator.log_tail(60))
        raise
    finally:
        if instance:
            instance.dispose()
        if dev:
            dev.stop()
        emulator.stop()


def plant_wrong_reference(datasets: Path, source: Path) -> str:
    """A copy of the datasets whose first clean `hard` problem has a wrong reference answer.

    The emulator, which reads the real copy, answers that problem with its true answer, so its
    CoT sample grades as wrong, as if the model had erred. Returns the planted problem's id.
    """
    from cotgen_assets.decontamination import decontaminate
    from cotgen_assets.scenarios import get_scenario, load_benchmarks
    from cotgen_assets.sources import load_source_problems

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
    data, home = tmp_path / "data", tmp_path / "dagster_home"
    emulator = start_emulator(tmp_path / "emulator", latency=1.0)  # reads the real datasets
    dev = instance = None
    try:
        dev = start_dagster_dev(
            home,
            env={
                "COTGEN_DATA_DIR": str(data),
                "COTGEN_DATASETS_DIR": str(tmp_path / "datasets"),
                "COTGEN_GEMINI_BASE_URL": emulator.base_url,
                "COTGEN_SENSOR_INTERVAL_SECONDS": "3",
                "GEMINI_API_KEY": "",
            },
        )
        platform = Platform(dev, data, time.monotonic() + DEADLINE_SECONDS)
        instance = dg.DagsterInstance.from_config(str(home))
        platform.wait_run(platform.submit_generation("hard", with_sources=True, limit=5))
        cod_meta = platform.wait_samples(instance, "cod_samples", "hard", 4)

        cot = read_jsonl(data / "cot_hard.jsonl")
        cod = read_jsonl(data / "cod_hard.jsonl")
        assert len(cot) == 5 and [r["id"] for r in cot if not r["correct"]] == [planted]
        assert sorted(r["id"] for r in cod) == sorted(r["id"] for r in cot if r["correct"])
        assert all(r["correct"] for r in cod) and cod_meta["num_samples"] == 4
        batch = latest_metadata(instance, "summarization_batch", "hard")
        assert batch["num_requests"] == 4 and batch["num_skipped_incorrect"] == 1
        assert batch["skipped_projected_cost_usd"] > 0
    except BaseException:
        print("---- dagster dev log (tail) ----")
        print(tail(dev.log()) if dev else "(not started)")
        raise
    finally:
        if instance:
            instance.dispose()
        if dev:
            dev.stop()
        emulator.stop()
