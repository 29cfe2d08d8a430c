"""Preparing a submission: plan what to ask (`planning`), write its request shards, and project
its cost. Nothing is sent here; the submission folder is written once, named by what it sends."""

from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from cotgen_assets.core.ask import Ask, GenerationAsk, SummarizationAsk
from cotgen_assets.core.decontamination import excluded_problems
from cotgen_assets.core.identity import ask_id_for, request_settings, submission_id_for
from cotgen_assets.core.model_io import Usage, wire_for
from cotgen_assets.core.planning import (
    Plan,
    UsageAverage,
    plan_generation,
    plan_summarization,
    projected_cost_usd,
    round_facts,
)
from cotgen_assets.core.preview import preview_evidence
from cotgen_assets.core.requests import (
    generation_request_for,
    generation_requests,
    summarization_request_for,
    summarization_request_of,
)
from cotgen_assets.core.rounds import DEFAULT_EXPECTED_ACCURACY, accuracy_from_tries
from cotgen_assets.core.sample_keys import problem_and_sample, request_key
from cotgen_assets.core.shards import MAX_SHARD_BYTES, write_shards
from cotgen_assets.core.stages import GENERATION, SUMMARIZATION, Stage
from cotgen_assets.core.storage import parquet_file, read_samples
from cotgen_assets.core.submission_history import asked_so_far, source_problem_ids, tries_by_problem
from cotgen_assets.core.submissions import Submission


@dataclass
class Prepared:
    """A submission written to disk but not yet sent, with the plan that made it."""

    submission: Submission
    plan: Plan
    projected_usage: Usage
    saved_cost_usd: float = 0.0  # projected cost of the samples the plan skipped


def planned_submission(
    ask: Ask, stage: Stage, empty_request: dict, plan: Plan, offline: bool, backend: str
) -> Submission:
    """A submission of `plan`'s items, named by what it asks; its id comes with its requests (_finish).

    `empty_request` is the stage's request with empty problem texts: how every problem is asked.
    """
    return Submission(
        scenario=ask.scenario.name,
        stage=stage,
        model=ask.model,
        prompt_version=stage.prompt_version,
        num_requests=len(plan.items),
        offline=offline,
        backend=backend,
        submission_id="",
        ask_id=ask_id_for(
            ask.scenario.name,
            stage,
            ask.model,
            stage.prompt_version,
            request_settings(empty_request, ask.max_requests_per_job),
            plan.items,
        ),
    )


def prepare_generation(
    ask: GenerationAsk, *, offline: bool, backend: str = "developer", rounds: dict | None = None
) -> Prepared:
    """Plan a generation submission and write its request shards; `offline`: for the emulator.

    A fill asks enough to reach `limit` at the scenario's estimated accuracy (`ask_enough`; False
    asks exactly the number missing). `rounds` (round, rounds_id) is kept with the submission."""
    ask.validate(backend)
    scenario = ask.scenario
    id_column, problems_path = source_problem_ids(scenario)
    problem_ids = id_column.to_pylist()
    history = asked_so_far(scenario)
    prior = scenario.expected_accuracy or DEFAULT_EXPECTED_ACCURACY
    preview = preview_evidence(scenario, ask.model)
    accuracy = accuracy_from_tries(history.tries, history.good, prior, preview) if ask.ask_enough else None
    plan = plan_generation(
        problem_ids,
        history.good,
        history.used,
        history.tries,
        ask.limit,
        ask.mode,
        ask.max_tries,
        accuracy,
        samples_per_problem=ask.samples_per_problem,
        answered=history.answered,
    )
    submission = planned_submission(
        ask, GENERATION, generation_request_for(ask, wire_for(backend)), plan, offline, backend
    )
    submission.round = {
        **(rounds or {}),
        **round_facts(plan, ask.mode, ask.limit),
        "planned_at": datetime.now(UTC).isoformat(),
    }
    samples: dict[str, list[int]] = {}  # problem id -> the sample indices asked of it, in order
    for key, _ in plan.items:
        problem_id, sample = problem_and_sample(key)
        samples.setdefault(problem_id, []).append(sample)
    # Which rows to ask for, decided once over the id column (not once per batch).
    asked = pc.is_in(id_column, value_set=pa.array(list(samples), pa.string())).combine_chunks()

    def items():
        """Requests in table order, one Parquet batch at a time (never the whole table as rows)."""
        with parquet_file(problems_path) as problems:
            yield from generation_requests(ask, problems, asked, samples, wire_for(backend))

    return _finish(submission, plan, items, ask.max_requests_per_job, history.average.value())


def prepare_summarization(ask: SummarizationAsk, *, offline: bool, backend: str = "developer") -> Prepared:
    """Plan the drafts of the CoT samples that lack one (`planning.plan_summarization`) and write
    their request shards; `offline`: for the emulator."""
    ask.validate(backend)
    scenario = ask.scenario
    drafted: dict[str, str] = {}  # key of the CoT (`request_key`) -> the batch its draft was made from
    average = UsageAverage(SUMMARIZATION.usage_prior)
    for record in read_samples(SUMMARIZATION, scenario.suffix):
        drafted[request_key(record)] = record["generation"]["batch"]
        average.add(record["summarization"]["usage"])
    plan = plan_summarization(
        read_samples(GENERATION, scenario.suffix),
        drafted,
        excluded_problems(scenario.name),
        tries_by_problem(scenario.name, SUMMARIZATION),
        only_correct=ask.summarize == "correct",
        max_tries=ask.max_tries,
    )
    submission = planned_submission(
        ask, SUMMARIZATION, summarization_request_for(ask, wire_for(backend)), plan, offline, backend
    )
    wanted = {key for key, _ in plan.items}

    def items():
        for record in read_samples(GENERATION, scenario.suffix):
            if request_key(record) in wanted:
                yield summarization_request_of(record, ask, wire_for(backend))

    return _finish(submission, plan, items, ask.max_requests_per_job, average.value())


def _finish(submission: Submission, plan: Plan, items, max_requests_per_job: int, average: Usage) -> Prepared:
    """Name the submission by what it sends, then write the shards, unless these very requests
    were sent before, or a run began to send them (their job failed, this is a dry run while they
    are in flight, or their run died sending them): then the folder stays as it is.

    `items()` makes the (request line, context) pairs afresh: once to hash, once to write, so the
    folder is named before anything is written into it (no rename, which a bucket lacks)."""
    submission.submission_id = submission_id_for(submission.ask_id, (line for line, _ in items()))
    sent = submission.saved()
    already_sent = sent is not None and bool(sent.batch_names or sent.sent_by)
    if already_sent:
        submission.shards, submission.display_names = sent.shards, sent.display_names
    else:
        file_limit = wire_for(submission.backend).limits.max_bytes_per_file or MAX_SHARD_BYTES
        write_shards(submission, items(), max_requests_per_job, min(MAX_SHARD_BYTES, file_limit))
    request_bytes = sum(submission.requests_path(s).stat().st_size for s in submission.shards)
    submission.projected_cost_usd, usage = projected_cost_usd(
        submission.model, request_bytes, submission.num_requests, average, submission.backend
    )
    if not already_sent:
        submission.save()
    # what the samples left out would have cost (their text stands in for their requests)
    saved_usd, _ = projected_cost_usd(
        submission.model, plan.skipped_chars, sum(plan.skipped.values()), average, submission.backend
    )
    return Prepared(submission, plan, usage, saved_usd)
