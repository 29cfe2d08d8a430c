"""Samples files written by hand, as a user's edit or a probe leaves them: whole records in the schema
of `core/records.py`, one JSON object a line."""

from pathlib import Path

import orjson

from cotgen_assets.core.stages import GENERATION


def made_by(cost: float = 0.001) -> dict:
    return {
        "model": "gemini-3.1-pro-preview",
        "model_version": "gemini-3.1-pro-preview",
        "batch": "batches/by-hand",
        "submission": "by-hand",
        "prompt_version": GENERATION.prompt_version,
        "finish_reason": "STOP",
        "usage": {"input_tokens": 100, "cached_tokens": 0, "thinking_tokens": 300, "output_tokens": 50},
        "cost_usd": cost,
        "offline": True,
    }


def cot_record(problem_id: str, correct=True, answer: str = "18") -> dict:
    """A CoT record of problem `problem_id` (`<scenario>-<row>`), graded `correct`."""
    scenario, _, row = problem_id.rpartition("-")
    cot = f"<thought>Add them up.</thought>\nThe answer is \\boxed{{{answer}}}."
    return {
        "id": problem_id,
        "scenario": scenario,
        "question": f"problem {row}",
        "answer": answer,
        "cot": cot,
        "messages": [{"role": "user", "content": f"problem {row}"}, {"role": "assistant", "content": cot}],
        "predicted_answer": answer,
        "correct": correct,
        "source": {
            "dataset": "gsm8k",
            "config": "main",
            "split": "train",
            "row": int(row),
            "level": "",
            "type": "",
        },
        "generation": made_by(),
    }


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(record) + b"\n" for record in records))
    return path
