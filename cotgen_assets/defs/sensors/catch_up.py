"""The summarization catch-up: normally the run that saves CoT samples also submits their
summarization; when that had to wait (an earlier summarization was in flight), the sensor submits
it once the earlier one has been ingested, once per cot_samples materialization (its run key).
"""

from datetime import datetime

import dagster as dg

from cotgen_assets.core.stages import GENERATION, SUMMARIZATION
from cotgen_assets.defs.history import (
    latest_metadata,
    newest_metadata_where,
    pending_submission,
    submitted_metadata,
)
from cotgen_assets.defs.jobs import drafts_run_config
from cotgen_assets.defs.sensors.cursor import Runs, SensorCursor
from cotgen_assets.defs.sensors.run_retries import Launch, TickOutcome, launch_with_retries

UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def launch_summarization_catch_up(
    instance: dg.DagsterInstance, outcome: TickOutcome, partition: str, cursor: SensorCursor, now: datetime
) -> None:
    """Submit the summarization of CoT samples saved while an earlier one was in flight."""
    catch_up = summarization_catch_up(instance, partition)
    if not catch_up:
        return
    launch = Launch(
        job_name=catch_up.job_name,
        partition=partition,
        key=catch_up.run_key,
        tags=dict(catch_up.tags),
        run_config=catch_up.run_config,
        asset=SUMMARIZATION.batch_asset,
        subject=f"the summarization of scenario {partition!r}'s newest CoT samples",
        advice=(
            f"fix the cause, then materialize {SUMMARIZATION.batch_asset} for partition {partition!r}: "
            "it submits the CoT samples that lack a CoD"
        ),
    )
    runs = cursor.catch_up_runs.get(partition)
    if not runs or runs.key != launch.key:
        cursor.catch_up_runs[partition] = runs = Runs(key=launch.key)
        outcome.messages.append(
            f"{SUMMARIZATION.name}|{partition}: CoT samples newer than the last "
            f"summarization; launching {SUMMARIZATION.batch_job}"
        )
    elif runs.done:
        return  # given up, and said so once
    if launch_with_retries(instance, outcome, f"summarization-catch-up|{partition}", launch, runs, now):
        runs.done = True


def summarization_catch_up(instance: dg.DagsterInstance, partition: str) -> dg.RunRequest | None:
    """The run that submits the summarization of CoT samples saved while an earlier summarization
    was in flight, once that one has been ingested; None when there is nothing to catch up."""
    cot = latest_metadata(instance, GENERATION.samples_asset, partition)
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
    if run_in_progress(instance, GENERATION.results_job, partition):
        return None  # between its cot_samples and summarization_batch steps: that step submits
    return dg.RunRequest(
        job_name=SUMMARIZATION.batch_job,
        partition_key=partition,
        run_key=f"summarization-catch-up|{partition}|{cot['_storage_id']}",
        run_config=drafts_run_config(submitted_metadata(instance, partition, GENERATION)),
    )


def run_in_progress(instance: dg.DagsterInstance, job_name: str, partition: str) -> bool:
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=job_name, statuses=UNFINISHED, tags={"dagster/partition": partition}),
        limit=1,
    )
    return bool(runs)
