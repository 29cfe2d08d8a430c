"""The batch assets: `generation_batch` and `summarization_batch` plan what to ask, then send it as
Gemini batch jobs and return at once (batch_completion_sensor takes over when the jobs end).

Submitting, in order: check where request files go, claim the data folder for this Dagster storage,
take the stage's lock, refuse while its last batch is in flight, adopt a batch a dead run sent
without recording it, else plan and write the requests, refuse one over budget, and send them.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import dagster as dg
from pydantic import Field, ValidationError, model_validator

from cotgen_assets.backends.lifecycle import adopt, submit
from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets.core.ask import GenerationAsk, SummarizationAsk
from cotgen_assets.core.budget import refuse_over_budget
from cotgen_assets.core.model_io import Usage
from cotgen_assets.core.online_round import SHED_RATE_ENV, answer_online, max_shed_rate
from cotgen_assets.core.planning import Plan
from cotgen_assets.core.prepare import Prepared, prepare_generation, prepare_summarization
from cotgen_assets.core.queue import queued_shards
from cotgen_assets.core.sample_keys import MAX_SAMPLES_PER_PROBLEM
from cotgen_assets.core.scenarios import Scenario, get_scenario
from cotgen_assets.core.stages import GENERATION, SUMMARIZATION, Stage
from cotgen_assets.core.submission_history import submission_cost_usd
from cotgen_assets.core.submissions import SubmissionRefused
from cotgen_assets.defs.assets.ui import GROUP
from cotgen_assets.defs.data_folder import claim_data_folder
from cotgen_assets.defs.history import (
    InFlight,
    latest_metadata,
    orphan_submissions,
    refuse_if_in_flight,
    rounds_submissions,
)
from cotgen_assets.defs.jobs import ROUND_TAG, ROUNDS_TAG
from cotgen_assets.defs.locks import submission_lock
from cotgen_assets.defs.partitions import scenario_partitions

DEFAULT_MODEL = "gemini-3.1-pro-preview"
THINKING_LEVELS = (
    "a level the model takes: 3.1 Pro low, medium, high; 3 Pro low, high; 3 Flash minimal, low, medium, high"
)


class BoundedConfig(dg.Config):
    """The launchpad shows the descriptions and checks types and enums, but not bounds: those are
    checked as the run starts, before the asset looks at anything, and refused as a `dg.Failure`
    naming every field out of bounds (a refusal, so the sensor does not retry it)."""

    @model_validator(mode="wrap")
    @classmethod
    def _refuse_out_of_bounds(cls, data, handler):
        try:
            return handler(data)
        except ValidationError as error:
            problems = [
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}, got {e['input']!r}" for e in error.errors()
            ]
            raise dg.Failure(description="; ".join(problems)) from None


class BatchConfig(BoundedConfig):
    """Knobs shared by both batch assets; every field has a default so a plain click works."""

    dry_run: bool = Field(
        False, description="write the request file and show the projected cost; submit nothing"
    )
    max_cost_usd: float = Field(
        100.0, ge=0, description="refuse to submit a batch projected to cost more than this (USD, 0 or more)"
    )
    max_tries: int = Field(
        3, ge=1, description="asks per problem before it is reported as given up (at least 1)"
    )
    max_requests_per_job: int = Field(
        10_000, ge=1, description="larger submissions are split into several batch jobs (at least 1)"
    )
    model: str = Field(DEFAULT_MODEL, description="the Gemini model; it must have a row in the price table")
    thinking_level: str = Field("high", description=THINKING_LEVELS)

    def asked(self) -> dict:
        """The settings both stages' asks take from this config (`core.ask.Ask`)."""
        return {
            "model": self.model,
            "thinking_level": self.thinking_level,
            "max_tries": self.max_tries,
            "max_requests_per_job": self.max_requests_per_job,
        }


class GenerationBatchConfig(BatchConfig):
    limit: int | None = Field(
        None,
        gt=0,
        description="fill: good samples to reach; extend: new problems to add (more than 0); "
        "default: the scenario's limit",
    )
    mode: Literal["fill", "extend"] = Field(
        "fill",
        description="fill: retry failed or wrong problems and top up to `limit` good samples; "
        "extend: `limit` problems never asked before",
    )
    ask: Literal["enough", "missing"] = Field(
        "enough",
        description="fill: enough new problems to reach `limit` at 95 % in this round; missing: exactly "
        "the number missing",
    )
    auto_fill: bool | None = Field(
        None,
        description="fill: the sensor submits further rounds while short of `limit`; default: the scenario's",
    )
    max_rounds: int | None = Field(
        None,
        ge=1,
        description="fill rounds in this run of rounds, this one included; default: the scenario's",
    )
    online_max_requests: int | None = Field(
        None,
        ge=0,
        description="auto_fill: a round of at most this many requests is answered on the Flex tier "
        "(minutes, half price) instead of a batch job; 0: never; default: the scenario's",
    )
    samples_per_problem: int | None = Field(
        None,
        ge=1,
        le=MAX_SAMPLES_PER_PROBLEM,
        description=f"answers asked of each new problem, 1 to {MAX_SAMPLES_PER_PROBLEM}, k request lines "
        "in the same batch (input tokens paid k times); failed ones are asked again, wrong ones are kept; "
        "default: the scenario's (1)",
    )


class SummarizationBatchConfig(BatchConfig):
    thinking_level: str = Field("low", description=THINKING_LEVELS)
    summarize: Literal["correct", "all"] = Field(
        "correct",
        description="correct: draft only CoT samples graded correct (no paying to train on wrong "
        "reasoning); all: every one",
    )


@dataclass
class Sent:
    """What a batch run submitted: the submission and its plan, and which jobs it reused."""

    prepared: Prepared
    reused: list[str]  # names of batch jobs found already made for these requests, not made again
    adopted: bool = False  # the submission of a run that died before recording it


def submit_stage(
    context: dg.AssetExecutionContext,
    gemini: GeminiBatchResource,
    stage: Stage,
    config: BatchConfig,
    prepare: Callable[[Scenario], Prepared],
    wait_if_in_flight: bool = False,
    extra_metadata: dict | None = None,
    spent_before: float = 0.0,
    plan_metadata: Callable[[Prepared], dict] = lambda prepared: {},
    send: Callable | None = None,
) -> dg.MaterializeResult | None:
    """The batch assets' body: under the stage's lock, send what `prepare` plans (or adopt an orphan).

    With `wait_if_in_flight`, a batch still in flight is not an error: nothing is materialized,
    and batch_completion_sensor submits what is left once that batch is ingested. `spent_before`
    counts against `max_cost_usd` (earlier fill rounds); `plan_metadata(prepared)` adds metadata;
    `send(context, submission)` sends it (default: as batch jobs, `submit`).
    """
    scenario = get_scenario(context.partition_key)
    try:
        gemini.check_staging()
        claim_data_folder(context.instance)
        with submission_lock(
            context.instance, scenario.name, stage, context.run.run_id, warn=context.log.warning
        ):
            sent = _send(
                context, gemini, stage, scenario, config, prepare, wait_if_in_flight, spent_before, send
            )
    except (SubmissionRefused, ValueError) as error:
        raise dg.Failure(description=str(error)) from None
    if sent is None:
        return None
    _warn_about(context, sent, config.max_tries)
    metadata = {
        **batch_metadata(sent, config, gemini),
        **(extra_metadata or {}),
        **plan_metadata(sent.prepared),
    }
    return dg.MaterializeResult(metadata=metadata)


def _send(
    context,
    gemini,
    stage: Stage,
    scenario: Scenario,
    config: BatchConfig,
    prepare,
    wait_if_in_flight: bool,
    spent_before: float,
    send: Callable | None = None,
) -> Sent | None:
    """Adopt an orphan, or plan and send (a dry run only plans); None while a batch is in flight."""
    if not config.dry_run:
        try:
            refuse_if_in_flight(context.instance, gemini, scenario.name, stage)
            adopted = adopt_orphan(context, gemini, scenario.name, stage)
        except InFlight as error:
            if not wait_if_in_flight:
                raise
            context.log.info(f"{error} batch_completion_sensor submits the rest once it is ingested.")
            return None
        if adopted is not None:
            return adopted
    prepared = prepare(scenario)
    submission = prepared.submission
    context.log.info(
        f"{submission.num_requests} {stage.name} requests, projected cost "
        f"${submission.projected_cost_usd:.4f} ({gemini.describe()})"
    )
    if not submission.num_requests or config.dry_run:
        return Sent(prepared, [])
    refuse_over_budget(submission, config.max_cost_usd, spent_before)
    jobs = send(context, submission) if send else submit(submission, gemini.batch_api(), context.run.run_id)
    queued = queued_shards(submission)
    context.log.info(
        f"submitted {[name for name in submission.batch_names if name]}"
        + (
            f"; {len(queued)} shard(s) queued until the batch quota has room "
            "(batch_completion_sensor creates them, oldest first, as earlier jobs end)"
            if queued
            else ""
        )
    )
    return Sent(prepared, [job.name for job in jobs if job.reused])


def adopt_orphan(context, gemini, scenario: str, stage: Stage) -> Sent | None:
    """The submission of a run that died between creating its jobs and recording them, taken over
    as this run's (its requests are in flight; nothing of it is sent again), with the jobs reused.
    None when there is none: then this run plans as usual."""
    for orphan in orphan_submissions(context.instance, scenario, stage):
        died = orphan.sent_by
        jobs = adopt(orphan, gemini.batch_api(), context.run.run_id)
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
        return Sent(Prepared(orphan, Plan(), Usage()), reused, adopted=True)
    return None


def _warn_about(context, sent: Sent, max_tries: int) -> None:
    """Jobs reused rather than sent again, and problems given up, as warnings in the run's log."""
    submission, plan = sent.prepared.submission, sent.prepared.plan
    if sent.reused and not sent.adopted:
        context.log.warning(
            f"REUSED {len(sent.reused)} existing batch job(s) of submission {submission.submission_id} "
            "instead of submitting again (a retried run, or one whose materialization was lost): "
            f"{sent.reused}"
        )
    if plan.given_up:
        context.log.warning(
            f"{len(plan.given_up)} problems reached max_tries={max_tries} "
            f"without a good sample and are given up: {plan.given_up[:20]}"
        )


def batch_metadata(sent: Sent, config: BatchConfig, gemini: GeminiBatchResource) -> dict:
    """What a batch materialization records: the submission (the sensor reads it), its plan, its cost."""
    prepared = sent.prepared
    submission, plan, usage = prepared.submission, prepared.plan, prepared.projected_usage
    return {
        "batch_names": dg.MetadataValue.json(submission.batch_names),  # "": queued, see submission.json
        "num_jobs_created": sum(1 for name in submission.batch_names if name),
        "num_jobs_queued": len(queued_shards(submission)),
        "reused_batches": dg.MetadataValue.json(sent.reused),
        "adopted": sent.adopted,
        "submission_id": submission.submission_id,
        "num_requests": submission.num_requests,
        "num_retries": plan.num_retries,
        "num_new_problems": plan.num_new,
        "num_given_up": len(plan.given_up),
        "num_skipped_incorrect": plan.skipped.get("incorrect", 0),
        "num_skipped_contaminated": plan.skipped.get("contaminated_or_repeat", 0),
        "skipped_projected_cost_usd": dg.MetadataValue.float(prepared.saved_cost_usd),
        "num_shards": len(submission.shards),
        "projected_cost_usd": dg.MetadataValue.float(submission.projected_cost_usd),
        "projected_input_tokens": usage.input_tokens,
        "projected_thinking_tokens": usage.thinking_tokens,
        "projected_output_tokens": usage.output_tokens,
        "model": submission.model,
        "prompt_version": submission.prompt_version,
        "dry_run": config.dry_run,
        "gemini_endpoint": gemini.describe(),
        "offline": gemini.offline,
        "request_files": dg.MetadataValue.json([str(submission.requests_path(s)) for s in submission.shards]),
    }


@dg.asset(
    name=GENERATION.batch_asset,
    partitions_def=scenario_partitions,
    group_name=GROUP,
    kinds={"gemini", "jsonl"},
    deps=["source_problems"],
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
        ask = GenerationAsk(
            scenario=scenario,
            limit=rounds["config"]["limit"],
            mode=config.mode,
            ask_enough=config.ask == "enough",
            samples_per_problem=rounds["config"]["samples_per_problem"],
            **config.asked(),
        )
        prepared = prepare_generation(
            ask,
            offline=gemini.offline,
            backend=gemini.backend,
            rounds={"round": rounds["round"], "rounds_id": rounds["rounds_id"]},
        )
        context.log.info(describe_round(prepared.submission, rounds, spent, config.max_cost_usd))
        return prepared

    def plan_metadata(prepared: Prepared) -> dict:
        return round_metadata(prepared, rounds, spent)

    def send(context, submission):
        online_max = rounds["config"]["online_max_requests"] if rounds["config"]["auto_fill"] else 0
        return send_round(context, gemini, submission, online_max, config.max_requests_per_job)

    return submit_stage(
        context,
        gemini,
        GENERATION,
        config,
        prepare,
        spent_before=spent,
        plan_metadata=plan_metadata,
        send=send,
    )


def send_round(context, gemini, submission, online_max_requests: int, max_requests_per_job: int) -> list:
    """A round of at most `online_max_requests` requests is answered on Flex, each answer saved as it
    arrives (`core.online_round`); what Flex would not answer goes to a batch job, as any larger round."""
    if not 0 < submission.num_requests <= online_max_requests:
        return submit(submission, gemini.batch_api(), context.run.run_id)
    context.log.info(
        f"{submission.num_requests} requests <= online_max_requests={online_max_requests}: answering "
        "them on the Flex tier instead of a batch job"
    )
    done = answer_online(
        submission,
        lambda line, tier: gemini.generate(submission.model, line, tier),
        max_requests_per_job=max_requests_per_job,
    )
    context.log.info(
        f"online round: {done.asked} asked now, {done.reused} answers saved by an earlier run reused "
        f"(not paid again); {done.stats.summary()}"
    )
    if done.batch_shards:
        context.log.warning(
            f"FLEX FELL SHORT ({done.stats.summary()}; {SHED_RATE_ENV}={max_shed_rate()}): the "
            f"{submission.num_requests - len(done.stats.gave_up)} answers kept, the rest of the round "
            f"goes to a batch job ({done.batch_shards})"
        )
    return submit(submission, gemini.batch_api(), context.run.run_id)


def _run_of_rounds(context, scenario: Scenario, config: GenerationBatchConfig) -> dict:
    """Which round of which run of rounds this is (a click begins one; the sensor's runs carry its
    tags), and the config every round of it uses (the sensor replays it)."""
    auto_fill = scenario.auto_fill if config.auto_fill is None else config.auto_fill
    max_rounds = scenario.max_rounds if config.max_rounds is None else config.max_rounds
    replay = config.model_dump() | {
        "limit": scenario.limit if config.limit is None else config.limit,
        "auto_fill": auto_fill and config.mode == "fill",
        "max_rounds": max_rounds,
        "online_max_requests": (
            scenario.online_max_requests if config.online_max_requests is None else config.online_max_requests
        ),
        "samples_per_problem": scenario.samples_per_problem
        if config.samples_per_problem is None
        else config.samples_per_problem,
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
        return f"{head}: {submission.num_requests} requests ({facts.get('mode')}{_per_problem(facts)})"
    return (
        f"{head}: {facts['missing']} good samples missing of limit {facts['limit']}; estimated accuracy "
        f"{facts['accuracy']:.2f} on first tries, {facts['retry_accuracy']:.2f} on retries "
        f"(from {facts['accuracy_source']}); asking {facts['num_retries']} retries + {facts['num_new']} new "
        f"problems{_per_problem(facts)}; expecting {facts['expected_correct']:.1f} correct; projected "
        f"${submission.projected_cost_usd:.4f}, earlier rounds ${spent:.4f}, max_cost_usd ${max_cost_usd:.2f}"
    )


def _per_problem(facts: dict) -> str:
    k = facts.get("samples_per_problem", 1)
    return f", {k} answers per new problem" if k > 1 else ""


def round_metadata(prepared: Prepared, rounds: dict, spent: float) -> dict:
    """The round's estimate, ask and expectation, and what the sensor needs for the next round."""
    facts, config = prepared.submission.round, rounds["config"]
    return {
        "round": rounds["round"],
        "rounds_id": rounds["rounds_id"],
        "auto_fill": config["auto_fill"],
        "max_rounds": config["max_rounds"],
        "limit": config["limit"],
        "num_missing": prepared.plan.num_missing,
        "num_problems": prepared.plan.num_problems,  # asked k times each: num_requests in all
        "samples_per_problem": prepared.plan.samples_per_problem,
        "accuracy_estimate": dg.MetadataValue.float(facts.get("accuracy") or 0.0),
        "retry_accuracy_estimate": dg.MetadataValue.float(facts.get("retry_accuracy") or 0.0),
        "accuracy_source": facts.get("accuracy_source") or "none",
        "expected_correct": dg.MetadataValue.float(facts.get("expected_correct") or 0.0),
        "earlier_rounds_cost_usd": dg.MetadataValue.float(float(spent)),
        "rounds_config": dg.MetadataValue.json(config),
    }


@dg.asset(
    name=SUMMARIZATION.batch_asset,
    partitions_def=scenario_partitions,
    group_name=GROUP,
    kinds={"gemini", "jsonl"},
    deps=[GENERATION.samples_asset],
    output_required=False,  # not materialized while an earlier summarization is still in flight
    description="Submits a Gemini batch that cuts each CoT sample lacking a CoD down to a Chain of Draft.",
)
def summarization_batch(
    context: dg.AssetExecutionContext, config: SummarizationBatchConfig, gemini: GeminiBatchResource
):
    def prepare(scenario):
        ask = SummarizationAsk(scenario=scenario, summarize=config.summarize, **config.asked())
        return prepare_summarization(ask, offline=gemini.offline, backend=gemini.backend)

    # Which cot_samples this plan saw: the sensor submits again when a newer one exists.
    cot = latest_metadata(context.instance, GENERATION.samples_asset, context.partition_key)
    based_on = {"cot_samples_storage_id": cot["_storage_id"] if cot else 0}
    result = submit_stage(
        context, gemini, SUMMARIZATION, config, prepare, wait_if_in_flight=True, extra_metadata=based_on
    )
    if result is not None:
        yield result
