"""The export's data files: deterministic Parquet, their fingerprint, and the folder swapped in whole.

The same rows give the same bytes (the schema is `records`', rows keep their order, no timestamps),
so `fingerprint`, a sha256 over the data files, tells two exports apart. The folder is built
beside the old one and swapped in, so it never holds half an export.
"""

import hashlib
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cotgen_assets.core.records import Field, arrow_schema
from cotgen_assets.core.storage import atomic_write, is_local


def data_file(config: str, split: str) -> str:
    """A data file's path inside the export folder (the card's `configs:` point at it)."""
    return f"data/{config}/{split}.parquet"


def parquet_bytes(rows: list[dict], fields: tuple[Field, ...]) -> tuple[bytes, pa.Table]:
    """The same rows give the same bytes: the config's schema (`records`), given order, no timestamps."""
    table = pa.Table.from_pylist(rows, schema=arrow_schema(fields))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes(), table


def fingerprint(files: dict[str, bytes]) -> str:
    """sha256 over the data files' paths and contents, in path order."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    return digest.hexdigest()


def write_folder(folder: Path, files: dict[str, bytes]) -> None:
    """Build the folder beside the old one, then swap: readers see the old export or the new one.

    In a bucket, which has no folders to swap, each file is replaced atomically and files of the
    old export that the new one lacks are removed after: a reader during the write may see old
    and new files side by side, never a torn file.
    """
    if not is_local(folder):
        for path, data in files.items():
            with atomic_write(folder / path) as handle:
                handle.write(data)
        for old_file in [p for p in folder.rglob("*") if p.is_file()]:
            if old_file.relative_to(folder).as_posix() not in files:
                old_file.unlink()
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.new-{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for path, data in files.items():
            with atomic_write(staging / path) as handle:
                handle.write(data)
        if folder.exists():
            os.replace(folder, old)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
