"""What the Dagster instance knows about submissions: what was sent, is it in flight, was it ingested.

The batch assets' materializations are the record of what was submitted (their metadata holds
the submission id and batch names); the results assets' say what was ingested. The in-flight
refusal and the one-submission-at-a-time lock live here too.
"""

import fcntl
from contextlib import contextmanager

import dagster as dg

from cotgen_assets.gemini import GeminiBatchResource
from cotgen_assets.records import GENERATION, SUMMARIZATION
from cotgen_assets.storage import scenario_dir
from cotgen_assets.submissions import Submission, SubmissionRefused, load_submission

BATCH_ASSET = {GENERATION: "generation_batch", SUMMARIZATION: "summarization_batch"}
RESULTS_ASSET = {GENERATION: "generation_results", SUMMARIZATION: "summarization_results"}
SAMPLES_ASSET = {GENERATION: "cot_samples", SUMMARIZATION: "cod_samples"}
RESULTS_JOB = {GENERATION: "generation_results_job", SUMMARIZATION: "summarization_results_job"}


class InFlight(SubmissionRefused):
    """The stage's previous submission has not been ingested yet."""


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


def is_ingested(batch: dict, later: dict | None) -> bool:
    """Whether `later` (a results or samples materialization) came after `batch`, for its submission.

    The id alone is not enough: after a failed job, `fill` asks for the same problems again,
    so the new submission has the failed one's id.
    """
    return (
        bool(later)
        and later.get("submission_id") == batch["submission_id"]
        and later["_storage_id"] > batch["_storage_id"]
    )


def pending_submission(instance: dg.DagsterInstance, scenario: str, stage: str) -> Submission | None:
    """The stage's newest real submission if its samples were not saved yet.

    Downloaded results are not enough: if the samples asset then failed, the submission's
    answers, tries and cost are nowhere yet, and a new fill would ask (and pay) for them again.
    """
    batch = submitted_metadata(instance, scenario, stage)
    if not batch or is_ingested(batch, latest_metadata(instance, SAMPLES_ASSET[stage], scenario)):
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

    The sensor launches that run, and again after a failure (with a growing delay), until it
    gives up and says so; then the run stays failed until someone re-executes it.
    """
    stage, scenario = submission.stage, submission.scenario
    return (
        f"{BATCH_ASSET[stage]} for scenario {scenario!r} (submission {submission.submission_id}, batch "
        f"{states}) has ended, but its results are not saved yet. batch_completion_sensor launches "
        f"{RESULTS_JOB[stage]} for it, and again if it fails; once the sensor log says GAVE UP or NOT "
        f"RETRIED, re-execute the last run (Dagster UI: Runs), or "
        f"materialize {RESULTS_ASSET[stage]} and {SAMPLES_ASSET[stage]} for partition {scenario!r}."
    )
