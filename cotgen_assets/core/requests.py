"""The request lines of a submission and, beside each, the context that turns its answer into a
record. The request bodies come from `prompts`, asked as the `Ask` says (its thinking effort is
read here, and only here)."""

from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cotgen_assets.core.ask import Ask
from cotgen_assets.core.model_io import WireFormat
from cotgen_assets.core.prompts import generation_prompt, summarization_prompt
from cotgen_assets.core.sample_keys import problem_and_sample, request_key, sample_key, sample_of
from cotgen_assets.core.text import numbers_in

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


def generation_request_for(ask: Ask, wire: WireFormat) -> dict:
    """How `ask` asks every problem, as `wire`'s API receives it (part of its identity)."""
    return wire.request_body(generation_prompt("", "", ask.thinking_level))


def summarization_request_for(ask: Ask, wire: WireFormat) -> dict:
    """How `ask` asks for every draft, as `wire`'s API receives it."""
    return wire.request_body(summarization_prompt("", "", "", "", ask.thinking_level))


def rows_asked(
    id_column: pa.ChunkedArray, keys: Iterable[str]
) -> tuple[pa.BooleanArray, dict[str, list[int]]]:
    """What `generation_requests` needs to ask `keys` (`sample_keys`) of the source rows whose ids
    are `id_column`: a mask of the rows asked, decided once over the column (not once per batch),
    and the sample indices asked of each problem, in order."""
    samples: dict[str, list[int]] = {}
    for key in keys:
        problem_id, sample = problem_and_sample(key)
        samples.setdefault(problem_id, []).append(sample)
    asked = pc.is_in(id_column, value_set=pa.array(list(samples), pa.string())).combine_chunks()
    return asked, samples


def generation_requests(
    ask: Ask,
    problems: pq.ParquetFile,
    asked: pa.BooleanArray,
    samples: dict[str, list[int]],
    wire: WireFormat,
) -> Iterator[tuple[bytes, dict]]:
    """(request line, context) of each answer asked of the problem rows `asked` marks, in table
    order: one per sample index `samples` lists for the problem. The k answers of a problem are k
    lines of the same prompt under their own keys (`sample_keys`): Gemini 3 models refuse
    `candidateCount` > 1, so k answers cannot come from one request."""
    columns = [c for c in problems.schema_arrow.names if c in CONTEXT_COLUMNS]  # not the long solutions
    offset = 0
    for batch in problems.iter_batches(batch_size=PROBLEM_BATCH_ROWS, columns=columns):
        mask, offset = asked.slice(offset, batch.num_rows), offset + batch.num_rows
        for row in batch.filter(mask).to_pylist():
            context = _generation_context(ask, row)
            for sample in samples[row["problem_id"]]:
                key = sample_key(row["problem_id"], sample)
                prompt = generation_prompt(key, row["question"], ask.thinking_level)
                yield wire.input_line(prompt), context | {"sample": sample}


def _generation_context(ask: Ask, row: dict) -> dict:
    """What turns an answer to `row` into a record (the builders add nothing the context lacks)."""
    source = {
        "dataset": row["source_dataset"],
        "config": row["source_config"],
        "split": row["source_split"],
        "row": row["source_row"],
    }
    # level/type always present ("" where the dataset has none, not null: datasets
    # infers a null column from an all-null file and then cannot load MATH files with it)
    source |= {c: row.get(c) or "" for c in ("level", "type")}
    return {
        "id": row["problem_id"],
        "scenario": ask.scenario.name,
        "question": row["question"],
        "answer": row["answer"],
        "source": source,
    }


def summarization_request_of(record: dict, ask: Ask, wire: WireFormat) -> tuple[bytes, dict]:
    """(request line, context) that asks to cut a CoT record down to a draft."""
    thought, _, answer = record["cot"].removeprefix("<thought>").partition("</thought>\n")
    context = {k: record[k] for k in ("id", "scenario", "question", "answer", "source", "generation")}
    context["sample"] = sample_of(record)
    context["cot_predicted_answer"] = record["predicted_answer"]
    context["thought_numbers"] = sorted(numbers_in(thought))
    prompt = summarization_prompt(
        request_key(record), record["question"], thought, answer, ask.thinking_level
    )
    return wire.input_line(prompt), context
