"""Two machines: two Dagster instances with one Postgres database and one bucket, nothing else shared.

Instance A is `dagster dev` (webserver and daemon, so its sensor runs); instance B is a second
DAGSTER_HOME driven by plain processes (`dg.materialize`), as a run on another machine would be.
Both read the documented Postgres dagster.yaml and COTGEN_DATA_DIR=gs://cotgen/data on the local GCS
stand-in; neither has a local folder the other sees. The emulator is the Gemini API: its batch
list says how many batches were paid.
"""

import json
import os
import subprocess
import sys
import time

import dagster as dg
import orjson
import pyarrow.parquet as pq
import pytest
from dagster_postgres import PostgresRunStorage

from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets.core.scenarios import get_scenario
from cotgen_assets_tests.harness.dagster import ROOT, start_dagster_dev, wait_for
from cotgen_assets_tests.harness.emulator import start_emulator
from cotgen_assets_tests.harness.gcs import start_gcs
from cotgen_assets_tests.harness.pipeline import Pipeline
from cotgen_assets_tests.harness.platform import DEADLINE_SECONDS, Platform, latest_metadata, tail
from cotgen_assets_tests.harness.postgres import POSTGRES_DAGSTER_YAML, start_postgres
from cotgen_assets_tests.harness.results import make_submission, write_results
from cotgen_assets_tests.harness.sources import load_source_problems

LIMIT = 5

# Machine B's click on generation_batch: loads everything, then waits for the go file.
CLICK = r"""
import json, os, sys, time
import dagster as dg
from cotgen_assets.defs.assets.batches import generation_batch
from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets_tests.harness.pipeline import ALL_ASSETS

instance = dg.DagsterInstance.get()
print("ready", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.005)
result = dg.materialize(
    ALL_ASSETS, selection=[generation_batch], partition_key="easy", instance=instance,
    resources={"gemini": GeminiBatchResource(base_url=sys.argv[1], backoff_seconds=0.05)},
    run_config={"ops": {"generation_batch": {"config": {"limit": int(sys.argv[3])}}}}, raise_on_error=False)
if result.success:
    print(json.dumps({"batch_names": result.asset_materializations_for_node("generation_batch")[0]
                      .metadata["batch_names"].value}))
else:
    print(json.dumps({"refused": result.failure_data_for_node("generation_batch").error.message}))
"""

# An ingestion into cot_easy.jsonl in the bucket, holding the lock the assets use, in the Dagster
# storage of its own DAGSTER_HOME. With a pause point it stops mid-merge until the go file exists.
INGEST = r"""
import os, sys, time
import dagster as dg
import cotgen_assets.backends  # registers the batch APIs' wire formats, as the code location does
from cotgen_assets.core.ingest import ingest_submission
from cotgen_assets.defs.locks import samples_lock
from cotgen_assets.core.stages import GENERATION
from cotgen_assets.core.storage import samples_path
from cotgen_assets.core.submissions import load_submission

submission_id, pause_at, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
seen = []

def observe(record):
    seen.append(1)
    if len(seen) == pause_at:
        print("paused", flush=True)
        while not os.path.exists(go):
            time.sleep(0.01)

path = samples_path(GENERATION, "easy")
lock = samples_lock(dg.DagsterInstance.get(), path, say=lambda message: print(message, flush=True))
print("ready", flush=True)
ingest_submission(load_submission("easy", GENERATION, submission_id), path, observe=observe, lock=lock)
print("done", flush=True)
"""


def comparable(record: dict) -> dict:
    """A record without the API's batch name (which job of the emulator answered it)."""
    return {
        k: ({**v, "batch": None} if isinstance(v, dict) and "batch" in v else v) for k, v in record.items()
    }


def single_instance_run(tmp_path, source_file, monkeypatch) -> dict:
    """The same submission on one instance, SQLite and a local folder: what both machines must equal."""
    data = tmp_path / "single" / "data"
    (data / "easy").mkdir(parents=True)
    (data / "easy" / "source_problems.parquet").write_bytes(source_file.read_bytes())
    monkeypatch.setenv("COTGEN_DATA_DIR", str(data))
    emulator = start_emulator(tmp_path / "single" / "emulator", latency=0.0)
    try:
        with dg.instance_for_test() as instance:
            pipeline = Pipeline(instance, emulator.base_url)
            pipeline.submit_generation("easy", limit=LIMIT)
            pipeline.drain()
            return {
                "cot": sorted(
                    map(comparable, map(orjson.loads, (data / "cot_easy.jsonl").read_bytes().splitlines())),
                    key=lambda r: r["id"],
                ),
                "cod": sorted(
                    map(comparable, map(orjson.loads, (data / "cod_easy.jsonl").read_bytes().splitlines())),
                    key=lambda r: r["id"],
                ),
                "cot_cost": pipeline.metadata("cot_samples", "easy")["cost_usd"],
                "cod_cost": pipeline.metadata("cod_samples", "easy")["cost_usd"],
            }
    finally:
        emulator.stop()


def spawn(script: str, env: dict, *args: str) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", script, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "ready"
    return child


@pytest.mark.e2e
def test_two_machines_share_one_postgres_and_one_bucket(tmp_path, source_cache, monkeypatch):
    started = time.monotonic()
    source_file = source_cache / "easy.parquet"
    if not source_file.exists():
        pq.write_table(load_source_problems(get_scenario("easy"))[0], source_file)
    expected = single_instance_run(tmp_path, source_file, monkeypatch)

    postgres = start_postgres()
    gcs = start_gcs("cotgen", tmp_path / "gcs")
    emulator = start_emulator(tmp_path / "emulator", latency=1.0)
    dev = instance_a = None
    env = {
        **postgres.env(),
        **gcs.env(),
        "COTGEN_DATA_DIR": gcs.data_url("data"),
        "COTGEN_GEMINI_BASE_URL": emulator.base_url,
        "COTGEN_SENSOR_INTERVAL_SECONDS": "2",
        "GEMINI_API_KEY": "",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # this process looks at the bucket and Postgres too
    try:
        fs = gcs.fs()
        fs.put_file(str(source_file), "cotgen/data/easy/source_problems.parquet")
        home_a, home_b = tmp_path / "machine_a" / "dagster_home", tmp_path / "machine_b" / "dagster_home"
        home_b.mkdir(parents=True)
        (home_b / "dagster.yaml").write_text(POSTGRES_DAGSTER_YAML.read_text())
        env_b = {**os.environ, **env, "DAGSTER_HOME": str(home_b)}
        dev = start_dagster_dev(home_a, env=env, dagster_yaml=POSTGRES_DAGSTER_YAML)
        platform = Platform(dev, None, time.monotonic() + DEADLINE_SECONDS)
        instance_a = dg.DagsterInstance.from_config(str(home_a))

        # The same generation_batch on both machines at once: exactly one batch is paid.
        go = tmp_path / "go"
        click_b = spawn(CLICK, env_b, emulator.base_url, str(go), str(LIMIT))
        run_a = platform.submit_generation("easy")
        go.touch()
        answer_b = json.loads(click_b.stdout.readline())
        assert click_b.wait(timeout=60) == 0
        status_a = wait_for(
            lambda: (r := instance_a.get_run_by_id(run_a)) and r.is_finished and r.status,
            timeout=platform.remaining(),
            message="machine A's generation_batch run",
        )
        # Generation jobs only: by now A's sensor may have carried the one job on to its drafts.
        listed = GeminiBatchResource(base_url=emulator.base_url).list_batches()
        batches = [job for job in listed if "-generation-" in job.display_name]
        assert len(batches) == 1, f"paid generation batches: {[b.name for b in batches]}"
        if "refused" in answer_b:  # A submitted; B was refused (submitting right now, or in flight)
            assert status_a == dg.DagsterRunStatus.SUCCESS
            assert "submitting right now" in answer_b["refused"] or "in flight" in answer_b["refused"]
        else:  # B submitted; A's run failed with the refusal
            assert answer_b["batch_names"] == [batches[0].name]
            assert status_a == dg.DagsterRunStatus.FAILURE
        print(f"machine B: {answer_b}; machine A: {status_a}")

        # Machine A's sensor carries the one batch to CoD, whichever machine submitted it.
        platform.wait_samples(instance_a, "cod_samples", "easy", LIMIT)
        read = lambda name: [orjson.loads(x) for x in fs.cat_file(f"cotgen/data/{name}").splitlines()]  # noqa: E731
        cot, cod = read("cot_easy.jsonl"), read("cod_easy.jsonl")
        assert sorted(map(comparable, cot), key=lambda r: r["id"]) == expected["cot"]
        assert sorted(map(comparable, cod), key=lambda r: r["id"]) == expected["cod"]
        assert latest_metadata(instance_a, "cot_samples", "easy")["cost_usd"] == expected["cot_cost"]
        assert latest_metadata(instance_a, "cod_samples", "easy")["cost_usd"] == expected["cod_cost"]
        assert not list(home_a.rglob("*.db")) and not list(home_b.rglob("*.db")), "all in Postgres"
        assert isinstance(instance_a.run_storage, PostgresRunStorage)
        launched = platform.wait_sensor_runs(instance_a, 2)
        assert sorted(r.job_name for r in launched) == ["generation_results_job", "summarization_results_job"]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in launched)
        # The runs, their events and the sensor's ticks are in Postgres's tables.
        run_ids = {run_a, *(r.run_id for r in launched)}
        assert run_ids <= {row[0] for row in postgres.query("SELECT run_id FROM runs")}
        events = dict(
            postgres.query(
                "SELECT run_id, count(*) FROM event_logs WHERE run_id = ANY(%s) GROUP BY run_id",
                list(run_ids),
            )
        )
        assert set(events) == run_ids and all(count > 0 for count in events.values())
        materialized = postgres.query(
            "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
            " AND asset_key LIKE %s",
            '%"cod_samples"%',
        )
        assert materialized[0][0] >= 1
        assert postgres.query("SELECT count(*) FROM job_ticks WHERE type = 'SENSOR'")[0][0] >= 1

        # Two ingestions of one scenario at once, one per machine: neither loses the other's records.
        extra_a, extra_b = list(range(90000, 90020)), list(range(91000, 91010))
        write_results(make_submission("extra-a", extra_a))
        write_results(make_submission("extra-b", extra_b))
        resume = tmp_path / "resume"
        first = spawn(
            INGEST, {**os.environ, **env, "DAGSTER_HOME": str(home_a)}, "extra-a", "22", str(resume)
        )
        second = None
        try:
            assert first.stdout.readline().strip() == "paused"  # mid-merge, holding the lock
            second = spawn(INGEST, env_b, "extra-b", "0", "")
            said = second.stdout.readline().strip()
            assert said.startswith("waiting for lock 'samples/cot_easy.jsonl', held by process"), said
            resume.touch()
            assert first.wait(timeout=60) == 0 and second.wait(timeout=60) == 0
        finally:
            first.kill()
            if second:
                second.kill()
        ids = [r["id"] for r in read("cot_easy.jsonl")]
        assert len(ids) == len(set(ids))
        assert set(ids) == {r["id"] for r in cot} | {f"easy-{n}" for n in extra_a + extra_b}
        print(f"two machines: {time.monotonic() - started:.0f} s")
    except BaseException:
        print("---- dagster dev log (tail) ----")
        print(tail(dev.log()) if dev else "(not started)")
        print("---- emulator log (tail) ----")
        print(emulator.log_tail(40))
        print("---- gcs log (tail) ----")
        print(tail(gcs.log()))
        raise
    finally:
        if instance_a:
            instance_a.dispose()
        if dev:
            dev.stop()
        emulator.stop()
        gcs.stop()
        postgres.stop()
