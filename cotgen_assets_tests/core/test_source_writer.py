"""The problems table written a batch at a time: the same rows, ids and report as the
whole-table way, whatever the batch size and the number of worker processes."""

import dataclasses
import os
import signal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cotgen_assets.core import decontamination, source_writer, sources
from cotgen_assets.core.decontamination import Decontaminator, decontaminate, verify_no_overlap
from cotgen_assets.core.scenarios import ScenarioError, get_scenario, load_scenarios_and_benchmarks
from cotgen_assets.core.sources import load_benchmark_questions, load_source_problems

DATA = Path(os.environ["COTGEN_DATASETS_DIR"])
KEPT = {"easy": 7469, "medium": 1712, "hard": 2267}  # as before streaming (test_decontamination)


@pytest.fixture
def small_batches(monkeypatch):
    """Batches of 1,000 rows and two forked workers: the shipped scenarios take the big-source path."""
    monkeypatch.setattr(sources, "BATCH_ROWS", 1000)
    monkeypatch.setattr(source_writer, "BATCH_ROWS", 1000)
    monkeypatch.setenv("COTGEN_SOURCE_WORKERS", "2")


@pytest.mark.parametrize("name", ["easy", "hard"])
def test_batches_and_workers_write_the_table_and_report_of_one_pass(name, small_batches, tmp_path):
    scenarios, benchmarks = load_scenarios_and_benchmarks()
    scenario = scenarios[name]
    table, dropped, rows = load_source_problems(scenario)
    whole, report = decontaminate(table.combine_chunks(), scenario, benchmarks)  # one batch, in process
    path = tmp_path / "source_problems.parquet"

    written = source_writer.write_problems(scenario, benchmarks, path, preview_rows=5)

    assert pq.read_table(path).equals(whole) and whole.num_rows == KEPT[name] == written.num_rows
    assert written.contamination.metadata() == report.metadata()
    assert (written.dropped, written.dataset_rows) == (dropped, rows)
    assert written.num_matched == table.num_rows + len(dropped)
    assert written.preview == whole.slice(0, 5).to_pylist()
    assert source_writer.overlapping_ids(path, [benchmarks[b] for b in scenario.decontaminate]) == []


def test_a_parquet_path_read_in_batches_gives_the_rows_and_ids_of_the_datasets_copy(monkeypatch):
    """`medium` (filtered) from its Parquet file, 500 rows a batch: each kept row keeps its source row."""
    medium = get_scenario("medium")
    expected, expected_dropped, _ = load_source_problems(medium)
    monkeypatch.setattr(sources, "BATCH_ROWS", 500)
    from_file = dataclasses.replace(medium, path=str(DATA / "competition_math" / "train.parquet"))

    table, dropped, rows = load_source_problems(from_file)

    assert rows == 12500 and table.num_rows == 3099
    assert table.equals(expected) and dropped == expected_dropped


def test_workers_find_the_overlap_one_process_finds():
    _, benchmarks = load_scenarios_and_benchmarks()
    math500 = load_benchmark_questions(benchmarks["math500"])[:40]
    questions = [q if i % 3 else f"Problem: {q}" for i, q in enumerate(math500)] + ["What is 1 + 1?"] * 20
    table = pa.table({"problem_id": [f"p-{i}" for i in range(len(questions))], "question": questions})
    batches = table.to_batches(max_chunksize=7)

    in_process = verify_no_overlap(batches, [benchmarks["math500"]], workers=1)
    forked = verify_no_overlap(batches, [benchmarks["math500"]], workers=2)

    assert in_process == forked == [f"p-{i}" for i in range(40)]


def test_plain_ascii_text_folds_as_the_full_folding_does():
    """The shortcut for text with nothing to fold (ASCII, no LaTeX command, no entity) changes nothing."""
    gsm8k = pq.read_table(DATA / "gsm8k" / "main" / "train.parquet")["question"].to_pylist()
    math = pq.read_table(DATA / "competition_math" / "train.parquet")["problem"].to_pylist()
    made = ["He paid $6,432 {,} 1,2345 (1,2) and 7{,}000.", "", "A  B\tC\n", "x^2 + 1 = 10,000,000"]
    plain = [t for t in gsm8k + math + made if t.isascii() and "\\" not in t and "&" not in t]
    assert len(plain) > 9000
    assert [decontamination._fold(t) for t in plain] == [decontamination._fold_all(t) for t in plain]


def test_a_file_unreadable_part_way_is_one_line_naming_the_row(tmp_path, monkeypatch):
    """A torn copy fails as it is read, batches in: said as the scenario's error, not a thrift trace."""
    monkeypatch.setattr(sources, "BATCH_ROWS", 500)
    table = pa.table(
        {"question": [f"q{i} " * 50 for i in range(4000)], "answer": [f"#### {i}" for i in range(4000)]}
    )
    path = tmp_path / "torn.parquet"
    pq.write_table(table, path, row_group_size=1000)
    offset = pq.ParquetFile(path).metadata.row_group(2).column(0).data_page_offset
    torn = bytearray(path.read_bytes())
    torn[offset + 30 : offset + 2000] = b"\xff" * 1970
    path.write_bytes(bytes(torn))
    scenario = dataclasses.replace(get_scenario("easy"), path=str(path))

    with pytest.raises(
        ScenarioError, match=r"scenario 'easy'.*could not be read past row 2000 of 4000: OSError"
    ):
        load_source_problems(scenario)


@pytest.mark.timeout(120, method="thread")  # a hang ends the session with the stacks, not forever
def test_workers_end_when_the_run_only_notes_sigterm():
    """A Dagster run notes SIGTERM instead of dying, and forked workers inherit that handler: the
    pool must still end when the work fails part way (it hung the run, waiting for its workers)."""
    scenarios, benchmarks = load_scenarios_and_benchmarks()
    batch = pa.RecordBatch.from_pydict({"problem_id": ["p-0", "p-1"], "question": ["What is 2 + 2?"] * 2})
    noted = []
    previous = signal.signal(signal.SIGTERM, lambda *signal_and_frame: noted.append(signal_and_frame))
    try:
        with pytest.raises(RuntimeError, match="part way"):
            with Decontaminator(scenarios["easy"], benchmarks, workers=2) as decontaminator:
                assert decontaminator.filter(batch)["problem_id"].to_pylist() == ["p-0"]
                raise RuntimeError("failed part way")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert noted == []  # the workers were ended, not the test process
