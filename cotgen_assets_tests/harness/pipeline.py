"""Drive the pipeline in-process: materialize assets and evaluate sensor ticks on a test instance."""

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import orjson
import pytest

from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets.definitions import defs
from cotgen_assets.defs.assets.batches import generation_batch, summarization_batch
from cotgen_assets.defs.assets.previews import problem_preview
from cotgen_assets.defs.assets.results import generation_results, summarization_results
from cotgen_assets.defs.assets.samples import cod_samples, cot_samples
from cotgen_assets.defs.assets.sources import source_problems
from cotgen_assets.defs.sensors import batch_completion_sensor, decide_launches
from cotgen_assets.defs.sensors.cursor import SensorCursor
from cotgen_assets_tests.harness.dagster import wait_for
from cotgen_assets_tests.harness.emulator import EmulatorProcess, start_emulator

ALL_ASSETS = [
    source_problems,
    problem_preview,
    generation_batch,
    generation_results,
    cot_samples,
    summarization_batch,
    summarization_results,
    cod_samples,
]


def read_jsonl(path) -> list[dict]:
    """Every record of a JSONL file ([] when there is none yet); a torn or blank line raises."""
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


class Pipeline:
    def __init__(self, instance: dg.DagsterInstance, base_url: str):
        self.instance = instance
        self.resources = {"gemini": GeminiBatchResource(base_url=base_url, backoff_seconds=0.05)}
        self.cursor = None

    def materialize(self, selection, partition: str, run_config: dict | None = None, raise_on_error=True):
        return dg.materialize(
            ALL_ASSETS,
            selection=selection,
            partition_key=partition,
            resources=self.resources,
            instance=self.instance,
            run_config=run_config or {},
            raise_on_error=raise_on_error,
        )

    def submit_generation(self, partition: str, raise_on_error=True, **config):
        return self.materialize(
            [generation_batch],
            partition,
            {"ops": {"generation_batch": {"config": config}}},
            raise_on_error,
        )

    def preview(self, partition: str, raise_on_error=True, **config):
        return self.materialize(
            [problem_preview], partition, {"ops": {"problem_preview": {"config": config}}}, raise_on_error
        )

    def tick(self):
        context = dg.build_sensor_context(
            instance=self.instance, resources=self.resources, definitions=defs, cursor=self.cursor
        )
        data = batch_completion_sensor.evaluate_tick(context)
        self.cursor = data.cursor
        return data

    def run(self, run_request: dg.RunRequest, raise_on_error: bool = True):
        """Execute what the sensor asked for, as the daemon would."""
        job = defs.resolve_job_def(run_request.job_name)
        selection = [key for key in job.asset_layer.executable_asset_keys]
        return dg.materialize(
            ALL_ASSETS,
            selection=selection,
            partition_key=run_request.partition_key,
            tags=run_request.tags,
            run_config=run_request.run_config,
            resources=self.resources,
            instance=self.instance,
            raise_on_error=raise_on_error,
        )

    def drain(self, timeout: float = 120) -> None:
        """Tick the sensor and run what it asks for until no batch is left in flight."""

        def settled():
            data = self.tick()
            for request in data.run_requests:
                assert self.run(request).success
            return not data.run_requests and data.skip_message == "no batch in flight"

        wait_for(settled, timeout, interval=0.05, message="the sensor to have no batch left in flight")

    def tick_until_launch(self, attempts: int = 200):
        """Tick until the sensor launches runs (jobs finish after the emulator's latency)."""
        for _ in range(attempts):
            data = self.tick()
            if data.run_requests:
                return data.run_requests
            time.sleep(0.05)
        raise AssertionError(f"sensor launched nothing: {data.skip_message}")

    def metadata(self, asset: str, partition: str) -> dict:
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
        ).records
        return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


@contextlib.contextmanager
def chain_pipeline(base: Path) -> Iterator[tuple[Pipeline, EmulatorProcess, pytest.MonkeyPatch]]:
    """For a module that runs one chain and checks it in many tests: the pipeline on its own test
    instance and emulator, COTGEN_DATA_DIR=`base`/data; and the environment, for the chain to
    change further. All undone afterwards."""
    emulator = start_emulator(base / "emulator", latency=0.0)
    try:
        with pytest.MonkeyPatch.context() as env, dg.instance_for_test() as instance:
            env.setenv("COTGEN_DATA_DIR", str(base / "data"))
            yield Pipeline(instance, emulator.base_url), emulator, env
    finally:
        emulator.stop()


def requested_ids(meta: dict) -> list[str]:
    """The keys of the request files a generation_batch materialization uploaded."""
    return [orjson.loads(line)["key"] for f in meta["request_files"] for line in open(f, "rb")]


def finish_generation(pipeline: Pipeline, partition: str):
    """Tick until the sensor launches the generation results run for `partition`; run it."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for request in pipeline.tick_until_launch():
            if request.job_name == "generation_results_job" and request.partition_key == partition:
                return pipeline.run(request)
    raise AssertionError("the sensor never launched generation_results_job")


def failure_message(result, node: str) -> str:
    return result.failure_data_for_node(node).error.message


def batches(instance, partition: str = "hard") -> list[dict]:
    """Every generation_batch materialization of the partition, oldest first."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("generation_batch"), asset_partitions=[partition]),
        limit=100,
    ).records
    return [{k: v.value for k, v in r.asset_materialization.metadata.items()} for r in reversed(records)]


class Ticks:
    """The sensor's decisions, tick after tick, with every run it asks for executed at once."""

    def __init__(self, pipeline):
        self.pipeline, self.cursor, self.said = pipeline, SensorCursor(), []

    def tick(self):
        outcome = decide_launches(
            self.pipeline.instance, self.pipeline.resources["gemini"], ["hard"], self.cursor
        )
        self.said.append(outcome)
        for request in outcome.run_requests:
            self.pipeline.run(request, raise_on_error=False)
        return outcome

    def until(self, condition, message: str):
        """Tick until `condition(outcome)` holds; that tick's outcome."""

        def check():
            outcome = self.tick()
            return outcome if condition(outcome) else None

        return wait_for(check, timeout=120, interval=0.05, message=message)

    def quiet(self, ticks: int = 3) -> list:
        """A few more ticks; what they said."""
        return [self.tick() for _ in range(ticks)]
