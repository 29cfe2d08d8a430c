"""Source problems: find a scenario's dataset, filter it, and extract reference answers."""

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

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


def load_split(
    dataset: str, config: str | None, split: str, path: str | None, owner: str, name: str
) -> pa.Table:
    """One split of a dataset (scenario or benchmark) as an Arrow table, or an error saying how to fix it."""
    import datasets

    location, origin = resolve_dataset(dataset, path, owner)
    # datasets caches a local folder under its name, whatever its files hold now: an edited copy
    # would load as it was. Rebuilding a local copy takes a fraction of a second; hub ones stay cached.
    mode = None if origin == "the Hugging Face hub" else "force_redownload"
    try:
        if Path(location).is_file():
            builder = "json" if location.endswith((".json", ".jsonl")) else "parquet"
            loaded = datasets.load_dataset(builder, data_files=location, split="train", download_mode=mode)
        else:
            if origin != "the Hugging Face hub" and not Path(location).is_dir():
                raise FileNotFoundError(f"{location} does not exist")
            loaded = datasets.load_dataset(location, config, split=split, download_mode=mode)
    except Exception as error:  # any loader failure becomes one actionable message
        raise ScenarioError(
            f"{owner} {name!r}: could not load dataset {dataset!r} "
            f"(config {config!r}, split {split!r}) from {origin} ({location}): "
            f"{type(error).__name__}: {error}. To use a local copy, set COTGEN_DATASETS_DIR to a "
            f"folder holding '{dataset.split('/')[-1]}/', or give the {owner} a `path:`."
        ) from None
    return loaded.data.table


def load_dataset_table(scenario: Scenario) -> pa.Table:
    """The scenario's split as an Arrow table, with a clear error when it cannot be found."""
    return load_split(
        scenario.dataset, scenario.config, scenario.split, scenario.path, "scenario", scenario.name
    )


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


def filter_table(table: pa.Table, scenario: Scenario) -> tuple[pa.Table, pa.Array]:
    """Apply the scenario's filters (values OR-ed, filters AND-ed); also return the kept row numbers."""
    rows = pa.array(range(table.num_rows), type=pa.int64())
    mask = pa.array([True] * table.num_rows)
    for filter_ in scenario.filters:
        if filter_.column not in table.column_names:
            raise ScenarioError(
                f"scenario {scenario.name!r}: filter {filter_} names column {filter_.column!r}, "
                f"which dataset {scenario.dataset!r} lacks; its columns are {table.column_names}"
            )
        column = pc.cast(table[filter_.column], pa.string())
        mask = pc.and_(mask, pc.fill_null(pc.is_in(column, pa.array(filter_.values)), False))
    return table.filter(mask), rows.filter(mask)


def build_source_problems(scenario: Scenario, table: pa.Table) -> tuple[pa.Table, list[str]]:
    """One row per problem with a stable id and its reference answer.

    Returns the table and the ids of matching rows dropped because their solution holds no
    reference answer (such a problem could never be graded).
    """
    for column in (scenario.question_column, scenario.solution_column):
        if column not in table.column_names:
            raise ScenarioError(
                f"scenario {scenario.name!r}: column {column!r} is not in dataset "
                f"{scenario.dataset!r}; its columns are {table.column_names}"
            )
    filtered, source_rows = filter_table(table, scenario)
    if filtered.num_rows == 0:
        raise ScenarioError(
            f"scenario {scenario.name!r}: no row of {scenario.dataset!r} ({table.num_rows} rows) "
            f"matches the filters {[str(f) for f in scenario.filters]}"
        )
    extra_columns = [
        c for c in filtered.column_names if c not in (scenario.question_column, scenario.solution_column)
    ]
    columns: dict[str, list] = {name: [] for name in SOURCE_COLUMNS + extra_columns}
    dropped = []
    records = filtered.to_pylist()
    for row, record in zip(source_rows.to_pylist(), records):
        problem_id = f"{scenario.name}-{row}"
        answer = extract_reference_answer(record[scenario.solution_column], scenario.answer_format)
        if not answer:
            dropped.append(problem_id)
            continue
        values = {
            "problem_id": problem_id,
            "scenario": scenario.name,
            "question": record[scenario.question_column],
            "solution": record[scenario.solution_column],
            "answer": answer,
            "source_dataset": scenario.dataset,
            "source_config": scenario.config,
            "source_split": scenario.split,
            "source_row": row,
            **{c: record[c] for c in extra_columns},
        }
        for name, value in values.items():
            columns[name].append(value)
    schema_types = {"source_row": pa.int64(), "source_config": pa.string()}
    table = pa.table(
        {name: pa.array(values, type=schema_types.get(name)) for name, values in columns.items()}
    )
    return table, dropped


def load_source_problems(scenario: Scenario) -> tuple[pa.Table, list[str], int]:
    """Load, filter and prepare a scenario: (problems, dropped ids, rows in the dataset)."""
    table = load_dataset_table(scenario)
    problems, dropped = build_source_problems(scenario, table)
    return problems, dropped, table.num_rows
