"""The problems table of a scenario, written a batch at a time: read, filter, decontaminate, write.

A source of a million rows never sits in memory: each batch of `sources.BATCH_ROWS` rows is prepared,
decontaminated (`Decontaminator`, which keeps an 8-byte digest per kept problem for repeats) and
appended to the Parquet file, which is checked again the same way once written.
"""

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cotgen_assets.core.decontamination import Decontamination, Decontaminator, verify_no_overlap
from cotgen_assets.core.scenarios import Benchmark, Scenario
from cotgen_assets.core.settings import number
from cotgen_assets.core.sources import BATCH_ROWS, stream_source_problems
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


def workers(rows: int) -> int:
    """Processes that match `rows` problems against the benchmarks: more than one batch is worth
    `COTGEN_SOURCE_WORKERS` forked processes (seconds saved per million rows, not per thousand)."""
    return number("COTGEN_SOURCE_WORKERS") if rows > BATCH_ROWS else 1


def write_problems(
    scenario: Scenario, benchmarks: dict[str, Benchmark], path, preview_rows: int
) -> WrittenProblems:
    """Write the scenario's decontaminated problems to `path` (Parquet, atomically), a batch at a time."""
    source = stream_source_problems(scenario)
    preview: list[dict] = []
    num_rows = 0
    with atomic_write(path) as handle, pq.ParquetWriter(handle, source.schema) as writer:
        with Decontaminator(scenario, benchmarks, workers(source.dataset_rows)) as decontaminator:
            for batch in source.batches:
                kept = decontaminator.filter(batch)
                writer.write_batch(kept)
                num_rows += kept.num_rows
                if len(preview) < preview_rows:
                    preview.extend(kept.slice(0, preview_rows - len(preview)).to_pylist())
            contamination = decontaminator.finish()
    return WrittenProblems(
        num_rows,
        source.schema,
        preview,
        source.dropped,
        source.num_matched,
        source.dataset_rows,
        contamination,
    )


def overlapping_ids(path: Path, benchmarks: list[Benchmark]) -> list[str]:
    """The written problems that match one of these benchmarks, read back a batch at a time."""
    with path.open("rb") as handle:
        parquet = pq.ParquetFile(handle, pre_buffer=False)
        batches = parquet.iter_batches(BATCH_ROWS, columns=["problem_id", "question"], use_threads=False)
        return verify_no_overlap(batches, benchmarks, workers(parquet.metadata.num_rows))
