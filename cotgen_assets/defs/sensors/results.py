"""Polling and launching results: one API call per pending job per tick, with a short timeout (no
downloads here: the results assets do that). Once all of a submission's jobs have ended, its
results run is launched (and again if it fails); a submission whose samples are saved is never
polled again. On the way, the batch asset gets an observation whenever its jobs move, and a job
pending far longer than usual is reported once.
"""

from datetime import datetime

import dagster as dg

from cotgen_assets.backends.resource import OFFLINE_TAG, GeminiBatchResource
from cotgen_assets.core.batch_output import overall_state
from cotgen_assets.core.settings import number
from cotgen_assets.core.stages import Stage
from cotgen_assets.defs.history import is_ingested, latest_metadata, submitted_metadata
from cotgen_assets.defs.sensors.cursor import Runs, SensorCursor
from cotgen_assets.defs.sensors.run_retries import Launch, TickOutcome, launch_with_retries

POLL_TIMEOUT_SECONDS = 10


def stale_after_seconds() -> float:
    """How long a job may stay pending before the sensor reports it (Gemini's target is 24 h)."""
    return number("COTGEN_STALE_AFTER_SECONDS")


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
    cursor: SensorCursor,
    now: datetime,
) -> None:
    """Poll the stage's newest submission; once all its jobs have ended, launch its results run
    (and again if it fails). A submission whose samples are saved is never polled again."""
    stage_partition = f"{stage.name}|{partition}"
    batch = submitted_metadata(instance, partition, stage)
    if not batch or cursor.handled.get(stage_partition) == batch["_storage_id"]:
        return
    launch = results_launch(stage, partition, batch)
    saved = is_ingested(batch, latest_metadata(instance, stage.samples_asset, partition))
    runs = cursor.results_runs.get(stage_partition)
    if runs and runs.key == launch.key:  # launched: follow its runs
        # Once the samples are saved, a later step's failure is the catch-up's business.
        if saved or launch_with_retries(instance, outcome, stage_partition, launch, runs, now):
            cursor.handled[stage_partition] = batch["_storage_id"]
        return
    if saved:
        cursor.handled[stage_partition] = batch["_storage_id"]  # ingested already (e.g. by hand)
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
    report_progress(outcome, cursor, stage, partition, batch, jobs, state, age)
    if all(job.done for job in jobs):
        launch.tags["cotgen/job_state"] = state
        cursor.results_runs[stage_partition] = runs = Runs(key=launch.key)
        launch_with_retries(instance, outcome, stage_partition, launch, runs, now)
        outcome.messages.append(
            f"{stage_partition}: submission {batch['submission_id']} ended {state}; "
            f"launching {stage.results_job}"
        )
        return
    outcome.messages.append(f"{stage_partition}: {state} for {age / 60:.0f} min")
    if age > stale_after_seconds():
        report_stale_once(outcome, cursor, stage, partition, batch, state, age)


def report_progress(
    outcome: TickOutcome,
    cursor: SensorCursor,
    stage: Stage,
    partition: str,
    batch: dict,
    jobs: list,
    state: str,
    age: float,
) -> None:
    """An observation on the batch asset whenever a tick sees its jobs' state or counts change, so
    the asset's plots show the batch moving (requests done of total, age, round)."""
    done = sum((job.succeeded_count or 0) + (job.failed_count or 0) for job in jobs)
    total = sum(job.request_count or 0 for job in jobs) or batch.get("num_requests", 0)
    seen = (batch["_storage_id"], state, done)
    if cursor.progress.get(f"{stage.name}|{partition}") == seen:
        return
    cursor.progress[f"{stage.name}|{partition}"] = seen
    outcome.observe(
        stage.batch_asset,
        partition,
        {
            "job_state": state,
            "requests_done": done,
            "requests_total": total,
            "share_done": done / total if total else 0.0,
            "age_minutes": age / 60,
            "round": batch.get("round") or 0,
            "submission_id": batch["submission_id"],
        },
    )


def report_stale_once(
    outcome: TickOutcome,
    cursor: SensorCursor,
    stage: Stage,
    partition: str,
    batch: dict,
    state: str,
    age: float,
) -> None:
    """A job pending far longer than usual: said once per submission, with what to do."""
    stage_partition = f"{stage.name}|{partition}"
    if cursor.stale_reported.get(stage_partition) == batch["_storage_id"]:
        return
    cursor.stale_reported[stage_partition] = batch["_storage_id"]
    advice = (
        f"batch {batch['batch_names']} has been pending for {age / 3600:.1f} h, far longer "
        f"than usual; to give up on it run `cotgen cancel {partition} {stage.name}`, then "
        f"materialize {stage.batch_asset} again (nothing is lost or paid twice)"
    )
    outcome.messages.append(f"{stage_partition}: STALE: {advice}")
    outcome.observe(
        stage.batch_asset,
        partition,
        {"stale": True, "pending_hours": age / 3600, "job_state": state, "advice": advice},
    )
