"""COTGEN_DATA_DIR in a bucket (the local GCS stand-in), and the locks in the Dagster storage."""

import json
import logging
import os
import socket
import subprocess
import sys
import tomllib

import dagster as dg
import orjson
import pyarrow.parquet as pq
import pytest

from cotgen_assets.core import storage
from cotgen_assets.core.scenarios import get_scenario
from cotgen_assets.core.stages import GENERATION
from cotgen_assets.core.storage import StorageError, atomic_write, data_dir, read_jsonl
from cotgen_assets.core.submissions import SubmissionRefused
from cotgen_assets.defs.locks import LOCK_KEY, lock_holder, storage_lock, submission_lock
from cotgen_assets.publish.export import write_export
from cotgen_assets.publish.report import build_report
from cotgen_assets.publish.trace import trace
from cotgen_assets_tests.harness.dagster import ROOT
from cotgen_assets_tests.harness.pipeline import Pipeline
from cotgen_assets_tests.harness.sources import load_source_problems


@pytest.fixture
def bucket(gcs_env, monkeypatch, request):
    """COTGEN_DATA_DIR=gs://cotgen/<test name> on the stand-in; the gcsfs filesystem to look at it."""
    prefix = request.node.name
    monkeypatch.setenv("COTGEN_DATA_DIR", gcs_env.data_url(prefix))
    return gcs_env.fs(), f"{gcs_env.bucket}/{prefix}"


@pytest.mark.parametrize(
    "value, said",
    [
        ("ftp://host/data", "ftp:// is not supported"),
        ("gs:/bucket/data", "looks like a URL missing a '/'"),
        ("hdfs://cluster/data", "hdfs:// is not supported"),
        ("GS://bucket/data", "write the scheme in lower case: 'gs://bucket/data'"),
        ("gs://", "names no bucket: write 'gs://BUCKET/prefix'"),
        ("gs:///data", "names no bucket: write 'gs://BUCKET/prefix'"),
        ("s3://", "names no bucket: write 's3://BUCKET/prefix'"),
    ],
)
def test_a_url_that_cannot_be_opened_is_an_error_not_a_local_folder(value, said, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COTGEN_DATA_DIR", value)
    with pytest.raises(StorageError, match=said):
        data_dir()
    assert list(tmp_path.iterdir()) == [], "no folder named after the URL"


def test_the_extra_a_url_asks_for_exists_and_installs_its_filesystem():
    """`needs the 's3' extra: pip install 'cotgen_assets[s3]'` must be an install that works."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for protocol, extra in storage.OBJECT_STORES.items():
        package = {"gs": "gcsfs", "gcs": "gcsfs", "s3": "s3fs"}[protocol]
        assert extra in extras, f"{protocol}:// asks for the {extra!r} extra, which pyproject.toml lacks"
        assert any(requirement.startswith(package) for requirement in extras[extra]), extras[extra]


def test_a_local_folder_and_a_file_url_stay_plain_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("COTGEN_DATA_DIR", str(tmp_path / "data"))
    assert data_dir() == tmp_path / "data" and storage.is_local(data_dir())
    monkeypatch.setenv("COTGEN_DATA_DIR", f"file://{tmp_path}/data")
    assert data_dir() == tmp_path / "data"


def test_gs_url_is_the_bucket(bucket):
    fs, prefix = bucket
    assert str(data_dir()) == f"gs://{prefix}" and not storage.is_local(data_dir())
    with atomic_write(data_dir() / "a.jsonl") as handle:
        handle.write(b'{"id": "x"}\n')
    assert fs.cat_file(f"{prefix}/a.jsonl") == b'{"id": "x"}\n'
    assert list(read_jsonl(data_dir() / "a.jsonl")) == [{"id": "x"}]


def test_a_failed_write_to_the_bucket_changes_nothing(bucket):
    """An upload that fails half-way neither creates nor replaces the object."""
    fs, prefix = bucket
    with atomic_write(data_dir() / "old.jsonl") as handle:
        handle.write(b'{"id": "old"}\n')
    for name in ("old.jsonl", "new.jsonl"):
        with pytest.raises(RuntimeError, match="disk full"):
            with atomic_write(data_dir() / name) as handle:
                handle.write(b'{"id": "half')
                raise RuntimeError("disk full")
    assert fs.cat_file(f"{prefix}/old.jsonl") == b'{"id": "old"}\n'
    assert not fs.exists(f"{prefix}/new.jsonl")


@pytest.mark.pipeline
def test_the_pipeline_runs_on_the_bucket_and_writes_nothing_local(
    bucket, instance, emulator, source_cache, tmp_path, monkeypatch
):
    """Submit -> sensor -> CoT -> CoD, the report, the export and a trace, all in gs://."""
    fs, prefix = bucket
    cwd, scratch = tmp_path / "cwd", tmp_path / "scratch"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("COTGEN_SCRATCH_DIR", str(scratch))
    cached = source_cache / "easy.parquet"
    if not cached.exists():
        pq.write_table(load_source_problems(get_scenario("easy"))[0], cached)
    fs.put_file(str(cached), f"{prefix}/easy/source_problems.parquet")

    pipeline = Pipeline(instance, emulator.base_url)
    pipeline.submit_generation("easy", limit=3, ask="missing")
    pipeline.drain()
    cot = [orjson.loads(x) for x in fs.cat_file(f"{prefix}/cot_easy.jsonl").splitlines()]
    cod = [orjson.loads(x) for x in fs.cat_file(f"{prefix}/cod_easy.jsonl").splitlines()]
    assert len(cot) == 3 and sorted(r["id"] for r in cod) == sorted(r["id"] for r in cot)
    meta = pipeline.metadata("cot_samples", "easy")
    assert (
        meta["cost_usd"] == pytest.approx(sum(r["generation"]["cost_usd"] for r in cot))
        and meta["cost_usd"] > 0
    )
    submission = meta["submission_id"]
    folder = f"{prefix}/easy/submissions/generation-{submission}"
    assert {os.path.basename(p) for p in fs.ls(folder)} >= {
        "submission.json",
        "shard-000.requests.jsonl",
        "shard-000.context.jsonl",
        "shard-000.results.jsonl",
        "outcomes.jsonl",
        "summary.json",
    }

    report = build_report()
    assert fs.cat_file(f"{prefix}/report/dataset_report.png") == report.png
    export = write_export()
    assert fs.exists(f"{prefix}/export/data/cot/easy.parquet") and fs.exists(f"{prefix}/export/README.md")
    assert export.rows["cot"] == {"easy": 3}
    found = trace(cot[0]["id"])
    assert found["attempts"] and found["files"]["cot_samples"] == f"gs://{prefix}/cot_easy.jsonl"

    assert list(cwd.iterdir()) == [] and list(scratch.iterdir()) == [], (
        "nothing local: no ./data, no 'gs:' folder, the scratch folders removed after each ingestion"
    )


def test_the_submission_lock_refuses_while_held_and_a_dead_holder_is_taken_over(instance):
    with submission_lock(instance, "easy", GENERATION):
        holder = lock_holder(instance, "submit/generation/easy")
        assert holder["pid"] == os.getpid() and holder["run_id"] is None
        with pytest.raises(SubmissionRefused, match="is submitting right now; this one submits nothing"):
            with submission_lock(instance, "easy", GENERATION):
                pass
    assert lock_holder(instance, "submit/generation/easy") is None, "released"

    # A run that held it was killed: once Dagster marks the run finished, the lock is taken over.
    run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job())
    instance.run_storage.set_cursor_values(
        {LOCK_KEY + "submit/generation/easy": orjson.dumps({"run_id": run.run_id, "pid": 1}).decode()}
    )
    with pytest.raises(SubmissionRefused, match=f"held by run {run.run_id}"):
        with submission_lock(instance, "easy", GENERATION):
            pass
    instance.report_run_failed(run)
    with submission_lock(instance, "easy", GENERATION, run_id="new-run"):
        assert lock_holder(instance, "submit/generation/easy")["run_id"] == "new-run"


def test_a_lock_left_by_a_dead_process_on_this_host_is_broken_with_a_warning(pipeline, sources, instance):
    """The submitting process died while the database was out of reach: its run could not be marked
    failed, so Dagster still shows it as running, but its process is gone from this host."""
    sources("easy")
    run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job(), status=dg.DagsterRunStatus.STARTED)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    holder = {"run_id": run.run_id, "step": "generation_batch", "host": socket.gethostname(), "pid": dead.pid}
    instance.run_storage.set_cursor_values({LOCK_KEY + "submit/generation/easy": json.dumps(holder)})

    result = pipeline.submit_generation("easy", limit=2, raise_on_error=False)
    assert result.success, result.failure_data_for_node("generation_batch").error.message
    assert len(list(pipeline.resources["gemini"].list_batches())) == 1
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level >= logging.WARNING]
    assert any(
        f"run {run.run_id} (generation_batch, process {dead.pid} on {socket.gethostname()})" in w
        and "is gone" in w
        for w in warnings
    ), warnings
    assert lock_holder(instance, "submit/generation/easy") is None, "released after the submission"


def test_a_waiting_lock_gives_up_after_its_bound_naming_the_holder(instance):
    said = []
    with storage_lock(instance, "samples/cot_easy.jsonl", run_id=None):
        with pytest.raises(
            RuntimeError, match=r"waited 0 s for lock 'samples/cot_easy.jsonl', still held by process"
        ):
            with storage_lock(instance, "samples/cot_easy.jsonl", wait_seconds=0.3, say=said.append):
                pass
    assert said == [
        f"waiting for lock 'samples/cot_easy.jsonl', held by process {os.getpid()} on {os.uname()[1]}"
    ]
