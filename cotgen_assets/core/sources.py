"""Source problems: find a scenario's dataset, filter it, and extract reference answers."""

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cotgen_assets.core.answers import extract_reference_answer
from cotgen_assets.core.scenarios import Benchmark, Scenario, ScenarioError

SOURCE_COLUMNS = [
    "problem_id",
    "scenario",
    "question",
    "solution",
    "answer",
    "source_dataset",
    "source_config",
    "source_split",
    "source_row",
]


def resolve_dataset(dataset: str, path: str | None, owner: str = "scenario") -> tuple[str, str]:
    """Where to load a dataset from, and how that was decided: its own `path`, else
    `$COTGEN_DATASETS_DIR/<last part of its id>`, else the Hugging Face hub."""
    if path:
        return path, f"the {owner}'s path"
    local_root = os.environ.get("COTGEN_DATASETS_DIR")
    if local_root:
        return str(Path(local_root) / dataset.split("/")[-1]), "$COTGEN_DATASETS_DIR"
    return dataset, "the Hugging Face hub"


BATCH_ROWS = 50_000  # rows read, prepared and decontaminated at a time: memory stays flat


@dataclass
class SourceBatches:
    """A dataset split read one record batch at a time, so that a big source never sits in memory."""

    schema: pa.Schema
    num_rows: int
    batches: Iterator[pa.RecordBatch]


def load_split(
    dataset: str, config: str | None, split: str, path: str | None, owner: str, name: str
) -> pa.Table:
    """One split of a dataset (scenario or benchmark) as an Arrow table, or an error saying how to fix it."""
    split_batches = open_split(dataset, config, split, path, owner, name)
    return pa.Table.from_batches(list(split_batches.batches), split_batches.schema)


def open_split(
    dataset: str, config: str | None, split: str, path: str | None, owner: str, name: str
) -> SourceBatches:
    """One split of a dataset as record batches, or an error saying how to fix it.

    A Parquet file (a scenario's `path:`) is read with pyarrow, a batch at a time; anything else goes
    through `datasets`, whose Arrow cache file is then read a batch at a time (not memory-mapped whole).
    """
    location, origin = resolve_dataset(dataset, path, owner)
    try:
        if Path(location).is_file() and not location.endswith((".json", ".jsonl")):
            parquet = pq.ParquetFile(location)
            batches = parquet.iter_batches(batch_size=BATCH_ROWS)
            return SourceBatches(parquet.schema_arrow, parquet.metadata.num_rows, batches)
        loaded = _load_with_datasets(location, origin, config, split)
    except Exception as error:  # any loader failure becomes one actionable message
        raise ScenarioError(
            f"{owner} {name!r}: could not load dataset {dataset!r} "
            f"(config {config!r}, split {split!r}) from {origin} ({location}): "
            f"{type(error).__name__}: {error}. To use a local copy, set COTGEN_DATASETS_DIR to a "
            f"folder holding '{dataset.split('/')[-1]}/', or give the {owner} a `path:`."
        ) from None
    table = loaded.data.table
    return SourceBatches(table.schema, table.num_rows, iter(table.to_batches(max_chunksize=BATCH_ROWS)))


def _load_with_datasets(location: str, origin: str, config: str | None, split: str):
    import datasets

    # datasets caches a local folder under its name, whatever its files hold now: an edited copy
    # would load as it was. Rebuilding a local copy takes a fraction of a second; hub ones stay cached.
    mode = None if origin == "the Hugging Face hub" else "force_redownload"
    if Path(location).is_file():
        return datasets.load_dataset("json", data_files=location, split="train", download_mode=mode)
    if origin != "the Hugging Face hub" and not Path(location).is_dir():
        raise FileNotFoundError(f"{location} does not exist")
    return datasets.load_dataset(location, config, split=split, download_mode=mode)


def benchmark_location(benchmark: Benchmark) -> tuple[str, str]:
    """Where to load the benchmark from, and how that was decided (the same order as scenarios)."""
    return resolve_dataset(benchmark.dataset, benchmark.path, "benchmark")


def load_benchmark_questions(benchmark: Benchmark) -> list[str]:
    """The benchmark's questions, its configs concatenated in the order given."""
    questions: list[str] = []
    for config in benchmark.configs:
        table = load_split(
            benchmark.dataset, config, benchmark.split, benchmark.path, "benchmark", benchmark.name
        )
        if benchmark.question_column not in table.column_names:
            raise ScenarioError(
                f"benchmark {benchmark.name!r}: column {benchmark.question_column!r} is not in dataset "
                f"{benchmark.dataset!r} (config {config!r}); its columns are {table.column_names}"
            )
        questions.extend(q or "" for q in table[benchmark.question_column].to_pylist())
    return questions


def _check_columns(scenario: Scenario, schema: pa.Schema) -> None:
    names = schema.names
    for column in (scenario.question_column, scenario.solution_column):
        if column not in names:
            raise ScenarioError(
                f"scenario {scenario.name!r}: column {column!r} is not in dataset "
                f"{scenario.dataset!r}; its columns are {names}"
            )
    for filter_ in scenario.filters:
        if filter_.column not in names:
            raise ScenarioError(
                f"scenario {scenario.name!r}: filter {filter_} names column {filter_.column!r}, "
                f"which dataset {scenario.dataset!r} lacks; its columns are {names}"
            )


def _matching(batch: pa.RecordBatch, scenario: Scenario) -> pa.Array:
    """The rows the scenario's filters keep (values OR-ed, filters AND-ed), as a mask."""
    mask = pa.array([True] * batch.num_rows)
    for filter_ in scenario.filters:
        column = pc.cast(batch.column(filter_.column), pa.string())
        mask = pc.and_(mask, pc.fill_null(pc.is_in(column, pa.array(filter_.values)), False))
    return mask


def _output_type(source: pa.DataType) -> pa.DataType:
    """An extra column's type in the problems table (as Python values would have been typed)."""
    if pa.types.is_string(source) or pa.types.is_large_string(source):
        return pa.string()
    if pa.types.is_integer(source):
        return pa.int64()
    if pa.types.is_floating(source):
        return pa.float64()
    return source


def problems_schema(scenario: Scenario, source: pa.Schema) -> pa.Schema:
    """The problems table's columns: `SOURCE_COLUMNS`, then the dataset's other columns."""
    skip = (scenario.question_column, scenario.solution_column)
    extra = [pa.field(f.name, _output_type(f.type)) for f in source if f.name not in skip]
    fixed = [pa.field(name, pa.int64() if name == "source_row" else pa.string()) for name in SOURCE_COLUMNS]
    return pa.schema(fixed + [f for f in extra if f.name not in SOURCE_COLUMNS])


def prepare_batch(
    scenario: Scenario, batch: pa.RecordBatch, first_row: int, schema: pa.Schema
) -> tuple[pa.RecordBatch, list[str]]:
    """One batch of source rows (the first being row `first_row` of the split) as problems: filtered,
    with a stable id and a reference answer; also the ids dropped for having no reference answer."""
    rows = pa.array(range(first_row, first_row + batch.num_rows), type=pa.int64())
    if scenario.filters:
        mask = _matching(batch, scenario)
        batch, rows = batch.filter(mask), rows.filter(mask)
    ids = [f"{scenario.name}-{row}" for row in rows.to_pylist()]
    answers = [
        extract_reference_answer(solution, scenario.answer_format)
        for solution in batch.column(scenario.solution_column).to_pylist()
    ]
    dropped = [problem_id for problem_id, answer in zip(ids, answers) if not answer]
    if dropped:
        has_answer = pa.array([bool(answer) for answer in answers])
        batch, rows = batch.filter(has_answer), rows.filter(has_answer)
        ids, answers = [i for i, a in zip(ids, answers) if a], [a for a in answers if a]
    size = batch.num_rows
    columns = {
        "problem_id": pa.array(ids, pa.string()),
        "scenario": pa.array([scenario.name] * size, pa.string()),
        "question": batch.column(scenario.question_column),
        "solution": batch.column(scenario.solution_column),
        "answer": pa.array(answers, pa.string()),
        "source_dataset": pa.array([scenario.dataset] * size, pa.string()),
        "source_config": pa.array([scenario.config] * size, pa.string()),
        "source_split": pa.array([scenario.split] * size, pa.string()),
        "source_row": rows,
    }
    arrays = [(columns[f.name] if f.name in columns else batch.column(f.name)).cast(f.type) for f in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema), dropped


@dataclass
class SourceProblems:
    """A scenario's problems as prepared batches, read lazily; `dropped` fills as they are read."""

    schema: pa.Schema
    dataset_rows: int
    batches: Iterator[pa.RecordBatch]
    dropped: list[str] = field(default_factory=list)  # matching rows without a reference answer
    num_matched: int = 0  # rows that passed the filters


def stream_source_problems(scenario: Scenario) -> SourceProblems:
    """The scenario's split, filtered and prepared one batch at a time (see `prepare_batch`)."""
    split = open_split(
        scenario.dataset, scenario.config, scenario.split, scenario.path, "scenario", scenario.name
    )
    _check_columns(scenario, split.schema)
    schema = problems_schema(scenario, split.schema)
    problems = SourceProblems(schema, split.num_rows, iter(()))

    def batches() -> Iterator[pa.RecordBatch]:
        first_row = 0
        for batch in _read(split.batches, scenario, split.num_rows):
            prepared, dropped = prepare_batch(scenario, batch, first_row, schema)
            first_row += batch.num_rows
            problems.dropped.extend(dropped)
            problems.num_matched += prepared.num_rows + len(dropped)
            if prepared.num_rows:
                yield prepared
        if not problems.num_matched:
            raise ScenarioError(
                f"scenario {scenario.name!r}: no row of {scenario.dataset!r} ({split.num_rows} rows) "
                f"matches the filters {[str(f) for f in scenario.filters]}"
            )

    problems.batches = batches()
    return problems


def _read(batches: Iterator[pa.RecordBatch], scenario: Scenario, rows: int) -> Iterator[pa.RecordBatch]:
    """The batches, a file that turns out unreadable part way (a torn copy) said in one line."""
    read = 0
    try:
        for batch in batches:
            read += batch.num_rows
            yield batch
    except (OSError, pa.ArrowException) as error:
        raise ScenarioError(
            f"scenario {scenario.name!r}: dataset {scenario.dataset!r} ({scenario.path or 'its local copy'}) "
            f"could not be read past row {read} of {rows}: {type(error).__name__}: {error}"
        ) from None
