"""Push an export folder to the Hugging Face Hub in one commit.

Refuses, uploading nothing, when there is no token, when the data was made by the emulator, or
when the export holds no rows: each is read off the folder's own Parquet files, not a manifest.
The token is passed to `huggingface_hub` only; every message that leaves here is scrubbed of it.
"""

from pathlib import Path

import pyarrow.compute as pc

from cotgen_assets.core.stages import STAGES
from cotgen_assets.core.storage import is_local, parquet_file
from cotgen_assets.publish.parquet import DATA_GLOB


class PushRefused(Exception):
    """Nothing was uploaded; the message says why and what to do."""


class PushFailed(RuntimeError):
    """The Hub or the network turned the push down; the message is one line, scrubbed of the token."""


def scrub(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def pushable_rows(folder: Path) -> int:
    """The number of rows of the export; raises PushRefused when it is empty or made offline."""
    files = sorted(folder.glob(DATA_GLOB))
    rows = 0
    for path in files:
        with parquet_file(path) as parquet:
            rows += parquet.metadata.num_rows
    if not (folder / "README.md").exists() or not rows:
        raise PushRefused(
            f"the export in {folder} is empty (no data rows): nothing to publish. Make samples, then "
            "materialize hf_dataset again. Nothing was uploaded."
        )
    for path in files:
        with parquet_file(path) as parquet:
            blocks = [s.name for s in STAGES if s.name in parquet.schema_arrow.names]
            offline = any(
                pc.any(pc.struct_field(parquet.read(columns=[b])[b], "offline")).as_py() for b in blocks
            )
        if offline:
            raise PushRefused(
                f"{path.relative_to(folder)} holds OFFLINE samples made by the local Gemini "
                "emulator, not by Gemini: such data is never pushed to the Hub. Nothing was uploaded."
            )
    return rows


def push_export(
    folder: Path,
    repo_id: str,
    token: str | None,
    public: bool = False,
    run_id: str = "",
    endpoint: str | None = None,
) -> str:
    """Create the dataset repo if missing (private unless `public`), upload the folder in one commit
    whose message names the Dagster run, and return the commit's URL.

    An existing repo keeps its visibility. Data files of earlier exports that this one lacks (a
    scenario dropped) are deleted in the same commit.
    """
    if not token:
        raise PushRefused(
            "HF_TOKEN is not set: cannot push to the Hugging Face Hub. Set HF_TOKEN (a write token) in the "
            "environment of the Dagster code location. Nothing was uploaded."
        )
    if not repo_id or "/" not in repo_id:
        raise PushRefused(
            f"hub_repo {repo_id!r} is not a Hub dataset id like 'user/name'. Nothing was uploaded."
        )
    folder = Path(folder) if isinstance(folder, str) else folder  # a UPath when the data is in a bucket
    rows = pushable_rows(folder)

    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    files = [f for f in files if not f.startswith(".")]
    api = HfApi(endpoint=endpoint, token=token)
    run = run_id or "unknown"
    try:
        api.create_repo(repo_id, repo_type="dataset", private=not public, exist_ok=True)
        remote = api.list_repo_files(repo_id, repo_type="dataset")
        stale = [f for f in remote if f.startswith("data/") and f.endswith(".parquet") and f not in files]
        # create_commit, not upload_folder: with hf_xet installed upload_folder may split a folder
        # into several commits, and an export is one commit or none.
        commit = api.create_commit(
            repo_id,
            operations=[CommitOperationDelete(f) for f in stale]
            + [
                CommitOperationAdd(f, str(folder / f) if is_local(folder) else (folder / f).read_bytes())
                for f in files
            ],
            repo_type="dataset",
            commit_message=f"cotgen export from Dagster run {run} ({rows:,} rows per config)",
            commit_description=f"Uploaded by cotgen's hf_dataset asset, Dagster run {run}.",
        )
    except Exception as error:  # the Hub's errors may echo request headers: never let the token out
        reason = " ".join(scrub(f"{type(error).__name__}: {error}", token).split())
        raise PushFailed(
            f"push to {repo_id} failed: {reason}. The export is complete in {folder}; the push is one "
            "commit, so the Hub holds all of it or none: fix the cause and materialize hf_dataset again."
        ) from None
    return commit.commit_url
