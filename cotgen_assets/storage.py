"""Where the project's files live, and writes that never leave a torn file behind."""

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

from cotgen_assets.records import GENERATION


def data_dir() -> Path:
    """`$COTGEN_DATA_DIR`, default `./data` (relative to where Dagster runs: the project root)."""
    return Path(os.environ.get("COTGEN_DATA_DIR") or "data").absolute()


def scenario_dir(scenario: str) -> Path:
    """Per-scenario working files (source Parquet, batch requests and results); writers create it."""
    return data_dir() / scenario


def source_problems_path(scenario: str) -> Path:
    return scenario_dir(scenario) / "source_problems.parquet"


def samples_path(stage: str, suffix: str) -> Path:
    """`cot_<suffix>.jsonl` for generation, `cod_<suffix>.jsonl` for summarization."""
    return data_dir() / f"{'cot' if stage == GENERATION else 'cod'}_{suffix}.jsonl"


@contextmanager
def atomic_write(path: Path, mode: str = "wb"):
    """Write to a temporary file beside `path`, fsync, then rename over it.

    A crash at any point leaves either the old file or the new one, never half of one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class DamagedFile(ValueError):
    """A JSONL file of the project has lines that are not the records it should hold."""


MAX_LINES_NAMED = 20
_ID = re.compile(rb'"id"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _record(line: bytes, required: tuple[str, ...]) -> dict | None:
    """The line's object, or None when it is not a JSON object with the `required` keys."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or any(key not in record for key in required):
        return None
    return record


def damaged_file(path: Path, first: int, required: tuple[str, ...] = ()) -> DamagedFile:
    """The error for a damaged file, naming every bad line from `first` on and how to repair it."""
    bad, ids = [], []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if number >= first and line.strip() and _record(line, required) is None:
                bad.append(number)
                found = _ID.search(line)
                if found:
                    ids.append(found.group(1).decode(errors="replace"))
    what = f"JSON objects with {', '.join(map(repr, required))}" if required else "JSON objects"
    named = ", ".join(map(str, bad[:MAX_LINES_NAMED])) + (
        f" and {len(bad) - MAX_LINES_NAMED} more" if len(bad) > MAX_LINES_NAMED else ""
    )
    return DamagedFile(
        f"{path} is damaged: line(s) {named} are not {what}"
        + (f" (ids on them: {', '.join(ids[:MAX_LINES_NAMED])})" if ids else "")
        + ". The file was left as it is. Repair those lines, or move them out of the file "
        "(e.g. into a file beside it) if they cannot be repaired: a sample moved out is asked, and paid, "
        "again by the next fill; an outcome moved out no longer counts as a try. Then run again."
    )


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> Iterator[dict]:
    """Objects of a JSONL file, streamed; a missing file has none.

    Our files are written atomically, so a damaged line comes from a hand edit or a broken disk.
    It is never skipped (a sample skipped would be asked, and paid, again; an outcome skipped
    loses a try): DamagedFile names every bad line, and lines lacking a `required` key are bad too.
    """
    if not path.exists():
        return
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                record = _record(line, required)
                if record is None:
                    raise damaged_file(path, number, required)
                yield record
