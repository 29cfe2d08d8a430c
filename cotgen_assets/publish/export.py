"""The Hugging Face export (issue 14): the samples files as a Hub dataset folder with its card.

`write_export` reads every scenario's `cot_<suffix>.jsonl` / `cod_<suffix>.jsonl`, keeps the
samples fit to train on (correct, clean, and for CoD agreeing with its CoT; `include_incorrect`
adds the incorrect and disagreeing ones, with their flags), and writes `$COTGEN_DATA_DIR/export/`:

    README.md                       the dataset card (YAML the Hub reads, then sections from the data)
    dataset_report.png              the picture of the exported rows
    data/cot/<scenario>.parquet     config `cot`, one split per scenario
    data/cod/<scenario>.parquet     config `cod`, the same ids

Both configs hold exactly the same ids, so a user can join them. A problem is clean when its id
is in the scenario's `source_problems.parquet` (which leaves out benchmark matches and repeats):
samples made earlier for problems left out since are never exported. The data files are
deterministic (explicit schema, rows sorted by id, no timestamps), so `fingerprint`, a sha256
over them, tells two exports apart; the card may carry dates and is not part of it. The folder is
built beside the old one and swapped in, so it never holds half an export.
"""

import hashlib
import json
import os
import shutil
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from cotgen_assets.core import prompts
from cotgen_assets.core.decontamination import RULE
from cotgen_assets.core.records import FIELDS, GENERATION, SUMMARIZATION, arrow_schema
from cotgen_assets.core.scenarios import Scenario, load_scenarios
from cotgen_assets.core.storage import (
    atomic_write,
    data_dir,
    is_local,
    read_jsonl,
    samples_path,
    scenario_dir,
)
from cotgen_assets.core.storage import source_problems_path as problems_path
from cotgen_assets.core.submissions import load_submission, submission_folder
from cotgen_assets.publish.report import ROWS, ScenarioFigures, all_figures, render_picture

CONFIGS = {"cot": GENERATION, "cod": SUMMARIZATION}  # config name -> the stage that made its records
PICTURE = "dataset_report.png"
PICTURE_ALT = "thought vs draft tokens per scenario"
CARD = "README.md"

# The reasons a sample is left out, in the order they are tested (a sample counts for the first).
NOT_CLEAN = "not clean (problem not in source_problems)"
CONTAMINATED = "contaminated (matches a benchmark)"
REPEAT = "repeat of another problem"
NO_COD = "no CoD sample (not summarized)"
NO_COT = "no CoT sample"
COT_INCORRECT = "CoT incorrect"
COD_INCORRECT = "CoD incorrect"
DISAGREES = "CoD answer disagrees with CoT"


class ExportError(Exception):
    """The export cannot be written truthfully; the message says why and what to do."""


def export_dir() -> Path:
    return data_dir() / "export"


def data_file(config: str, split: str) -> str:
    """A data file's path inside the export folder (the card's `configs:` point at it)."""
    return f"data/{config}/{split}.parquet"


def id_key(sample_id: str) -> tuple:
    """`easy-9` before `easy-10`: the source row as a number where it is one."""
    head, _, tail = sample_id.rpartition("-")
    return (head, int(tail), "") if tail.isdigit() else (head, -1, tail)


def decontamination_report(scenario: str) -> dict | None:
    """What source_problems left out and why (`<scenario>/decontamination.json`), if it saved it."""
    path = scenario_dir(scenario) / "decontamination.json"
    return json.loads(path.read_text()) if path.exists() else None


@dataclass
class Split:
    """One scenario's exported rows and what was left out of them."""

    scenario: Scenario
    cot: list[dict] = field(default_factory=list)
    cod: list[dict] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> problems
    num_cot_records: int = 0  # in the files
    num_cod_records: int = 0
    decontamination: dict | None = None

    @property
    def name(self) -> str:
        return self.scenario.name

    @property
    def rows(self) -> dict[str, list[dict]]:
        return {"cot": self.cot, "cod": self.cod}


def select(scenario: Scenario, include_incorrect: bool = False) -> Split:
    """The scenario's samples fit for the export, the same ids in CoT and CoD, sorted by id.

    A scenario with samples but no source_problems table is refused: without it nobody can tell
    clean problems from contaminated ones.
    """
    cot = {r["id"]: r for r in read_jsonl(samples_path(GENERATION, scenario.suffix))}
    cod = {r["id"]: r for r in read_jsonl(samples_path(SUMMARIZATION, scenario.suffix))}
    split = Split(scenario, num_cot_records=len(cot), num_cod_records=len(cod))
    if not cot and not cod:
        return split
    path = problems_path(scenario.name)
    if not path.exists():
        raise ExportError(
            f"scenario {scenario.name!r} has {len(cot)} CoT and {len(cod)} CoD samples but no {path}, so "
            f"nobody can tell its clean problems from contaminated ones. Materialize source_problems for "
            f"{scenario.name!r}, then export again. Nothing was exported."
        )
    with path.open("rb") as handle:
        clean = set(pq.read_table(handle, columns=["problem_id"])["problem_id"].to_pylist())
    split.decontamination = decontamination_report(scenario.name)
    saved = split.decontamination or {}
    contaminated = set(saved.get("contaminated_ids", []))
    repeats = set(saved.get("duplicate_ids", {}))
    for sample_id in sorted(set(cot) | set(cod), key=id_key):
        thought, draft = cot.get(sample_id), cod.get(sample_id)
        if sample_id not in clean:
            reason = (
                CONTAMINATED if sample_id in contaminated else REPEAT if sample_id in repeats else NOT_CLEAN
            )
        elif draft is None:
            reason = NO_COD
        elif thought is None:
            reason = NO_COT
        elif include_incorrect:
            reason = None
        elif thought.get("correct") is not True:
            reason = COT_INCORRECT
        elif draft.get("correct") is not True:
            reason = COD_INCORRECT
        elif draft.get("agrees_with_cot") is not True:
            reason = DISAGREES
        else:
            reason = None
        if reason is None:
            split.cot.append(thought)
            split.cod.append(draft)
        else:
            split.left_out[reason] = split.left_out.get(reason, 0) + 1
    for config, stage in CONFIGS.items():
        check_described(split.rows[config], stage, samples_path(stage, scenario.suffix))
    return split


def check_described(rows: list[dict], stage: str, path) -> None:
    """A field `records` does not describe would be dropped from the Parquet file: refuse instead."""
    described = {f.name for f in FIELDS[stage]}
    for row in rows:
        extra = sorted(set(row) - described)
        if extra:
            raise ExportError(
                f"{path.name}: record {row.get('id')!r} has {', '.join(map(repr, extra))}, which "
                "cotgen_assets/core/records.py does not describe, so the export would drop it. Describe it "
                "there (or remove it from the file), then export again. Nothing was exported."
            )


def exported_figures(split: Split, spent_usd: float) -> ScenarioFigures:
    """The report's figures, over the exported rows (spent: the scenario's, failed requests included)."""
    figures = ScenarioFigures(split.name, spent_usd=spent_usd)
    for record in split.cot:
        figures.cot(record)
    for record in split.cod:
        figures.cod(record)
    return figures


def parquet_bytes(rows: list[dict], config: str) -> tuple[bytes, pa.Table]:
    """The same rows give the same bytes: explicit schema, given order, no timestamps."""
    table = pa.Table.from_pylist(rows, schema=arrow_schema(CONFIGS[config]))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes(), table


def fingerprint(files: dict[str, bytes]) -> str:
    """sha256 over the data files' paths and contents, in path order."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    return digest.hexdigest()


@dataclass
class Export:
    folder: Path
    splits: list[Split]
    include_incorrect: bool
    fingerprint: str
    card: str
    png: bytes
    offline: bool
    figures: dict[str, ScenarioFigures]  # of the exported rows, by scenario
    report_figures: dict[str, ScenarioFigures]  # of the whole files (the dataset report's)
    files: dict[str, bytes] = field(default_factory=dict)  # data files, by path in the folder
    tables: dict[str, dict[str, pa.Table]] = field(default_factory=dict)  # config -> split -> table

    @property
    def rows(self) -> dict[str, dict[str, int]]:
        """Rows per config and split (splits with no rows are not in the export)."""
        return {c: {s: t.num_rows for s, t in by_split.items()} for c, by_split in self.tables.items()}

    @property
    def num_rows(self) -> int:
        return sum(self.rows["cot"].values())

    @property
    def cost_usd(self) -> float:
        """What the exported rows cost (their CoT and CoD requests)."""
        return sum(f.cost_usd for f in self.figures.values())


def is_offline(record: dict) -> bool:
    return any((record.get(block) or {}).get("offline") for block in ("generation", "summarization"))


def write_export(
    include_incorrect: bool = False,
    repo_id: str | None = None,
    scenarios: dict[str, Scenario] | None = None,
    folder: Path | None = None,
) -> Export:
    """Select, write and swap in the export folder; `repo_id` only names the dataset in the card."""
    scenarios = load_scenarios() if scenarios is None else scenarios
    folder = export_dir() if folder is None else folder
    splits = [select(s, include_incorrect) for s in scenarios.values()]
    report_figures = {f.scenario: f for f in all_figures(scenarios)}
    figures = {s.name: exported_figures(s, report_figures[s.name].spent_usd) for s in splits}
    export = Export(
        folder=folder,
        splits=splits,
        include_incorrect=include_incorrect,
        fingerprint="",
        card="",
        png=render_picture(list(figures.values())),
        offline=any(is_offline(r) for s in splits for r in s.cot + s.cod),
        figures=figures,
        report_figures=report_figures,
        tables={c: {} for c in CONFIGS},
    )
    for split in splits:
        if not split.cot:
            continue
        for config, rows in split.rows.items():
            data, table = parquet_bytes(rows, config)
            export.files[data_file(config, split.name)] = data
            export.tables[config][split.name] = table
    export.fingerprint = fingerprint(export.files)
    export.card = dataset_card(export, repo_id)
    _write_folder(export)
    return export


def _write_folder(export: Export) -> None:
    """Build the folder beside the old one, then swap: readers see the old export or the new one.

    In a bucket, which has no folders to swap, each file is replaced atomically and files of the
    old export that the new one lacks are removed after: a reader during the write may see old
    and new files side by side, never a torn file.
    """
    folder = export.folder
    if not is_local(folder):
        new = {**export.files, PICTURE: export.png, CARD: export.card.encode()}
        for path, data in new.items():
            with atomic_write(folder / path) as handle:
                handle.write(data)
        for old_file in [p for p in folder.rglob("*") if p.is_file()]:
            if old_file.relative_to(folder).as_posix() not in new:
                old_file.unlink()
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.new-{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for path, data in export.files.items():
            with atomic_write(staging / path) as handle:
                handle.write(data)
        with atomic_write(staging / PICTURE) as handle:
            handle.write(export.png)
        with atomic_write(staging / CARD, "w") as handle:
            handle.write(export.card)
        if folder.exists():
            os.replace(folder, old)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- the card


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

    splits = [s for s in export.splits if s.cot]
    configs, infos = [], []
    for config in CONFIGS:
        configs.append(
            {
                "config_name": config,
                "data_files": [{"split": s.name, "path": data_file(config, s.name)} for s in splits],
            }
        )
        tables = export.tables[config]
        infos.append(
            {
                "config_name": config,
                "features": Features.from_arrow_schema(arrow_schema(CONFIGS[config]))._to_yaml_list(),
                "splits": [
                    {
                        "name": s.name,
                        "num_bytes": tables[s.name].nbytes,
                        "num_examples": tables[s.name].num_rows,
                    }
                    for s in splits
                ],
                "download_size": sum(len(export.files[data_file(config, s.name)]) for s in splits),
                "dataset_size": sum(tables[s.name].nbytes for s in splits),
            }
        )
    tags = ["math", "reasoning", "chain-of-thought", "chain-of-draft", "synthetic", "distillation", "gemini"]
    return {
        "pretty_name": title(export),
        "license": "mit",
        "language": ["en"],
        "task_categories": ["text-generation", "question-answering"],
        "tags": tags + (["offline-emulator"] if export.offline else []),
        "size_categories": [size_category(export.num_rows)],
        "source_datasets": sorted({s.scenario.dataset for s in splits}) or ["original"],
        "configs": configs if splits else [],
        "dataset_info": infos if splits else [],
    }


def title(export: Export) -> str:
    name = "cotgen math reasoning: matched Chain-of-Thought and Chain-of-Draft samples"
    return f"OFFLINE (emulator data, not Gemini): {name}" if export.offline else name


def _cell(value, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def _mean(values) -> float | None:
    return sum(values) / len(values) if len(values) else None


def _median(values) -> float | None:
    return statistics.median(values) if len(values) else None


# Rows the report does not have, beside its own (label, of the exported rows, of the files, format).
LENGTH_ROWS = [
    (
        "Mean thought tokens (CoT)",
        lambda f: f.cot.thinking_tokens / f.cot.num_samples if f.cot.num_samples else None,
        "{:,.1f}",
    ),
    ("Median thought tokens (CoT)", lambda f: _median(f.cod.thought_tokens), "{:,.1f}"),
    ("Mean draft tokens (CoD)", lambda f: _mean(f.cod.draft_tokens), "{:,.1f}"),
    ("Median draft tokens (CoD)", lambda f: _median(f.cod.draft_tokens), "{:,.1f}"),
]
LABEL_EXPORTED = "this dataset (exported rows)"
LABEL_FILES = "all samples made (dataset report)"


def scenario_table(exported: ScenarioFigures, files: ScenarioFigures) -> str:
    """One scenario: its exported rows beside the whole samples files, the latter as the report shows them.

    The median thought is over the CoD samples' thoughts: in the export that is every CoT row (the
    same ids); in the files only the summarized ones, so that cell is left empty there.
    """
    lines = [f"| | {LABEL_EXPORTED} | {LABEL_FILES} |", "|---|---:|---:|"]
    for label, value, fmt in ROWS:
        lines.append(f"| {label} | {_cell(value(exported), fmt)} | {_cell(value(files), fmt)} |")
        if label == "CoT output tokens":
            for extra, of, extra_fmt in LENGTH_ROWS[:2]:
                files_cell = "–" if extra.startswith("Median thought") else _cell(of(files), extra_fmt)
                lines.append(f"| {extra} | {_cell(of(exported), extra_fmt)} | {files_cell} |")
        if label == "CoD output (draft) tokens":
            for extra, of, extra_fmt in LENGTH_ROWS[2:]:
                lines.append(
                    f"| {extra} | {_cell(of(exported), extra_fmt)} | {_cell(of(files), extra_fmt)} |"
                )
    return "\n".join(lines)


def made_with(export: Export) -> dict[str, dict[str, list]]:
    """Per stage: the models, model versions, prompt versions and thinking levels of the exported rows,
    and the dates their batches were submitted and ingested (UTC)."""
    found = {
        stage: {k: set() for k in ("model", "model_version", "prompt_version", "submission")}
        for stage in CONFIGS.values()
    }
    for split in export.splits:
        for stage, rows in ((GENERATION, split.cot), (SUMMARIZATION, split.cod)):
            for record in rows:
                block = record[stage]
                for key in ("model", "model_version", "prompt_version"):
                    found[stage][key].add(block.get(key) or "unknown")
                found[stage]["submission"].add((split.name, block["submission"]))
    out = {}
    for stage, values in found.items():
        levels, dates = set(), []
        for scenario, submission_id in values.pop("submission"):
            folder = submission_folder(scenario, stage, submission_id)
            levels.add(thinking_level(scenario, stage, submission_id))
            for name in ("submission.json", "summary.json"):
                if (folder / name).exists():
                    dates.append(
                        datetime.fromtimestamp((folder / name).stat().st_mtime, UTC).date().isoformat()
                    )
        out[stage] = {k: sorted(v) for k, v in values.items()} | {
            "thinking_level": sorted(levels),
            "dates": [min(dates), max(dates)] if dates else [],
        }
    return out


def thinking_level(scenario: str, stage: str, submission_id: str) -> str:
    """The thinkingLevel a submission asked for, read from its first request (submission.json lacks it)."""
    if not (submission_folder(scenario, stage, submission_id) / "submission.json").exists():
        return "unknown"
    submission = load_submission(scenario, stage, submission_id)
    for shard in submission.shards:
        for line in read_jsonl(submission.requests_path(shard)):
            config = line["request"].get("generationConfig", {}).get("thinkingConfig", {})
            return str(config.get("thinkingLevel", "the model's default"))
    return "unknown"


def _join(values) -> str:
    return ", ".join(f"`{v}`" for v in values) or "–"


def _load_snippet(export: Export, repo_id: str | None, split: str) -> str:
    where = repo_id or str(export.folder)
    return (
        "```python\n"
        "from datasets import load_dataset\n\n"
        f'cot = load_dataset("{where}", "cot", split="{split}")\n'
        f'cod = load_dataset("{where}", "cod", split="{split}")\n'
        'drafts = {row["id"]: row["cod"] for row in cod}\n'
        'pairs = [(row["question"], row["cot"], drafts[row["id"]]) for row in cot]  # same ids in both\n'
        "```"
    )


def dataset_card(export: Export, repo_id: str | None = None) -> str:
    """README.md: the Hub's YAML, then every section written from the exported data."""
    yaml_text = yaml.safe_dump(front_matter(export), sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{yaml_text}---\n\n{card_body(export, repo_id)}"


def card_body(export: Export, repo_id: str | None = None, image: str | None = None) -> str:
    """The card's sections; `image` replaces the picture's markdown (the UI wants it inline)."""
    splits = [s for s in export.splits if s.cot]
    made = made_with(export)
    gen, summ = made[GENERATION], made[SUMMARIZATION]
    total = sum(len(s.cot) for s in splits)
    parts = [f"# {title(export)}"]
    if export.offline:
        parts.append(
            "**OFFLINE: this data was made by cotgen's local Gemini Batch emulator, not by Gemini.** Its "
            '"thoughts" are the source datasets\' reference solutions and its drafts are mechanical; '
            "its costs are what Gemini would have charged, not money spent. It exists to test the "
            "pipeline, is useless for training, and cotgen refuses to push it to the Hub."
        )
    selection = (
        "every clean sample that has both a CoT and a CoD, correct or not (`include_incorrect: true`; "
        "see the `correct` and `agrees_with_cot` columns)"
        if export.include_incorrect
        else "only samples whose CoT and CoD answers are both graded correct and agree, on clean problems"
    )
    parts.append(
        f"{total:,} math problems, each solved twice by {_join(gen['model'])}: a **Chain of Thought** "
        "(config `cot`: the model's thought summary in `<thought>…</thought>`, then its answer) and the "
        "same reasoning cut to a **Chain of Draft** (config `cod`: at most five words a step in "
        "`<draft>…</draft>`, then `\\boxed{answer}`). One split per scenario; both configs hold the same "
        f"ids, so they join on `id`. Kept: {selection}. Problems that match an evaluation benchmark are "
        "never included (see Decontamination)."
    )
    if not splits:
        parts.append("**This export is empty**: no scenario has samples that pass the selection yet.")

    lines = ["| config | split | rows | source dataset |", "|---|---|---:|---|"]
    for config in CONFIGS:
        for s in splits:
            lines.append(f"| `{config}` | `{s.name}` | {len(s.cot):,} | `{s.scenario.dataset}` |")
    parts += ["## Contents", "\n".join(lines)]
    left = [
        "| scenario | CoT records | CoD records | exported | left out, by reason |",
        "|---|---:|---:|---:|---|",
    ]
    for s in export.splits:
        reasons = "; ".join(f"{reason}: {count:,}" for reason, count in s.left_out.items()) or "none"
        left.append(
            f"| `{s.name}` | {s.num_cot_records:,} | {s.num_cod_records:,} | {len(s.cot):,} | {reasons} |"
        )
    parts += [
        "What the samples files held and what was left out (a problem counts once, for the first reason):",
        "\n".join(left),
    ]

    if splits:
        parts += ["## How to load", _load_snippet(export, repo_id, splits[0].name)]
    parts += [
        "## Fields",
        "\n\n".join(
            f"`{config}`:\n\n| field | type | meaning |\n|---|---|---|\n"
            + "\n".join(
                f"| `{f.name}` | {f.type} | {f.description.replace('|', '/')} |" for f in FIELDS[stage]
            )
            for config, stage in CONFIGS.items()
        ),
    ]

    def dates(block):
        return " to ".join(dict.fromkeys(block["dates"])) or "–"

    parts += [
        "## How it was made",
        "\n".join(
            [
                "| | CoT (generation) | CoD (summarization) |",
                "|---|---|---|",
                f"| model | {_join(gen['model'])} | {_join(summ['model'])} |",
                f"| model version (from the API's responses) | {_join(gen['model_version'])} "
                f"| {_join(summ['model_version'])} |",
                f"| thinking level (from the batch requests) | {_join(gen['thinking_level'])} "
                f"| {_join(summ['thinking_level'])} |",
                f"| prompt version | {_join(gen['prompt_version'])} | {_join(summ['prompt_version'])} |",
                f"| batches submitted and ingested (UTC) | {dates(gen)} | {dates(summ)} |",
            ]
        ),
        "Every request went through the Gemini **Batch API** (half the interactive price) as a JSONL file of "
        "`GenerateContentRequest`s; answers were graded against the source dataset's reference answer "
        "(exact or numeric match, then `math-verify`). The CoD request gives the model the CoT sample's "
        "thought and answer and asks for structured JSON. "
        f"Exported on {datetime.now(UTC).date().isoformat()}.",
        f"Generation prompt (`{prompts.GENERATION_PROMPT_VERSION}`): the instructions, then the problem "
        "as its own text part; thoughts are asked for with `includeThoughts: true`.",
        f"```text\n{prompts.GENERATION_INSTRUCTIONS}\n\n<the problem>\n```",
        f"Summarization prompt (`{prompts.SUMMARIZATION_PROMPT_VERSION}`): the instructions, then three text "
        "parts, with `responseMimeType: application/json` and this `responseJsonSchema`:",
        f"```text\n{prompts.SUMMARIZATION_INSTRUCTIONS}\n\nProblem:\n<the problem>"
        "\n\nReasoning:\n<the CoT thought>\n\nAnswer:\n<the CoT answer text>\n```",
        f"```json\n{json.dumps(prompts.DRAFT_SCHEMA, indent=2)}\n```",
    ]
    stale = sorted(
        {v for v in gen["prompt_version"] if v != prompts.GENERATION_PROMPT_VERSION}
        | {v for v in summ["prompt_version"] if v != prompts.SUMMARIZATION_PROMPT_VERSION}
    )
    if stale:
        parts.append(
            f"**Note:** some rows were made with other prompt versions ({_join(stale)}) than those shown."
        )

    parts.append("## Figures per scenario")
    parts.append(
        f"Each table has two columns: **{LABEL_EXPORTED}**, the rows in this dataset, and **{LABEL_FILES}**, "
        "every sample in the pipeline's files, as cotgen's dataset report shows them (incorrect, disagreeing "
        "and contaminated samples included). Costs are the Batch API's prices for the tokens each sample "
        'used; thinking tokens are billed as output. "Spent" is the whole scenario\'s spending, failed and '
        "retried requests included, in both columns."
    )
    for s in export.splits:
        parts += [f"### `{s.name}`", scenario_table(export.figures[s.name], export.report_figures[s.name])]
    parts += [
        "## Picture",
        "Thought vs draft tokens per exported sample, and cost per 1,000 exported samples, per scenario:\n\n"
        + (image or f"![{PICTURE_ALT}]({PICTURE})"),
    ]

    deco = [
        f"A problem is left out of `source_problems`, and so never sampled or exported, when it matches a "
        f"problem of an evaluation benchmark. Rule: {RULE}. Repeats of a problem keep the first id only. "
        "Samples made before a problem was left out stay in cotgen's files but are never exported.",
        "",
        "| scenario | benchmarks checked | problems left out as benchmark matches | as repeats "
        "| samples left out here |",
        "|---|---|---:|---:|---:|",
    ]
    for s in export.splits:
        saved = s.decontamination
        checked = saved["benchmarks"] if saved else list(s.scenario.decontaminate)
        if saved:
            contaminated, repeats = f"{saved['num_contaminated']:,}", f"{saved['num_duplicates']:,}"
        else:
            contaminated = repeats = "not recorded"
        here = sum(s.left_out.get(r, 0) for r in (CONTAMINATED, REPEAT, NOT_CLEAN))
        checked_text = _join(checked) if checked else "**none: NOT decontaminated**"
        deco.append(f"| `{s.name}` | {checked_text} | {contaminated} | {repeats} | {here:,} |")
    parts += ["## Decontamination", "\n".join(deco)]

    parts += [
        "## Limitations",
        "\n".join(
            [
                "* Gemini returns thought **summaries**, not its raw reasoning: the `<thought>` text is the "
                "model's own summary of how it thought, and `thinking_tokens` counts the hidden reasoning.",
                "* "
                + (
                    "Incorrect and disagreeing samples are included (`include_incorrect`): "
                    "filter on `correct`."
                    if export.include_incorrect
                    else "Only samples graded correct are kept, so the dataset leans towards problems "
                    "the model solves; it says nothing about the problems it failed."
                ),
                "* Grading compares final answers only (exact or numeric, then `math-verify`): a right "
                "answer reached by wrong reasoning counts as correct, and an unusual but equal form may "
                "count as wrong.",
                "* Drafts are a summary written after the fact, not the model's own short reasoning.",
                "* Token counts and costs are the API's own usage figures priced with cotgen's price table.",
            ]
        ),
        "## Sources and licences",
        "\n".join(
            [
                "* GSM8K (Cobbe et al. 2021, `openai/gsm8k`): MIT licence.",
                "* MATH (Hendrycks et al. 2021, `qwedsacf/competition_math`, a copy of the MATH training "
                "set): MIT licence.",
                "* Chain of Draft: Xu et al. 2025, *Chain of Draft: Thinking Faster by Writing Less*, "
                "[arXiv:2502.18600](https://arxiv.org/abs/2502.18600).",
                "* The model outputs were made with the Gemini API; its terms of use apply to them. This "
                "dataset is released under the MIT licence as far as cotgen's own contribution goes.",
            ]
        ),
        "## Fingerprint",
        f"`sha256:{export.fingerprint}` over the data files (paths and bytes, in path order): the same "
        "samples give the same files and the same fingerprint; this card is not part of it.",
    ]
    return "\n\n".join(parts) + "\n"
