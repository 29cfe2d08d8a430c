"""Polling and launching results: the jobs' states read through the tick's `Poller` (a get per job
for a few, list pages for many; short timeouts; no downloads here: the results assets do that).
Once all of a submission's jobs have ended and none is queued, its results run is launched (and
again if it fails); a submission whose samples are saved is never polled again. On the way, each
job's state is saved in its submission (what the queue counts as in flight), the batch asset gets
an observation whenever its jobs move, and a job pending far longer than usual is reported once.
"""

from datetime import datetime

import dagster as dg

from cotgen_assets.backends.polling import Poller
from cotgen_assets.backends.resource import OFFLINE_TAG
from cotgen_assets.core.batch_output import overall_state
from cotgen_assets.core.queue import QUEUED, job_counts, queued_shards, save_live_states
from cotgen_assets.core.settings import number
from cotgen_assets.core.stages import GENERATION, Stage
from cotgen_assets.core.submissions import Submission, load_submission, submission_folder
from cotgen_assets.defs.history import is_ingested, latest_metadata, submitted_metadata
from cotgen_assets.defs.jobs import drafts_run_config
from cotgen_assets.defs.sensors.cursor import Runs, SensorCursor
from cotgen_assets.defs.sensors.run_retries import Launch, TickOutcome, launch_with_retries


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
        run_config=drafts_run_config(batch) if stage == GENERATION else {},
    )


def launch_results_when_ended(
    instance: dg.DagsterInstance,
    poller: Poller,
    outcome: TickOutcome,
    stage: Stage,
    partition: str,
    cursor: SensorCursor,
    now: datetime,
) -> None:
    """Poll the stage's newest submission; once all its jobs have ended and none is queued, launch
    its results run (and again if it fails). A submission whose samples are saved is never polled
    again."""
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
        submission = load_submission(partition, stage, batch["submission_id"])
    except (OSError, ValueError, KeyError, TypeError) as error:  # hand-damaged: this scenario waits
        folder = submission_folder(partition, stage, batch["submission_id"])
        outcome.messages.append(
            f"{stage_partition}: {folder / 'submission.json'} is missing or damaged ({error!r}); "
            "its results wait until it is put back, other scenarios go on"
        )
        return
    try:
        jobs = poller.jobs([name for name in submission.batch_names if name != QUEUED])
    except ValueError as error:  # a name this backend cannot have given
        outcome.say(rejected_batch_message(submission, str(error)))
        return
    except Exception as error:  # any failure: say so, try again next tick
        outcome.messages.append(
            f"{stage_partition}: could not reach the Gemini API ({error}); will try again next tick"
        )
        return
    states = record_live_states(submission, jobs)
    queued = queued_shards(submission)
    state = overall_state([job.state for job in jobs]) if jobs else "QUEUED"
    started = min((job.create_time for job in jobs if job.create_time), default=now)
    age = (now - started).total_seconds()
    report_progress(outcome, cursor, stage, partition, batch, submission, jobs, states, state, age)
    if all(job.done for job in jobs) and not queued:
        launch.tags["cotgen/job_state"] = state
        cursor.results_runs[stage_partition] = runs = Runs(key=launch.key)
        launch_with_retries(instance, outcome, stage_partition, launch, runs, now)
        outcome.messages.append(
            f"{stage_partition}: submission {batch['submission_id']} ended {state}; "
            f"launching {stage.results_job}"
        )
        return
    waiting = f", {len(queued)} shard(s) queued on the batch quota" if queued else ""
    outcome.messages.append(f"{stage_partition}: {state} for {age / 60:.0f} min{waiting}")
    if age > stale_after_seconds():
        report_stale_once(outcome, cursor, stage, partition, batch, state, age)


def record_live_states(submission: Submission, jobs: list) -> dict[str, str]:
    """Each created shard's job's neutral end as seen now ("" while it runs), saved in the
    submission: what the queue counts as in flight (core/queue.py). Returns the ends by shard."""
    by_name = {job.name: job.end for job in jobs}
    ends = {shard: by_name[name] for shard, name in zip(submission.shards, submission.batch_names) if name}
    save_live_states(submission, ends)
    return ends


def rejected_batch_message(submission: Submission, why: str) -> str:
    """A submission naming a batch this backend rejects: said once a tick, by whichever step meets it."""
    return (
        f"{submission.stage.name}|{submission.scenario}: submission {submission.submission_id} names a "
        f"batch this backend cannot reach ({why}); it waits until the backend setting or batch_names "
        f"in {submission.folder / 'submission.json'} is put right, other scenarios go on"
    )


def report_progress(
    outcome: TickOutcome,
    cursor: SensorCursor,
    stage: Stage,
    partition: str,
    batch: dict,
    submission: Submission,
    jobs: list,
    states: dict[str, str],
    state: str,
    age: float,
) -> None:
    """An observation on the batch asset whenever a tick sees its jobs' state or counts change, so
    the asset's plots show the batch moving: jobs created / queued / running / done, requests done
    of total, age, round."""
    done = sum((job.succeeded_count or 0) + (job.failed_count or 0) for job in jobs)
    total = submission.num_requests or sum(job.request_count or 0 for job in jobs)
    counts = job_counts(submission, states)
    seen = (batch["_storage_id"], state, done, counts["jobs_created"], counts["jobs_done"])
    if cursor.progress.get(f"{stage.name}|{partition}") == list(seen):
        return
    cursor.progress[f"{stage.name}|{partition}"] = list(seen)
    outcome.observe(
        stage.batch_asset,
        partition,
        {
            "job_state": state,
            **counts,
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
