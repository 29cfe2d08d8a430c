"""An `auto_fill` round small enough (`online_max_requests`) answered on the Flex tier, in minutes,
instead of another batch turnaround: the same submission, requests, records and budget guard.

Each answer is saved as it arrives (`AnswerStore`, in the submission's folder), so a round killed
half-way and run again (the same plan, so the same submission) asks only what is missing: no
answer is paid twice. When every request is answered, each shard's results file is written from
the saved answers and its "job" is named `online:flex:<submission id>:<shard>`: the sensor, the
results and samples assets take it from there as from a finished batch job (the records'
`generation.batch` says it was online). When Flex sheds too much (`COTGEN_ONLINE_MAX_SHED_RATE`
of the calls so far, once `MIN_CALLS_FOR_RATE` were made) or a request got no answer, the round's
shards are split: the answered requests stay online, the rest go to a batch job as before.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from cotgen_assets.core.answers_store import AnswerStore
from cotgen_assets.core.online import FLEX, OnlineStats, Retry, call_each
from cotgen_assets.core.shards import MAX_SHARD_BYTES, write_shards
from cotgen_assets.core.storage import atomic_write
from cotgen_assets.core.submissions import Submission

ONLINE_PREFIX = "online:"
SHED_RATE_ENV = "COTGEN_ONLINE_MAX_SHED_RATE"
DEFAULT_MAX_SHED_RATE = 0.5  # of the calls so far refused (429/503): past it, the rest goes to a batch
MIN_CALLS_FOR_RATE = 4  # refusals among fewer calls than this say nothing yet


def is_online(batch_name: str) -> bool:
    return batch_name.startswith(ONLINE_PREFIX)


def online_name(tier: str, submission_id: str, shard: str) -> str:
    return f"{ONLINE_PREFIX}{tier}:{submission_id}:{shard}"


def tier_of(batch_name: str) -> str:
    """The service tier an online "job" name says its answers were billed at."""
    return batch_name.removeprefix(ONLINE_PREFIX).split(":", 1)[0]


def max_shed_rate() -> float:
    text = os.environ.get(SHED_RATE_ENV, "").strip()
    try:
        rate = float(text) if text else DEFAULT_MAX_SHED_RATE
    except ValueError:
        raise ValueError(f"{SHED_RATE_ENV}={text!r} is not a number between 0 and 1") from None
    if not 0 <= rate <= 1:
        raise ValueError(f"{SHED_RATE_ENV}={text!r} is not a number between 0 and 1")
    return rate


def sheds_too_much(stats: OnlineStats, rate: float) -> bool:
    calls = stats.answered + stats.num_refused
    return calls >= MIN_CALLS_FOR_RATE and stats.num_refused > rate * calls


@dataclass
class OnlineRound:
    """What the online pass did; `batch_shards` are left for a batch job (empty: all answered)."""

    asked: int  # requests asked now (answers saved by an earlier, interrupted run are not)
    reused: int  # answers saved by an earlier run of this very submission
    stats: OnlineStats
    batch_shards: list[str]


def answers_store(submission: Submission) -> AnswerStore:
    return AnswerStore(submission.folder / "online-answers")


def _items(submission: Submission) -> list[tuple[bytes, dict]]:
    items = []
    for shard in submission.shards:
        lines = submission.requests_path(shard).read_bytes().splitlines(keepends=True)
        contexts = submission.context_path(shard).read_bytes().splitlines()
        items += [(line, orjson.loads(context)) for line, context in zip(lines, contexts)]
    return items


def answer_online(
    submission: Submission,
    generate: Callable[[bytes, str], bytes],
    *,
    max_requests_per_job: int,
    concurrency: int = 4,
    retry: Retry = Retry(),
    shed_rate: float | None = None,
) -> OnlineRound:
    """Answer the submission's requests on Flex, each saved as it arrives; then write its results
    (all answered) or split its shards so that what is missing goes to a batch job."""
    store, items = answers_store(submission), _items(submission)
    todo = [item for item in items if not store.has(item[1]["id"])]
    rate = max_shed_rate() if shed_rate is None else shed_rate

    def work(item, ask) -> None:
        store.save(item[1]["id"], ask(item[0]))

    stats = call_each(
        todo,
        work,
        lambda line: generate(line, FLEX),
        concurrency=concurrency,
        retry=retry,
        stop=lambda so_far: sheds_too_much(so_far, rate),
        label=lambda item: item[1]["id"],
    )
    answered = [item for item in items if store.has(item[1]["id"])]
    missing = [item for item in items if not store.has(item[1]["id"])]
    if missing:
        write_shards(submission, answered, max_requests_per_job, MAX_SHARD_BYTES)
        online_shards = list(submission.shards)
        write_shards(submission, missing, max_requests_per_job, MAX_SHARD_BYTES, first=len(online_shards))
        batch_shards = submission.shards[len(online_shards) :]
    else:
        online_shards, batch_shards = list(submission.shards), []
    saved = {orjson.loads(line)["key"]: line for line in store.lines()}
    for shard in online_shards:
        with atomic_write(submission.results_path(shard)) as handle:
            for line in submission.requests_path(shard).read_bytes().splitlines():
                handle.write(saved[orjson.loads(line)["key"]] + b"\n")
    submission.batch_names = [online_name(FLEX, submission.submission_id, s) for s in online_shards]
    submission.save()
    return OnlineRound(len(todo) - stats.not_sent, len(items) - len(todo), stats, batch_shards)
