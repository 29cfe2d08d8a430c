"""The problems table written a batch at a time: the same rows, ids and report as the
whole-table way, whatever the batch size and the number of worker processes."""

import dataclasses
import multiprocessing.context
import os
import signal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cotgen_assets.core import decontamination, source_writer, sources
from cotgen_assets.core.decontamination import Decontaminator
from cotgen_assets.core.scenarios import ScenarioError, get_scenario, load_scenarios_and_benchmarks
from cotgen_assets.core.sources import load_benchmark_questions
from cotgen_assets_tests.harness.sources import (
    CountedProcess,
    decontaminate,
    kill_a_worker_before_the_second_batch,
    load_source_problems,
)

DATA = Path(os.environ["COTGEN_DATASETS_DIR"])
KEPT = {"easy": 7469, "medium": 1712, "hard": 2267}  # as before streaming (test_decontamination)


@pytest.fixture
def small_batches(monkeypatch):
    """Batches of 1,000 rows in chunks of 250 and two workers: the shipped scenarios take the
    big-source path, and both workers get work."""
    monkeypatch.setattr(sources, "BATCH_ROWS", 1000)
    monkeypatch.setattr(decontamination, "CHUNK_ROWS", 250)
    monkeypatch.setattr(source_writer, "BATCH_ROWS", 1000)
    monkeypatch.setenv("COTGEN_SOURCE_WORKERS", "2")


@pytest.mark.parametrize("name", ["easy", "hard"])
def test_batches_and_workers_write_the_table_and_report_of_one_pass(name, small_batches, data_dir, tmp_path):
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
    assert written.overlap == []


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

    scenario = dataclasses.replace(get_scenario("medium"), decontaminate=("math500",))
    with Decontaminator(scenario, benchmarks, workers=1) as in_process:
        in_process_ids = in_process.overlapping(batches)
    with Decontaminator(scenario, benchmarks, workers=2) as forked:
        forked_ids = forked.overlapping(batches)

    assert in_process_ids == forked_ids == [f"p-{i}" for i in range(40)]


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


@pytest.mark.timeout(120, method="thread")  # a guard: the old pool waited forever for the lost work
def test_a_killed_worker_is_one_clear_error_and_nothing_is_written(small_batches, data_dir, monkeypatch):
    """The out-of-memory killer ends a worker part way: the run stops with one line saying what
    happened and what to do, and the table already there stays as it was (no temporary file left)."""
    scenarios, benchmarks = load_scenarios_and_benchmarks()
    path = data_dir / "easy" / "source_problems.parquet"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"the table of the last materialization")
    batches_seen = kill_a_worker_before_the_second_batch(monkeypatch)
    with pytest.raises(RuntimeError, match=r"worker process .*died.*COTGEN_SOURCE_WORKERS"):
        source_writer.write_problems(scenarios["easy"], benchmarks, path, preview_rows=5)

    assert len(batches_seen) == 2
    assert path.read_bytes() == b"the table of the last materialization"
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_two_decontaminators_in_one_process_each_match_their_own_benchmarks():
    """In the run's own process each `Decontaminator` matches against its scenario's indexes, not
    the indexes of the last one made (a module-wide setting shared them)."""
    scenarios, benchmarks = load_scenarios_and_benchmarks()
    math500 = load_benchmark_questions(benchmarks["math500"])[0]
    batch = pa.RecordBatch.from_pydict(
        {"problem_id": ["p-0", "p-1"], "question": [math500, "What is 2 + 2?"]}
    )
    opted_out = dataclasses.replace(scenarios["hard"], decontaminate=())
    with Decontaminator(scenarios["hard"], benchmarks) as checking, Decontaminator(opted_out, benchmarks):
        assert checking.filter(batch)["problem_id"].to_pylist() == ["p-1"]


def test_a_kept_problem_is_folded_once_when_some_benchmarks_are_skipped(monkeypatch):
    """The chosen and the skipped benchmarks are matched from one folding of each question."""
    scenarios, benchmarks = load_scenarios_and_benchmarks()
    partial = dataclasses.replace(scenarios["easy"], decontaminate=("gsm8k_test",))
    questions = [
        f"Tom has {i} apples and buys {i + 3} more. How many apples does he have now?" for i in range(50)
    ]
    batch = pa.RecordBatch.from_pydict({"problem_id": [f"p-{i}" for i in range(50)], "question": questions})
    folded = []
    fold = decontamination._fold
    with Decontaminator(partial, benchmarks) as decontaminator:
        monkeypatch.setattr(decontamination, "_fold", lambda text: folded.append(text) or fold(text))
        assert decontaminator.filter(batch).num_rows == 50
    assert sorted(folded) == sorted(questions)


def test_worker_chunks_are_sized_by_bytes_as_well_as_rows():
    """A source of very long rows sends no worker a chunk far over `CHUNK_BYTES`."""
    long_rows = pa.array(["x" * (decontamination.CHUNK_BYTES // 4)] * 30 + ["short"] * 20)
    giant = pa.array(["y" * (2 * decontamination.CHUNK_BYTES), "z"])
    many = pa.array(["a question"] * (decontamination.CHUNK_ROWS + 1))

    for questions in (long_rows, giant, many):
        chunks = list(decontamination.worker_chunks(questions))
        assert [q for chunk in chunks for q in chunk] == questions.to_pylist()
        for chunk in chunks:
            assert len(chunk) == 1 or sum(len(q.encode()) for q in chunk) <= decontamination.CHUNK_BYTES
            assert len(chunk) <= decontamination.CHUNK_ROWS
    assert [len(chunk) for chunk in decontamination.worker_chunks(long_rows)] == [4] * 7 + [2 + 20]


def test_the_decontamination_and_its_check_share_one_set_of_workers(small_batches, data_dir, monkeypatch):
    """Workers build the benchmark indexes as they start (seconds each): the check of the written
    table reuses the decontamination's workers instead of starting new ones."""
    scenarios, benchmarks = load_scenarios_and_benchmarks()
    monkeypatch.setattr(multiprocessing.context.ForkServerContext, "Process", CountedProcess)
    monkeypatch.setattr(CountedProcess, "STARTED", [])

    written = source_writer.write_problems(scenarios["easy"], benchmarks, data_dir / "p.parquet", 5)

    assert written.num_rows == KEPT["easy"] and written.overlap == []
    assert len(CountedProcess.STARTED) == 2
