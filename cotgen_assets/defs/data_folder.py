"""A data folder belongs to one Dagster storage.

The locks and the history of submissions live in the Dagster storage, so two instances with their
own storages (two `DAGSTER_HOME`s on SQLite, two deployments) on one `COTGEN_DATA_DIR` do not see
each other: both would send the same submission and pay twice, and each would ingest into the same
samples files unlocked. What they share is the data folder, so it says whose it is:
`dagster_storage.json`, written once with a create-if-absent write (`storage.create_if_absent`) by
the first storage to submit from it. Machines of one deployment share one storage (Postgres) and so
its id, a row of its key-value table: they keep working together, under the storage's locks.
"""

import json
import os
import socket
import uuid
from datetime import UTC, datetime

import dagster as dg

from cotgen_assets.core.storage import create_if_absent, data_dir
from cotgen_assets.core.submissions import SubmissionRefused
from cotgen_assets.defs.locks import insert_if_absent

STORAGE_ID_KEY = "cotgen/storage_id"
OWNER_FILE = "dagster_storage.json"


def storage_id(instance: dg.DagsterInstance) -> str:
    """This Dagster storage's id, made by the first process to ask (one of two racers wins)."""
    insert_if_absent(instance, STORAGE_ID_KEY, uuid.uuid4().hex)
    return instance.run_storage.get_cursor_values({STORAGE_ID_KEY})[STORAGE_ID_KEY]


def claim_data_folder(instance: dg.DagsterInstance) -> None:
    """Claim the data folder for this storage, or refuse (SubmissionRefused) if another has it."""
    ours = storage_id(instance)
    owner_file = data_dir() / OWNER_FILE
    claim = {
        "storage_id": ours,
        "dagster_home": instance.root_directory,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "claimed_at": datetime.now(UTC).isoformat(),
    }
    if create_if_absent(owner_file, json.dumps(claim, indent=2).encode()):
        return
    owner = read_claim(owner_file)
    if owner.get("storage_id") != ours:
        raise SubmissionRefused(
            f"the data folder {data_dir()} (COTGEN_DATA_DIR) belongs to another Dagster instance "
            f"(DAGSTER_HOME {owner.get('dagster_home')} on {owner.get('host')}, since "
            f"{owner.get('claimed_at')}), whose locks and history this one cannot see; nothing was "
            "submitted. Use that instance, or give this one its own COTGEN_DATA_DIR, or share one "
            f"storage (Postgres) between them; if that instance is gone for good, delete {owner_file}."
        )


def read_claim(owner_file) -> dict:
    """The claim in `owner_file`; one line naming it when a hand edit left no claim there."""
    try:
        owner = json.loads(owner_file.read_bytes())
    except ValueError as error:
        owner, why = None, f"not JSON ({error})"
    else:
        why = "not a JSON object with a storage_id"
    if isinstance(owner, dict) and isinstance(owner.get("storage_id"), str):
        return owner
    raise SubmissionRefused(
        f"{owner_file} is damaged: {why}, so it cannot say which Dagster instance this data folder "
        "(COTGEN_DATA_DIR) belongs to; nothing was submitted. Put back the file as the instance that "
        "claimed the folder wrote it, or, if no other instance uses this data folder, delete it "
        "(the next batch run claims the folder again)."
    )
