"""The platform as a user runs it, offline: the emulator and `dagster dev` (webserver + daemon), driven
over GraphQL, checked through the files and the instance. For the end-to-end tests."""

import time
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster_graphql import DagsterGraphQLClient

from cotgen_assets_tests.harness.dagster import start_dagster_dev, wait_for
from cotgen_assets_tests.harness.emulator import start_emulator
from cotgen_assets_tests.harness.pipeline import read_jsonl

LIMIT = 30
# How long a flow may take after startup before it counts as stuck: not a speed target. On the four
# workers of scripts/test.sh a busy 2-core box runs a flow up to four times slower than idle (the
# longest flow, three scenarios to CoD and an export, passed 480 s at load 15-20). With dagster dev's
# 300 s to load it stays within pytest's 900 s per test.
DEADLINE_SECONDS = 600


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


def latest_metadata(instance: dg.DagsterInstance, asset: str, partition: str | None = None) -> dict:
    """The metadata of the asset's (partition's) latest materialization."""
    partitions = [partition] if partition else None
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=partitions), limit=1
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


@contextmanager
def offline_platform(
    tmp_path: Path,
    env: dict | None = None,
    latency: float = 1.0,
    deadline_seconds: float = DEADLINE_SECONDS,
    dagster_yaml: Path | None = None,
    more_logs: dict | None = None,
    emulator_env: dict | None = None,
    emulator_args: tuple[str, ...] = (),
):
    """A fresh emulator and `dagster dev` (data in tmp_path/data, home in tmp_path/dagster_home).

    Yields the Platform, with `.instance` and `.emulator`; prints the logs' tails if the test fails
    (`more_logs`: name -> a function returning more log text, e.g. Postgres'). `emulator_env` goes
    to the emulator only (e.g. STORAGE_EMULATOR_HOST for Vertex AI jobs), and so do `emulator_args`
    (e.g. its quotas).
    """
    data, home = tmp_path / "data", tmp_path / "dagster_home"
    emulator = start_emulator(
        tmp_path / "emulator", latency=latency, extra_args=emulator_args, env=emulator_env
    )
    dev = instance = None
    try:
        dev = start_dagster_dev(
            home,
            env={
                "COTGEN_DATA_DIR": str(data),
                "COTGEN_GEMINI_BASE_URL": emulator.base_url,
                "COTGEN_SENSOR_INTERVAL_SECONDS": "2",
                "GEMINI_API_KEY": "",  # offline: the emulator, whatever the caller's shell holds
                **(env or {}),
            },
            dagster_yaml=dagster_yaml,
        )
        platform = Platform(dev, data, time.monotonic() + deadline_seconds)
        platform.instance = instance = dg.DagsterInstance.from_config(str(home))
        platform.emulator = emulator
        yield platform
    except BaseException:
        print("---- dagster dev log (tail) ----")
        print(tail(dev.log()) if dev else "(not started)")
        print("---- emulator log (tail) ----")
        print(emulator.log_tail(60))
        for name, log in (more_logs or {}).items():
            print(f"---- {name} log (tail) ----")
            print(tail(log()))
        raise
    finally:
        if instance:
            instance.dispose()
        if dev:
            dev.stop()
        emulator.stop()
