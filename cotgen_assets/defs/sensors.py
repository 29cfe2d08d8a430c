"""batch_completion_sensor: when a submitted batch ends, launch the next stage for its scenario.

One API call per pending job per tick, with a short timeout; no downloads here (the results
assets do that). The cursor maps "<stage>|<scenario>" to the storage id of the batch
materialization already handled, so a finished submission is never polled again.

A launched run that fails is launched again by this sensor after a growing delay, up to
`max_attempts()` runs, unless a step refused (raised `dg.Failure`: budget, config, nothing
submitted), which no retry can fix. Either way the end is reported once: an error in the tick
log and an observation on the asset, naming the submission and what to do. The sensor, not
the daemon's run retries, does this because Dagster's run retries start again at once, and
cannot tell a refusal from an outage.
"""

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg

from cotgen_assets.core.batch_output import overall_state
from cotgen_assets.core.rounds import LIMIT_REACHED, NOTHING_LEFT, ROUNDS_USED_UP, after_round
from cotgen_assets.core.scenarios import get_scenario
from cotgen_assets.core.settings import number
from cotgen_assets.core.stages import GENERATION, STAGES, SUMMARIZATION, Stage
from cotgen_assets.core.submission_history import num_good_samples, submission_cost_usd
from cotgen_assets.defs.history import (
    is_ingested,
    latest_metadata,
    newest_metadata_where,
    pending_submission,
    rounds_submissions,
    submitted_metadata,
)
from cotgen_assets.defs.jobs import (
    ROUND_TAG,
    ROUNDS_TAG,
    generation_batch_job,
    generation_results_job,
    summarization_batch_job,
    summarization_results_job,
)
from cotgen_assets.defs.partitions import scenario_partitions
from cotgen_assets.gemini.resource import OFFLINE_TAG, GeminiBatchResource

POLL_TIMEOUT_SECONDS = 10
RETRY_KEY_TAG = "cotgen/retry_key"  # the first attempt's run key, on every attempt
ATTEMPT_TAG = "cotgen/attempt"
# Retrying is this sensor's job: should the instance enable run_retries, the daemon leaves these runs alone.
NO_RUN_RETRIES = {"dagster/max_retries": "0"}


def sensor_interval_seconds() -> int:
    return number("COTGEN_SENSOR_INTERVAL_SECONDS")


def stale_after_seconds() -> float:
    """How long a job may stay pending before the sensor reports it (Gemini's target is 24 h)."""
    return number("COTGEN_STALE_AFTER_SECONDS")


def max_attempts() -> int:
    """Runs per launch (the first one and its retries) before the sensor gives up and says so."""
    return number("COTGEN_RUN_ATTEMPTS")


def retry_delay_seconds(failed_attempts: int) -> float:
    """The wait after the n-th failed run before the next: 60 s, 120 s, 240 s, ... by default."""
    return number("COTGEN_RETRY_DELAY_SECONDS") * 2 ** (failed_attempts - 1)


@dataclass
class TickOutcome:
    run_requests: list = field(default_factory=list)
    messages: list = field(default_factory=list)
    observations: list = field(default_factory=list)
    alerts: list = field(default_factory=list)  # given up: logged as errors


@dataclass
class Launch:
    """A run the sensor launches, and carries through failures: what, for what, and what to do."""

    job_name: str
    partition: str
    key: str  # the first attempt's run key
    tags: dict
    asset: str  # where a failure it gives up on is recorded
    subject: str  # what the run is for, as the report names it
    advice: str  # what a person does once the sensor has given up
    run_config: dict = field(default_factory=dict)
    headline: str = ""  # put before the report of a failure it gives up on


def decide_launches(
    instance: dg.DagsterInstance,
    gemini: GeminiBatchResource,
    partitions: list[str],
    cursor: dict,
    now: datetime | None = None,
) -> TickOutcome:
    """Decide what to launch for every stage and scenario: a results run when a submission's jobs
    have ended, a catch-up summarization, the next fill round of an `auto_fill` scenario.

    Updates `cursor` in place: handled submissions by storage id, stale ones and progress reported,
    under "attempts" the runs requested per launch, under "rounds_ended" the runs of rounds said over.
    """
    now = now or datetime.now(UTC)
    outcome = TickOutcome()
    for stage in STAGES:
        for partition in partitions:
            launch_results_when_ended(instance, gemini, outcome, stage, partition, cursor, now)
    for partition in partitions:
        launch_summarization_catch_up(instance, outcome, partition, cursor, now)
        launch_next_round(instance, outcome, partition, cursor, now)
    return outcome


def results_launch(stage: Stage, partition: str, batch: dict) -> Launch:
    """The results run of a submission (download, then save its samples)."""
    stage_partition = f"{stage.name}|{partition}"
    return Launch(
        job_name=stage.results_job,
        partition=partition,
        key=f"{stage_partition}|{batch['submission_id']}|{batch['_storage_id']}",
        tags={
            "cotgen/submission_id": batch["submission_id"],
            **(OFFLINE_TAG if batch.get("offline") else {}),  # as the submission recorded it
        },
        asset=stage.results_asset,
        subject=f"submission {batch['submission_id']}",
        advice=(
            f"fix the cause, then re-execute the last run (Dagster UI: Runs), or materialize "
            f"{stage.results_asset} and {stage.samples_asset} for partition {partition!r}; "
            "nothing is paid twice"
        ),
    )


def launch_results_when_ended(
    instance: dg.DagsterInstance,
    gemini: GeminiBatchResource,
    outcome: TickOutcome,
    stage: Stage,
    partition: str,
    cursor: dict,
    now: datetime,
) -> None:
    """Poll the stage's newest submission; once all its jobs have ended, launch its results run
    (and again if it fails). A submission whose samples are saved is never polled again."""
    stage_partition = f"{stage.name}|{partition}"
    handled, attempts = cursor.setdefault("handled", {}), cursor.setdefault("attempts", {})
    batch = submitted_metadata(instance, partition, stage)
    if not batch or handled.get(stage_partition) == batch["_storage_id"]:
        return
    launch = results_launch(stage, partition, batch)
    saved = is_ingested(batch, latest_metadata(instance, stage.samples_asset, partition))
    if attempts.get(stage_partition, {}).get("key") == launch.key:  # launched: follow its runs
        # Once the samples are saved, a later step's failure is the catch-up's business.
        if saved or launch_with_retries(
            instance, outcome, stage_partition, launch, attempts[stage_partition], now
        ):
            handled[stage_partition] = batch["_storage_id"]
        return
    if saved:
        handled[stage_partition] = batch["_storage_id"]  # ingested already (e.g. by hand)
        return
    try:
        jobs = [
            gemini.get_batch(name, timeout_seconds=POLL_TIMEOUT_SECONDS, max_attempts=2)
            for name in batch["batch_names"]
        ]
    except Exception as error:  # any failure: say so, try again next tick
        outcome.messages.append(
            f"{stage_partition}: could not reach the Gemini API ({error}); will try again next tick"
        )
        return
    state = overall_state([job.state for job in jobs])
    started = min((job.create_time for job in jobs if job.create_time), default=now)
    age = (now - started).total_seconds()
    report_progress(outcome, cursor, stage, partition, batch, jobs, age)
    if all(job.done for job in jobs):
        launch.tags["cotgen/job_state"] = state
        attempts[stage_partition] = {"key": launch.key, "requested": 0}
        launch_with_retries(instance, outcome, stage_partition, launch, attempts[stage_partition], now)
        outcome.messages.append(
            f"{stage_partition}: submission {batch['submission_id']} ended {state}; "
            f"launching {stage.results_job}"
        )
        return
    outcome.messages.append(f"{stage_partition}: {state} for {age / 60:.0f} min")
    if age > stale_after_seconds():
        report_stale_once(outcome, cursor, stage, partition, batch, state, age)


def report_progress(
    outcome: TickOutcome, cursor: dict, stage: Stage, partition: str, batch: dict, jobs: list, age: float
) -> None:
    """An observation on the batch asset whenever a tick sees its jobs' state or counts change, so
    the asset's plots show the batch moving (requests done of total, age, round)."""
    state = overall_state([job.state for job in jobs])
    done = sum((job.succeeded_count or 0) + (job.failed_count or 0) for job in jobs)
    total = sum(job.request_count or 0 for job in jobs) or batch.get("num_requests", 0)
    seen = [batch["_storage_id"], state, done]
    progress = cursor.setdefault("progress", {})
    if progress.get(f"{stage.name}|{partition}") == seen:
        return
    progress[f"{stage.name}|{partition}"] = seen
    outcome.observations.append(
        dg.AssetObservation(
            asset_key=dg.AssetKey(stage.batch_asset),
            partition=partition,
            metadata={
                "job_state": state,
                "requests_done": done,
                "requests_total": total,
                "share_done": done / total if total else 0.0,
                "age_minutes": age / 60,
                "round": batch.get("round") or 0,
                "submission_id": batch["submission_id"],
            },
        )
    )


def report_stale_once(
    outcome: TickOutcome, cursor: dict, stage: Stage, partition: str, batch: dict, state: str, age: float
) -> None:
    """A job pending far longer than usual: said once per submission, with what to do."""
    stage_partition = f"{stage.name}|{partition}"
    stale_reported = cursor.setdefault("stale_reported", {})
    if stale_reported.get(stage_partition) == batch["_storage_id"]:
        return
    stale_reported[stage_partition] = batch["_storage_id"]
    advice = (
        f"batch {batch['batch_names']} has been pending for {age / 3600:.1f} h, far longer "
        f"than usual; to give up on it run `cotgen cancel {partition} {stage.name}`, then "
        f"materialize {stage.batch_asset} again (nothing is lost or paid twice)"
    )
    outcome.messages.append(f"{stage_partition}: STALE: {advice}")
    outcome.observations.append(
        dg.AssetObservation(
            asset_key=dg.AssetKey(stage.batch_asset),
            partition=partition,
            metadata={
                "stale": True,
                "pending_hours": age / 3600,
                "job_state": state,
                "advice": advice,
            },
        )
    )


def launch_summarization_catch_up(
    instance: dg.DagsterInstance, outcome: TickOutcome, partition: str, cursor: dict, now: datetime
) -> None:
    """Submit the summarization of CoT samples saved while an earlier one was in flight."""
    catch_up = summarization_catch_up(instance, partition)
    if not catch_up:
        return
    attempts = cursor.setdefault("attempts", {})
    stage_partition = f"summarization-catch-up|{partition}"
    launch = Launch(
        job_name=catch_up.job_name,
        partition=partition,
        key=catch_up.run_key,
        tags=dict(catch_up.tags),
        asset=SUMMARIZATION.batch_asset,
        subject=f"the summarization of scenario {partition!r}'s newest CoT samples",
        advice=(
            f"fix the cause, then materialize {SUMMARIZATION.batch_asset} for partition {partition!r}: "
            "it submits the CoT samples that lack a CoD"
        ),
    )
    if attempts.get(stage_partition, {}).get("key") != launch.key:
        attempts[stage_partition] = {"key": launch.key, "requested": 0}
        outcome.messages.append(
            f"summarization|{partition}: CoT samples newer than the last "
            f"summarization; launching {summarization_batch_job.name}"
        )
    elif attempts[stage_partition].get("done"):
        return  # given up, and said so once
    if launch_with_retries(instance, outcome, stage_partition, launch, attempts[stage_partition], now):
        attempts[stage_partition]["done"] = True


def launch_with_retries(
    instance: dg.DagsterInstance,
    outcome: TickOutcome,
    stage_partition: str,
    launch: Launch,
    progress: dict,
    now: datetime,
) -> bool:
    """Launch `launch`; after a failed run, launch it again after a growing delay, up to max_attempts().

    `progress` (in the cursor) counts the runs requested, so that none is asked for twice before
    the daemon creates it. Returns True when nothing more will happen: a run succeeded or was
    cancelled, a step refused, or the attempts ran out (the last two reported here, once).
    """
    requested = progress["requested"]
    records = instance.get_run_records(dg.RunsFilter(tags={RETRY_KEY_TAG: launch.key})) if requested else []
    if len(records) < requested:
        outcome.messages.append(
            f"{stage_partition}: waiting for the daemon to start run {requested} of {launch.key}"
        )
        return False
    tags = launch.tags
    if records:
        newest, tried = records[0], len(records)
        run = newest.dagster_run
        if not run.is_finished:
            outcome.messages.append(
                f"{stage_partition}: run {run.run_id} (attempt {tried}) is {run.status.value}"
            )
            return False
        if run.status == dg.DagsterRunStatus.SUCCESS:
            return True
        if run.status == dg.DagsterRunStatus.CANCELED:
            outcome.messages.append(
                f"{stage_partition}: run {run.run_id} was cancelled; not retried: {launch.advice}"
            )
            return True
        refused, reason = why_failed(instance, run.run_id)
        if refused or tried >= max_attempts():
            report_end(outcome, stage_partition, launch, run.run_id, tried, refused, reason)
            return True
        wait = retry_delay_seconds(tried) - (now.timestamp() - (newest.end_time or now.timestamp()))
        then = f"attempt {tried + 1} of {max_attempts()}"
        if wait > 0:
            outcome.messages.append(
                f"{stage_partition}: run {run.run_id} failed ({reason}); {then} in {wait:.0f} s"
            )
            return False
        outcome.messages.append(f"{stage_partition}: run {run.run_id} failed ({reason}); launching {then}")
        tags = {**{k: v for k, v in run.tags.items() if k.startswith("cotgen/")}, **tags}
    attempt = len(records) + 1
    progress["requested"] = attempt
    outcome.run_requests.append(
        dg.RunRequest(
            job_name=launch.job_name,
            partition_key=launch.partition,
            run_key=launch.key if attempt == 1 else f"{launch.key}|attempt-{attempt}",
            run_config=launch.run_config,
            tags={**tags, **NO_RUN_RETRIES, RETRY_KEY_TAG: launch.key, ATTEMPT_TAG: str(attempt)},
        )
    )
    return False


def report_end(
    outcome: TickOutcome,
    stage_partition: str,
    launch: Launch,
    run_id: str,
    tried: int,
    refused: bool,
    reason: str,
) -> None:
    """Say loudly, once, that the sensor stops: an error in the tick log and an observation."""
    headline = "NOT RETRIED (a refusal no retry can fix)" if refused else f"GAVE UP after {tried} runs"
    outcome.alerts.append(
        f"{stage_partition}: {launch.headline}{headline}: {launch.job_name} for {launch.subject} failed in "
        f"run {run_id}: {reason}. To go on: {launch.advice}"
    )
    outcome.observations.append(
        dg.AssetObservation(
            asset_key=dg.AssetKey(launch.asset),
            partition=launch.partition,
            metadata={
                "run_failed": True,
                "retried": not refused,
                "attempts": tried,
                "last_run": dg.MetadataValue.dagster_run(run_id),
                "job": launch.job_name,
                "about": launch.subject,
                "reason": reason,
                "advice": launch.advice,
            },
        )
    )


def launch_next_round(
    instance: dg.DagsterInstance, outcome: TickOutcome, partition: str, cursor: dict, now: datetime
) -> None:
    """For a scenario with `auto_fill`: once a fill round's CoT samples are saved, launch the next
    round while it is short of `limit`, inside `max_rounds`; else say once why the rounds end."""
    newest = newest_metadata_where(
        instance, GENERATION.batch_asset, partition, lambda m: not m.get("dry_run")
    )
    if not newest or not newest.get("auto_fill"):
        return
    rounds_id, number = newest["rounds_id"], newest["round"]
    ended = cursor.setdefault("rounds_ended", {})
    if ended.get(partition) == rounds_id:
        return  # said once
    attempts = cursor.setdefault("attempts", {})
    stage_partition = f"{GENERATION.name}|{partition}"
    launch = next_round_launch(partition, newest)
    if attempts.get(f"round|{partition}", {}).get("key") == launch.key:  # launched, not materialized yet
        if launch_with_retries(
            instance, outcome, stage_partition, launch, attempts[f"round|{partition}"], now
        ):
            ended[partition] = rounds_id  # it refused or failed for good: reported as such
        return
    if newest.get("batch_names") and not is_ingested(
        newest, latest_metadata(instance, "cot_samples", partition)
    ):
        return  # its results come first
    num_good = num_good_samples(get_scenario(partition))
    limit, max_rounds = newest["rounds_config"]["limit"], newest["rounds_config"]["max_rounds"]
    why = after_round(num_good, limit, number, max_rounds) if newest.get("batch_names") else NOTHING_LEFT
    if why is None:
        attempts[f"round|{partition}"] = {"key": launch.key, "requested": 0}
        outcome.messages.append(
            f"{stage_partition}: AUTO-FILL: {num_good} good samples of limit {limit} after round {number}; "
            f"launching round {number + 1} of at most {max_rounds} ({generation_batch_job.name})"
        )
        launch_with_retries(instance, outcome, stage_partition, launch, attempts[f"round|{partition}"], now)
        return
    ended[partition] = rounds_id
    report_rounds_end(instance, outcome, partition, newest, why, num_good)


def next_round_launch(partition: str, newest: dict) -> Launch:
    """The run of the next fill round: the click's config again, tagged with its round."""
    number = newest["round"] + 1
    return Launch(
        job_name=generation_batch_job.name,
        partition=partition,
        key=f"auto-fill|{partition}|{newest['rounds_id']}|round-{number}",
        tags={ROUND_TAG: str(number), ROUNDS_TAG: newest["rounds_id"]},
        asset=GENERATION.batch_asset,
        subject=f"fill round {number} of scenario {partition!r} (auto_fill)",
        advice=(
            f"do what the reason says, then materialize {GENERATION.batch_asset} for partition "
            f"{partition!r} (a click begins a new run of rounds)"
        ),
        run_config={"ops": {GENERATION.batch_asset: {"config": newest["rounds_config"]}}},
        headline=f"AUTO-FILL STOPPED at round {number}: ",
    )


def report_rounds_end(
    instance: dg.DagsterInstance, outcome: TickOutcome, partition: str, newest: dict, why: str, num_good: int
) -> None:
    """Say once how a run of rounds ended: in the tick log and as an observation on the batch asset."""
    limit, number = newest["rounds_config"]["limit"], newest["round"]
    spent = sum(
        submission_cost_usd(partition, GENERATION, submission_id)
        for submission_id in rounds_submissions(instance, partition, newest["rounds_id"])
    )
    text = f"{why}: {num_good} good samples of limit {limit} after {number} round(s), ${spent:.4f} spent"
    if why == NOTHING_LEFT:
        text += f"; round {number} found nothing to ask ({newest.get('num_given_up', 0)} problems given up)"
    advice = {
        LIMIT_REACHED: "nothing",
        ROUNDS_USED_UP: f"raise max_rounds, or materialize {GENERATION.batch_asset} (a new run of rounds)",
        NOTHING_LEFT: "raise max_tries, add problems to the scenario, or accept",
    }[why]
    if why == LIMIT_REACHED:
        outcome.messages.append(f"{GENERATION.name}|{partition}: AUTO-FILL DONE: {text}")
    else:
        outcome.alerts.append(
            f"{GENERATION.name}|{partition}: AUTO-FILL ENDED SHORT: {text}. To go on: {advice}"
        )
    outcome.observations.append(
        dg.AssetObservation(
            asset_key=dg.AssetKey(GENERATION.batch_asset),
            partition=partition,
            metadata={
                "auto_fill_ended": why,
                "rounds_used": number,
                "num_good": num_good,
                "limit": limit,
                "spent_usd": float(spent),
                "reason": text,
                "advice": advice,
            },
        )
    )


def why_failed(instance: dg.DagsterInstance, run_id: str) -> tuple[bool, str]:
    """(refused, reason) of a failed run.

    A step that raised `dg.Failure` refused on purpose and says why (over budget, bad config,
    nothing submitted): the same run would refuse again. Any other error (the API down for
    longer than the client retries, a killed process) may pass on a later attempt.
    """
    reasons = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        data = entry.dagster_event.step_failure_data
        if data.user_failure_data is not None:
            return True, f"{entry.step_key}: {data.user_failure_data.description}"[:600]
        error = data.error.cause or data.error if data.error else None
        reasons.append(f"{entry.step_key}: {error.message.strip() if error else 'failed'}")
    if reasons:
        return False, reasons[0][:600]
    return False, "the run failed outside its steps (its process died or could not start)"


def summarization_catch_up(instance: dg.DagsterInstance, partition: str) -> dg.RunRequest | None:
    """Submit summarization for CoT samples saved while an earlier summarization was in flight.

    Normally the run that saves CoT also submits their summarization; when that had to wait,
    this launches it once the earlier summarization has been ingested (once per cot_samples
    materialization, thanks to the run key).
    """
    cot = latest_metadata(instance, "cot_samples", partition)
    if not cot:
        return None
    # the newest summarization plan that was not a dry run (a dry run saw nothing for the pipeline)
    batch = newest_metadata_where(
        instance, SUMMARIZATION.batch_asset, partition, lambda metadata: not metadata.get("dry_run")
    )
    if batch and batch.get("cot_samples_storage_id", 0) >= cot["_storage_id"]:
        return None
    if pending_submission(instance, partition, SUMMARIZATION) is not None:
        return None  # still in flight: its ingestion comes first
    if run_in_progress(instance, generation_results_job.name, partition):
        return None  # between its cot_samples and summarization_batch steps: that step submits
    return dg.RunRequest(
        job_name=summarization_batch_job.name,
        partition_key=partition,
        run_key=f"summarization-catch-up|{partition}|{cot['_storage_id']}",
    )


UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def run_in_progress(instance: dg.DagsterInstance, job_name: str, partition: str) -> bool:
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=job_name, statuses=UNFINISHED, tags={"dagster/partition": partition}),
        limit=1,
    )
    return bool(runs)


@dg.sensor(
    jobs=[generation_results_job, summarization_results_job, summarization_batch_job, generation_batch_job],
    minimum_interval_seconds=sensor_interval_seconds(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches submitted Gemini batches; when one ends, saves its samples, starts the next stage.",
)
def batch_completion_sensor(
    context: dg.SensorEvaluationContext, gemini: GeminiBatchResource
) -> dg.SensorResult:
    cursor = json.loads(context.cursor) if context.cursor else {}
    outcome = decide_launches(context.instance, gemini, scenario_partitions.get_partition_keys(), cursor)
    for message in outcome.messages:
        context.log.info(message)
    for alert in outcome.alerts:
        context.log.error(alert)
    return dg.SensorResult(
        run_requests=outcome.run_requests,
        cursor=json.dumps(cursor),
        asset_events=outcome.observations,
        skip_reason=None
        if outcome.run_requests
        else dg.SkipReason("; ".join(outcome.alerts + outcome.messages) or "no batch in flight"),
    )
