"""Hand-made submissions and results files, as if a batch had answered: for the ingestion tests and
for a second machine's samples in the two-instances test."""

import orjson

from cotgen_assets.core.sample_keys import request_key, sample_key
from cotgen_assets.core.shards import write_shards
from cotgen_assets.core.stages import GENERATION
from cotgen_assets.core.submissions import Submission

MODEL = "gemini-3.1-pro-preview"


THOUGHT = "Let me add the two numbers carefully, one step at a time. " * 30


def context(n: int) -> dict:
    return {
        "id": f"easy-{n}",
        "scenario": "easy",
        "question": f"What is {n} + {n}?",
        "answer": str(2 * n),
        "source": {"dataset": "gsm8k", "config": "main", "split": "train", "row": n},
    }


def asking(key: str) -> dict:
    """The request sent under `key` (Vertex AI echoes it in the key's answer line)."""
    return {"contents": [{"role": "user", "parts": [{"text": f"question {key}"}]}]}


def easy_submission(name: str, num_requests: int, backend: str = "developer") -> Submission:
    """An `easy` generation submission of `num_requests` to MODEL, nothing written yet."""
    return Submission(
        scenario="easy",
        stage=GENERATION,
        submission_id=name,
        model=MODEL,
        prompt_version="cot-gen-v1",
        num_requests=num_requests,
        backend=backend,
    )


def make_submission(
    name: str,
    rows: list[int],
    shard_size: int = 10_000,
    backend: str = "developer",
    samples: tuple[int, ...] = (0,),
) -> Submission:
    """A submission of `rows` sent to `backend`, each asked once per index of `samples` (its key
    `sample_key`), whose results files the test writes."""
    submission = easy_submission(name, len(rows) * len(samples), backend)
    items = (
        (
            orjson.dumps({"key": sample_key(f"easy-{n}", s), "request": asking(f"easy-{n}")}) + b"\n",
            context(n) | {"sample": s},
        )
        for n in rows
        for s in samples
    )
    write_shards(submission, items, shard_size, 1 << 30)
    submission.batch_names = [f"batches/{name}-{i}" for i in range(len(submission.shards))]
    submission.job_states = ["JOB_STATE_SUCCEEDED"] * len(submission.shards)
    submission.save()
    return submission


def response(key: str, answer: str, thought: str = THOUGHT, finish: str = "STOP") -> dict:
    parts = ([{"text": thought, "thought": True}] if thought else []) + [
        {"text": f"So it is \\boxed{{{answer}}}."}
    ]
    return {
        "key": key,
        "response": {
            "candidates": [
                {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}
            ],
            "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 12, "thoughtsTokenCount": 300},
            "modelVersion": MODEL,
        },
    }


def line(obj) -> bytes:
    return orjson.dumps(obj) + b"\n"


def write_results(submission: Submission, answer_offset: int = 0) -> None:
    """A results file per shard answering every request (each answer wrong by `answer_offset`)."""
    for shard in submission.shards:
        with (
            submission.results_path(shard).open("wb") as out,
            submission.context_path(shard).open("rb") as asked,
        ):
            for raw in asked:
                asked_context = orjson.loads(raw)
                answer = str(2 * int(asked_context["id"].split("-")[1]) + answer_offset)
                out.write(line(response(request_key(asked_context), answer)))
