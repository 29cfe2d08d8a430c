"""Parquet files are read by Arrow itself, never through a Python file object.

Arrow reads a Python file object from its own I/O threads (even with `use_threads=False` and no
pre-buffering). Such a thread still holding the file when the interpreter exits takes the GIL during
finalization, and the process aborts ("terminate called without an active exception", exit -6): seen
as `cotgen status` ending in SIGABRT, once in a few runs, after its error line.
"""

import io
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from cotgen_assets.core.storage import parquet_file, read_parquet

TABLE = pa.table({"problem_id": [f"easy-{n}" for n in range(100)], "question": ["?"] * 100})


class WatchedFile(io.FileIO):
    """A file that notes which threads read it."""

    readers: set[str] = set()

    def readinto(self, buffer):
        WatchedFile.readers.add(threading.current_thread().name)
        return super().readinto(buffer)

    def read(self, size=-1):
        WatchedFile.readers.add(threading.current_thread().name)
        return super().read(size)


class WatchedPath(type(Path())):
    """A local path whose `open` hands out a WatchedFile (what a Python file object reader would use)."""

    def open(self, mode="r", *args, **kwargs):
        return WatchedFile(self, mode.replace("b", "") or "r")


def test_a_local_parquet_file_is_read_by_arrow_not_from_its_threads_through_python(tmp_path):
    path = WatchedPath(tmp_path / "source_problems.parquet")
    pq.write_table(TABLE, path)
    WatchedFile.readers = set()

    assert (
        read_parquet(path, columns=["problem_id"])["problem_id"].to_pylist()
        == TABLE["problem_id"].to_pylist()
    )
    assert read_parquet(path, filters=[("problem_id", "=", "easy-7")]).num_rows == 1
    with parquet_file(path) as parquet:
        assert sum(batch.num_rows for batch in parquet.iter_batches(batch_size=10)) == 100
    assert WatchedFile.readers <= {threading.main_thread().name}, WatchedFile.readers


def test_a_parquet_file_in_a_bucket_is_read_from_a_local_copy(tmp_path, monkeypatch):
    from fsspec.implementations.memory import MemoryFile

    readers = set()
    read = MemoryFile.read

    def watched_read(self, *args):
        readers.add(threading.current_thread().name)
        return read(self, *args)

    monkeypatch.setattr(MemoryFile, "read", watched_read)
    path = UPath("memory://bucket/easy/source_problems.parquet")
    with path.open("wb") as handle:
        pq.write_table(TABLE, handle)

    assert read_parquet(path, columns=["problem_id"]).num_rows == 100
    with parquet_file(path) as parquet:
        assert parquet.metadata.num_rows == 100
    assert readers <= {threading.main_thread().name}, readers
