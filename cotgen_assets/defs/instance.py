"""What the Dagster instance knows about submissions: what was sent, is it in flight, was it ingested.

The batch assets' materializations are the record of what was submitted (their metadata holds
the submission id and batch names); the results assets' say what was ingested. The in-flight
refusal and the locks (one submission, one ingestion per samples file at a time) live here too:
rows in the Dagster storage, so they hold across every process and machine of a deployment.
"""

import json
import os
import socket
import time
from contextlib import contextmanager

import dagster as dg
from dagster._core.storage.runs.schema import KeyValueStoreTable
from sqlalchemy import exc as db_exc

from cotgen_assets.core.records import GENERATION, SUMMARIZATION
from cotgen_assets.core.settings import number
from cotgen_assets.core.submissions import Submission, SubmissionRefused, load_submission, unfinished_sends
from cotgen_assets.gemini.resource import GeminiBatchResource

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


def every_metadata(instance: dg.DagsterInstance, asset: str, partition: str):
    """The materialization metadata of one partition of an asset, newest first, page by page."""
    records_filter = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition])
    cursor = None
    while True:
        page = instance.fetch_materializations(records_filter, limit=20, cursor=cursor)
        yield from (_plain(record) for record in page.records)
        if not page.has_more:
            return
        cursor = page.cursor


def newest_metadata_where(instance: dg.DagsterInstance, asset: str, partition: str, keep) -> dict | None:
    """The newest materialization metadata of one partition for which `keep(metadata)` is true."""
    return next((m for m in every_metadata(instance, asset, partition) if keep(m)), None)


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


def orphan_submissions(instance: dg.DagsterInstance, scenario: str, stage: str) -> list[Submission]:
    """Submissions a run began to send and never recorded, nor ingested, and whose run is over
    (it died between a create and its materialization): the next batch run adopts them.

    Raises InFlight for one whose run Dagster still shows running: that run may record it yet.
    """
    sends = list(unfinished_sends(scenario, stage))
    if not sends:
        return []
    recorded = {
        (m["submission_id"], tuple(m["batch_names"]))
        for m in every_metadata(instance, BATCH_ASSET[stage], scenario)
        if m.get("batch_names")
    }
    orphans = []
    for submission in sends:
        if (submission.submission_id, tuple(submission.batch_names)) in recorded:
            continue
        run = instance.get_run_by_id(submission.sent_by)
        if run is not None and not run.is_finished:
            raise InFlight(
                f"{BATCH_ASSET[stage]} for scenario {scenario!r} is still in flight: submission "
                f"{submission.submission_id} is being sent by run {run.run_id} ({run.status.value}), which "
                "has not recorded it yet; this one submits nothing. If that run's process died, terminate "
                "it (Dagster UI: Runs) and materialize again: its batch is then adopted, not paid again."
            )
        orphans.append(submission)
    return orphans


def rounds_submissions(instance: dg.DagsterInstance, scenario: str, rounds_id: str) -> list[str]:
    """The generation submissions a run of rounds sent, oldest first."""
    sent = []
    for metadata in every_metadata(instance, BATCH_ASSET[GENERATION], scenario):
        if metadata.get("rounds_id") == rounds_id and metadata.get("batch_names"):
            sent.append(metadata["submission_id"])
    return list(dict.fromkeys(reversed(sent)))


def latest_submission(instance: dg.DagsterInstance, scenario: str, stage: str) -> Submission:
    """The stage's newest real submission, for the results assets."""
    batch = submitted_metadata(instance, scenario, stage)
    if not batch:
        raise SubmissionRefused(
            f"no {BATCH_ASSET[stage]} has been submitted for scenario {scenario!r} yet: "
            f"materialize {BATCH_ASSET[stage]} first"
        )
    return load_submission(scenario, stage, batch["submission_id"])


# --------------------------------------------------------------------------- locks
#
# A lock is one row of the run storage's key-value table (`kvs`, unique on its key), taken by a
# plain INSERT: the database lets exactly one of two racing inserts through, on SQLite (`dagster
# dev`, no set-up) and on Postgres (every process and machine of a deployment) alike. Released
# by deleting the row only if it still holds our value. A holder that died without releasing
# (SIGKILL, a lost pod) is recognised by its process being gone from this machine, or by its run
# having finished (or being gone); its row is then deleted only if unchanged, so of two
# processes breaking it at once only one takes it, and that one says so.

LOCK_KEY = "cotgen/lock/"


class LockTimeout(RuntimeError):
    """The lock stayed held longer than the caller was willing to wait."""


def _holder(run_id: str | None, step: str) -> str:
    return json.dumps(
        {
            "run_id": run_id,
            "step": step,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": time.time(),
        }
    )


def _insert(instance: dg.DagsterInstance, key: str, value: str) -> bool:
    try:
        with instance.run_storage.connect() as conn:
            conn.execute(KeyValueStoreTable.insert().values(key=key, value=value))
    except db_exc.IntegrityError:
        return False
    return True


def _delete_if(instance: dg.DagsterInstance, key: str, value: str) -> bool:
    """Delete the lock row only if it still holds `value` (ours, or the dead holder's we read)."""
    with instance.run_storage.connect() as conn:
        deleted = conn.execute(
            KeyValueStoreTable.delete().where(
                KeyValueStoreTable.c.key == key, KeyValueStoreTable.c.value == value
            )
        )
    return deleted.rowcount == 1


def lock_holder(instance: dg.DagsterInstance, name: str) -> dict | None:
    """Who holds lock `name` now (run_id, step, host, pid, since), or None."""
    value = instance.run_storage.get_cursor_values({LOCK_KEY + name}).get(LOCK_KEY + name)
    return json.loads(value) if value else None


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _why_dead(instance: dg.DagsterInstance, holder: dict) -> str | None:
    """Why the holder can no longer hold the lock, or None while it may.

    The process is asked first: a run whose process died while the database was out of reach
    is never marked finished, and would hold the lock for ever. On another machine only the
    run can tell; a plain caller there holds until it releases.
    """
    if holder.get("host") == socket.gethostname() and holder.get("pid"):
        if not _process_exists(holder["pid"]):
            return "its process is gone from this host"
    if holder.get("run_id"):
        run = instance.get_run_by_id(holder["run_id"])
        if run is None:
            return "its run no longer exists"
        if run.is_finished:
            return f"its run has finished ({run.status.value})"
    return None


def _try_lock(instance: dg.DagsterInstance, name: str, value: str, warn=None) -> dict | None:
    """None when we took lock `name`; else its live holder. A dead holder's row is deleted and,
    if this call deleted it, `warn(message)` names the holder."""
    key = LOCK_KEY + name
    while not _insert(instance, key, value):
        raw = instance.run_storage.get_cursor_values({key}).get(key)
        if raw is None:
            continue  # released between our insert and our read: try again
        holder = json.loads(raw)
        why = _why_dead(instance, holder)
        if why is None:
            return holder
        if _delete_if(instance, key, raw) and warn is not None:
            warn(f"took over lock {name!r} from {describe(holder)}, which died without releasing it: {why}")
    return None


@contextmanager
def storage_lock(
    instance: dg.DagsterInstance,
    name: str,
    run_id: str | None = None,
    step: str = "",
    wait_seconds: float = 0.0,
    refuse=None,
    say=None,
    warn=None,
):
    """Hold lock `name` in the Dagster storage for the block.

    Held already: `refuse(holder)` is raised at once if given; else it waits, polling with a
    growing delay and saying so once through `say(message)`, for `wait_seconds` at most, then
    raises LockTimeout naming the holder. Taking over a dead holder's lock is said through `warn`.
    """
    value, deadline, delay, said = _holder(run_id, step), time.monotonic() + wait_seconds, 0.05, False
    while (holder := _try_lock(instance, name, value, warn)) is not None:
        if refuse is not None:
            raise refuse(holder)
        if time.monotonic() >= deadline:
            raise LockTimeout(
                f"waited {wait_seconds:.0f} s for lock {name!r}, still held by {describe(holder)}; if that "
                f"run is stuck, terminate it (Dagster UI: Runs) and run this again"
            )
        if not said and say is not None:
            say(f"waiting for lock {name!r}, held by {describe(holder)}")
            said = True
        time.sleep(min(delay, max(deadline - time.monotonic(), 0.0)))
        delay = min(delay * 1.5, 2.0)
    try:
        yield
    finally:
        _delete_if(instance, LOCK_KEY + name, value)


def describe(holder: dict) -> str:
    where = f"process {holder.get('pid')} on {holder.get('host')}"
    return (
        f"run {holder['run_id']} ({holder.get('step') or 'a step'}, {where})"
        if holder.get("run_id")
        else where
    )


def submission_lock(
    instance: dg.DagsterInstance, scenario: str, stage: str, run_id: str | None = None, warn=None
):
    """Only one submission per stage and scenario at a time (two clicks, one batch); refuses at once."""

    def refuse(holder: dict) -> SubmissionRefused:
        return SubmissionRefused(
            f"another {BATCH_ASSET[stage]} run for scenario {scenario!r} is submitting right now; "
            f"this one submits nothing (the lock is held by {describe(holder)})"
        )

    return storage_lock(
        instance, f"submit/{stage}/{scenario}", run_id, BATCH_ASSET[stage], refuse=refuse, warn=warn
    )


def samples_lock(
    instance: dg.DagsterInstance,
    samples_file,
    run_id: str | None = None,
    step: str = "",
    say=None,
    warn=None,
):
    """One ingestion per samples file at a time (ingest.ingest_submission's `lock`); a second waits."""
    return storage_lock(
        instance,
        f"samples/{samples_file.name}",
        run_id,
        step,
        wait_seconds=lock_wait_seconds(),
        say=say,
        warn=warn,
    )


def lock_wait_seconds() -> float:
    """How long an ingestion waits for another one of the same samples file."""
    return number("COTGEN_LOCK_WAIT_SECONDS")


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
