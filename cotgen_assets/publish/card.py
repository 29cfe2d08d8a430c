"""The dataset card: what it states is gathered first, then rendered from the `card.md.j2` template.

`gather` reads everything the card says off the export (its rows, their figures and the report's)
and off the submissions on disk (thinking level, dates) into `CardFacts`, a plain object;
`dataset_card` renders those facts with huggingface_hub's `DatasetCard` (the YAML block is a
`DatasetCardData`). The template only lays the facts out, so the card states nothing unmeasured.
"""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cotgen_assets.core import prompts
from cotgen_assets.core.decontamination import RULE
from cotgen_assets.core.records import arrow_schema, field_table
from cotgen_assets.core.stages import GENERATION, STAGES, Stage
from cotgen_assets.core.storage import read_jsonl
from cotgen_assets.core.submissions import load_submission, submission_folder
from cotgen_assets.publish.exported import CardFacts, Export, MadeWith, ScenarioFacts
from cotgen_assets.publish.parquet import data_file
from cotgen_assets.publish.report import ROUND_COLUMNS, ROWS, TARGET_ROWS, ScenarioFigures, round_rows
from cotgen_assets.publish.selection import (
    NOT_CLEAN_REASONS,
    PAIRS,
    PROBLEMS,
    PROVENANCE_KEYS,
    Split,
    config_fields,
)

if TYPE_CHECKING:
    from huggingface_hub import DatasetCard

TEMPLATE = Path(__file__).with_name("card.md.j2")
PICTURE = "dataset_report.png"
PICTURE_ALT = "thought vs draft tokens per scenario"
LABEL_EXPORTED = "this dataset (exported rows)"
LABEL_FILES = "all samples made (dataset report)"
TAGS = ["math", "reasoning", "chain-of-thought", "chain-of-draft", "synthetic", "distillation", "gemini"]


def gather(export: Export, repo_id: str | None = None) -> CardFacts:
    """The card's facts, from the export and the submissions of its rows."""
    made = {stage.name: made_with(export.splits, stage) for stage in STAGES}
    return CardFacts(
        title=title(export.offline),
        offline=export.offline,
        include_incorrect=export.include_incorrect,
        where=repo_id or str(export.folder),
        scenarios=[
            scenario_facts(s, export.figures[s.name], export.report_figures[s.name]) for s in export.splits
        ],
        made_with=made,
        stale_prompt_versions=sorted(
            {v for stage in STAGES for v in made[stage.name].prompt_version if v != stage.prompt_version}
        ),
        exported_on=datetime.now(UTC).date().isoformat(),
        fingerprint=export.fingerprint,
        card_data=front_matter(export),
    )


def scenario_facts(split: Split, exported: ScenarioFigures, files: ScenarioFigures) -> ScenarioFacts:
    saved = split.decontamination
    return ScenarioFacts(
        name=split.name,
        dataset=split.scenario.dataset,
        rows=split.rows.get(GENERATION.record_kind, 0),
        num_cot_records=split.num_cot_records,
        num_cod_records=split.num_cod_records,
        left_out=dict(split.left_out),
        figures=figure_rows(exported, files),
        benchmarks=saved["benchmarks"] if saved else list(split.scenario.decontaminate),
        num_contaminated=saved["num_contaminated"] if saved else None,
        num_repeats=saved["num_duplicates"] if saved else None,
        num_left_out_unclean=sum(split.left_out.get(r, 0) for r in NOT_CLEAN_REASONS),
        rounds=tuple(round_rows(files)),
        rows_by_config={config: split.rows.get(config, 0) for config in config_fields()},
        passes=split.passes,
    )


def dataset_card(facts: CardFacts, image: str | None = None) -> "DatasetCard":
    """The card: YAML the Hub reads, then the sections; `image` replaces the picture's markdown."""
    from huggingface_hub import DatasetCard, DatasetCardData  # here: the code location loads without it

    return DatasetCard.from_template(
        DatasetCardData(**facts.card_data),
        template_path=str(TEMPLATE),
        facts=facts,
        image=image or f"![{PICTURE_ALT}]({PICTURE})",
        fields={config: field_table(fields) for config, fields in config_fields().items()},
        problems=PROBLEMS,
        pairs=PAIRS,
        prompts=prompts,
        draft_schema=json.dumps(prompts.DRAFT_SCHEMA, indent=2),
        rule=RULE,
        label_exported=LABEL_EXPORTED,
        label_files=LABEL_FILES,
        round_columns=ROUND_COLUMNS,
    )


def card_body(facts: CardFacts, image: str | None = None) -> str:
    """The card without its YAML block (the Dagster UI shows it; it wants the picture inline)."""
    return dataset_card(facts, image).text.lstrip("\n")


def title(offline: bool) -> str:
    name = "cotgen math reasoning: matched Chain-of-Thought and Chain-of-Draft samples"
    return f"OFFLINE (emulator data, not Gemini): {name}" if offline else name


# --------------------------------------------------------------------------- the YAML block


def size_category(rows: int) -> str:
    for limit, name in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
    ):
        if rows < limit:
            return name
    return "1M<n<10M"


def front_matter(export: Export) -> dict:
    """The YAML the Hub reads: licence, tags, configs with their data files, features and split sizes."""
    from datasets import Features

    configs, infos = [], []
    for config, fields in config_fields().items():
        files = export.data_files[config]
        splits = [s.name for s in export.splits if s.name in files]
        if not splits:  # `pairs` when no problem has a correct and a wrong answer
            continue
        configs.append(
            {
                "config_name": config,
                "data_files": [{"split": s, "path": data_file(config, s)} for s in splits],
            }
        )
        infos.append(
            {
                "config_name": config,
                "features": Features.from_arrow_schema(arrow_schema(fields))._to_yaml_list(),
                "splits": [
                    {"name": s, "num_bytes": files[s].nbytes, "num_examples": files[s].rows} for s in splits
                ],
                "download_size": sum(files[s].size for s in splits),
                "dataset_size": sum(files[s].nbytes for s in splits),
            }
        )
    return {
        "pretty_name": title(export.offline),
        "license": "mit",
        "language": ["en"],
        "task_categories": ["text-generation", "question-answering"],
        "tags": TAGS + (["offline-emulator"] if export.offline else []),
        "size_categories": [size_category(export.num_rows)],
        "source_datasets": sorted(
            {s.scenario.dataset for s in export.splits if s.rows.get(GENERATION.record_kind)}
        )
        or ["original"],
        "configs": configs,
        "dataset_info": infos,
    }


# --------------------------------------------------------------------------- per-scenario figures


def _cell(value, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


# Rows the report does not have, each shown after the report's row it names: (after, label, of).
LENGTH_ROWS = [
    (
        "CoT output tokens",
        "Mean thought tokens (CoT)",
        lambda f: f.cot.thinking_tokens / f.cot.num_samples if f.cot.num_samples else None,
    ),
    ("CoT output tokens", "Median thought tokens (CoT)", lambda f: f.cod.thought_tokens.median()),
    ("CoD output (draft) tokens", "Mean draft tokens (CoD)", lambda f: f.cod.draft_tokens.mean()),
    ("CoD output (draft) tokens", "Median draft tokens (CoD)", lambda f: f.cod.draft_tokens.median()),
]
LENGTH_FORMAT = "{:,.1f}"


def figure_rows(exported: ScenarioFigures, files: ScenarioFigures) -> list[tuple[str, str, str]]:
    """One scenario: its exported rows beside the whole samples files, the latter as the report shows them.

    The median thought is over the CoD samples' thoughts: in the export that is every CoT row (the
    same ids); in the files only the summarized ones, so that cell is left empty there.
    """
    rows = []
    for label, value, fmt in ROWS + TARGET_ROWS:
        rows.append((label, _cell(value(exported), fmt), _cell(value(files), fmt)))
        for after, extra, of in LENGTH_ROWS:
            if after == label:
                files_cell = "–" if extra.startswith("Median thought") else _cell(of(files), LENGTH_FORMAT)
                rows.append((extra, _cell(of(exported), LENGTH_FORMAT), files_cell))
    return rows


# --------------------------------------------------------------------------- how the rows were made


def made_with(splits: list[Split], stage: Stage) -> MadeWith:
    """The models, model versions, prompt versions and thinking levels of a stage's exported rows,
    and the days their batches were submitted and ingested (UTC)."""
    found = {k: set() for k in PROVENANCE_KEYS}
    submissions = set()
    for split in splits:
        made_by = split.made_by[stage.name]
        for key in found:
            found[key] |= made_by.found[key]
        submissions |= {(split.name, submission) for submission in made_by.submissions}
    levels, dates = set(), []
    for scenario, submission_id in submissions:
        folder = submission_folder(scenario, stage, submission_id)
        levels.add(thinking_level(scenario, stage, submission_id))
        for name in ("submission.json", "summary.json"):
            if (folder / name).exists():
                dates.append(datetime.fromtimestamp((folder / name).stat().st_mtime, UTC).date().isoformat())
    return MadeWith(
        **{k: sorted(v) for k, v in found.items()},
        thinking_level=sorted(levels),
        dates=list(dict.fromkeys([min(dates), max(dates)])) if dates else [],
    )


def thinking_level(scenario: str, stage: Stage, submission_id: str) -> str:
    """The thinkingLevel a submission asked for, read from its first request (submission.json lacks it)."""
    if not (submission_folder(scenario, stage, submission_id) / "submission.json").exists():
        return "unknown"
    submission = load_submission(scenario, stage, submission_id)
    for shard in submission.shards:
        for line in read_jsonl(submission.requests_path(shard)):
            config = line["request"].get("generationConfig", {}).get("thinkingConfig", {})
            return str(config.get("thinkingLevel", "the model's default"))
    return "unknown"
