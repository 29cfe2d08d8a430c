"""The export's data files: deterministic Parquet written a row group at a time, their fingerprint,
and the folder swapped in whole.

The same rows give the same bytes (the schema is `records`', rows keep their order, a row group
every `ROW_GROUP_BYTES` of rows, no timestamps), so `fingerprint`, a sha256 over the data files, tells
two exports apart. The folder is built beside the old one and swapped in, so it never holds half an
export; only one row group's rows are in memory at a time.
"""

import hashlib
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cotgen_assets.core.records import Field, arrow_schema
from cotgen_assets.core.storage import atomic_write, is_local, process_exists, scratch_dir, writing

DATA_GLOB = "data/*/*.parquet"
BATCH_ROWS = 1_000  # rows made Arrow at once: a few MB to a few tens of MB of text
ROW_GROUP_BYTES = 16 * 1024 * 1024  # Arrow bytes of a row group (at least one batch)
EXPORT_SCRATCH = ("the export", "nothing was exported")  # scratch_dir's words for a folder it cannot make


def data_file(config: str, split: str) -> str:
    """A data file's path inside the export folder (the card's `configs:` point at it)."""
    return f"data/{config}/{split}.parquet"


@dataclass(frozen=True)
class DataFile:
    """One data file as written."""

    rows: int
    nbytes: int  # its rows in Arrow memory (the card's `num_bytes`)
    size: int  # on disk (the card's `download_size`)


class RowWriter:
    """One data file, written a row group at a time; no rows, no file.

    Rows become Arrow a batch of `BATCH_ROWS` at a time (Python dicts take several times their
    Arrow size); a row group is written once its batches hold `ROW_GROUP_BYTES`. Each row group
    adds its metadata to the footer the writer keeps until the end (~20 KB), so row groups of
    bytes rather than of a few rows keep that small however many rows the file has.
    """

    def __init__(self, path: Path, fields: tuple[Field, ...]):
        self.path, self.schema = path, arrow_schema(fields)
        self.writer: pq.ParquetWriter | None = None
        self.pending: list[dict] = []
        self.batches: list[pa.Table] = []
        self.rows = self.nbytes = self.batch_bytes = 0

    def add(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self.pending.append(row)
            if len(self.pending) == BATCH_ROWS:
                self._to_arrow()
                if self.batch_bytes >= ROW_GROUP_BYTES:
                    self._write_row_group()

    def _to_arrow(self) -> None:
        if self.pending:
            batch = pa.Table.from_pylist(self.pending, schema=self.schema)
            self.batches.append(batch)
            self.rows, self.nbytes, self.pending = self.rows + batch.num_rows, self.nbytes + batch.nbytes, []
            self.batch_bytes += batch.nbytes

    def _write_row_group(self) -> None:
        if not self.batches:
            return
        table = pa.concat_tables(self.batches)
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(str(self.path), self.schema, compression="zstd")
        self.writer.write_table(table, row_group_size=table.num_rows)
        self.batches, self.batch_bytes = [], 0

    def close(self) -> DataFile | None:
        """The file as written, or None when it had no rows."""
        self._to_arrow()
        self._write_row_group()
        if self.writer is None:
            return None
        self.writer.close()
        with open(self.path, "rb") as handle:
            os.fsync(handle.fileno())
        return DataFile(self.rows, self.nbytes, self.path.stat().st_size)


def fingerprint(folder: Path) -> str:
    """sha256 over an export folder's data files' paths and contents, in path order."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob(DATA_GLOB)):
        content = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                content.update(chunk)
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + content.digest())
    return digest.hexdigest()


@contextmanager
def staged_folder(folder: Path) -> Iterator[Path]:
    """A new local folder to write the export into; when the block ends without an error it
    replaces `folder` whole (readers see the old export or the new one), else it is removed.

    In a bucket, which has no folders to swap, each file is then replaced atomically and files of
    the old export that the new one lacks are removed after: a reader during the write may see old
    and new files side by side, never a torn file.
    """
    if not is_local(folder):
        staging = scratch_dir("cotgen-export-", *EXPORT_SCRATCH)
        try:
            yield staging
            _upload(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return
    staging = folder.with_name(f".{folder.name}.new-{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    with writing(folder):
        folder.parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(folder)
        try:
            staging.mkdir()
            yield staging
            if folder.exists():
                os.replace(folder, old)
            os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)


def _remove_leftovers(folder: Path) -> None:
    """The folders a killed export left beside `folder` (a whole export each), not those of one
    still running."""
    for leftover in folder.parent.glob(f".{folder.name}.*-*"):
        kind, _, pid = leftover.name.removeprefix(f".{folder.name}.").partition("-")
        if kind in ("new", "old") and pid.isdigit() and not process_exists(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _upload(staging: Path, folder) -> None:
    files = {p.relative_to(staging).as_posix(): p for p in staging.rglob("*") if p.is_file()}
    for name, local in files.items():
        with atomic_write(folder / name) as handle, open(local, "rb") as source:
            shutil.copyfileobj(source, handle, 1 << 20)
    for old_file in [p for p in folder.rglob("*") if p.is_file()]:
        if old_file.relative_to(folder).as_posix() not in files:
            old_file.unlink()
