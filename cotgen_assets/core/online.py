"""Synchronous calls, many at once: a small thread pool, refusals retried with backoff, then said.

A backend answers one request line with one output line (`Generate`), in its own wire format, so
an online answer is read, priced and ingested exactly as a batch job's line would be. It raises
`OnlineRefused` when the API declined to answer (429 RESOURCE_EXHAUSTED, 503 UNAVAILABLE: Flex
sheds load with either; the docs do not say which), which is safe to ask again: nothing was paid.
`OnlineLost` is a call whose answer never came back (a timeout, a dropped connection): the API may
have answered and billed it, and a synchronous call has no idempotency key, so it is counted as
`maybe_paid` and is not asked again here (the next run asks it, if still missing).
"""

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

STANDARD, FLEX = "standard", "flex"
TIERS = (STANDARD, FLEX)
DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 16

T = TypeVar("T")
Generate = Callable[[bytes, str], bytes]  # (request line, tier) -> output line


class OnlineRefused(Exception):
    """The API declined to answer now (429 or 503); asking again later is safe."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class OnlineLost(Exception):
    """No answer came back (timeout, connection dropped): it may have been answered and billed."""


@dataclass(frozen=True)
class Retry:
    """How refusals are retried: `attempts` calls per request, the delay doubling from `backoff_seconds`."""

    attempts: int = 4
    backoff_seconds: float = 2.0
    max_delay_seconds: float = 60.0

    def delay(self, attempt: int) -> float:
        return min(self.backoff_seconds * 2 ** (attempt - 1), self.max_delay_seconds)


@dataclass
class OnlineStats:
    """What a run of calls did: answers, refusals (each retry counts), lost and failed calls."""

    answered: int = 0
    refused: dict[int, int] = field(default_factory=dict)  # status -> refusals
    gave_up: dict[str, str] = field(default_factory=dict)  # item label -> why it got no answer
    maybe_paid: int = 0  # calls lost in transit: perhaps answered and billed
    not_sent: int = 0  # items left when the run stopped (see `stop`)
    seconds: float = 0.0

    @property
    def num_refused(self) -> int:
        return sum(self.refused.values())

    def summary(self) -> str:
        refused = ", ".join(f"{n} × {status}" for status, n in sorted(self.refused.items())) or "none"
        return (
            f"{self.answered} answered in {self.seconds:.1f}s; refusals {refused}; "
            f"{len(self.gave_up)} gave up; {self.maybe_paid} lost in transit (maybe paid); "
            f"{self.not_sent} not sent"
        )


def validate_concurrency(concurrency: int) -> None:
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be between 1 and {MAX_CONCURRENCY}, got {concurrency}")


def validate_tier(tier: str) -> None:
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}, got {tier!r}")


def call_each(
    items: Iterable[T],
    work: Callable[[T, Callable[[bytes], bytes]], None],
    generate: Callable[[bytes], bytes],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    retry: Retry = Retry(),
    stop: Callable[[OnlineStats], bool] = lambda stats: False,
    label: Callable[[T], str] = str,
    sleep: Callable[[float], None] = time.sleep,
) -> OnlineStats:
    """`work(item, ask)` for every item on `concurrency` threads; `ask(line)` is `generate` with
    refusals retried. Once `stop(stats)` holds, items not started are left (`not_sent`). An item whose
    refusals outlast `retry`, or whose call was lost, is in `gave_up` with the reason."""
    validate_concurrency(concurrency)
    stats, lock, started = OnlineStats(), threading.Lock(), time.monotonic()
    stopped = threading.Event()

    def ask(line: bytes) -> bytes:
        for attempt in range(1, retry.attempts + 1):
            try:
                answer = generate(line)
            except OnlineRefused as refused:
                with lock:
                    stats.refused[refused.status] = stats.refused.get(refused.status, 0) + 1
                    if stop(stats):
                        stopped.set()
                if attempt == retry.attempts or stopped.is_set():
                    raise
                sleep(retry.delay(attempt))
                continue
            with lock:
                stats.answered += 1
            return answer
        raise AssertionError("unreachable")

    def run(item: T) -> None:
        if stopped.is_set():
            with lock:
                stats.not_sent += 1
            return
        try:
            work(item, ask)
        except OnlineRefused as refused:
            with lock:
                stats.gave_up[label(item)] = f"refused {refused.status} after retries: {refused}"
        except OnlineLost as lost:
            with lock:
                stats.maybe_paid += 1
                stats.gave_up[label(item)] = f"no answer came back (maybe paid): {lost}"

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="cotgen-online") as pool:
        futures = [pool.submit(run, item) for item in items]
        try:
            for future in futures:
                future.result()  # any other error is a bug or a permanent refusal: raise it
        except BaseException:
            pool.shutdown(cancel_futures=True)  # the calls under way end; none is started
            raise
    stats.seconds = time.monotonic() - started
    return stats
