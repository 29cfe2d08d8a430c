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
from cotgen_assets.core.records import STAGES, SUMMARIZATION
from cotgen_assets.core.settings import number
from cotgen_assets.defs.instance import (
    BATCH_ASSET,
    RESULTS_ASSET,
    RESULTS_JOB,
    SAMPLES_ASSET,
    is_ingested,
    latest_metadata,
    newest_metadata_where,
    pending_submission,
    submitted_metadata,
)
from cotgen_assets.defs.jobs import generation_results_job, summarization_batch_job, summarization_results_job
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


def check_submissions(
    instance: dg.DagsterInstance,
    gemini: GeminiBatchResource,
    partitions: list[str],
    cursor: dict,
    now: datetime | None = None,
) -> TickOutcome:
    """Decide, for every stage and scenario, whether its newest submission has ended.

    Updates `cursor` in place: handled submissions by storage id, stale ones reported once, and
    under "attempts" the runs requested per launch (results per stage and scenario, catch-ups).
    """
    now = now or datetime.now(UTC)
    outcome = TickOutcome()
    handled, stale_reported = cursor.setdefault("handled", {}), cursor.setdefault("stale_reported", {})
    attempts = cursor.setdefault("attempts", {})
    for stage in STAGES:
        for partition in partitions:
            slot = f"{stage}|{partition}"
            batch = submitted_metadata(instance, partition, stage)
            if not batch or handled.get(slot) == batch["_storage_id"]:
                continue
            launch = Launch(
                job_name=RESULTS_JOB[stage],
                partition=partition,
                key=f"{slot}|{batch['submission_id']}|{batch['_storage_id']}",
                tags={
                    "cotgen/submission_id": batch["submission_id"],
                    **(OFFLINE_TAG if batch.get("offline") else {}),  # as the submission recorded it
                },
                asset=RESULTS_ASSET[stage],
                subject=f"submission {batch['submission_id']}",
                advice=(
                    f"fix the cause, then re-execute the last run (Dagster UI: Runs), or materialize "
                    f"{RESULTS_ASSET[stage]} and {SAMPLES_ASSET[stage]} for partition {partition!r}; "
                    "nothing is paid twice"
                ),
            )
            saved = is_ingested(batch, latest_metadata(instance, SAMPLES_ASSET[stage], partition))
            if attempts.get(slot, {}).get("key") == launch.key:  # launched: follow its runs
                # Once the samples are saved, a later step's failure is the catch-up's business.
                if saved or carry(instance, outcome, slot, launch, attempts[slot], now):
                    handled[slot] = batch["_storage_id"]
                continue
            if saved:
                handled[slot] = batch["_storage_id"]  # ingested already (e.g. by hand)
                continue
            try:
                jobs = [
                    gemini.get_batch(name, timeout_seconds=POLL_TIMEOUT_SECONDS, max_attempts=2)
                    for name in batch["batch_names"]
                ]
            except Exception as error:  # noqa: BLE001 - any failure: say so, try again next tick
                outcome.messages.append(
                    f"{slot}: could not reach the Gemini API ({error}); will try again next tick"
                )
                continue
            state = overall_state([job.state for job in jobs])
            if all(job.done for job in jobs):
                launch.tags["cotgen/job_state"] = state
                attempts[slot] = {"key": launch.key, "requested": 0}
                carry(instance, outcome, slot, launch, attempts[slot], now)
                outcome.messages.append(
                    f"{slot}: submission {batch['submission_id']} ended {state}; "
                    f"launching {RESULTS_JOB[stage]}"
                )
                continue
            started = min((job.create_time for job in jobs if job.create_time), default=now)
            age = (now - started).total_seconds()
            outcome.messages.append(f"{slot}: {state} for {age / 60:.0f} min")
            if age > stale_after_seconds() and stale_reported.get(slot) != batch["_storage_id"]:
                stale_reported[slot] = batch["_storage_id"]
                advice = (
                    f"batch {batch['batch_names']} has been pending for {age / 3600:.1f} h, far longer "
                    f"than usual; to give up on it run `cotgen cancel {partition} {stage}`, then "
                    f"materialize {BATCH_ASSET[stage]} again (nothing is lost or paid twice)"
                )
                outcome.messages.append(f"{slot}: STALE: {advice}")
                outcome.observations.append(
                    dg.AssetObservation(
                        asset_key=dg.AssetKey(BATCH_ASSET[stage]),
                        partition=partition,
                        metadata={
                            "stale": True,
                            "pending_hours": dg.MetadataValue.float(age / 3600),
                            "job_state": state,
                            "advice": advice,
                        },
                    )
                )
    for partition in partitions:
        catch_up = summarization_catch_up(instance, partition)
        if not catch_up:
            continue
        slot = f"summarization-catch-up|{partition}"
        launch = Launch(
            job_name=catch_up.job_name,
            partition=partition,
            key=catch_up.run_key,
            tags=dict(catch_up.tags),
            asset=BATCH_ASSET[SUMMARIZATION],
            subject=f"the summarization of scenario {partition!r}'s newest CoT samples",
            advice=(
                f"fix the cause, then materialize {BATCH_ASSET[SUMMARIZATION]} for partition {partition!r}: "
                "it submits the CoT samples that lack a CoD"
            ),
        )
        if attempts.get(slot, {}).get("key") != launch.key:
            attempts[slot] = {"key": launch.key, "requested": 0}
            outcome.messages.append(
                f"summarization|{partition}: CoT samples newer than the last "
                f"summarization; launching {summarization_batch_job.name}"
            )
        elif attempts[slot].get("done"):
            continue  # given up, and said so once
        if carry(instance, outcome, slot, launch, attempts[slot], now):
            attempts[slot]["done"] = True
    return outcome


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


def carry(
    instance: dg.DagsterInstance,
    outcome: TickOutcome,
    slot: str,
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
        outcome.messages.append(f"{slot}: waiting for the daemon to start run {requested} of {launch.key}")
        return False
    tags = launch.tags
    if records:
        newest, tried = records[0], len(records)
        run = newest.dagster_run
        if not run.is_finished:
            outcome.messages.append(f"{slot}: run {run.run_id} (attempt {tried}) is {run.status.value}")
            return False
        if run.status == dg.DagsterRunStatus.SUCCESS:
            return True
        if run.status == dg.DagsterRunStatus.CANCELED:
            outcome.messages.append(f"{slot}: run {run.run_id} was cancelled; not retried: {launch.advice}")
            return True
        refused, reason = why_failed(instance, run.run_id)
        if refused or tried >= max_attempts():
            report_end(outcome, slot, launch, run.run_id, tried, refused, reason)
            return True
        wait = retry_delay_seconds(tried) - (now.timestamp() - (newest.end_time or now.timestamp()))
        then = f"attempt {tried + 1} of {max_attempts()}"
        if wait > 0:
            outcome.messages.append(f"{slot}: run {run.run_id} failed ({reason}); {then} in {wait:.0f} s")
            return False
        outcome.messages.append(f"{slot}: run {run.run_id} failed ({reason}); launching {then}")
        tags = {**{k: v for k, v in run.tags.items() if k.startswith("cotgen/")}, **tags}
    attempt = len(records) + 1
    progress["requested"] = attempt
    outcome.run_requests.append(
        dg.RunRequest(
            job_name=launch.job_name,
            partition_key=launch.partition,
            run_key=launch.key if attempt == 1 else f"{launch.key}|attempt-{attempt}",
            tags={**tags, **NO_RUN_RETRIES, RETRY_KEY_TAG: launch.key, ATTEMPT_TAG: str(attempt)},
        )
    )
    return False


def report_end(
    outcome: TickOutcome, slot: str, launch: Launch, run_id: str, tried: int, refused: bool, reason: str
) -> None:
    """Say loudly, once, that the sensor stops: an error in the tick log and an observation."""
    headline = "NOT RETRIED (a refusal no retry can fix)" if refused else f"GAVE UP after {tried} runs"
    outcome.alerts.append(
        f"{slot}: {headline}: {launch.job_name} for {launch.subject} failed in run {run_id}: "
        f"{reason}. To go on: {launch.advice}"
    )
    outcome.observations.append(
        dg.AssetObservation(
            asset_key=dg.AssetKey(launch.asset),
            partition=launch.partition,
            metadata={
                "run_failed": True,
                "retried": dg.MetadataValue.bool(not refused),
                "attempts": dg.MetadataValue.int(tried),
                "last_run": dg.MetadataValue.dagster_run(run_id),
                "job": launch.job_name,
                "about": launch.subject,
                "reason": reason,
                "advice": launch.advice,
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
        instance, BATCH_ASSET[SUMMARIZATION], partition, lambda metadata: not metadata.get("dry_run")
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
    jobs=[generation_results_job, summarization_results_job, summarization_batch_job],
    minimum_interval_seconds=sensor_interval_seconds(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches submitted Gemini batches; when one ends, saves its samples, starts the next stage.",
)
def batch_completion_sensor(
    context: dg.SensorEvaluationContext, gemini: GeminiBatchResource
) -> dg.SensorResult:
    cursor = json.loads(context.cursor) if context.cursor else {}
    outcome = check_submissions(context.instance, gemini, scenario_partitions.get_partition_keys(), cursor)
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
