"""Where the project's files live, and writes that never leave a torn file behind.

`COTGEN_DATA_DIR` is a local folder (default `./data`) or an object-store URL (`gs://bucket/prefix`,
`s3://…`) read and written through fsspec; `data_dir()` is then a `UPath`, with the same `/`,
`open`, `exists`, `glob`, `read_text` as a `Path`. Code that must see a local file (SQLite,
`os.pread`) asks `local_copy` for one.
"""

import errno
import os
import re
import shutil
import sqlite3
import tempfile
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from cotgen_assets.core.records import Field, record_key, record_problem
from cotgen_assets.core.sample_keys import sample_of
from cotgen_assets.core.stages import Stage

OBJECT_STORES = {"gs": "gcs", "gcs": "gcs", "s3": "s3"}  # protocol -> the extra that installs it


class StorageError(ValueError):
    """`COTGEN_DATA_DIR` names a place this installation cannot read or write."""


def data_dir() -> Path | UPath:
    """`$COTGEN_DATA_DIR`, default `./data` (relative to where Dagster runs: the project root).

    A URL is an object-store prefix; one we cannot open is an error, never a local folder named `gs:`.
    """
    value = os.environ.get("COTGEN_DATA_DIR") or "data"
    if "://" not in value:
        if re.match(r"^[a-z][a-z0-9+.-]*:/", value):
            raise StorageError(f"COTGEN_DATA_DIR={value!r} looks like a URL missing a '/': write 'gs://…'")
        return Path(value).absolute()
    scheme, rest = value.split("://", 1)
    protocol = scheme.lower()
    if protocol == "file":
        return Path(rest).absolute()
    if protocol not in OBJECT_STORES:
        raise StorageError(
            f"COTGEN_DATA_DIR={value!r}: {protocol}:// is not supported; use a local folder, gs:// or s3://"
        )
    if scheme != protocol:  # fsspec knows its protocols in lower case only
        raise StorageError(
            f"COTGEN_DATA_DIR={value!r}: write the scheme in lower case: '{protocol}://{rest}'"
        )
    if not rest.split("/", 1)[0]:
        raise StorageError(f"COTGEN_DATA_DIR={value!r} names no bucket: write '{protocol}://BUCKET/prefix'")
    try:
        path = UPath(value)
        path.fs  # noqa: B018 - loads the filesystem class: a missing gcsfs is said here
    except ImportError as error:
        raise StorageError(
            f"COTGEN_DATA_DIR={value!r} needs the {OBJECT_STORES[protocol]!r} extra: "
            f"pip install 'cotgen_assets[{OBJECT_STORES[protocol]}]' ({error})"
        ) from None
    return path


def is_local(path: Path | UPath) -> bool:
    return isinstance(path, Path)


def scenario_dir(scenario: str) -> Path | UPath:
    """Per-scenario working files (source Parquet, batch requests and results); writers create it."""
    return data_dir() / scenario


def source_problems_path(scenario: str) -> Path | UPath:
    return scenario_dir(scenario) / "source_problems.parquet"


def samples_path(stage: Stage, suffix: str) -> Path | UPath:
    """`cot_<suffix>.jsonl` for generation, `cod_<suffix>.jsonl` for summarization."""
    return data_dir() / stage.samples_file(suffix)


@contextmanager
def arrow_readable(path: Path | UPath) -> Iterator[str]:
    """`path` as a local file name Arrow opens itself: the path, or a local copy of an object in a bucket.

    Never a Python file object: Arrow reads one from its own I/O threads (even with `use_threads=False`),
    and such a thread still holding it when the interpreter exits takes the GIL during finalization:
    the process aborts ("terminate called without an active exception", SIGABRT), as `cotgen status`
    and `cotgen trace` did now and then after their last line.
    """
    if is_local(path):
        yield str(path)
        return
    with tempfile.TemporaryDirectory(prefix="cotgen-parquet-") as folder:
        yield str(local_copy(path, Path(folder)))


@contextmanager
def parquet_file(path: Path | UPath) -> Iterator[pq.ParquetFile]:
    """A Parquet file (local or in a bucket) to read in batches; see `arrow_readable` for why."""
    with arrow_readable(path) as local:
        with _named_if_damaged(path):
            parquet = pq.ParquetFile(local)
        with parquet:
            yield parquet


def read_parquet(path: Path | UPath, columns: list[str] | None = None, filters=None) -> pa.Table:
    """A Parquet file (local or in a bucket) as a table; see `arrow_readable` for why."""
    with arrow_readable(path) as local, _named_if_damaged(path):
        return pq.read_table(local, columns=columns, filters=filters)


@contextmanager
def _named_if_damaged(path: Path | UPath):
    """Arrow's error for a file that is not Parquet (truncated, overwritten) names no file: this one
    does, and says how the project's own Parquet files are made again."""
    try:
        yield
    except pa.ArrowInvalid as error:
        raise DamagedFile(
            f"{path} is damaged: it cannot be read as Parquet ({error}). Nothing was changed; "
            "materialize the asset that writes it again (source_problems for source_problems.parquet, "
            "hf_dataset for an exported file)"
        ) from None


_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}
_FULL = {errno.ENOSPC, errno.EDQUOT}


@contextmanager
def writing(path: Path | UPath):
    """Writes to `path` (and beside it) whose folder is read-only or whose disk is full end in one
    line naming the folder (StorageError), not a traceback. Every write is whole or absent, so the
    files there are as they were."""
    try:
        yield
    except OSError as error:
        if error.errno not in _READ_ONLY | _FULL:
            raise
        target = Path(error.filename) if error.filename else path
        if error.errno in _FULL:
            why = f"the disk holding {target.parent} is full"
            fix = "Free space there"
        else:
            why = f"the folder {target.parent} is read-only"
            fix = "Make it writable (or point COTGEN_DATA_DIR at a writable folder)"
        raise StorageError(
            f"cannot write {target}: {why} ({error.strerror}). No file there was changed or left "
            f"half-written (each is replaced whole or not at all). {fix}, then run again"
        ) from None


def process_exists(pid: int) -> bool:
    """Whether a process of this machine has that id (another user's too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def make_parents(path: Path | UPath) -> None:
    """A local file's folder; an object store has no folders to make."""
    if is_local(path):
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)


@contextmanager
def atomic_write(path: Path | UPath, mode: str = "wb"):
    """Write `path` so that readers see the old content or the new, never part of it.

    Local: a temporary file beside `path`, fsync, then rename over it. Object store: a local
    temporary file, uploaded once complete (one simple or resumable upload: the object is
    created or replaced only when the upload finishes; a failed or aborted one changes nothing).
    """
    if not is_local(path):
        with tempfile.TemporaryDirectory(prefix="cotgen-upload-") as folder:
            tmp = Path(folder) / path.name
            with open(tmp, mode) as handle:
                yield handle
            path.fs.put_file(str(tmp), path.path)
        return
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, mode) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def create_if_absent(path: Path | UPath, data: bytes) -> bool:
    """Write `path` only if nothing is there yet; False when something was (of two racing
    writers exactly one gets True).

    Local: the whole content in a temporary file, then a hard link to `path` (a link fails if the
    name exists, and readers never see the file half-written). Object store: an upload with the
    precondition that the object does not exist (GCS `ifGenerationMatch=0`, fsspec `mode="create"`).
    """
    if not is_local(path):
        try:
            path.fs.pipe_file(path.path, data, mode="create")
        except FileExistsError:
            return False
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def scratch_dir(prefix: str, task: str = "ingestion", undone: str = "nothing was ingested") -> Path:
    """A new local folder for state that must be on a local disk (SQLite, `os.pread`); the caller
    removes it. Under `$COTGEN_SCRATCH_DIR` if set, else the system's temporary folder. When it
    cannot be made, the error names the `task` that needed it and says what was `undone`."""
    root = os.environ.get("COTGEN_SCRATCH_DIR") or None
    try:
        if root:
            Path(root).mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    except OSError as error:
        where = f"COTGEN_SCRATCH_DIR={root!r}" if root else f"the temporary folder {tempfile.gettempdir()}"
        reason = "it is a file" if isinstance(error, FileExistsError) else error.strerror or error
        raise StorageError(
            f"{where} cannot hold {task}'s scratch folder: {reason}. Point "
            f"COTGEN_SCRATCH_DIR at a writable local folder (or unset it); {undone}"
        ) from None


def local_copy(path: Path | UPath, folder: Path) -> Path:
    """`path` itself when it is local, else a copy of it downloaded into the local `folder`."""
    if is_local(path):
        return path
    local = folder / path.name
    path.fs.get_file(path.path, str(local))
    return local


def remove_tree(path: Path | UPath) -> None:
    """Remove a folder (local) or every object under a prefix (object store), if there."""
    if is_local(path):
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.fs.rm(path.path, recursive=True)


class DamagedFile(ValueError):
    """A JSONL file of the project has lines that are not the records it should hold."""


MAX_LINES_NAMED = 20
_ID = re.compile(rb'"id"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _parse(line: bytes, required: tuple[str, ...], schema: tuple[Field, ...] = ()) -> tuple[dict | None, str]:
    """(the line's object, "") or (None, why it is no record): not a JSON object, a `required` key
    missing, or a field of the `schema` missing or of another type."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, "not JSON"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    missing = next((key for key in required if key not in record), None)
    if missing is not None:
        return None, f"{missing!r} is missing"
    if schema:
        record["sample"] = sample_of(record)
    problem = record_problem(record, schema) if schema else None
    return (None, problem) if problem else (record, "")


def damaged_file(
    path: Path | UPath, first: int, required: tuple[str, ...] = (), schema: tuple[Field, ...] = ()
) -> DamagedFile:
    """The error for a damaged file, naming every bad line from `first` on, why the first one is bad,
    and how to repair it."""
    bad, ids, why = [], [], ""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if number < first or not line.strip():
                continue
            record, problem = _parse(line, required, schema)
            if record is None:
                bad.append(number)
                why = why or f"line {number}: {problem}"
                found = _ID.search(line)
                if found:
                    ids.append(found.group(1).decode(errors="replace"))
    if schema:
        what = "JSON objects of the record schema in cotgen_assets/core/records.py"
    else:
        what = f"JSON objects with {', '.join(map(repr, required))}" if required else "JSON objects"
    return DamagedFile(
        f"{path} is damaged: line(s) {_numbers(bad)} are not {what}"
        + (f" ({why})" if schema else "")
        + (f" (ids on them: {', '.join(ids[:MAX_LINES_NAMED])})" if ids else "")
        + REPAIR
    )


REPAIR = (
    ". The file was left as it is. Repair those lines, or move them out of the file "
    "(e.g. into a file beside it) if they cannot be repaired: a sample moved out is asked, and paid, "
    "again by the next fill; an outcome moved out no longer counts as a try. Then run again."
)


def _numbers(numbers: list[int]) -> str:
    named = ", ".join(map(str, numbers[:MAX_LINES_NAMED]))
    return named + (f" and {len(numbers) - MAX_LINES_NAMED} more" if len(numbers) > MAX_LINES_NAMED else "")


def read_jsonl(path: Path | UPath, required: tuple[str, ...] = ()) -> Iterator[dict]:
    """Objects of a JSONL file, streamed; a missing file has none.

    Our files are written atomically, so a damaged line comes from a hand edit or a broken disk.
    It is never skipped (a sample skipped would be asked, and paid, again; an outcome skipped
    loses a try): DamagedFile names every bad line, and lines lacking a `required` key are bad too.
    """
    if not path.exists():
        return
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                record, _ = _parse(line, required)
                if record is None:
                    raise damaged_file(path, number, required)
                yield record


class _DigestTable:
    """id digest -> line digest: two 8-byte words an id in flat arrays (open addressing) up to
    `DIGESTS_IN_MEMORY` ids, then in a temporary SQLite file, so that reading a file of any size
    takes the same memory (a dict of id -> (hash, line number) took 200 MB a million ids)."""

    def __init__(self, capacity: int = 1 << 12):
        self.keys, self.values, self.size = array("Q", [0]) * capacity, array("Q", [0]) * capacity, 0
        self.on_disk: sqlite3.Connection | None = None

    def get_or_add(self, key: int, value: int) -> int | None:
        """The value stored under `key` (not 0); None when there was none and `value` is now stored."""
        if self.on_disk is not None:
            return self._get_or_add_on_disk(key, value)
        keys, mask = self.keys, len(self.keys) - 1
        slot = key & mask
        while keys[slot]:
            if keys[slot] == key:
                return self.values[slot]
            slot = (slot + 1) & mask
        keys[slot], self.values[slot] = key, value
        self.size += 1
        if 2 * self.size > len(keys):
            self._grow()
        return None

    def _grow(self) -> None:
        keys, values = self.keys, self.values
        if self.size > DIGESTS_IN_MEMORY:
            self._spill(keys, values)
            return
        self.__init__(2 * len(keys))
        for key, value in zip(keys, values):
            if key:
                self.get_or_add(key, value)

    def _spill(self, keys: array, values: array) -> None:
        self.on_disk = sqlite3.connect("")  # SQLite's private temporary file, gone when closed
        self.on_disk.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            "CREATE TABLE seen(key INTEGER PRIMARY KEY, line INTEGER);"
        )
        self.on_disk.executemany(
            "INSERT INTO seen VALUES (?, ?)", ((k - _SIGN, v - _SIGN) for k, v in zip(keys, values) if k)
        )
        self.keys = self.values = array("Q")

    def _get_or_add_on_disk(self, key: int, value: int) -> int | None:
        # SQLite's integers are signed
        added = self.on_disk.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (key - _SIGN, value - _SIGN))
        if added.rowcount == 1:
            return None
        return (
            self.on_disk.execute("SELECT line FROM seen WHERE key = ?", (key - _SIGN,)).fetchone()[0] + _SIGN
        )


DIGESTS_IN_MEMORY = 1 << 16  # ids; 2 MB of digests
_SIGN = 1 << 63


def _digest(data: str | bytes) -> int:
    """A nonzero 64-bit digest (Python's `hash`, as the line check always used)."""
    return (hash(data) & 0xFFFF_FFFF_FFFF_FFFF) or 1


def _repeats_its_first_line(path: Path | UPath, key: tuple[str, int], number: int, digest: int) -> bool:
    """Whether line `number` (of `digest`) repeats the first line of `key` (id, sample) word for word;
    False when no line before it holds that key (another key's digest collided with this one's).
    Another record there is damage: the file is read again to name its line, on this rare path only."""
    with path.open("rb") as handle:
        for first, line in enumerate(handle, 1):
            if first == number:
                return False
            if line.strip() and record_key(orjson.loads(line)) == key:
                if _digest(line.rstrip(b"\r\n")) == digest:
                    return True
                raise DamagedFile(
                    f"{path} is damaged: line {number} holds another record of id {key[0]!r} "
                    f"sample {key[1]}, already on line {first}: keep the one that is the sample" + REPAIR
                )
    return False


def samples_entries(
    stage: Stage,
    path: Path | UPath,
    skip: Callable[[tuple[str, int]], bool] = lambda key: False,
    repeated: Callable[[str], None] = lambda sample_id: None,
) -> Iterator[tuple[int, bytes, dict]]:
    """(offset, line, record) of a samples file, each (id, sample) once, streamed; records whose key `skip`
    says yes to are left out, and `repeated` hears the id of each line left out as a repeat.

    The one reader of `cot_`/`cod_` files: every line must be a record of the stage's schema
    (`records`), or the file is damaged, as for a torn line. A record written before records had
    `sample` is sample 0. A line repeated word for word counts once (a hand edit, a copy appended
    twice); another record under an (id, sample) already read is damage: nobody can tell which of
    the two is the sample. An 8-byte digest of each key and of its first line is kept (on disk past
    `DIGESTS_IN_MEMORY` keys); the file is read again only when they disagree.
    """
    if not path.exists():
        return
    seen = _DigestTable()  # (id, sample) digest -> digest of its first line
    offset = 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            offset, at = offset + len(line), offset
            if not line.strip():
                continue
            record, _ = _parse(line, (), stage.fields)
            if record is None:
                raise damaged_file(path, number, (), stage.fields)
            key = record_key(record)
            if skip(key):
                continue
            digest = _digest(line.rstrip(b"\r\n"))
            first = seen.get_or_add(_digest(f"{key[0]}\x1f{key[1]}"), digest)
            if first == digest or (first is not None and _repeats_its_first_line(path, key, number, digest)):
                repeated(record["id"])
                continue  # the same line again: one sample
            yield at, line, record


def samples_lines(
    stage: Stage,
    path: Path | UPath,
    skip: Callable[[tuple[str, int]], bool] = lambda key: False,
    repeated: Callable[[str], None] = lambda sample_id: None,
) -> Iterator[tuple[bytes, dict]]:
    """(line, record) of a samples file (`samples_entries` without the offsets)."""
    for _, line, record in samples_entries(stage, path, skip, repeated):
        yield line, record


def read_samples(stage: Stage, suffix: str) -> Iterator[dict]:
    """The records of a scenario's samples file (`samples_lines`: validated, each id once)."""
    for _, record in samples_lines(stage, samples_path(stage, suffix)):
        yield record
