"""The request lines of a submission and, beside each, the context that turns its answer into a
record. The request bodies themselves come from `prompts`."""

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from cotgen_assets.core.prompts import generation_request, request_line, summarization_request
from cotgen_assets.core.quality import numbers_in

PROBLEM_BATCH_ROWS = 10_000  # source rows turned into requests at a time
CONTEXT_COLUMNS = {
    "problem_id",
    "question",
    "answer",
    "source_dataset",
    "source_config",
    "source_split",
    "source_row",
    "level",
    "type",
}


def generation_requests(
    scenario: str, problems: pq.ParquetFile, asked: pa.BooleanArray, thinking_level: str
) -> Iterator[tuple[bytes, dict]]:
    """(request line, context) of each problem row `asked` marks, in table order."""
    columns = [c for c in problems.schema_arrow.names if c in CONTEXT_COLUMNS]  # not the long solutions
    offset = 0
    for batch in problems.iter_batches(batch_size=PROBLEM_BATCH_ROWS, columns=columns):
        mask, offset = asked.slice(offset, batch.num_rows), offset + batch.num_rows
        for row in batch.filter(mask).to_pylist():
            source = {
                "dataset": row["source_dataset"],
                "config": row["source_config"],
                "split": row["source_split"],
                "row": row["source_row"],
            }
            # level/type always present ("" where the dataset has none, not null: datasets
            # infers a null column from an all-null file and then cannot load MATH files with it)
            source |= {c: row.get(c) or "" for c in ("level", "type")}
            context = {
                "id": row["problem_id"],
                "scenario": scenario,
                "question": row["question"],
                "answer": row["answer"],
                "source": source,
            }
            yield (
                request_line(row["problem_id"], generation_request(row["question"], thinking_level)),
                context,
            )


def summarization_request_of(record: dict, thinking_level: str) -> tuple[bytes, dict]:
    """(request line, context) that asks to cut a CoT record down to a draft."""
    thought, _, answer = record["cot"].removeprefix("<thought>").partition("</thought>\n")
    context = {k: record[k] for k in ("id", "scenario", "question", "answer", "source", "generation")}
    context["cot_predicted_answer"] = record["predicted_answer"]
    context["thought_numbers"] = sorted(numbers_in(thought))
    request = summarization_request(record["question"], thought, answer, thinking_level)
    return request_line(record["id"], request), context
