"""The results assets, one per stage (`generation_results`, `summarization_results`): a finished
submission's output files, downloaded unchanged, and how each of its batch jobs ended."""

import dagster as dg

from cotgen_assets.backends.lifecycle import download_finished
from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets.core.batch_output import overall_state
from cotgen_assets.core.model_io import CANCELLED
from cotgen_assets.core.queue import queued_shards
from cotgen_assets.core.stages import GENERATION, SUMMARIZATION, Stage
from cotgen_assets.core.storage import StorageError
from cotgen_assets.core.submissions import SubmissionRefused
from cotgen_assets.defs.assets.ui import GROUP
from cotgen_assets.defs.history import latest_submission
from cotgen_assets.defs.partitions import scenario_partitions


def results_asset(stage: Stage) -> dg.AssetsDefinition:
    """The stage's results asset, downstream of its batch asset."""

    @dg.asset(
        name=stage.results_asset,
        partitions_def=scenario_partitions,
        group_name=GROUP,
        kinds={"gemini", "jsonl"},
        deps=[stage.batch_asset],
        check_specs=[dg.AssetCheckSpec("batch_succeeded", asset=stage.results_asset)],
        description=f"The {stage.name} batch's raw output file(s), downloaded unchanged.",
    )
    def results(context: dg.AssetExecutionContext, gemini: GeminiBatchResource) -> dg.MaterializeResult:
        return fetch_results(context, gemini, stage)

    return results


def fetch_results(context, gemini: GeminiBatchResource, stage: Stage) -> dg.MaterializeResult:
    """Download what finished, record how each job ended; refused while a job still runs."""
    try:
        submission = latest_submission(context.instance, context.partition_key, stage)
        jobs = download_finished(submission, gemini.batch_api())
    except (SubmissionRefused, StorageError) as error:  # StorageError: a read-only folder, a full disk
        raise dg.Failure(description=str(error)) from None
    running = [f"{job.name} ({job.state})" for job in jobs if not job.done]
    running += [f"{shard} (queued on the batch quota)" for shard in queued_shards(submission)]
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
    state = overall_state(submission.job_states)  # a shard dropped from the queue: DROPPED
    results = [submission.results_path(s) for s in submission.shards if submission.results_path(s).exists()]
    return dg.MaterializeResult(
        metadata={
            "job_state": state,
            "submission_id": submission.submission_id,
            "batch_names": dg.MetadataValue.json(submission.batch_names),
            "num_requests": submission.num_requests,
            "num_succeeded": sum(job.succeeded_count or 0 for job in jobs),
            "num_failed": sum(job.failed_count or 0 for job in jobs),
            "num_failed_jobs": len(failed),
            "num_cancelled_jobs": sum(job.end == CANCELLED for job in jobs),
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


generation_results = results_asset(GENERATION)
summarization_results = results_asset(SUMMARIZATION)
