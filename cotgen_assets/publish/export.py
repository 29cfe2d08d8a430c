"""The Hugging Face export: the samples files as a Hub dataset folder with its card.

`write_export` selects every scenario's samples (`selection`), writes them as deterministic
Parquet (`parquet`), gathers and renders the card (`card`) and swaps the folder in whole,
`$COTGEN_DATA_DIR/export/`:

    README.md                       the dataset card (YAML the Hub reads, then sections from the data)
    dataset_report.png              the picture of the exported rows
    data/cot/<scenario>.parquet     config `cot`, one split per scenario
    data/cod/<scenario>.parquet     config `cod`, the same (id, sample) keys
    data/problems/<scenario>.parquet    config `problems`, one row per problem with a graded answer
    data/pairs/<scenario>.parquet       config `pairs`, DPO preference pairs (no file: no pair)

The fingerprint covers the data files only; the card may carry dates and is not part of it.
"""

from pathlib import Path

from cotgen_assets.core.scenarios import Scenario, load_scenarios
from cotgen_assets.core.storage import data_dir
from cotgen_assets.publish.card import PICTURE, dataset_card, gather
from cotgen_assets.publish.exported import Export
from cotgen_assets.publish.parquet import data_file, fingerprint, parquet_bytes, write_folder
from cotgen_assets.publish.report import ScenarioFigures, all_figures, fill_limit, render_picture
from cotgen_assets.publish.selection import Split, config_fields, select

CARD = "README.md"


def export_dir() -> Path:
    return data_dir() / "export"


def exported_figures(split: Split, files: ScenarioFigures) -> ScenarioFigures:
    """The report's figures, over the exported rows; spent, rounds and limit are the scenario's."""
    figures = ScenarioFigures(split.name, spent_usd=files.spent_usd, rounds=files.rounds, limit=files.limit)
    figures.passes = split.passes  # this dataset's problems: those of its `problems` config
    for record in split.cot:
        figures.cot(record)
    for record in split.cod:
        figures.add_cod(record)
    return figures


def write_export(
    include_incorrect: bool = False,
    repo_id: str | None = None,
    scenarios: dict[str, Scenario] | None = None,
    folder: Path | None = None,
    cap_at_limit: bool = False,
) -> Export:
    """Select, write and swap in the export folder; `repo_id` only names the dataset in the card.
    `cap_at_limit`: at most each scenario's limit (its newest fill's) rows, else every one."""
    scenarios = load_scenarios() if scenarios is None else scenarios
    splits = [select(s, include_incorrect, fill_limit(s), cap_at_limit) for s in scenarios.values()]
    report_figures = {f.scenario: f for f in all_figures(scenarios)}
    figures = {s.name: exported_figures(s, report_figures[s.name]) for s in splits}
    export = Export(
        folder=export_dir() if folder is None else folder,
        splits=splits,
        include_incorrect=include_incorrect,
        png=render_picture(list(figures.values())),
        offline=any(s.offline for s in splits),
        figures=figures,
        report_figures=report_figures,
        tables={config: {} for config in config_fields()},
    )
    for split in splits:
        for config, fields in config_fields().items():
            if split.rows[config]:
                data, table = parquet_bytes(split.rows[config], fields)
                export.files[data_file(config, split.name)] = data
                export.tables[config][split.name] = table
    export.fingerprint = fingerprint(export.files)
    export.facts = gather(export, repo_id)
    export.card = str(dataset_card(export.facts))
    write_folder(export.folder, {**export.files, PICTURE: export.png, CARD: export.card.encode()})
    return export
