"""CoT and CoD records: built from batch results, graded, merged into the JSONL files (DESIGN §4).

Ingestion streams: results are read line by line, joined by key with the shard's context
(at most one shard in memory), graded in chunks, and written to a temporary file; the merge
then streams the old samples file once and renames the new one over it. Memory follows the
size of one shard, not the number of samples.
"""

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from cotgen_assets.gemini import SUCCEEDED_STATES
from cotgen_assets.grading import extract_predicted_answer, grade_many
from cotgen_assets.pricing import cost_usd, load_prices
from cotgen_assets.prompts import parse_draft
from cotgen_assets.quality import numbers_in
from cotgen_assets.results import Usage, parse_result_line
from cotgen_assets.storage import atomic_write, data_dir
from cotgen_assets.submissions import GENERATION, NOT_RUN, Submission, read_jsonl

GRADE_CHUNK = 1000
MISSING = "missing"  # a request with no line in the results file
BAD_DRAFT = "bad_draft"  # a summarization answer that is not the draft JSON asked for


def samples_path(stage: str, suffix: str) -> Path:
    """`cot_<suffix>.jsonl` for generation, `cod_<suffix>.jsonl` for summarization."""
    return data_dir() / f"{'cot' if stage == GENERATION else 'cod'}_{suffix}.jsonl"


@dataclass
class IngestStats:
    """What one ingestion saw; every requested key ends in exactly one status."""

    statuses: Counter = field(default_factory=Counter)
    usage: Usage = Usage()
    cost_usd: float = 0.0
    num_new: int = 0
    num_new_correct: int = 0
    unknown_keys: int = 0
    duplicate_keys: int = 0

    @property
    def num_failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != "ok")


def usage_dict(usage: Usage) -> dict:
    return {"input_tokens": usage.input_tokens, "cached_tokens": usage.cached_tokens,
            "thinking_tokens": usage.thinking_tokens, "output_tokens": usage.output_tokens}


def lineage(submission: Submission, batch: str, line, cost: float) -> dict:
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


def cot_record(context: dict, line, block: dict) -> tuple[dict, list]:
    """A CoT record and the (field, predicted, reference) gradings it still needs."""
    cot = f"<thought>{line.thought.strip()}</thought>\n{line.answer.strip()}"
    predicted = extract_predicted_answer(line.answer)
    record = {
        "id": context["id"],
        "scenario": context["scenario"],
        "question": context["question"],
        "answer": context["answer"],
        "cot": cot,
        "messages": [{"role": "user", "content": context["question"]},
                     {"role": "assistant", "content": cot}],
        "predicted_answer": predicted,
        "correct": None,
        "source": context["source"],
        "generation": block,
    }
    return record, [("correct", predicted, context["answer"])]


def cod_record(context: dict, line, block: dict) -> tuple[dict, list]:
    """A CoD record from a summarization answer; raises ValueError if it is not a draft."""
    steps, final_answer = parse_draft(line.answer)
    cod = "<draft>" + "\n".join(steps) + "</draft>\n" + f"\\boxed{{{final_answer}}}"
    record = {
        "id": context["id"],
        "scenario": context["scenario"],
        "question": context["question"],
        "answer": context["answer"],
        "cod": cod,
        "messages": [{"role": "user", "content": context["question"]},
                     {"role": "assistant", "content": cod}],
        "predicted_answer": final_answer,
        "correct": None,
        "agrees_with_cot": None,
        "unsupported_draft_numbers": sorted(numbers_in("\n".join(steps)) - set(context["thought_numbers"])),
        "source": context["source"],
        "generation": context["generation"],
        "summarization": block,
    }
    return record, [("correct", final_answer, context["answer"]),
                    ("agrees_with_cot", final_answer, context["cot_predicted_answer"])]


def ingest_submission(submission: Submission, samples_file: Path,
                      observe: Callable[[dict], None] = lambda record: None) -> IngestStats:
    """Turn a submission's downloaded results into records merged into `samples_file`.

    Shards without a results file (their job failed) are skipped: their problems get no
    outcome, so the next `fill` asks for them again without counting a try. Writes the
    submission's `outcomes.jsonl` and `summary.json`. Safe to repeat: the same records
    replace themselves and the outcomes are rewritten, not appended.
    `observe` sees every record of the merged file (for file-wide statistics).
    """
    generation = submission.stage == GENERATION
    build = cot_record if generation else cod_record
    stats = IngestStats()
    prices = load_prices()  # once: resolving the price file per line cost more than the parse
    new_path = submission.folder / "new_samples.jsonl"
    new_ids: set[str] = set()
    with atomic_write(submission.folder / "outcomes.jsonl") as outcomes, open(new_path, "wb") as new:
        for shard, batch in zip(submission.shards, submission.batch_names):
            results = submission.results_path(shard)
            if not results.exists():
                continue
            contexts = {c["id"]: c for c in read_jsonl(submission.context_path(shard))}
            seen: set[str] = set()
            pending: list[tuple[dict, list]] = []

            def flush():
                pairs = [(pred, ref) for _, gradings in pending for _, pred, ref in gradings]
                verdicts = iter(grade_many(pairs))
                for record, gradings in pending:
                    for name, _, _ in gradings:
                        record[name] = next(verdicts)
                    new.write(orjson.dumps(record) + b"\n")
                    stats.num_new_correct += bool(record["correct"])
                pending.clear()

            def outcome(key: str, status: str, reason: str | None, cost: float):
                stats.statuses[status] += 1
                outcomes.write(orjson.dumps({"id": key, "batch": batch, "status": status,
                                             "reason": reason, "cost_usd": cost}) + b"\n")

            with open(results, "rb") as lines:
                for raw in lines:
                    if not raw.strip():
                        continue
                    line = parse_result_line(raw.rstrip(b"\r\n"), require_thoughts=generation)
                    if line.key is None or line.key not in contexts:
                        stats.unknown_keys += 1  # unparsable without a key, or a key we never sent
                        continue
                    if line.key in seen:
                        stats.duplicate_keys += 1  # the first answer for a key counts
                        continue
                    seen.add(line.key)
                    cost = cost_usd(submission.model, line.usage, batch=True, prices=prices)
                    stats.usage += line.usage
                    stats.cost_usd += cost
                    if not line.ok:
                        outcome(line.key, line.status, line.reason, cost)
                        continue
                    try:
                        pending.append(build(contexts[line.key], line, lineage(submission, batch, line, cost)))
                    except ValueError as error:
                        outcome(line.key, BAD_DRAFT, str(error), cost)
                        continue
                    outcome(line.key, "ok", None, cost)
                    new_ids.add(line.key)
                    if len(pending) >= GRADE_CHUNK:
                        flush()
            flush()
            state = dict(zip(submission.shards, submission.job_states)).get(shard)
            if state is None or state in SUCCEEDED_STATES:
                status, reason = MISSING, "no line for this request in the results file"
            else:  # e.g. cancelled half-way: the rest was never run (nor paid), so it is no try
                status, reason = NOT_RUN, f"its batch job ended {state} before answering it"
            for key in contexts.keys() - seen:
                outcome(key, status, reason, 0.0)
    stats.num_new = len(new_ids)
    merge_samples(samples_file, new_path, new_ids, observe)
    new_path.unlink(missing_ok=True)
    with atomic_write(submission.folder / "summary.json", "w") as handle:
        json.dump({"cost_usd": stats.cost_usd, "statuses": dict(stats.statuses),
                   "num_new": stats.num_new, **usage_dict(stats.usage)}, handle)
    return stats


def merge_samples(samples_file: Path, new_path: Path, new_ids: set[str],
                  observe: Callable[[dict], None]) -> None:
    """Old records not replaced by a new one, then the new ones; atomically renamed over the file."""
    with atomic_write(samples_file) as out:
        if samples_file.exists():
            with open(samples_file, "rb") as old:
                for raw in old:
                    if not raw.strip():
                        continue
                    record = orjson.loads(raw)
                    if record["id"] in new_ids:
                        continue
                    out.write(raw if raw.endswith(b"\n") else raw + b"\n")
                    observe(record)
        with open(new_path, "rb") as new:
            for raw in new:
                out.write(raw)
                observe(orjson.loads(raw))


def iter_samples(path: Path):
    """The records of a samples file, streamed."""
    return read_jsonl(path)
