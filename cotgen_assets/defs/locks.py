"""Locks in the Dagster storage: one submission per stage and scenario, one ingestion per samples
file at a time, across every process and machine of a deployment (docs/past-one-machine.md, Locks).

A lock is one row of the run storage's key-value table (`kvs`, unique on its key), taken by a
plain INSERT: the database lets exactly one of two racing inserts through, on SQLite (`dagster
dev`, no set-up) and on Postgres alike. Released by deleting the row only if it still holds our
value. A holder that died without releasing (SIGKILL, a lost pod) is recognised by its process
being gone from this machine, or by its run having finished (or being gone); its row is then
deleted only if unchanged, so of two processes breaking it at once only one takes it, and that
one says so.
"""

import json
import os
import socket
import time
from contextlib import contextmanager

import dagster as dg
from dagster._core.storage.runs.schema import KeyValueStoreTable
from sqlalchemy import exc as db_exc

from cotgen_assets.core.settings import number
from cotgen_assets.core.stages import Stage
from cotgen_assets.core.storage import process_exists
from cotgen_assets.core.submissions import SubmissionRefused

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


def insert_if_absent(instance: dg.DagsterInstance, key: str, value: str) -> bool:
    """Add row `key` of the storage's key-value table; False when it exists (one of two racers wins)."""
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


def _why_dead(instance: dg.DagsterInstance, holder: dict) -> str | None:
    """Why the holder can no longer hold the lock, or None while it may.

    The process is asked first: a run whose process died while the database was out of reach
    is never marked finished, and would hold the lock for ever. On another machine only the
    run can tell; a plain caller there holds until it releases.
    """
    if holder.get("host") == socket.gethostname() and holder.get("pid"):
        if not process_exists(holder["pid"]):
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
    while not insert_if_absent(instance, key, value):
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
    instance: dg.DagsterInstance, scenario: str, stage: Stage, run_id: str | None = None, warn=None
):
    """Only one submission per stage and scenario at a time (two clicks, one batch); refuses at once."""

    def refuse(holder: dict) -> SubmissionRefused:
        return SubmissionRefused(
            f"another {stage.batch_asset} run for scenario {scenario!r} is submitting right now; "
            f"this one submits nothing (the lock is held by {describe(holder)})"
        )

    return storage_lock(
        instance, f"submit/{stage.name}/{scenario}", run_id, stage.batch_asset, refuse=refuse, warn=warn
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
