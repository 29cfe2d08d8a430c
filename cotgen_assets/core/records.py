"""The CoT and CoD records: their fields, described once, and their builders.

`COT_FIELDS` / `COD_FIELDS` are the one description of a record: each field carries its Arrow
type and what it holds. The builders below produce exactly these keys; the export's Parquet
schema, the samples assets' column schemas and docs/records.md are made from them.
Which stage makes which record is said in `stages`.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace

import pyarrow as pa

from cotgen_assets.core.batch_output import ResultLine
from cotgen_assets.core.grading import extract_predicted_answer
from cotgen_assets.core.model_io import Usage
from cotgen_assets.core.prompts import parse_draft
from cotgen_assets.core.sample_keys import MAX_SAMPLES_PER_PROBLEM, sample_of
from cotgen_assets.core.text import numbers_in


@dataclass(frozen=True)
class Field:
    """One top-level record field: its name, its Arrow type, what it holds."""

    name: str
    arrow: pa.DataType
    description: str
    # May be null or absent: an answer with no final answer in it; a field described after records were
    # written (the files hold them without it), which is every field added from now on.
    nullable: bool = False

    @property
    def type(self) -> str:
        """The type as the UI and the docs show it: `struct`, `list<string>`, `bool`, ..."""
        return short_type(self.arrow)


def short_type(arrow: pa.DataType) -> str:
    if pa.types.is_struct(arrow):
        return "struct"
    if pa.types.is_list(arrow):
        return f"list<{short_type(arrow.value_type)}>"
    return str(arrow)


def _names(struct: pa.StructType) -> str:
    return "{" + ", ".join(f.name for f in struct) + "}"


USAGE = pa.struct(
    [(k, pa.int64()) for k in ("input_tokens", "cached_tokens", "thinking_tokens", "output_tokens")]
)
MADE_BY_TYPE = pa.struct(
    [
        ("model", pa.string()),
        ("model_version", pa.string()),
        ("batch", pa.string()),
        ("submission", pa.string()),
        ("prompt_version", pa.string()),
        ("finish_reason", pa.string()),
        ("usage", USAGE),
        ("cost_usd", pa.float64()),
        ("offline", pa.bool_()),
    ]
)
MADE_BY_KEYS = tuple(f.name for f in MADE_BY_TYPE)
SOURCE = pa.struct(
    [(k, pa.string()) for k in ("dataset", "config", "split")]
    + [("row", pa.int64()), ("level", pa.string()), ("type", pa.string())]
)
MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))

_HEAD = (
    Field("id", pa.string(), "stable problem id, `<scenario>-<source row>`: same problem, same id, forever"),
    Field(
        "sample",
        pa.int64(),
        "0-based index of this answer among the problem's answers; a record is identified by (id, sample)",
    ),
    Field("scenario", pa.string(), "the scenario (partition) the problem belongs to"),
    Field("question", pa.string(), "the problem text, from the source dataset"),
    Field(
        "answer", pa.string(), "the reference final answer (GSM8K: after `####`; MATH: the last `\\boxed{}`)"
    ),
)
_SOURCE = Field("source", SOURCE, f"the source row: {_names(SOURCE)} (level/type '' for GSM8K)")
_GENERATION = Field(
    "generation",
    MADE_BY_TYPE,
    f"how the CoT was made: {_names(MADE_BY_TYPE)}; usage = input/cached/thinking/output tokens",
)
COT_FIELDS = (
    *_HEAD,
    Field("cot", pa.string(), "`<thought>`thought summary`</thought>` + newline + the model's answer text"),
    Field("messages", MESSAGES, "[user question, assistant cot]: ready for SFT"),
    Field(
        "predicted_answer", pa.string(), "the final answer read from the model's answer text", nullable=True
    ),
    Field("correct", pa.bool_(), "predicted_answer matches answer (exact/numeric, then math-verify)"),
    _SOURCE,
    _GENERATION,
)
COD_FIELDS = (
    *_HEAD,
    Field(
        "cod",
        pa.string(),
        "`<draft>`a few words a step, a step a line`</draft>`, newline + `\\boxed{answer}`",
    ),
    Field("messages", MESSAGES, "[user question, assistant cod]: ready for SFT"),
    Field("predicted_answer", pa.string(), "the draft's final answer", nullable=True),
    Field("correct", pa.bool_(), "predicted_answer matches answer"),
    Field("agrees_with_cot", pa.bool_(), "predicted_answer matches the CoT sample's predicted_answer"),
    Field(
        "unsupported_draft_numbers", pa.list_(pa.string()), "numbers in the draft that are not in its thought"
    ),
    _SOURCE,
    _GENERATION,
    Field("summarization", MADE_BY_TYPE, f"how the draft was made: {_names(MADE_BY_TYPE)}"),
)

# The export's per-problem configs, made from the CoT records (publish/problem_rows.py).
_PROBLEM_HEAD = {f.name: f for f in _HEAD if f.name != "sample"}  # a problem's row has all its samples
PROBLEM_FIELDS = (
    replace(_PROBLEM_HEAD["id"], description="the problem id, as in `cot` and `cod`"),
    *(field for name, field in _PROBLEM_HEAD.items() if name != "id"),
    Field(
        "samples", pa.list_(pa.int64()), "the graded answers' `sample` indices; the lists below follow them"
    ),
    Field("generations", pa.list_(pa.string()), "the CoT text (`cot`) of each answer"),
    Field("predicted_answers", pa.list_(pa.string()), "each answer's predicted_answer"),
    Field("correctness", pa.list_(pa.bool_()), "each answer's grade"),
    Field("pass_rate", pa.float64(), "correct answers / graded answers"),
    Field(
        "majority_answer",
        pa.string(),
        "the answer most samples gave, equivalent answers counted together (tie: the one given first)",
    ),
    Field("majority_correct", pa.bool_(), "majority_answer is graded correct"),
)
PAIR_FIELDS = (
    Field("id", pa.string(), "the problem id"),
    Field("prompt", MESSAGES, "[user question]: TRL's conversational preference format"),
    Field("chosen", MESSAGES, "[assistant turn]: a CoT graded correct"),
    Field("rejected", MESSAGES, "[assistant turn]: a CoT of the same problem graded wrong"),
    Field("chosen_sample", pa.int64(), "the chosen answer's `sample`"),
    Field("rejected_sample", pa.int64(), "the rejected answer's `sample`"),
)


def record_key(record: dict) -> tuple[str, int]:
    """What identifies a record: (problem id, sample)."""
    return record["id"], sample_of(record)


_PYTHON_TYPES = {  # exact types, as orjson reads them (so a bool is no int)
    pa.types.is_string: {str},
    pa.types.is_boolean: {bool},
    pa.types.is_integer: {int},
    pa.types.is_floating: {int, float},
}
Check = Callable[[object], str | None]  # a value -> what is wrong with it, from its place on, or None


def _check_of(arrow: pa.DataType) -> Check:
    """A check of values of `arrow`, built once per type: records are read by the million. A member
    of a struct or list may be null."""
    if pa.types.is_struct(arrow):
        members = [(f.name, _check_of(f.type)) for f in arrow]

        def check_struct(value):
            if value is None:
                return None
            if type(value) is not dict:
                return f" is {value!r:.60}, not a struct"
            for name, check in members:
                problem = check(value.get(name))
                if problem:
                    return f".{name}{problem}"
            return None

        return check_struct
    if pa.types.is_list(arrow):
        check_item = _check_of(arrow.value_type)

        def check_list(value):
            if value is None:
                return None
            if type(value) is not list:
                return f" is {value!r:.60}, not a list"
            return next((f"[]{problem}" for item in value if (problem := check_item(item))), None)

        return check_list
    allowed = next(types for test, types in _PYTHON_TYPES.items() if test(arrow))
    name = short_type(arrow)

    def check_value(value):
        if value is None or type(value) in allowed:
            return None
        return f" is {value!r:.60} (a {type(value).__name__}), not a {name}"

    return check_value


_RECORD_CHECKS: dict[int, tuple[tuple[Field, ...], Callable[[dict], str | None]]] = {}


def _record_check(fields: tuple[Field, ...]) -> Callable[[dict], str | None]:
    checks = [(f.name, f.nullable, _check_of(f.arrow)) for f in fields]

    def check_record(record: dict) -> str | None:
        for name, nullable, check in checks:
            value = record.get(name)
            if value is None:
                if nullable:
                    continue
                return f"{name!r} is {'null' if name in record else 'missing'}"
            problem = check(value)
            if problem:
                return f"{name!r}{problem}"
        sample = sample_of(record)
        if type(sample) is int and not 0 <= sample < MAX_SAMPLES_PER_PROBLEM:  # no ask numbers it so
            return f"'sample' is {sample}, not a sample number from 0 to {MAX_SAMPLES_PER_PROBLEM - 1}"
        return None

    return check_record


def record_problem(record: dict, fields: tuple[Field, ...]) -> str | None:
    """What makes `record` no record of these fields (a field missing, or of another type), else None.

    `"correct": "false"` is a string, and a string is true: read as it is, it would count as correct.
    """
    cached = _RECORD_CHECKS.get(id(fields))
    if cached is None or cached[0] is not fields:
        cached = _RECORD_CHECKS[id(fields)] = (fields, _record_check(fields))
    return cached[1](record)


def arrow_schema(fields: tuple[Field, ...]) -> pa.Schema:
    """Records as Arrow columns, in field order (the export's Parquet schema)."""
    return pa.schema([(f.name, f.arrow) for f in fields])


def field_table(fields: tuple[Field, ...]) -> str:
    """Fields as a markdown table (docs/records.md and the dataset card show it)."""
    rows = [f"| `{f.name}` | {f.type} | {f.description.replace('|', '/')} |" for f in fields]
    return "\n".join(["| field | type | meaning |", "|---|---|---|", *rows])


def usage_dict(usage: Usage) -> dict:
    return {
        "input_tokens": usage.input_tokens,
        "cached_tokens": usage.cached_tokens,
        "thinking_tokens": usage.thinking_tokens,
        "output_tokens": usage.output_tokens,
    }


def made_by(submission, batch: str, line: ResultLine, cost: float) -> dict:
    """The `generation` / `summarization` block of a record: who made it, how, for how much."""
    return {
        "model": submission.model,
        "model_version": line.model_version,
        "batch": batch,
        "submission": submission.submission_id,
        "prompt_version": submission.prompt_version,
        "finish_reason": line.finish_reason,
        "usage": usage_dict(line.usage),
        "cost_usd": cost,
        "offline": submission.offline,
    }


def cot_record(context: dict, line: ResultLine, block: dict) -> tuple[dict, list]:
    """A CoT record and the (field, predicted, reference) gradings it still needs."""
    cot = f"<thought>{line.thought.strip()}</thought>\n{line.answer.strip()}"
    predicted = extract_predicted_answer(line.answer)
    record = {
        "id": context["id"],
        "sample": sample_of(context),
        "scenario": context["scenario"],
        "question": context["question"],
        "answer": context["answer"],
        "cot": cot,
        "messages": [
            {"role": "user", "content": context["question"]},
            {"role": "assistant", "content": cot},
        ],
        "predicted_answer": predicted,
        "correct": None,
        "source": context["source"],
        "generation": block,
    }
    return record, [("correct", predicted, context["answer"])]


def cod_record(context: dict, line: ResultLine, block: dict) -> tuple[dict, list]:
    """A CoD record from a summarization answer; raises ValueError if it is not a draft."""
    steps, final_answer = parse_draft(line.answer)
    cod = "<draft>" + "\n".join(steps) + "</draft>\n" + f"\\boxed{{{final_answer}}}"
    record = {
        "id": context["id"],
        "sample": sample_of(context),
        "scenario": context["scenario"],
        "question": context["question"],
        "answer": context["answer"],
        "cod": cod,
        "messages": [
            {"role": "user", "content": context["question"]},
            {"role": "assistant", "content": cod},
        ],
        "predicted_answer": final_answer,
        "correct": None,
        "agrees_with_cot": None,
        "unsupported_draft_numbers": sorted(numbers_in("\n".join(steps)) - set(context["thought_numbers"])),
        "source": context["source"],
        "generation": context["generation"],
        "summarization": block,
    }
    return record, [
        ("correct", final_answer, context["answer"]),
        ("agrees_with_cot", final_answer, context["cot_predicted_answer"]),
    ]


def thinking_tokens(record: dict) -> int:
    """The thought's length in tokens (a CoD record carries its CoT's `generation` block)."""
    return record["generation"]["usage"]["thinking_tokens"]


def draft_tokens(record: dict) -> int:
    """A CoD record's draft length in tokens."""
    return record["summarization"]["usage"]["output_tokens"]
