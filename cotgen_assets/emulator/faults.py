"""Fault injection: the settings, and deterministic draws from them.

Per-line faults are drawn from a hash of (seed, batch name, key, fault kind), so a run is
reproducible for a given seed while the same key in a later batch gets a fresh draw. Job-level
faults are counters ("the next N jobs") consumed when a job is created (a slow create stalls
before its job exists, so that a client's timeout can lose the answer of a create that succeeds);
HTTP faults come from a seeded random stream. Synchronous calls (`online`) draw theirs from the
request's bytes. A held job (`hold`, `hold_count`) stays PENDING until released through
`POST /_emulator/hold`, so a test can keep a job in flight without racing its latency.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import threading
import time
from typing import Any

JOB_FAULT_STATES = ("failed", "expired", "cancelled", "partially_succeeded")
# The Developer API has no partial success: such a fault waits for the next Vertex AI job.
DEVELOPER_FAULT_STATES = ("failed", "expired", "cancelled")
LINE_FAULT_KINDS = ("garbage_line", "line_error", "truncate", "no_thoughts", "wrong_answer")

_RATES = (
    "line_error_rate",
    "truncate_rate",
    "no_thoughts_rate",
    "garbage_line_rate",
    "wrong_rate",
    "http_error_rate",
    "flex_shed_rate",
)
_COUNTS = (
    "job_count",
    "slow_count",
    "lose_create_count",
    "slow_create_count",
    "hold_count",
    "download_error_count",
    "online_fail_after",
)
_SECONDS = ("slow_latency", "slow_create_seconds")


@dataclasses.dataclass
class FaultConfig:
    """What to break. Field names are the CLI flags without `--fault-`, in snake_case."""

    line_error_rate: float = 0.0
    truncate_rate: float = 0.0
    no_thoughts_rate: float = 0.0
    garbage_line_rate: float = 0.0
    wrong_rate: float = 0.0  # share of generation answers that end in a wrong final answer
    http_error_rate: float = 0.0
    job_state: str | None = None
    job_count: int = 0
    slow_latency: float = 0.0
    slow_count: int = 0
    lose_create_count: int = 0
    slow_create_seconds: float = 0.0  # how long the next --fault-slow-create-count creates stall
    slow_create_count: int = 0  # ... before the job exists and the create is answered
    hold: bool = False  # every new job is held until released
    hold_count: int = 0  # the next N new jobs are held until released
    download_error_count: int = 0  # the next N result downloads answer 503
    flex_shed_rate: float = 0.0  # share of Flex generateContent calls shed (see `online`)
    flex_shed_status: int = 503  # what a shed call answers: 503 UNAVAILABLE or 429 RESOURCE_EXHAUSTED
    online_fail_after: int = 0  # after N answered generateContent calls, the rest answer 500 (0: off)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def line_rates(self) -> dict[str, float]:
        """The per-line rates, as snapshotted into a job when it is created."""
        return {
            "line_error": self.line_error_rate,
            "truncate": self.truncate_rate,
            "no_thoughts": self.no_thoughts_rate,
            "garbage_line": self.garbage_line_rate,
            "wrong_answer": self.wrong_rate,
        }


FAULT_FIELDS = tuple(f.name for f in dataclasses.fields(FaultConfig))


def validate_update(update: dict[str, Any]) -> dict[str, Any]:
    """Check a partial update (admin API body); returns it normalised or raises ValueError."""
    if not isinstance(update, dict):
        raise ValueError("expected a JSON object")
    clean: dict[str, Any] = {}
    for key, value in update.items():
        if key not in FAULT_FIELDS:
            raise ValueError(f"unknown fault {key!r}; known: {', '.join(FAULT_FIELDS)}")
        if key in _RATES:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{key} must be a number between 0 and 1, got {value!r}")
            clean[key] = float(value)
        elif key in _COUNTS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{key} must be an integer >= 0, got {value!r}")
            clean[key] = value
        elif key in _SECONDS:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{key} must be a number of seconds >= 0, got {value!r}")
            clean[key] = float(value)
        elif key == "flex_shed_status":
            if value not in (429, 503) or isinstance(value, bool):
                raise ValueError(f"flex_shed_status must be 429 or 503, got {value!r}")
            clean[key] = value
        elif key == "hold":
            if not isinstance(value, bool):
                raise ValueError(f"hold must be true or false, got {value!r}")
            clean[key] = value
        elif key == "job_state":
            if value is not None and value not in JOB_FAULT_STATES:
                raise ValueError(
                    f"job_state must be one of {', '.join(JOB_FAULT_STATES)} or null, got {value!r}"
                )
            clean[key] = value
    return clean


def unit_draw(seed: int, *parts: str) -> float:
    """A number in [0, 1) that depends only on the seed and the parts."""
    text = "\x1f".join((str(seed), *parts))
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def line_faults(seed: int, batch_name: str, key: str, rates: dict[str, float]) -> set[str]:
    """The per-line faults that hit `key` in `batch_name` (a subset of LINE_FAULT_KINDS)."""
    hits = set()
    for kind in LINE_FAULT_KINDS:
        rate = rates.get(kind, 0.0)
        if rate > 0 and unit_draw(seed, batch_name, key, kind) < rate:
            hits.add(kind)
    return hits


@dataclasses.dataclass
class JobFaults:
    """What a newly created job was dealt."""

    end_state: str | None  # None (succeeds) or one of JOB_FAULT_STATES
    latency: float | None  # None: the server's --latency
    lose_create: bool
    held: bool = False


class Faults:
    """The live fault settings of one emulator process (thread-safe)."""

    def __init__(self, config: FaultConfig | None = None, seed: int = 0):
        self.config = config or FaultConfig()
        self.seed = seed
        self._lock = threading.Lock()
        self._http_random = random.Random(f"{seed}:http")
        self.stalled_creates = 0  # creates sleeping in `stall_create` now

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {**self.config.to_json(), "seed": self.seed}

    def update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Apply a partial update; `{"reset": true}` first restores the defaults."""
        update = dict(update)
        reset = update.pop("reset", False)
        seed = update.pop("seed", None)
        clean = validate_update(update)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        with self._lock:
            if reset:
                self.config = FaultConfig()
            for key, value in clean.items():
                setattr(self.config, key, value)
            if seed is not None:
                self.seed = seed
                self._http_random = random.Random(f"{seed}:http")
        return self.snapshot()

    def draw_http_error(self) -> int | None:
        """429 or 500 when this API call should fail, else None."""
        with self._lock:
            rate = self.config.http_error_rate
            if rate <= 0:
                return None
            hit = self._http_random.random() < rate
            code = 429 if self._http_random.random() < 0.5 else 500
        return code if hit else None

    def take_download_error(self) -> bool:
        """Whether this download should answer 503 (consumes one of `download_error_count`)."""
        with self._lock:
            if self.config.download_error_count <= 0:
                return False
            self.config.download_error_count -= 1
            return True

    def stall_create(self) -> None:
        """Sleep `slow_create_seconds` when the slow_create fault takes this create (one of
        `slow_create_count`), before its job exists: a client that gives up sooner has sent a
        create that still makes its job afterwards, as a real API may."""
        with self._lock:
            if self.config.slow_create_count <= 0:
                return
            self.config.slow_create_count -= 1
            seconds = self.config.slow_create_seconds
            self.stalled_creates += 1
        try:
            time.sleep(seconds)
        finally:
            with self._lock:
                self.stalled_creates -= 1

    def take_job_faults(
        self, end_states: tuple[str, ...] = DEVELOPER_FAULT_STATES
    ) -> tuple[JobFaults, dict[str, float], int]:
        """Consume the job-level counters for one new job whose protocol can end in `end_states`;
        also returns its line rates and seed."""
        with self._lock:
            c = self.config
            end_state = None
            if c.job_count > 0 and c.job_state in end_states:
                end_state = c.job_state
                c.job_count -= 1
            latency = None
            if c.slow_count > 0:
                latency = c.slow_latency
                c.slow_count -= 1
            lose = False
            if c.lose_create_count > 0:
                lose = True
                c.lose_create_count -= 1
            held = c.hold
            if c.hold_count > 0:
                held = True
                c.hold_count -= 1
            return JobFaults(end_state, latency, lose, held), c.line_rates(), self.seed
