"""The Hugging Face export: the samples files as a Hub dataset folder with its card.

`write_export` selects every scenario's samples (`selection`), writes them as deterministic
Parquet a row group at a time (`parquet`), gathers and renders the card (`card`) and swaps the
folder in whole, `$COTGEN_DATA_DIR/export/`:

    README.md                       the dataset card (YAML the Hub reads, then sections from the data)
    dataset_report.png              the picture of the exported rows
    data/cot/<scenario>.parquet     config `cot`, one split per scenario
    data/cod/<scenario>.parquet     config `cod`, the same (id, sample) keys
    data/problems/<scenario>.parquet    config `problems`, one row per problem with a graded answer
    data/pairs/<scenario>.parquet       config `pairs`, DPO preference pairs (no file: no pair)

Rows stream from the samples files to the Parquet files; the card's figures are running sums, so
memory does not grow with the number of samples. The fingerprint covers the data files only; the
card may carry dates and is not part of it.
"""

import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from cotgen_assets.core.ingest import machine_lock
from cotgen_assets.core.scenarios import Scenario, load_scenarios
from cotgen_assets.core.stages import GENERATION, SUMMARIZATION
from cotgen_assets.core.storage import atomic_write, data_dir, scratch_dir
from cotgen_assets.publish.card import PICTURE, dataset_card, gather
from cotgen_assets.publish.exported import Export
from cotgen_assets.publish.parquet import (
    EXPORT_SCRATCH,
    DataFile,
    RowWriter,
    data_file,
    fingerprint,
    staged_folder,
)
from cotgen_assets.publish.problem_rows import preference_pairs, problem_rows
from cotgen_assets.publish.report import ScenarioFigures, all_figures, fill_limit, render_picture
from cotgen_assets.publish.selection import (
    PAIRS,
    PROBLEMS,
    Split,
    config_fields,
    exported,
    problem_batches,
    select,
)

CARD = "README.md"


def export_dir() -> Path:
    return data_dir() / "export"


def write_split(
    split: Split, files: ScenarioFigures, staging: Path
) -> tuple[ScenarioFigures, dict[str, DataFile]]:
    """Write one scenario's rows into every config's file; the report's figures over the exported
    rows (spent, rounds and limit are the scenario's), and the files written, by config."""
    figures = ScenarioFigures(split.name, spent_usd=files.spent_usd, rounds=files.rounds, limit=files.limit)
    writers = {c: RowWriter(staging / data_file(c, split.name), f) for c, f in config_fields().items()}
    for thought, draft in exported(split):
        figures.cot(thought)
        figures.add_cod(draft)
        writers[GENERATION.record_kind].add([thought])
        writers[SUMMARIZATION.record_kind].add([draft])
    for answers in problem_batches(split):
        problems, passes = problem_rows(answers)
        split.passes.merge(passes)
        writers[PROBLEMS].add(problems)
        writers[PAIRS].add(preference_pairs(problems))
    figures.passes = split.passes  # this dataset's problems: those of its `problems` config
    written = {config: writer.close() for config, writer in writers.items()}
    split.rows = {config: file.rows if file else 0 for config, file in written.items()}
    return figures, {config: file for config, file in written.items() if file}


def write_export(
    include_incorrect: bool = False,
    repo_id: str | None = None,
    scenarios: dict[str, Scenario] | None = None,
    folder: Path | None = None,
    cap_at_limit: bool = False,
    lock: Callable[[Path], AbstractContextManager] = machine_lock,
) -> Export:
    """Select, write and swap in the export folder; `repo_id` only names the dataset in the card.
    `cap_at_limit`: at most each scenario's limit (its newest fill's) rows, else every one.
    `lock(samples file)` must exclude the ingestions into it while it is indexed (as for
    `ingest.ingest_submission`): the Dagster asset passes the one in the Dagster storage."""
    scenarios = load_scenarios() if scenarios is None else scenarios
    report_figures = {f.scenario: f for f in all_figures(scenarios)}
    export = Export(
        folder=export_dir() if folder is None else folder,
        include_incorrect=include_incorrect,
        report_figures=report_figures,
        data_files={config: {} for config in config_fields()},
    )
    scratch = scratch_dir("cotgen-export-", *EXPORT_SCRATCH)
    try:
        with staged_folder(export.folder) as staging:
            for scenario in scenarios.values():
                split = select(
                    scenario,
                    scratch / scenario.name,
                    include_incorrect,
                    fill_limit(scenario),
                    cap_at_limit,
                    lock,
                )
                try:
                    export.figures[split.name], written = write_split(
                        split, report_figures[split.name], staging
                    )
                finally:
                    split.close()
                for config, file in written.items():
                    export.data_files[config][split.name] = file
                export.splits.append(split)
            export.offline = any(s.offline for s in export.splits)
            export.png = render_picture(list(export.figures.values()))
            export.fingerprint = fingerprint(staging)
            export.facts = gather(export, repo_id)
            export.card = str(dataset_card(export.facts))
            for name, data in ((PICTURE, export.png), (CARD, export.card.encode())):
                with atomic_write(staging / name) as handle:
                    handle.write(data)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return export
