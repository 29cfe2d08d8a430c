"""The software-defined assets, one chain per scenario (DESIGN §3). Wiring only: the logic lives in
plain modules (sources, submissions, ingest, quality, report) that tests call directly."""

import os
from typing import Literal

import dagster as dg
import pyarrow.parquet as pq

from cotgen_assets.core.batch_output import Usage, overall_state
from cotgen_assets.core.decontamination import (
    DecontaminationReport,
    decontaminate,
    excluded_problems,
    save_report,
    verify_no_overlap,
)
from cotgen_assets.core.ingest import ingest_submission
from cotgen_assets.core.planning import Plan, check_max_cost
from cotgen_assets.core.pricing import UnknownModelError
from cotgen_assets.core.quality import SampleStats
from cotgen_assets.core.records import FIELDS, GENERATION, SUMMARIZATION
from cotgen_assets.core.scenarios import (
    Scenario,
    ScenarioError,
    get_scenario,
    load_benchmarks,
    load_scenarios_and_benchmarks,
)
from cotgen_assets.core.sources import load_source_problems
from cotgen_assets.core.storage import atomic_write, samples_path, source_problems_path
from cotgen_assets.core.submissions import (
    Prepared,
    SubmissionRefused,
    check_budget,
    prepare_generation,
    prepare_summarization,
    submission_cost_usd,
    total_cost_usd,
)
from cotgen_assets.defs.checks import check_results, check_specs
from cotgen_assets.defs.instance import (
    RESULTS_ASSET,
    SAMPLES_ASSET,
    InFlight,
    latest_metadata,
    latest_submission,
    orphan_submissions,
    refuse_if_in_flight,
    rounds_submissions,
    samples_lock,
    submission_lock,
)
from cotgen_assets.defs.jobs import ROUND_TAG, ROUNDS_TAG
from cotgen_assets.defs.partitions import scenario_partitions
from cotgen_assets.gemini.resource import GeminiBatchResource, adopt, download_finished, submit
from cotgen_assets.publish.card import PICTURE_ALT, card_body
from cotgen_assets.publish.export import write_export
from cotgen_assets.publish.hub import PushFailed, PushRefused, push_export
from cotgen_assets.publish.previews import preview_rows
from cotgen_assets.publish.report import build_report, by_scenario, markdown_image, numeric_totals
from cotgen_assets.publish.selection import ExportError

GROUP = "cotgen"
PREVIEW_ROWS = 5
DEFAULT_MODEL = "gemini-3.1-pro-preview"


def preview_table(rows: list[dict], columns: list[str], width: int = 160) -> dg.MetadataValue:
    """A few rows as a table the UI renders, long texts cut to `width` characters."""

    def cell(value):
        text = "" if value is None else str(value)
        return text if len(text) <= width else text[: width - 1] + "…"

    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: cell(row.get(c)) for c in columns}) for row in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns]),
    )


def _decontamination_note() -> str:
    """The asset's description names the scenarios not checked against every benchmark."""
    scenarios, benchmarks = load_scenarios_and_benchmarks()
    opted_out = [name for name, scenario in scenarios.items() if not scenario.decontaminate]
    note = f" NOT decontaminated: {', '.join(opted_out)} (`decontaminate: []`)." if opted_out else ""
    for name, scenario in scenarios.items():
        skipped = [b for b in benchmarks if b not in scenario.decontaminate]
        if scenario.decontaminate and skipped:
            note += f" PARTLY decontaminated: {name} (not checked against {', '.join(skipped)})."
    return note


def _overlap_checks(
    scenario: Scenario, overlap: list[str], contamination: DecontaminationReport
) -> list[dg.AssetCheckResult]:
    """The written table checked again (error), and what the benchmarks it skips would find (warning)."""
    checked = ", ".join(scenario.decontaminate)
    skipped, found = contamination.skipped, contamination.skipped_overlap_ids
    if contamination.skipped_error:
        why = f"the kept problems could not be compared with {', '.join(skipped)}: "
        why += contamination.skipped_error
    elif found:
        counts = ", ".join(f"{name} {count}" for name, count in contamination.skipped_overlap.items())
        why = (
            f"{len(found)} kept problems match benchmarks this scenario does not check ({counts}): name "
            f"them in its `decontaminate:` list, or drop the list to check every benchmark"
        )
    else:
        why = f"no kept problem matches the benchmarks this scenario does not check ({', '.join(skipped)})"
    return [
        dg.AssetCheckResult(
            check_name="no_benchmark_overlap",
            passed=not overlap,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "benchmarks_checked": dg.MetadataValue.json(list(scenario.decontaminate)),
                "num_overlapping": dg.MetadataValue.int(len(overlap)),
                "overlapping_ids": dg.MetadataValue.json(overlap[:50]),
            },
            description=f"the written problem table, checked again against {checked}"
            if checked
            else "NOT checked: the scenario opts out of decontamination (`decontaminate: []`)",
        ),
        dg.AssetCheckResult(
            check_name="no_overlap_with_skipped_benchmarks",
            passed=not found and not contamination.skipped_error,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "benchmarks_skipped": dg.MetadataValue.json(list(skipped)),
                "num_overlapping": dg.MetadataValue.json(dict(contamination.skipped_overlap)),
                "overlapping_ids": dg.MetadataValue.json(found[:50]),
            },
            description=why if skipped else "every benchmark of the scenarios file is checked",
        ),
    ]


@dg.asset(
    partitions_def=scenario_partitions,
    group_name=GROUP,
    kinds={"huggingface", "parquet"},
    check_specs=[
        dg.AssetCheckSpec("no_benchmark_overlap", asset="source_problems"),
        dg.AssetCheckSpec("no_overlap_with_skipped_benchmarks", asset="source_problems"),
    ],
    description="The scenario's filtered math problems with stable ids and reference answers (Parquet), "
    "without benchmark problems (GSM8K test, MATH test, MATH-500) or repeats." + _decontamination_note(),
)
def source_problems(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    try:
        scenario = get_scenario(context.partition_key)
        benchmarks = load_benchmarks()
        problems, dropped, dataset_rows = load_source_problems(scenario)
        clean, contamination = decontaminate(problems, scenario, benchmarks)
    except ScenarioError as error:
        raise dg.Failure(description=str(error)) from None  # the reason as the run's headline
    path = source_problems_path(scenario.name)
    with atomic_write(path) as handle:
        pq.write_table(clean, handle)
    save_report(scenario.name, contamination)
    if dropped:
        context.log.warning(
            f"{len(dropped)} matching rows have no reference answer in their solution and were "
            f"left out, since they could never be graded: {dropped}"
        )
    (context.log.info if contamination.decontaminated else context.log.warning)(contamination.note())
    checked = [benchmarks[name] for name in scenario.decontaminate]
    with path.open("rb") as handle:
        overlap = verify_no_overlap(pq.read_table(handle, columns=["problem_id", "question"]), checked)
    found = contamination.metadata()
    examples = found.pop("contamination_examples")
    schema = dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in clean.schema])
    return dg.MaterializeResult(
        metadata={
            "num_rows": dg.MetadataValue.int(clean.num_rows),
            "num_matched": dg.MetadataValue.int(problems.num_rows + len(dropped)),
            "num_dropped_no_answer": dg.MetadataValue.int(len(dropped)),
            "dropped_ids": dg.MetadataValue.json(dropped),
            "num_contaminated": dg.MetadataValue.int(found.pop("num_contaminated")),
            "num_duplicates": dg.MetadataValue.int(found.pop("num_duplicates")),
            "decontamination": found.pop("decontamination"),
            "contamination_examples": preview_table(
                examples, ["problem_id", "question", "benchmark", "benchmark_question", "match"]
            ),
            "decontaminated": dg.MetadataValue.bool(found.pop("decontaminated")),
            "contamination_rule": found.pop("contamination_rule"),
            "contamination_ngram": dg.MetadataValue.int(found.pop("contamination_ngram")),
            **{key: dg.MetadataValue.json(value) for key, value in found.items()},  # ids, counts by kind
            "dataset_rows": dg.MetadataValue.int(dataset_rows),
            "dataset": scenario.dataset,
            "config": scenario.config or "",
            "split": scenario.split,
            "filters": dg.MetadataValue.json([str(f) for f in scenario.filters]),
            "path": dg.MetadataValue.path(str(path)),
            "dagster/row_count": dg.MetadataValue.int(clean.num_rows),
            "dagster/column_schema": schema,
            "preview": preview_table(
                clean.slice(0, PREVIEW_ROWS).to_pylist(), ["problem_id", "question", "answer"]
            ),
        },
        check_results=_overlap_checks(scenario, overlap, contamination),
    )


# --------------------------------------------------------------------------- batch submissions


class BatchConfig(dg.Config):
    """Knobs shared by both batch assets; every field has a default so a plain click works."""

    dry_run: bool = False  # write the request file and show the projected cost; submit nothing
    max_cost_usd: float = 100.0  # refuse to submit a batch projected to cost more
    max_tries: int = 3  # asks per problem before it is reported as given up
    max_requests_per_job: int = 10_000  # larger submissions are split into several batch jobs
    model: str = DEFAULT_MODEL
    thinking_level: str = "high"


class GenerationBatchConfig(BatchConfig):
    limit: int | None = (
        None  # good samples to aim for (fill) or new problems (extend); default: the scenario's
    )
    mode: Literal["fill", "extend"] = (
        "fill"  # fill: retry and top up to `limit` good samples; extend: `limit` never-used problems
    )
    # fill: enough new problems to reach `limit` at 95 % this round; missing: exactly the number missing
    ask: Literal["enough", "missing"] = "enough"
    auto_fill: bool | None = None  # fill: the sensor submits further rounds while short; default: scenario's
    max_rounds: int | None = None  # fill rounds in this run of rounds, this one included; default: scenario's


class SummarizationBatchConfig(BatchConfig):
    thinking_level: str = "low"
    # correct: draft only CoT samples graded correct (no paying to train on wrong reasoning); all: every one
    summarize: Literal["correct", "all"] = "correct"


def _submit_stage(
    context,
    gemini,
    stage: str,
    config: BatchConfig,
    prepare,
    wait_if_in_flight: bool = False,
    extra_metadata: dict | None = None,
    spent_before: float = 0.0,
    plan_metadata=lambda prepared: {},
) -> dg.MaterializeResult | None:
    """Shared body of the batch assets: lock, refuse if in flight, plan, guard the budget, submit.

    With `wait_if_in_flight`, a batch still in flight is not an error: nothing is materialized,
    and batch_completion_sensor submits what is left once that batch is ingested. `spent_before`
    counts against `max_cost_usd` (earlier fill rounds); `plan_metadata(prepared)` adds metadata.
    """
    scenario = get_scenario(context.partition_key)
    adopted = None
    try:
        check_max_cost(config.max_cost_usd)
        with submission_lock(
            context.instance, scenario.name, stage, context.run.run_id, warn=context.log.warning
        ):
            if not config.dry_run:
                try:
                    refuse_if_in_flight(context.instance, gemini, scenario.name, stage)
                    adopted = _adopt_orphan(context, gemini, scenario.name, stage)
                except InFlight as error:
                    if not wait_if_in_flight:
                        raise
                    context.log.info(f"{error} batch_completion_sensor submits the rest once it is ingested.")
                    return None
            prepared, reused = adopted or (prepare(scenario), [])
            submission = prepared.submission
            if not adopted:
                context.log.info(
                    f"{submission.num_requests} {stage} requests, projected cost "
                    f"${submission.projected_cost_usd:.4f} ({gemini.describe()})"
                )
            if not adopted and submission.num_requests and not config.dry_run:
                check_budget(submission, config.max_cost_usd, spent_before)
                jobs = submit(submission, gemini, context.run.run_id)
                reused = [job.name for job in jobs if job.reused]
                context.log.info(f"submitted {submission.batch_names}")
    except (SubmissionRefused, ValueError) as error:
        raise dg.Failure(description=str(error)) from None
    plan = prepared.plan
    if reused and not adopted:
        context.log.warning(
            f"REUSED {len(reused)} existing batch job(s) of submission {submission.submission_id} instead of "
            f"submitting again (a retried run, or one whose materialization was lost): {reused}"
        )
    if plan.given_up:
        context.log.warning(
            f"{len(plan.given_up)} problems reached max_tries={config.max_tries} "
            f"without a good sample and are given up: {plan.given_up[:20]}"
        )
    metadata = _batch_metadata(prepared, reused, bool(adopted), config.dry_run, gemini)
    return dg.MaterializeResult(metadata={**metadata, **(extra_metadata or {}), **plan_metadata(prepared)})


def _batch_metadata(prepared: Prepared, reused: list, adopted: bool, dry_run: bool, gemini) -> dict:
    """What a batch asset submitted (or, in a dry run, would submit), and what it should cost."""
    submission, plan, usage = prepared.submission, prepared.plan, prepared.projected_usage
    return {
        "batch_names": dg.MetadataValue.json(submission.batch_names),
        "reused_batches": dg.MetadataValue.json(reused),
        "adopted": dg.MetadataValue.bool(adopted),
        "submission_id": submission.submission_id,
        "num_requests": dg.MetadataValue.int(submission.num_requests),
        "num_retries": dg.MetadataValue.int(plan.num_retries),
        "num_new_problems": dg.MetadataValue.int(plan.num_new),
        "num_given_up": dg.MetadataValue.int(len(plan.given_up)),
        "num_skipped_incorrect": dg.MetadataValue.int(plan.skipped.get("incorrect", 0)),
        "num_skipped_contaminated": dg.MetadataValue.int(plan.skipped.get("contaminated_or_repeat", 0)),
        "skipped_projected_cost_usd": dg.MetadataValue.float(prepared.saved_cost_usd),
        "num_shards": dg.MetadataValue.int(len(submission.shards)),
        "projected_cost_usd": dg.MetadataValue.float(submission.projected_cost_usd),
        "projected_input_tokens": dg.MetadataValue.int(usage.input_tokens),
        "projected_thinking_tokens": dg.MetadataValue.int(usage.thinking_tokens),
        "projected_output_tokens": dg.MetadataValue.int(usage.output_tokens),
        "model": submission.model,
        "prompt_version": submission.prompt_version,
        "dry_run": dg.MetadataValue.bool(dry_run),
        "gemini_endpoint": gemini.describe(),
        "offline": dg.MetadataValue.bool(gemini.offline),
        "request_files": dg.MetadataValue.json([str(submission.requests_path(s)) for s in submission.shards]),
    }


def _adopt_orphan(context, gemini, scenario: str, stage: str) -> tuple[Prepared, list[str]] | None:
    """The submission of a run that died between creating its jobs and recording them, taken over
    as this run's (its requests are in flight; nothing of it is sent again), with the jobs reused.
    None when there is none: then this run plans as usual."""
    for orphan in orphan_submissions(context.instance, scenario, stage):
        died = orphan.sent_by
        jobs = adopt(orphan, gemini, context.run.run_id)
        if jobs is None:
            context.log.info(
                f"submission {orphan.submission_id} (run {died}) was written, but its jobs were never "
                "created: left alone (marked as never sent), its requests are planned as usual"
            )
            continue
        reused = [job.name for job in jobs if job.reused]
        created = [job.name for job in jobs if not job.reused]
        context.log.warning(
            f"ADOPTED submission {orphan.submission_id}: run {died} created its batch job(s) {reused} and "
            "died before recording them. They are REUSED as this run's submission, not sent again"
            + (f" (the shards that run never sent were sent now: {created})" if created else "")
            + f". Its {orphan.num_requests} requests count as in flight and batch_completion_sensor ingests "
            "them; this run plans nothing new: once they are ingested, the next fill asks for the rest."
        )
        return Prepared(orphan, Plan(), Usage()), reused
    return None


@dg.asset(
    partitions_def=scenario_partitions,
    group_name=GROUP,
    kinds={"gemini", "jsonl"},
    deps=[source_problems],
    description="Submits the CoT generation requests as a Gemini batch and returns at once.",
)
def generation_batch(
    context: dg.AssetExecutionContext, config: GenerationBatchConfig, gemini: GeminiBatchResource
) -> dg.MaterializeResult:
    scenario = get_scenario(context.partition_key)
    rounds = _run_of_rounds(context, scenario, config)
    spent = sum(
        submission_cost_usd(scenario.name, GENERATION, submission_id)
        for submission_id in rounds_submissions(context.instance, scenario.name, rounds["rounds_id"])
    )

    def prepare(scenario):
        prepared = prepare_generation(
            scenario,
            rounds["config"]["limit"],
            config.mode,
            config.max_tries,
            config.model,
            config.thinking_level,
            config.max_requests_per_job,
            gemini.offline,
            rounds={"round": rounds["round"], "rounds_id": rounds["rounds_id"]},
            ask_enough=config.ask == "enough",
        )
        context.log.info(describe_round(prepared.submission, rounds, spent, config.max_cost_usd))
        return prepared

    def plan_metadata(prepared: Prepared) -> dict:
        return round_metadata(prepared, rounds, spent)

    return _submit_stage(
        context, gemini, GENERATION, config, prepare, spent_before=spent, plan_metadata=plan_metadata
    )


def _run_of_rounds(context, scenario: Scenario, config: GenerationBatchConfig) -> dict:
    """Which round of which run of rounds this is (a click begins one; the sensor's runs carry its
    tags), and the config every round of it uses (the sensor replays it)."""
    auto_fill = scenario.auto_fill if config.auto_fill is None else config.auto_fill
    max_rounds = scenario.max_rounds if config.max_rounds is None else config.max_rounds
    if max_rounds < 1:
        raise dg.Failure(description=f"max_rounds must be at least 1, got {max_rounds}")
    replay = config.model_dump() | {
        "limit": scenario.limit if config.limit is None else config.limit,
        "auto_fill": auto_fill and config.mode == "fill",
        "max_rounds": max_rounds,
        "dry_run": False,
    }
    return {
        "round": int(context.run.tags.get(ROUND_TAG, 1)),
        "rounds_id": context.run.tags.get(ROUNDS_TAG, context.run.run_id),
        "config": replay,
    }


def describe_round(submission, rounds: dict, spent: float, max_cost_usd: float) -> str:
    """One log line: how the round's ask was sized and what it should give."""
    facts, config = submission.round, rounds["config"]
    head = f"round {rounds['round']} of at most {config['max_rounds']}" + (
        " (auto_fill)" if config["auto_fill"] else ""
    )
    if facts.get("accuracy") is None:
        return f"{head}: {submission.num_requests} requests ({facts.get('mode')})"
    return (
        f"{head}: {facts['missing']} good samples missing of limit {facts['limit']}; estimated accuracy "
        f"{facts['accuracy']:.2f} on first tries, {facts['retry_accuracy']:.2f} on retries "
        f"(from {facts['accuracy_source']}); asking {facts['num_retries']} retries + {facts['num_new']} new "
        f"problems, expecting {facts['expected_correct']:.1f} correct; projected "
        f"${submission.projected_cost_usd:.4f}, earlier rounds ${spent:.4f}, max_cost_usd ${max_cost_usd:.2f}"
    )


def round_metadata(prepared: Prepared, rounds: dict, spent: float) -> dict:
    """The round's estimate, ask and expectation, and what the sensor needs for the next round."""
    facts, config = prepared.submission.round, rounds["config"]
    return {
        "round": dg.MetadataValue.int(rounds["round"]),
        "rounds_id": rounds["rounds_id"],
        "auto_fill": dg.MetadataValue.bool(config["auto_fill"]),
        "max_rounds": dg.MetadataValue.int(config["max_rounds"]),
        "limit": dg.MetadataValue.int(config["limit"]),
        "num_missing": dg.MetadataValue.int(prepared.plan.num_missing),
        "accuracy_estimate": dg.MetadataValue.float(facts.get("accuracy") or 0.0),
        "retry_accuracy_estimate": dg.MetadataValue.float(facts.get("retry_accuracy") or 0.0),
        "accuracy_source": facts.get("accuracy_source") or "none",
        "expected_correct": dg.MetadataValue.float(facts.get("expected_correct") or 0.0),
        "earlier_rounds_cost_usd": dg.MetadataValue.float(float(spent)),
        "rounds_config": dg.MetadataValue.json(config),
    }


@dg.asset(
    partitions_def=scenario_partitions,
    group_name=GROUP,
    kinds={"gemini", "jsonl"},
    deps=["cot_samples"],
    output_required=False,  # not materialized while an earlier summarization is still in flight
    description="Submits a Gemini batch that cuts each CoT sample lacking a CoD down to a Chain of Draft.",
)
def summarization_batch(
    context: dg.AssetExecutionContext, config: SummarizationBatchConfig, gemini: GeminiBatchResource
):
    def prepare(scenario):
        return prepare_summarization(
            scenario,
            config.max_tries,
            config.model,
            config.thinking_level,
            config.max_requests_per_job,
            gemini.offline,
            config.summarize,
        )

    # Which cot_samples this plan saw: the sensor submits again when a newer one exists.
    cot = latest_metadata(context.instance, "cot_samples", context.partition_key)
    based_on = {"cot_samples_storage_id": dg.MetadataValue.int(cot["_storage_id"] if cot else 0)}
    result = _submit_stage(
        context, gemini, SUMMARIZATION, config, prepare, wait_if_in_flight=True, extra_metadata=based_on
    )
    if result is not None:
        yield result


# --------------------------------------------------------------------------- results


def _fetch_results(context, gemini, stage: str) -> dg.MaterializeResult:
    """Shared body of the results assets: download what finished, record how each job ended."""
    try:
        submission = latest_submission(context.instance, context.partition_key, stage)
    except SubmissionRefused as error:
        raise dg.Failure(description=str(error)) from None
    jobs = download_finished(submission, gemini)
    running = [f"{job.name} ({job.state})" for job in jobs if not job.done]
    if running:
        raise dg.Failure(
            description=f"batch jobs still running: {running}; batch_completion_sensor "
            "materializes this asset when they end"
        )
    failed = [job for job in jobs if job.failed]
    for job in failed:
        context.log.error(
            f"batch {job.name} ended {job.state}: {job.error or 'no error message'}. "
            "Nothing is lost: the next fill asks for its problems again."
        )
    state = overall_state([job.state for job in jobs])
    results = [submission.results_path(s) for s in submission.shards if submission.results_path(s).exists()]
    return dg.MaterializeResult(
        metadata={
            "job_state": state,
            "submission_id": submission.submission_id,
            "batch_names": dg.MetadataValue.json(submission.batch_names),
            "num_requests": dg.MetadataValue.int(submission.num_requests),
            "num_succeeded": dg.MetadataValue.int(sum(job.succeeded_count or 0 for job in jobs)),
            "num_failed": dg.MetadataValue.int(sum(job.failed_count or 0 for job in jobs)),
            "num_failed_jobs": dg.MetadataValue.int(len(failed)),
            "job_errors": dg.MetadataValue.json({job.name: job.error for job in failed}),
            "result_files": dg.MetadataValue.json([str(p) for p in results]),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="batch_succeeded",
                passed=not failed,
                severity=dg.AssetCheckSeverity.ERROR,
                description=f"every batch job of the submission succeeded (state {state})",
            )
        ],
    )


@dg.asset(
    partitions_def=scenario_partitions,
    group_name=GROUP,
    kinds={"gemini", "jsonl"},
    deps=[generation_batch],
    check_specs=[dg.AssetCheckSpec("batch_succeeded", asset="generation_results")],
    description="The generation batch's raw output file(s), downloaded unchanged.",
)
def generation_results(
    context: dg.AssetExecutionContext, gemini: GeminiBatchResource
) -> dg.MaterializeResult:
    return _fetch_results(context, gemini, GENERATION)


@dg.asset(
    partitions_def=scenario_partitions,
    group_name=GROUP,
    kinds={"gemini", "jsonl"},
    deps=[summarization_batch],
    check_specs=[dg.AssetCheckSpec("batch_succeeded", asset="summarization_results")],
    description="The summarization batch's raw output file(s), downloaded unchanged.",
)
def summarization_results(
    context: dg.AssetExecutionContext, gemini: GeminiBatchResource
) -> dg.MaterializeResult:
    return _fetch_results(context, gemini, SUMMARIZATION)


# --------------------------------------------------------------------------- samples


def _ingest_stage(context, stage: str) -> dg.MaterializeResult:
    """Shared body of the samples assets: merge the newest results into the JSONL file.

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
                f"fetched): materialize {RESULTS_ASSET[stage]} first; batch_completion_sensor does "
                "both when its jobs end"
            )
        lock = samples_lock(
            context.instance,
            path,
            context.run.run_id,
            SAMPLES_ASSET[stage],
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
    usage = ingest.usage
    metadata = {
        "num_samples": dg.MetadataValue.int(stats.num_samples),
        "num_new": dg.MetadataValue.int(ingest.num_new),
        "num_failed": dg.MetadataValue.int(ingest.num_failed),
        "failed_by_reason": dg.MetadataValue.json({k: v for k, v in ingest.statuses.items() if k != "ok"}),
        "num_unknown_keys": dg.MetadataValue.int(ingest.unknown_keys),
        "num_duplicate_keys": dg.MetadataValue.int(ingest.duplicate_keys),
        "input_tokens": dg.MetadataValue.int(usage.input_tokens),
        "cached_tokens": dg.MetadataValue.int(usage.cached_tokens),
        "thinking_tokens": dg.MetadataValue.int(usage.thinking_tokens),
        "output_tokens": dg.MetadataValue.int(usage.output_tokens),
        "cost_usd": dg.MetadataValue.float(ingest.cost_usd),
        "total_cost_usd": dg.MetadataValue.float(total_cost_usd(scenario.name, stage)),
        "accuracy": dg.MetadataValue.float(stats.accuracy),
        "num_contaminated": dg.MetadataValue.int(stats.num_contaminated),
        "num_repeats": dg.MetadataValue.int(stats.num_repeats),
        "submission_id": submission.submission_id,
        "offline": dg.MetadataValue.bool(submission.offline),
        "path": dg.MetadataValue.path(str(path)),
        "dagster/row_count": dg.MetadataValue.int(stats.num_samples),
        "preview": sample_preview(stats.preview, stage),
        "dagster/column_lineage": column_lineage(stage, scenario.name),
    }
    if submission.offline:  # first row of the metadata table, where a person looks first
        metadata = {
            "gemini_endpoint": "OFFLINE: made by the local Gemini emulator, not by Gemini (no real cost)",
            **metadata,
        }
    if stage == GENERATION:
        return dg.MaterializeResult(metadata=metadata, check_results=check_results(stats))
    metadata["draft_to_thought_token_ratio"] = dg.MetadataValue.float(stats.draft_to_thought_token_ratio)
    metadata["answer_agreement"] = dg.MetadataValue.float(stats.answer_agreement)
    return dg.MaterializeResult(metadata=metadata, check_results=check_results(stats))


def sample_preview(records: list[dict], stage: str) -> dg.MetadataValue:
    """The first samples with excerpts of their thought or draft (the whole text is in the file)."""
    rows, columns = preview_rows(records, stage)
    return preview_table(rows, columns)


def column_schema(stage: str) -> dg.TableSchema:
    """The record's columns as the UI documents them, from the one description in `records`."""
    return dg.TableSchema(columns=[dg.TableColumn(f.name, f.type, f.description) for f in FIELDS[stage]])


def column_lineage(stage: str, scenario: str) -> dg.TableColumnLineage:
    """Which record columns are copied or derived from an upstream asset's columns."""

    def dep(asset: str, *columns: str) -> list[dg.TableColumnDep]:
        return [dg.TableColumnDep(asset_key=asset, column_name=c) for c in columns]

    if stage == GENERATION:
        source_columns = ["source_dataset", "source_config", "source_split", "source_row"]
        path = source_problems_path(scenario)
        if path.exists():
            with path.open("rb") as handle:
                source_columns += [c for c in ("level", "type") if c in pq.read_schema(handle).names]
        return dg.TableColumnLineage(
            {
                "id": dep("source_problems", "problem_id"),
                "scenario": dep("source_problems", "scenario"),
                "question": dep("source_problems", "question"),
                "answer": dep("source_problems", "answer"),
                "messages": dep("source_problems", "question"),
                "source": dep("source_problems", *source_columns),
            }
        )
    copied = ["id", "scenario", "question", "answer", "source", "generation"]
    return dg.TableColumnLineage(
        {
            **{c: dep("cot_samples", c) for c in copied},
            "cod": dep("cot_samples", "cot"),
            "messages": dep("cot_samples", "question", "cot"),
            "agrees_with_cot": dep("cot_samples", "predicted_answer"),
            "unsupported_draft_numbers": dep("cot_samples", "cot"),
        }
    )


@dg.asset(
    partitions_def=scenario_partitions,
    group_name=GROUP,
    kinds={"jsonl"},
    deps=[generation_results],
    check_specs=check_specs(GENERATION, "cot_samples"),
    description="`cot_<suffix>.jsonl`: Chain-of-Thought samples (`<thought>…</thought>` + answer), graded.",
    metadata={"dagster/column_schema": column_schema(GENERATION)},
)
def cot_samples(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return _ingest_stage(context, GENERATION)


@dg.asset(
    partitions_def=scenario_partitions,
    group_name=GROUP,
    kinds={"jsonl"},
    deps=[summarization_results],
    check_specs=check_specs(SUMMARIZATION, "cod_samples"),
    description="`cod_<suffix>.jsonl`: Chain-of-Draft samples (`<draft>…</draft>` + answer), graded.",
    metadata={"dagster/column_schema": column_schema(SUMMARIZATION)},
)
def cod_samples(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return _ingest_stage(context, SUMMARIZATION)


# --------------------------------------------------------------------------- report

# The report and the export read every scenario's samples files.
EVERY_SCENARIOS_SAMPLES = [
    dg.AssetDep(cot_samples, partition_mapping=dg.AllPartitionMapping()),
    dg.AssetDep(cod_samples, partition_mapping=dg.AllPartitionMapping()),
]


@dg.asset(
    group_name=GROUP,
    kinds={"matplotlib", "markdown"},
    deps=EVERY_SCENARIOS_SAMPLES,
    description="Every scenario side by side: samples, accuracy, tokens, cost per 1,000 samples, "
    "CoD/CoT token ratio, answer agreement, generation rounds and what they cost, spent per 1,000 "
    "correct CoT+CoD pairs, and a picture of thought vs draft length.",
)
def dataset_report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    report = build_report()
    context.log.info(f"report picture written to {report.picture}")
    numbers = {
        key: dg.MetadataValue.int(value) if isinstance(value, int) else dg.MetadataValue.float(value)
        for key, value in numeric_totals(report.figures).items()
    }
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(report.table),
            "rounds": dg.MetadataValue.md(report.rounds),
            "picture": dg.MetadataValue.md(
                markdown_image(report.png, "thought vs draft tokens per scenario")
            ),
            "picture_path": dg.MetadataValue.path(str(report.picture)),
            **numbers,
            "by_scenario": dg.MetadataValue.json(by_scenario(report.figures)),
        }
    )


# --------------------------------------------------------------------------- Hugging Face export


class HubResource(dg.ConfigurableResource):
    """The Hugging Face Hub write token (`HF_TOKEN`, through `dg.EnvVar`); None: export only."""

    token: str | None = None


class HfDatasetConfig(dg.Config):
    include_incorrect: bool = False  # also export incorrect / disagreeing samples, with their flags
    hub_repo: str | None = None  # push to this dataset repo ("user/name"); default $COTGEN_HF_REPO
    public: bool = False  # a repo created by the push is private unless this is true
    cap_at_limit: bool = False  # export at most each scenario's limit of rows (default: every good one)


@dg.asset(
    group_name=GROUP,
    kinds={"huggingface", "parquet"},
    deps=EVERY_SCENARIOS_SAMPLES,
    description="The samples as a Hugging Face dataset folder (`export/`: configs `cot` and `cod`, one "
    "split per scenario, the dataset card), pushed to the Hub when `hub_repo` or COTGEN_HF_REPO is set.",
)
def hf_dataset(
    context: dg.AssetExecutionContext, config: HfDatasetConfig, hub: HubResource
) -> dg.MaterializeResult:
    repo = config.hub_repo or os.environ.get("COTGEN_HF_REPO") or None
    try:
        export = write_export(config.include_incorrect, repo_id=repo, cap_at_limit=config.cap_at_limit)
    except (ExportError, ValueError) as error:  # ValueError: a damaged samples file, a bad COTGEN_DATA_DIR
        raise dg.Failure(description=str(error)) from None
    context.log.info(f"export written to {export.folder}: {export.rows}, fingerprint {export.fingerprint}")
    if export.offline:
        context.log.warning("OFFLINE: the export holds emulator data, not Gemini's; it can never be pushed.")
    rows = {
        f"num_rows_{c}_{s}": dg.MetadataValue.int(n)
        for c, by_split in export.rows.items()
        for s, n in by_split.items()
    }
    card = card_body(export.facts, image=markdown_image(export.png, PICTURE_ALT))
    metadata = {
        "offline": dg.MetadataValue.bool(export.offline),
        "num_rows": dg.MetadataValue.int(export.num_rows),
        "rows": dg.MetadataValue.json(export.rows),
        **rows,
        "left_out": dg.MetadataValue.json({s.name: s.left_out for s in export.splits}),
        "num_over_limit": dg.MetadataValue.json({s.name: s.num_over_limit for s in export.splits}),
        "cap_at_limit": dg.MetadataValue.bool(config.cap_at_limit),
        "cost_usd": dg.MetadataValue.float(export.cost_usd),
        "spent_usd": dg.MetadataValue.float(sum(f.spent_usd for f in export.report_figures.values())),
        "include_incorrect": dg.MetadataValue.bool(config.include_incorrect),
        "fingerprint": export.fingerprint,
        "path": dg.MetadataValue.path(str(export.folder)),
        "card": dg.MetadataValue.md(card),
        "dagster/row_count": dg.MetadataValue.int(export.num_rows),
    }
    if repo:
        try:
            url = push_export(export.folder, repo, hub.token, config.public, context.run.run_id)
        except (PushRefused, PushFailed) as error:
            raise dg.Failure(description=str(error)) from None
        context.log.info(f"pushed to {repo}: {url}")
        metadata["hub_repo"] = repo
        metadata["hub_commit_url"] = dg.MetadataValue.url(url)
    return dg.MaterializeResult(metadata=metadata)
