"""batch_completion_sensor: when a submitted batch ends, launch the next stage for its scenario.

One API call per pending job per tick, with a short timeout; no downloads here (the results
assets do that). The cursor maps "<stage>|<scenario>" to the storage id of the batch
materialization already handled, so a finished submission is never polled again.
"""

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg

from cotgen_assets.gemini import OFFLINE_TAG, GeminiBatchResource
from cotgen_assets.jobs import generation_results_job, summarization_batch_job, summarization_results_job
from cotgen_assets.partitions import scenario_partitions
from cotgen_assets.records import STAGES, SUMMARIZATION
from cotgen_assets.results import overall_state
from cotgen_assets.state import (
    BATCH_ASSET,
    RESULTS_ASSET,
    RESULTS_JOB,
    is_ingested,
    latest_metadata,
    newest_metadata_where,
    pending_submission,
    submitted_metadata,
)

POLL_TIMEOUT_SECONDS = 10


def sensor_interval_seconds() -> int:
    return int(os.environ.get("COTGEN_SENSOR_INTERVAL_SECONDS", "30"))


def stale_after_seconds() -> float:
    """How long a job may stay pending before the sensor reports it (Gemini's target is 24 h)."""
    return float(os.environ.get("COTGEN_STALE_AFTER_SECONDS", str(24 * 3600)))


@dataclass
class TickOutcome:
    run_requests: list = field(default_factory=list)
    messages: list = field(default_factory=list)
    observations: list = field(default_factory=list)


def check_submissions(
    instance: dg.DagsterInstance,
    gemini: GeminiBatchResource,
    partitions: list[str],
    cursor: dict,
    now: datetime | None = None,
) -> TickOutcome:
    """Decide, for every stage and scenario, whether its newest submission has ended.

    Updates `cursor` in place: handled submissions by storage id, and stale ones reported once.
    """
    now = now or datetime.now(UTC)
    outcome = TickOutcome()
    handled, stale_reported = cursor.setdefault("handled", {}), cursor.setdefault("stale_reported", {})
    for stage in STAGES:
        for partition in partitions:
            slot = f"{stage}|{partition}"
            batch = submitted_metadata(instance, partition, stage)
            if not batch or handled.get(slot) == batch["_storage_id"]:
                continue
            if is_ingested(batch, latest_metadata(instance, RESULTS_ASSET[stage], partition)):
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
                outcome.run_requests.append(
                    dg.RunRequest(
                        job_name=RESULTS_JOB[stage],
                        partition_key=partition,
                        run_key=f"{slot}|{batch['submission_id']}|{batch['_storage_id']}",
                        tags={
                            "cotgen/submission_id": batch["submission_id"],
                            "cotgen/job_state": state,
                            **(OFFLINE_TAG if gemini.offline else {}),
                        },
                    )
                )
                handled[slot] = batch["_storage_id"]
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
        if catch_up:
            outcome.run_requests.append(catch_up)
            outcome.messages.append(
                f"summarization|{partition}: CoT samples newer than the last "
                f"summarization; launching {summarization_batch_job.name}"
            )
    return outcome


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
    return dg.SensorResult(
        run_requests=outcome.run_requests,
        cursor=json.dumps(cursor),
        asset_events=outcome.observations,
        skip_reason=None
        if outcome.run_requests
        else dg.SkipReason("; ".join(outcome.messages) or "no batch in flight"),
    )
