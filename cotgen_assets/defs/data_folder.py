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
from pathlib import Path

import dagster as dg
from upath import UPath

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


def read_claim(owner_file: Path | UPath) -> dict:
    """The claim in `owner_file`, or SubmissionRefused naming it if it holds none. It is written
    whole (`create_if_absent`), so only a person or a failing disk damages it; it is left as it is."""
    try:
        owner = json.loads(owner_file.read_bytes())
    except ValueError as error:  # empty, cut short, not UTF-8
        raise damaged(owner_file, str(error)) from None
    except IsADirectoryError:  # made by hand: no instance has claimed the data folder yet
        raise SubmissionRefused(
            f"{owner_file} is a folder, where the file saying which Dagster storage owns this data "
            "folder (COTGEN_DATA_DIR) goes; nothing was submitted. Move the folder away (the next "
            "submission claims the data folder for this instance)."
        ) from None
    if not isinstance(owner, dict) or not isinstance(owner.get("storage_id"), str):
        raise damaged(owner_file, "no storage_id in it")
    return owner


def damaged(owner_file: Path | UPath, problem: str) -> SubmissionRefused:
    return SubmissionRefused(
        f"{owner_file} is damaged ({problem}): it says which Dagster storage owns this data folder "
        "(COTGEN_DATA_DIR); nothing was submitted. If no other Dagster instance uses this folder, "
        "delete the file (the next submission claims the folder for this one); otherwise put back "
        "that instance's claim."
    )
