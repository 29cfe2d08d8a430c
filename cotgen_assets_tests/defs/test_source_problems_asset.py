import os
import subprocess
import sys

import dagster as dg
import pyarrow.parquet as pq
import pytest

from cotgen_assets.core import source_writer, sources
from cotgen_assets.defs.assets.sources import source_problems
from cotgen_assets_tests.harness.dagster import ROOT
from cotgen_assets_tests.harness.pipeline import failure_message
from cotgen_assets_tests.harness.sources import kill_a_worker_before_the_second_batch

pytestmark = pytest.mark.pipeline


def test_materialize_medium_writes_parquet_and_metadata(tmp_path, monkeypatch):
    monkeypatch.setenv("COTGEN_DATA_DIR", str(tmp_path))
    result = dg.materialize([source_problems], partition_key="medium")
    assert result.success
    metadata = result.asset_materializations_for_node("source_problems")[0].metadata
    # 3,099 match the filters; 1,387 of them are MATH test problems (or share 13 telling words with one)
    assert (metadata["num_matched"].value, metadata["num_contaminated"].value) == (3099, 1387)
    assert metadata["num_rows"].value == 1712 and metadata["decontaminated"].value is True
    assert metadata["dataset"].value == "qwedsacf/competition_math"
    assert metadata["filters"].value == [
        "level=Level 1,Level 2,Level 3",
        "type=Algebra,Intermediate Algebra,Precalculus",
    ]
    preview = metadata["preview"].value
    assert len(preview.records) == 5 and preview.records[0].data["answer"]
    table = pq.read_table(tmp_path / "medium" / "source_problems.parquet")
    assert table.num_rows == 1712

    again = dg.materialize([source_problems], partition_key="medium")
    assert again.success
    assert pq.read_table(tmp_path / "medium" / "source_problems.parquet")["problem_id"].equals(
        table["problem_id"]
    )


def test_hard_reports_the_rows_it_drops(tmp_path, monkeypatch):
    monkeypatch.setenv("COTGEN_DATA_DIR", str(tmp_path))
    metadata = (
        dg.materialize([source_problems], partition_key="hard")
        .asset_materializations_for_node("source_problems")[0]
        .metadata
    )
    assert (metadata["num_matched"].value, metadata["num_dropped_no_answer"].value) == (4118, 2)
    assert metadata["dropped_ids"].value == ["hard-5529", "hard-5531"]
    # of the 4,116 gradable ones, 1,846 are benchmark problems and 3 repeat an earlier problem
    assert (metadata["num_contaminated"].value, metadata["num_duplicates"].value) == (1846, 3)
    assert metadata["num_rows"].value == 4116 - 1846 - 3


def test_dagster_cli_materializes_a_partition(tmp_path):
    # `dagster asset materialize` has no -w option: it takes the module (as in the README).
    env = {**os.environ, "COTGEN_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "asset",
            "materialize",
            "-m",
            "cotgen_assets.definitions",
            "--select",
            "source_problems",
            "--partition",
            "medium",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    assert pq.read_table(tmp_path / "data" / "medium" / "source_problems.parquet").num_rows == 1712


@pytest.mark.timeout(180, method="thread")  # a guard: the old pool waited forever for the lost work
def test_a_killed_decontamination_worker_fails_the_run_in_one_line(tmp_path, monkeypatch):
    """A worker killed part way (the out-of-memory killer, kill -9) ends the run with a Failure
    saying what happened and what to do; the last table and its report stay as they were."""
    monkeypatch.setenv("COTGEN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COTGEN_SOURCE_WORKERS", "2")
    monkeypatch.setattr(sources, "BATCH_ROWS", 1000)  # 8 batches: the big-source path, with workers
    monkeypatch.setattr(source_writer, "BATCH_ROWS", 1000)
    (tmp_path / "easy").mkdir()
    last = {"source_problems.parquet": b"last table", "decontamination.json": b"{}"}
    for name, content in last.items():
        (tmp_path / "easy" / name).write_bytes(content)
    batches_seen = kill_a_worker_before_the_second_batch(monkeypatch)
    result = dg.materialize([source_problems], partition_key="easy", raise_on_error=False)

    assert not result.success and len(batches_seen) == 2  # it stopped where the worker died
    message = failure_message(result, "source_problems")
    assert "decontamination worker process died" in message, message
    assert "nothing was written" in message and "COTGEN_SOURCE_WORKERS=1" in message
    assert "Traceback" not in message and len(message.splitlines()) == 1
    assert {p.name: p.read_bytes() for p in (tmp_path / "easy").iterdir()} == last
