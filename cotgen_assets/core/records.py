"""The CoT and CoD records (DESIGN §4): their fields, described once, and their builders.

`COT_FIELDS` / `COD_FIELDS` are the one description of a record: the builders below produce
exactly these keys, the samples assets' column schemas are made from them, and a test checks
the README's record section against them.
"""

from dataclasses import dataclass

from cotgen_assets.core.batch_output import ResultLine, Usage
from cotgen_assets.core.grading import extract_predicted_answer
from cotgen_assets.core.prompts import parse_draft
from cotgen_assets.core.quality import numbers_in

GENERATION = "generation"  # the stage that makes CoT records
SUMMARIZATION = "summarization"  # the stage that makes CoD records
STAGES = (GENERATION, SUMMARIZATION)


@dataclass(frozen=True)
class Field:
    """One top-level record field: its name, its type as the UI shows it, what it holds."""

    name: str
    type: str
    description: str


MADE_BY_KEYS = (
    "model",
    "model_version",
    "batch",
    "submission",
    "prompt_version",
    "finish_reason",
    "usage",
    "cost_usd",
    "offline",
)
_MADE_BY = "{" + ", ".join(MADE_BY_KEYS) + "}"

_HEAD = (
    Field("id", "string", "stable problem id, `<scenario>-<source row>`: same problem, same id, forever"),
    Field("scenario", "string", "the scenario (partition) the problem belongs to"),
    Field("question", "string", "the problem text, from the source dataset"),
    Field("answer", "string", "the reference final answer (GSM8K: after `####`; MATH: the last `\\boxed{}`)"),
)
_SOURCE = Field(
    "source", "struct", "the source row: {dataset, config, split, row, level, type} (level/type '' for GSM8K)"
)
_GENERATION = Field(
    "generation", "struct", f"how the CoT was made: {_MADE_BY}; usage = input/cached/thinking/output tokens"
)
COT_FIELDS = (
    *_HEAD,
    Field("cot", "string", "`<thought>`thought summary`</thought>` + newline + the model's answer text"),
    Field("messages", "list<struct>", "[user question, assistant cot]: ready for SFT"),
    Field("predicted_answer", "string", "the final answer read from the model's answer text"),
    Field("correct", "bool", "predicted_answer matches answer (exact/numeric, then math-verify)"),
    _SOURCE,
    _GENERATION,
)
COD_FIELDS = (
    *_HEAD,
    Field(
        "cod", "string", "`<draft>`a few words a step, a step a line`</draft>`, newline + `\\boxed{answer}`"
    ),
    Field("messages", "list<struct>", "[user question, assistant cod]: ready for SFT"),
    Field("predicted_answer", "string", "the draft's final answer"),
    Field("correct", "bool", "predicted_answer matches answer"),
    Field("agrees_with_cot", "bool", "predicted_answer matches the CoT sample's predicted_answer"),
    Field("unsupported_draft_numbers", "list<string>", "numbers in the draft that are not in its thought"),
    _SOURCE,
    _GENERATION,
    Field("summarization", "struct", f"how the draft was made: {_MADE_BY}"),
)
FIELDS = {GENERATION: COT_FIELDS, SUMMARIZATION: COD_FIELDS}
MADE_BY = {GENERATION: "generation", SUMMARIZATION: "summarization"}  # the block a stage fills in


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


BUILDERS = {GENERATION: cot_record, SUMMARIZATION: cod_record}


def thinking_tokens(record: dict) -> int:
    """The thought's length in tokens (a CoD record carries its CoT's `generation` block)."""
    return record["generation"]["usage"]["thinking_tokens"]


def draft_tokens(record: dict) -> int:
    """A CoD record's draft length in tokens."""
    return record["summarization"]["usage"]["output_tokens"]
