"""The submissions' history, as the Dagster instance records it: what was sent, what is still in
flight, what was ingested, and what a run that died sent without recording it (an orphan).

The batch assets' materializations are the record of what was submitted (their metadata holds
the submission id and batch names); the samples assets' say what was ingested. A new batch is
refused while the stage's last one is in flight (`refuse_if_in_flight`).
"""

import dagster as dg

from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets.core.queue import queued_shards, recorded_as
from cotgen_assets.core.stages import GENERATION, Stage
from cotgen_assets.core.submission_history import unfinished_sends
from cotgen_assets.core.submissions import Submission, SubmissionRefused, load_submission


class InFlight(SubmissionRefused):
    """The stage's previous submission has not been ingested yet."""


def _metadata_of(record) -> dict:
    """A materialization's metadata as plain values, with its storage id (newer is larger)."""
    metadata = record.asset_materialization.metadata
    return {key: value.value for key, value in metadata.items()} | {"_storage_id": record.storage_id}


def latest_metadata(instance: dg.DagsterInstance, asset: str, partition: str) -> dict | None:
    """The newest materialization metadata of one partition of an asset, as plain values."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    return _metadata_of(records[0]) if records else None


def every_metadata(instance: dg.DagsterInstance, asset: str, partition: str):
    """The materialization metadata of one partition of an asset, newest first, page by page."""
    records_filter = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition])
    cursor = None
    while True:
        page = instance.fetch_materializations(records_filter, limit=20, cursor=cursor)
        yield from (_metadata_of(record) for record in page.records)
        if not page.has_more:
            return
        cursor = page.cursor


def newest_metadata_where(instance: dg.DagsterInstance, asset: str, partition: str, keep) -> dict | None:
    """The newest materialization metadata of one partition for which `keep(metadata)` is true."""
    return next((m for m in every_metadata(instance, asset, partition) if keep(m)), None)


def submitted_metadata(instance: dg.DagsterInstance, scenario: str, stage: Stage) -> dict | None:
    """The newest batch materialization that sent a batch.

    Dry runs and empty plans are skipped, so that one made later cannot hide a batch in flight.
    """
    return newest_metadata_where(instance, stage.batch_asset, scenario, lambda m: bool(m.get("batch_names")))


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


def pending_submission(instance: dg.DagsterInstance, scenario: str, stage: Stage) -> Submission | None:
    """The stage's newest real submission if its samples were not saved yet.

    Downloaded results are not enough: if the samples asset then failed, the submission's
    answers, tries and cost are nowhere yet, and a new fill would ask (and pay) for them again.
    """
    batch = submitted_metadata(instance, scenario, stage)
    if not batch or is_ingested(batch, latest_metadata(instance, stage.samples_asset, scenario)):
        return None
    return load_submission(scenario, stage, batch["submission_id"])


def orphan_submissions(instance: dg.DagsterInstance, scenario: str, stage: Stage) -> list[Submission]:
    """Submissions a run began to send and never recorded, nor ingested, and whose run is over
    (it died between a create and its materialization): the next batch run adopts them.

    Raises InFlight for one whose run Dagster still shows running: that run may record it yet.
    """
    sends = list(unfinished_sends(scenario, stage))
    if not sends:
        return []
    recorded: dict[str, list[list[str]]] = {}
    for m in every_metadata(instance, stage.batch_asset, scenario):
        if m.get("batch_names"):
            recorded.setdefault(m["submission_id"], []).append(m["batch_names"])
    orphans = []
    for submission in sends:
        if any(recorded_as(submission, names) for names in recorded.get(submission.submission_id, [])):
            continue
        run = instance.get_run_by_id(submission.sent_by)
        if run is not None and not run.is_finished:
            raise InFlight(
                f"{stage.batch_asset} for scenario {scenario!r} is still in flight: submission "
                f"{submission.submission_id} is being sent by run {run.run_id} ({run.status.value}), which "
                "has not recorded it yet; this one submits nothing. If that run's process died, terminate "
                "it (Dagster UI: Runs) and materialize again: its batch is then adopted, not paid again."
            )
        orphans.append(submission)
    return orphans


def rounds_submissions(instance: dg.DagsterInstance, scenario: str, rounds_id: str) -> list[str]:
    """The generation submissions a run of rounds sent, oldest first."""
    sent = []
    for metadata in every_metadata(instance, GENERATION.batch_asset, scenario):
        if metadata.get("rounds_id") == rounds_id and metadata.get("batch_names"):
            sent.append(metadata["submission_id"])
    return list(dict.fromkeys(reversed(sent)))


ROUNDS_CANCELLED_KEY = "cotgen/rounds_cancelled/"  # + a rounds_id: `cotgen cancel` came after its job ended


def cancel_rounds(instance: dg.DagsterInstance, rounds_id: str) -> None:
    """Ask a run of rounds to end after the round being saved: for a cancel that came once that
    round's job had ended, when there was nothing left to cancel at the API."""
    instance.run_storage.set_cursor_values({ROUNDS_CANCELLED_KEY + rounds_id: "cancelled"})


def rounds_cancelled(instance: dg.DagsterInstance, rounds_id: str) -> bool:
    key = ROUNDS_CANCELLED_KEY + rounds_id
    return bool(instance.run_storage.get_cursor_values({key}).get(key))


def latest_submission(instance: dg.DagsterInstance, scenario: str, stage: Stage) -> Submission:
    """The stage's newest real submission, for the results assets."""
    batch = submitted_metadata(instance, scenario, stage)
    if not batch:
        raise SubmissionRefused(
            f"no {stage.batch_asset} has been submitted for scenario {scenario!r} yet: "
            f"materialize {stage.batch_asset} first"
        )
    return load_submission(scenario, stage, batch["submission_id"])


def refuse_if_in_flight(
    instance: dg.DagsterInstance, gemini: GeminiBatchResource, scenario: str, stage: Stage
) -> None:
    """Raise InFlight, saying what to do, while the stage's last submission is not saved yet."""
    pending = pending_submission(instance, scenario, stage)
    if pending is None:
        return
    queued = len(queued_shards(pending))
    states, ended = (
        ([f"{queued} shard(s) queued"] if queued else []),
        bool(pending.batch_names) and not queued,
    )
    for name in filter(None, pending.batch_names):
        try:
            job = gemini.get_batch(name, timeout_seconds=10)
        except Exception:  # the refusal matters more than the state
            states.append(name)
            ended = False
        else:
            states.append(f"{name} ({job.state})")
            ended &= job.done
    if ended:
        raise InFlight(unsaved_results_message(pending, ", ".join(states)) + " Then materialize again.")
    raise InFlight(
        f"{stage.batch_asset} for scenario {scenario!r} is still in flight: submission "
        f"{pending.submission_id}, batch {', '.join(states)}. batch_completion_sensor ingests it "
        f"when it ends. To give up on it: `cotgen cancel {scenario} {stage.name}`, then materialize again."
    )


def unsaved_results_message(submission: Submission, states: str) -> str:
    """What to do when a submission's jobs ended but its results run failed or has not run yet.

    The sensor launches that run, and again after a failure (with a growing delay), until it
    gives up and says so; then the run stays failed until someone re-executes it.
    """
    stage, scenario = submission.stage, submission.scenario
    return (
        f"{stage.batch_asset} for scenario {scenario!r} (submission {submission.submission_id}, batch "
        f"{states}) has ended, but its results are not saved yet. batch_completion_sensor launches "
        f"{stage.results_job} for it, and again if it fails; once the sensor log says GAVE UP or NOT "
        f"RETRIED, re-execute the last run (Dagster UI: Runs), or "
        f"materialize {stage.results_asset} and {stage.samples_asset} for partition {scenario!r}."
    )
