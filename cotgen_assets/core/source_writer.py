"""The problems table of a scenario, written a batch at a time: read, filter, decontaminate, write.

A source of a million rows never sits in memory: each batch of `sources.BATCH_ROWS` rows is prepared,
decontaminated (`Decontaminator`, which keeps an 8-byte digest per kept problem for repeats) and
appended to the Parquet file, which is checked again the same way once written, by the same workers.
"""

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cotgen_assets.core.decontamination import (
    Decontamination,
    Decontaminator,
    WorkersLost,
    save_decontamination,
)
from cotgen_assets.core.scenarios import Benchmark, Scenario
from cotgen_assets.core.settings import number
from cotgen_assets.core.sources import BATCH_ROWS, SourceProblems, stream_source_problems
from cotgen_assets.core.storage import atomic_write


@dataclass
class WrittenProblems:
    """What `write_problems` wrote and left out, for the asset's metadata and logs."""

    num_rows: int
    schema: pa.Schema
    preview: list[dict]  # the first rows written
    dropped: list[str]  # matching rows without a reference answer
    num_matched: int
    dataset_rows: int
    contamination: Decontamination
    overlap: list[str]  # written problems that still match a checked benchmark (the asset check)


def workers(rows: int) -> int:
    """Processes that match `rows` problems against the benchmarks: more than one batch is worth
    `COTGEN_SOURCE_WORKERS` worker processes, each building its own benchmark indexes (seconds saved
    per million rows, not per thousand)."""
    return number("COTGEN_SOURCE_WORKERS") if rows > BATCH_ROWS else 1


def write_problems(
    scenario: Scenario, benchmarks: dict[str, Benchmark], path, preview_rows: int
) -> WrittenProblems:
    """Write the scenario's decontaminated problems to `path` (Parquet, atomically) a batch at a time,
    save the report of what was left out, and match the written table again."""
    source = stream_source_problems(scenario)
    preview: list[dict] = []
    with Decontaminator(scenario, benchmarks, workers(source.dataset_rows)) as decontaminator:
        try:
            num_rows = _write(source, decontaminator, path, preview, preview_rows)
        except WorkersLost as error:
            raise _lost(scenario, error, "nothing was written (the last table stands)") from None
        contamination = decontaminator.finish()
        save_decontamination(scenario.name, contamination)
        try:
            overlap = _overlapping_ids(path, decontaminator)
        except WorkersLost as error:
            raise _lost(scenario, error, "the table and its report were written, but not checked") from None
    return WrittenProblems(
        num_rows,
        source.schema,
        preview,
        source.dropped,
        source.num_matched,
        source.dataset_rows,
        contamination,
        overlap,
    )


def _write(
    source: SourceProblems, decontaminator: Decontaminator, path, preview: list[dict], preview_rows: int
) -> int:
    """The kept problems appended to `path` batch by batch (renamed into place only when complete)."""
    num_rows = 0
    with atomic_write(path) as handle, pq.ParquetWriter(handle, source.schema) as writer:
        for batch in source.batches:
            kept = decontaminator.filter(batch)
            writer.write_batch(kept)
            num_rows += kept.num_rows
            if len(preview) < preview_rows:
                preview.extend(kept.slice(0, preview_rows - len(preview)).to_pylist())
    return num_rows


def _lost(scenario: Scenario, error: WorkersLost, written: str) -> WorkersLost:
    return WorkersLost(
        f"scenario {scenario.name!r}: {error}; {written}. Materialize source_problems again; if a worker "
        f"dies again, free memory or set COTGEN_SOURCE_WORKERS=1 (each worker holds its own benchmark "
        f"indexes)."
    )


def _overlapping_ids(path: Path, decontaminator: Decontaminator) -> list[str]:
    """The written problems that match a checked benchmark, read back a batch at a time."""
    with path.open("rb") as handle:
        parquet = pq.ParquetFile(handle, pre_buffer=False)
        batches = parquet.iter_batches(BATCH_ROWS, columns=["problem_id", "question"], use_threads=False)
        return decontaminator.overlapping(batches)
