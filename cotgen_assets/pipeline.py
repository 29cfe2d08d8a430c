"""The steps behind the batch and results assets, as plain functions tests call directly.

Stage-agnostic where possible: both stages plan requests, write shards, submit them once,
download what finished and ingest it into a samples file.
"""

import fcntl
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cotgen_assets.gemini import GeminiBatchResource
from cotgen_assets.planning import (
    DEFAULT_GENERATION_USAGE,
    DEFAULT_SUMMARIZATION_USAGE,
    Plan,
    UsageAverage,
    check_max_tries,
    plan_generation,
    projected_cost_usd,
)
from cotgen_assets.prompts import (
    GENERATION_PROMPT_VERSION,
    SUMMARIZATION_PROMPT_VERSION,
    generation_request,
    request_line,
    summarization_request,
)
from cotgen_assets.quality import numbers_in
from cotgen_assets.results import Usage
from cotgen_assets.samples import iter_samples, samples_path
from cotgen_assets.scenarios import Scenario
from cotgen_assets.storage import scenario_dir, source_problems_path
from cotgen_assets.submissions import (
    GENERATION,
    SUMMARIZATION,
    Submission,
    load_submission,
    submission_id_for,
    tries_by_problem,
    write_shards,
)

BATCH_ASSET = {GENERATION: "generation_batch", SUMMARIZATION: "summarization_batch"}
RESULTS_ASSET = {GENERATION: "generation_results", SUMMARIZATION: "summarization_results"}
SAMPLES_ASSET = {GENERATION: "cot_samples", SUMMARIZATION: "cod_samples"}
RESULTS_JOB = {GENERATION: "generation_results_job", SUMMARIZATION: "summarization_results_job"}
MAX_SHARD_BYTES = 1_900_000_000  # the Batch API takes input files up to 2 GB
PROBLEM_BATCH_ROWS = 10_000  # source rows turned into requests at a time
CONTEXT_COLUMNS = {
    "problem_id",
    "question",
    "answer",
    "source_dataset",
    "source_config",
    "source_split",
    "source_row",
    "level",
    "type",
}


class SubmissionRefused(Exception):
    """A batch asset declined to submit; the message says why and what to do."""


class InFlight(SubmissionRefused):
    """The stage's previous submission has not been ingested yet."""


@dataclass
class Prepared:
    """A submission written to disk but not yet sent, with the plan that made it."""

    submission: Submission
    plan: Plan
    projected_usage: Usage


def _plain(record) -> dict:
    metadata = record.asset_materialization.metadata
    return {key: value.value for key, value in metadata.items()} | {"_storage_id": record.storage_id}


def latest_metadata(instance: dg.DagsterInstance, asset: str, partition: str) -> dict | None:
    """The newest materialization metadata of one partition of an asset, as plain values."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    return _plain(records[0]) if records else None


def newest_metadata_where(instance: dg.DagsterInstance, asset: str, partition: str, keep) -> dict | None:
    """The newest materialization metadata of one partition for which `keep(metadata)` is true."""
    records_filter = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition])
    cursor = None
    while True:
        page = instance.fetch_materializations(records_filter, limit=20, cursor=cursor)
        for record in page.records:
            metadata = _plain(record)
            if keep(metadata):
                return metadata
        if not page.has_more:
            return None
        cursor = page.cursor


def submitted_metadata(instance: dg.DagsterInstance, scenario: str, stage: str) -> dict | None:
    """The newest batch materialization that sent a batch.

    Dry runs and empty plans are skipped, so that one made later cannot hide a batch in flight.
    """
    return newest_metadata_where(instance, BATCH_ASSET[stage], scenario, lambda m: bool(m.get("batch_names")))


def is_ingested(batch: dict, results: dict | None) -> bool:
    """Whether `results` was materialized after `batch`, for its submission.

    The id alone is not enough: after a failed job, `fill` asks for the same problems again,
    so the new submission has the failed one's id.
    """
    return (
        bool(results)
        and results.get("submission_id") == batch["submission_id"]
        and results["_storage_id"] > batch["_storage_id"]
    )


def pending_submission(instance: dg.DagsterInstance, scenario: str, stage: str) -> Submission | None:
    """The stage's newest real submission if its results were not ingested yet."""
    batch = submitted_metadata(instance, scenario, stage)
    if not batch or is_ingested(batch, latest_metadata(instance, RESULTS_ASSET[stage], scenario)):
        return None
    return load_submission(scenario, stage, batch["submission_id"])


def latest_submission(instance: dg.DagsterInstance, scenario: str, stage: str) -> Submission:
    """The stage's newest real submission, for the results assets."""
    batch = submitted_metadata(instance, scenario, stage)
    if not batch:
        raise SubmissionRefused(
            f"no {BATCH_ASSET[stage]} has been submitted for scenario {scenario!r} yet: "
            f"materialize {BATCH_ASSET[stage]} first"
        )
    return load_submission(scenario, stage, batch["submission_id"])


@contextmanager
def submission_lock(scenario: str, stage: str):
    """Only one submission per stage and scenario at a time (two clicks, one batch)."""
    scenario_dir(scenario).mkdir(parents=True, exist_ok=True)
    with open(scenario_dir(scenario) / f".{stage}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SubmissionRefused(
                f"another {BATCH_ASSET[stage]} run for scenario {scenario!r} is submitting right now; "
                "this one submits nothing"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def refuse_if_in_flight(
    instance: dg.DagsterInstance, gemini: GeminiBatchResource, scenario: str, stage: str
) -> None:
    pending = pending_submission(instance, scenario, stage)
    if pending is None:
        return
    states, ended = [], bool(pending.batch_names)
    for name in pending.batch_names:
        try:
            job = gemini.get_batch(name, timeout_seconds=10)
        except Exception:  # noqa: BLE001 - the refusal matters more than the state
            states.append(name)
            ended = False
        else:
            states.append(f"{name} ({job.state})")
            ended &= job.done
    if ended:
        raise InFlight(ended_not_saved(pending, ", ".join(states)) + " Then materialize again.")
    raise InFlight(
        f"{BATCH_ASSET[stage]} for scenario {scenario!r} is still in flight: submission "
        f"{pending.submission_id}, batch {', '.join(states)}. batch_completion_sensor ingests it "
        f"when it ends. To give up on it: `cotgen cancel {scenario} {stage}`, then materialize again."
    )


def ended_not_saved(submission: Submission, states: str) -> str:
    """What to do when a submission's jobs ended but its results run failed or has not run yet.

    The sensor launches that run once per submission (run keys are never reused), so a failed
    run stays failed until someone re-executes it.
    """
    stage, scenario = submission.stage, submission.scenario
    return (
        f"{BATCH_ASSET[stage]} for scenario {scenario!r} (submission {submission.submission_id}, batch "
        f"{states}) has ended, but its results are not saved yet. batch_completion_sensor launches "
        f"{RESULTS_JOB[stage]} for it; if that run failed, re-execute it (Dagster UI: Runs), or "
        f"materialize {RESULTS_ASSET[stage]} and {SAMPLES_ASSET[stage]} for partition {scenario!r}."
    )


def source_problem_ids(scenario: Scenario) -> tuple[pa.ChunkedArray, Path]:
    """The scenario's problem ids in table order, and the Parquet file they come from."""
    path = source_problems_path(scenario.name)
    if not path.exists():
        raise SubmissionRefused(
            f"source_problems for scenario {scenario.name!r} is not materialized yet: materialize it first"
        )
    return pq.read_table(path, columns=["problem_id"])["problem_id"], path


def prepare_generation(
    scenario: Scenario,
    limit: int,
    mode: str,
    max_tries: int,
    model: str,
    thinking_level: str,
    max_requests_per_job: int,
    offline: bool,
) -> Prepared:
    """Plan a generation submission and write its request shards."""
    id_column, problems_path = source_problem_ids(scenario)
    problem_ids = id_column.to_pylist()
    good, used, average = set(), set(), UsageAverage(DEFAULT_GENERATION_USAGE)
    for record in iter_samples(samples_path(GENERATION, scenario.suffix)):
        used.add(record["id"])
        average.add(record["generation"]["usage"])
        if record["correct"]:
            good.add(record["id"])
    tries = tries_by_problem(scenario.name, GENERATION)
    used |= tries.keys()
    plan = plan_generation(problem_ids, good, used, tries, limit, mode, max_tries)
    submission = Submission(
        scenario=scenario.name,
        stage=GENERATION,
        model=model,
        prompt_version=GENERATION_PROMPT_VERSION,
        num_requests=len(plan.items),
        offline=offline,
        submission_id=submission_id_for(
            scenario.name, GENERATION, model, GENERATION_PROMPT_VERSION, plan.items
        ),
    )
    # Which rows to ask for, decided once over the id column (not once per batch).
    asked = pc.is_in(id_column, value_set=pa.array([p for p, _ in plan.items], pa.string())).combine_chunks()

    def items():
        """Requests in table order, one Parquet batch at a time (never the whole table as rows)."""
        problems = pq.ParquetFile(problems_path)
        columns = [c for c in problems.schema_arrow.names if c in CONTEXT_COLUMNS]  # not the long solutions
        offset = 0
        for batch in problems.iter_batches(batch_size=PROBLEM_BATCH_ROWS, columns=columns):
            mask, offset = asked.slice(offset, batch.num_rows), offset + batch.num_rows
            for row in batch.filter(mask).to_pylist():
                source = {
                    "dataset": row["source_dataset"],
                    "config": row["source_config"],
                    "split": row["source_split"],
                    "row": row["source_row"],
                }
                # level/type always present ("" where the dataset has none, not null: datasets
                # infers a null column from an all-null file and then cannot load MATH files with it)
                source |= {c: row.get(c) or "" for c in ("level", "type")}
                context = {
                    "id": row["problem_id"],
                    "scenario": scenario.name,
                    "question": row["question"],
                    "answer": row["answer"],
                    "source": source,
                }
                yield (
                    request_line(row["problem_id"], generation_request(row["question"], thinking_level)),
                    context,
                )

    return _finish(submission, plan, items(), max_requests_per_job, average.value())


def prepare_summarization(
    scenario: Scenario,
    max_tries: int,
    model: str,
    thinking_level: str,
    max_requests_per_job: int,
    offline: bool,
) -> Prepared:
    """Plan requests turning every CoT sample that lacks a CoD (of that very CoT) into a draft."""
    check_max_tries(max_tries)
    drafted: dict[str, str] = {}
    average = UsageAverage(DEFAULT_SUMMARIZATION_USAGE)
    for record in iter_samples(samples_path(SUMMARIZATION, scenario.suffix)):
        drafted[record["id"]] = record["generation"]["batch"]
        average.add(record["summarization"]["usage"])
    tries = tries_by_problem(scenario.name, SUMMARIZATION)
    plan = Plan()
    cot_file = samples_path(GENERATION, scenario.suffix)
    for record in iter_samples(cot_file):
        if drafted.get(record["id"]) == record["generation"]["batch"]:
            continue
        if tries.get(record["id"], 0) >= max_tries:
            plan.given_up.append(record["id"])
            continue
        plan.items.append((record["id"], tries.get(record["id"], 0) + 1))
    submission = Submission(
        scenario=scenario.name,
        stage=SUMMARIZATION,
        model=model,
        prompt_version=SUMMARIZATION_PROMPT_VERSION,
        num_requests=len(plan.items),
        offline=offline,
        submission_id=submission_id_for(
            scenario.name, SUMMARIZATION, model, SUMMARIZATION_PROMPT_VERSION, plan.items
        ),
    )
    wanted = {problem_id for problem_id, _ in plan.items}

    def items():
        for record in iter_samples(cot_file):
            if record["id"] not in wanted:
                continue
            thought, _, answer = record["cot"].removeprefix("<thought>").partition("</thought>\n")
            context = {k: record[k] for k in ("id", "scenario", "question", "answer", "source", "generation")}
            context["cot_predicted_answer"] = record["predicted_answer"]
            context["thought_numbers"] = sorted(numbers_in(thought))
            request = summarization_request(record["question"], thought, answer, thinking_level)
            yield request_line(record["id"], request), context

    return _finish(submission, plan, items(), max_requests_per_job, average.value())


def _finish(submission: Submission, plan: Plan, items, max_requests_per_job: int, average: Usage) -> Prepared:
    """Write the shards, unless this very plan was sent before (its job failed, or this is a dry
    run while it is in flight): then its folder stays as sent, batch names included."""
    sent = submission.saved()
    already_sent = sent is not None and bool(sent.batch_names)
    if already_sent:
        submission.shards, submission.display_names = sent.shards, sent.display_names
    else:
        write_shards(submission, items, max_requests_per_job, MAX_SHARD_BYTES)
    request_bytes = sum(submission.requests_path(s).stat().st_size for s in submission.shards)
    submission.projected_cost_usd, usage = projected_cost_usd(
        submission.model, request_bytes, submission.num_requests, average
    )
    if not already_sent:
        submission.save()
    return Prepared(submission, plan, usage)


def check_budget(submission: Submission, max_cost_usd: float) -> None:
    if submission.projected_cost_usd > max_cost_usd:
        raise SubmissionRefused(
            f"projected cost ${submission.projected_cost_usd:.2f} of {submission.num_requests} "
            f"{submission.stage} requests for scenario {submission.scenario!r} is above max_cost_usd "
            f"${max_cost_usd:.2f} by ${submission.projected_cost_usd - max_cost_usd:.2f}: "
            "raise max_cost_usd or lower limit. Nothing was submitted."
        )


def submit(submission: Submission, gemini: GeminiBatchResource) -> Submission:
    """Send every shard once: a shard whose display name already has a live job reuses it.

    A shard sent again to a new job loses the results file of its earlier job (already
    ingested), so the new job's answers are downloaded.
    """
    sent = submission.saved()
    before = dict(zip(sent.shards, sent.batch_names)) if sent else {}
    submission.batch_names = [
        gemini.submit_jsonl(submission.requests_path(shard), submission.model, display_name).name
        for shard, display_name in zip(submission.shards, submission.display_names)
    ]
    for shard, name in zip(submission.shards, submission.batch_names):
        if before.get(shard, name) != name:
            submission.results_path(shard).unlink(missing_ok=True)
    submission.job_states = []
    submission.save()
    return submission


def download_finished(submission: Submission, gemini: GeminiBatchResource) -> list:
    """Fetch each shard's job; download the results file of every finished job (once).

    Not only of those that succeeded: a cancelled job hands back the answers it finished, which
    were paid for. Once every job has ended, their states are saved for the ingestion.
    """
    jobs = []
    for shard, name in zip(submission.shards, submission.batch_names):
        job = gemini.get_batch(name)
        jobs.append(job)
        results = submission.results_path(shard)
        if job.done and job.result_file and not results.exists():
            gemini.download_results(job.result_file, results)
    if jobs and all(job.done for job in jobs):
        submission.job_states = [job.state for job in jobs]
        submission.save()
    return jobs


def overall_state(jobs: list) -> str:
    """One state for a submission: the shared state, or MIXED(a, b) when shards differ."""
    states = sorted({job.state for job in jobs})
    return states[0] if len(states) == 1 else f"MIXED({', '.join(states)})"
