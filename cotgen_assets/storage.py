"""Where the project's files live, and writes that never leave a torn file behind."""

import os
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


def read_jsonl(path: Path) -> Iterator[dict]:
    """Objects of a JSONL file, streamed. Our files are written atomically, so a line that does not
    parse can only come from a hand edit; it is skipped rather than stopping a plan or a trace."""
    if not path.exists():
        return
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
