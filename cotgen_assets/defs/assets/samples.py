"""The samples assets, one per stage (`cot_samples`, `cod_samples`): a finished submission's answers,
graded and merged into the stage's samples file, with the stage's quality gates as checks."""

from collections.abc import Callable

import dagster as dg

from cotgen_assets.core.decontamination import excluded_problems
from cotgen_assets.core.ingest import IngestStats, ingest_submission
from cotgen_assets.core.pricing import UnknownModelError
from cotgen_assets.core.problems import file_passes
from cotgen_assets.core.quality import SampleStats
from cotgen_assets.core.scenarios import get_scenario
from cotgen_assets.core.stages import GENERATION, SUMMARIZATION, Stage
from cotgen_assets.core.storage import MAX_LINES_NAMED, parquet_file, samples_path, source_problems_path
from cotgen_assets.core.submission_history import total_cost_usd
from cotgen_assets.core.submissions import Submission, SubmissionRefused
from cotgen_assets.defs.assets.ui import GROUP, preview_table
from cotgen_assets.defs.checks import gate_check_specs, gate_checks
from cotgen_assets.defs.history import latest_submission
from cotgen_assets.defs.locks import samples_lock
from cotgen_assets.defs.partitions import scenario_partitions
from cotgen_assets.publish.previews import preview_rows
from cotgen_assets.publish.report import ScenarioFigures, markdown_image, render_pass_rates

OFFLINE_NOTE = "OFFLINE: made by the local Gemini emulator, not by Gemini (no real cost)"


def samples_asset(
    stage: Stage, description: str, lineage: Callable[[str], dg.TableColumnLineage]
) -> dg.AssetsDefinition:
    """The stage's samples asset, downstream of its results asset; `lineage(scenario)` says which
    record columns come from which upstream columns."""

    @dg.asset(
        name=stage.samples_asset,
        partitions_def=scenario_partitions,
        group_name=GROUP,
        kinds={"jsonl"},
        deps=[stage.results_asset],
        check_specs=gate_check_specs(stage),
        description=description,
        metadata={"dagster/column_schema": column_schema(stage)},
    )
    def samples(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        return ingest_stage(context, stage, lineage)

    return samples


def ingest_stage(context, stage: Stage, lineage) -> dg.MaterializeResult:
    """Merge the stage's newest finished submission into its samples file.

    A results file gone from disk is refused (ingest.MissingResults), so that the ingestion never
    wipes the submission's outcomes and costs; the results asset downloads it again.
    """
    scenario = get_scenario(context.partition_key)
    path = samples_path(stage, scenario.suffix)
    stats = SampleStats(stage, excluded=excluded_problems(scenario.name))
    try:
        submission = latest_submission(context.instance, scenario.name, stage)
        if not submission.job_states:  # else this would count it as saved while it still runs
            raise SubmissionRefused(
                f"submission {submission.submission_id} has not ended yet (or its results were never "
                f"fetched): materialize {stage.results_asset} first; batch_completion_sensor does "
                "both when its jobs end"
            )
        lock = samples_lock(
            context.instance,
            path,
            context.run.run_id,
            stage.samples_asset,
            say=context.log.info,
            warn=context.log.warning,
        )
        ingest = ingest_submission(submission, path, observe=stats, lock=lock)
    except (SubmissionRefused, ValueError, UnknownModelError) as error:
        raise dg.Failure(description=str(error)) from None
    if stats.num_contaminated or stats.num_repeats:
        context.log.warning(
            f"{stats.num_contaminated} samples are of benchmark problems and {stats.num_repeats} of repeated "
            "problems that source_problems now leaves out: kept in the file, never summarized or exported"
        )
    if ingest.num_failed:
        context.log.warning(
            f"{ingest.num_failed} requests gave no sample: {dict(ingest.statuses)}; "
            f"see {submission.folder / 'outcomes.jsonl'}"
        )
    if ingest.unknown_keys or ingest.duplicate_keys:
        context.log.warning(unused_lines_note(ingest, submission.submission_id, stage))
    if ingest.repeated_lines:
        context.log.warning(repeated_lines_note(ingest, path))
    metadata = samples_metadata(submission, ingest, stats, path)
    metadata["dagster/column_lineage"] = lineage(scenario.name)
    for figure in stage.figures:
        metadata[figure] = dg.MetadataValue.float(getattr(stats, figure))
    if stage.summarizes is None:
        metadata |= pass_metadata(scenario.name, path)
    if submission.offline:  # first row of the metadata table, where a person looks first
        metadata = {"gemini_endpoint": OFFLINE_NOTE, **metadata}
    return dg.MaterializeResult(metadata=metadata, check_results=gate_checks(stats))


def samples_metadata(submission: Submission, ingest: IngestStats, stats: SampleStats, path) -> dict:
    """What one ingestion added, and the whole file's figures (the same keys on every partition)."""
    usage = ingest.usage
    return {
        "num_samples": stats.num_samples,
        "num_new": ingest.num_new,
        "num_failed": ingest.num_failed,
        "failed_by_reason": dg.MetadataValue.json({k: v for k, v in ingest.statuses.items() if k != "ok"}),
        "num_unknown_keys": ingest.unknown_keys,
        "num_duplicate_keys": ingest.duplicate_keys,
        "num_repeated_lines_dropped": ingest.repeated_lines,
        "unused_lines_cost_usd": dg.MetadataValue.float(ingest.unused_cost_usd),
        "input_tokens": usage.input_tokens,
        "cached_tokens": usage.cached_tokens,
        "thinking_tokens": usage.thinking_tokens,
        "output_tokens": usage.output_tokens,
        "cost_usd": dg.MetadataValue.float(ingest.cost_usd),
        "total_cost_usd": dg.MetadataValue.float(total_cost_usd(submission.scenario, stats.stage)),
        "accuracy": dg.MetadataValue.float(stats.accuracy),
        "num_contaminated": stats.num_contaminated,
        "num_repeats": stats.num_repeats,
        "submission_id": submission.submission_id,
        "offline": submission.offline,
        "path": dg.MetadataValue.path(str(path)),
        "dagster/row_count": stats.num_samples,
        "preview": sample_preview(stats.preview, stats.stage),
    }


def pass_metadata(scenario: str, path) -> dict:
    """A CoT file's k answers per problem: pass@1, pass@k, maj@k and the picture of pass rates
    (the file read again, a bucket of problems at a time: the ingestion's pass keeps no per-problem state)."""
    passes = file_passes(path)
    figures = ScenarioFigures(scenario, passes=passes)
    return {
        "num_problems": passes.num_problems,
        "answers_per_problem": passes.k,
        "pass_at_1": dg.MetadataValue.float(passes.pass_at_1 or 0.0),
        "pass_at_k": dg.MetadataValue.float(passes.pass_at_k or 0.0),
        "maj_at_k": dg.MetadataValue.float(passes.maj_at_k or 0.0),
        "pass_rates": dg.MetadataValue.md(markdown_image(render_pass_rates([figures]), "pass rates")),
    }


def unused_lines_note(ingest: IngestStats, submission_id: str, stage: Stage) -> str:
    """Result lines that are no sample, said rather than dropped silently: their answers were paid for."""
    return (
        f"{ingest.unknown_keys + ingest.duplicate_keys} result lines were not used: "
        f"{ingest.duplicate_keys} repeated a key answered earlier (the first answer counts), "
        f"{ingest.unknown_keys} had no key, or one never asked. Their answers (tokens worth "
        f"${ingest.unused_cost_usd:.4f}, not in cost_usd) are no samples; they stay in the results "
        f"files of submission {submission_id} ({stage.results_asset})"
    )


def repeated_lines_note(ingest: IngestStats, path) -> str:
    """Lines of the samples file the merge wrote once, said once rather than dropped silently."""
    more = " and more" if len(ingest.repeated_ids) == MAX_LINES_NAMED else ""
    return (
        f"{path}: {ingest.repeated_lines} lines repeated a line word for word (ids "
        f"{', '.join(ingest.repeated_ids)}{more}; a file appended twice?): each sample counts once, "
        "and the file now holds it once"
    )


def sample_preview(records: list[dict], stage: Stage) -> dg.MetadataValue:
    """The first samples with excerpts of their thought or draft (the whole text is in the file)."""
    rows, columns = preview_rows(records, stage)
    return preview_table(rows, columns)


def column_schema(stage: Stage) -> dg.TableSchema:
    """The record's columns as the UI documents them, from the one description in `records`."""
    return dg.TableSchema(columns=[dg.TableColumn(f.name, f.type, f.description) for f in stage.fields])


def _dep(asset: str, *columns: str) -> list[dg.TableColumnDep]:
    return [dg.TableColumnDep(asset_key=asset, column_name=c) for c in columns]


def cot_lineage(scenario: str) -> dg.TableColumnLineage:
    """Which CoT record columns are copied or derived from source_problems' columns."""
    source_columns = ["source_dataset", "source_config", "source_split", "source_row"]
    path = source_problems_path(scenario)
    if path.exists():
        with parquet_file(path) as problems:
            source_columns += [c for c in ("level", "type") if c in problems.schema_arrow.names]
    return dg.TableColumnLineage(
        {
            "id": _dep("source_problems", "problem_id"),
            "scenario": _dep("source_problems", "scenario"),
            "question": _dep("source_problems", "question"),
            "answer": _dep("source_problems", "answer"),
            "messages": _dep("source_problems", "question"),
            "source": _dep("source_problems", *source_columns),
        }
    )


def cod_lineage(scenario: str) -> dg.TableColumnLineage:
    """Which CoD record columns are copied or derived from its CoT record's."""
    cot = GENERATION.samples_asset
    copied = ["id", "scenario", "question", "answer", "source", "generation"]
    return dg.TableColumnLineage(
        {
            **{c: _dep(cot, c) for c in copied},
            "cod": _dep(cot, "cot"),
            "messages": _dep(cot, "question", "cot"),
            "agrees_with_cot": _dep(cot, "predicted_answer"),
            "unsupported_draft_numbers": _dep(cot, "cot"),
        }
    )


cot_samples = samples_asset(
    GENERATION,
    "`cot_<suffix>.jsonl`: Chain-of-Thought samples (`<thought>…</thought>` + answer), graded.",
    cot_lineage,
)
cod_samples = samples_asset(
    SUMMARIZATION,
    "`cod_<suffix>.jsonl`: Chain-of-Draft samples (`<draft>…</draft>` + answer), graded.",
    cod_lineage,
)
