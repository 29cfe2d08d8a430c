"""A samples file read through one validating reader: a field of the wrong type is damage, said as for
a torn line; a line repeated word for word counts once. Where the probe met them: `cotgen status` and
the count a `fill` (and auto-fill's end) is sized by."""

import logging
import os
import shutil

import dagster as dg
import orjson
import pytest

from cotgen_assets_tests.harness.cli import cotgen
from cotgen_assets_tests.harness.dagster import ROOT
from cotgen_assets_tests.harness.pipeline import read_jsonl
from cotgen_assets_tests.harness.samples import cot_record, write_jsonl

pytestmark = pytest.mark.pipeline


@pytest.fixture
def shell(tmp_path, sources, data_dir):
    """The environment of a user's shell beside an (empty) Dagster home, with easy's problems."""
    sources("easy")
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "scripts" / "dagster.yaml", home / "dagster.yaml")
    return {**os.environ, "DAGSTER_HOME": str(home), "COTGEN_GEMINI_BASE_URL": "http://127.0.0.1:9"}


def warnings(pipeline, asset: str, partition: str) -> list[str]:
    """The warnings logged by the run of the asset's newest materialization."""
    [record] = pipeline.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    logs = pipeline.instance.all_logs(record.run_id)
    return [entry.user_message for entry in logs if entry.level == logging.WARNING]


def generation_row(output: str) -> list[str]:
    [row] = [line for line in output.splitlines() if line.split()[:2] == ["easy", "generation"]]
    return row.split()


def test_a_string_where_a_bool_belongs_is_damage_not_a_correct_sample(shell, data_dir):
    records = [cot_record(f"easy-{row}") for row in range(4)] + [cot_record("easy-4", correct="false")]
    path = write_jsonl(data_dir / "cot_easy.jsonl", records)

    status = cotgen("status", "easy", env=shell)
    assert status.returncode == 1, status.stdout
    assert status.stderr.startswith(
        f"cotgen: {path} is damaged: line(s) 5 are not JSON objects of the record schema in "
        "cotgen_assets/core/records.py (line 5: 'correct' is 'false' (a str), not a bool) "
        "(ids on them: easy-4)"
    ), status.stderr
    assert len(status.stderr.splitlines()) == 1


def test_a_line_repeated_15_times_counts_once_in_status(shell, data_dir):
    records = [cot_record(f"easy-{row}") for row in range(5)]
    write_jsonl(data_dir / "cot_easy.jsonl", records + [records[-1]] * 15)

    status = cotgen("status", "easy", env=shell)
    assert status.returncode == 0, status.stderr
    assert "5/1000" in generation_row(status.stdout), status.stdout


def test_another_record_under_an_id_and_sample_already_read_is_damage(shell, data_dir):
    records = [cot_record(f"easy-{row}") for row in range(3)] + [cot_record("easy-1", correct=False)]
    path = write_jsonl(data_dir / "cot_easy.jsonl", records)

    status = cotgen("status", "easy", env=shell)
    assert status.returncode == 1, (status.returncode, status.stderr)  # -6: aborted at exit
    assert (
        f"{path} is damaged: line 4 holds another record of id 'easy-1' sample 0, already on line 2"
        in status.stderr
    )


def test_a_fill_counts_a_repeated_sample_once_and_the_merge_writes_it_once(pipeline, sources, data_dir):
    sources("easy")
    records = [cot_record(f"easy-{row}") for row in range(5)]
    path = write_jsonl(data_dir / "cot_easy.jsonl", records + [records[-1]] * 15)

    pipeline.submit_generation("easy", limit=8, ask="missing", dry_run=True)
    planned = pipeline.metadata("generation_batch", "easy")
    assert (planned["num_missing"], planned["num_requests"]) == (3, 3)

    pipeline.submit_generation("easy", limit=8, ask="missing")
    pipeline.drain()
    ids = [record["id"] for record in read_jsonl(path)]
    assert len(ids) == len(set(ids)) == 8, ids
    assert pipeline.metadata("cot_samples", "easy")["num_samples"] == 8
    assert path.read_bytes().count(orjson.dumps(records[-1])) == 1


def test_the_merge_says_how_many_repeated_lines_it_dropped(pipeline, sources, data_dir):
    sources("easy")
    records = [cot_record(f"easy-{row}") for row in range(5)]
    path = write_jsonl(data_dir / "cot_easy.jsonl", records + records[3:] * 2)

    pipeline.submit_generation("easy", limit=6, ask="missing")
    pipeline.drain()
    assert len(read_jsonl(path)) == 6
    assert pipeline.metadata("cot_samples", "easy")["num_repeated_lines_dropped"] == 4
    [said] = [line for line in warnings(pipeline, "cot_samples", "easy") if "repeated" in line]
    assert said.startswith(f"{path}: 4 lines repeated a line word for word (ids easy-3, easy-4;"), said


@pytest.mark.parametrize("sample", [-1, 64])
def test_a_sample_number_no_ask_makes_is_damage_not_a_correct_sample(shell, data_dir, sample):
    """Samples are numbered 0 to samples_per_problem - 1 (at most 64): another number is no answer
    the platform asked for, and would be counted beside sample 0 of the same problem."""
    records = [cot_record(f"easy-{row}") for row in range(4)] + [cot_record("easy-1") | {"sample": sample}]
    path = write_jsonl(data_dir / "cot_easy.jsonl", records)

    status = cotgen("status", "easy", env=shell)
    assert status.returncode == 1, status.stdout
    assert status.stderr.startswith(
        f"cotgen: {path} is damaged: line(s) 5 are not JSON objects of the record schema in "
        f"cotgen_assets/core/records.py (line 5: 'sample' is {sample}, not a sample number from 0 to 63) "
        "(ids on them: easy-1)"
    ), status.stderr
