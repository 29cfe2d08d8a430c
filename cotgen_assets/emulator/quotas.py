"""The batch quotas the API enforces at create: concurrent jobs per project, enqueued tokens per model.

A job counts against them while it is in flight (queued, pending, running or cancelling), whatever
its protocol: the Developer API's batches and Vertex AI's batch prediction jobs share one count, as
one project's would. A create past either is refused `429 RESOURCE_EXHAUSTED` before anything is
made, with the Developer API's own message (Vertex AI's is the emulator's wording). Both limits are
off (None) unless set by flag or through `POST /_emulator/quotas`.

A job's enqueued tokens are its input's prompt tokens, counted as the responder counts them
(`count_tokens`: ceil(characters / 4) over the system instruction and the contents).
"""

from __future__ import annotations

import threading
from typing import Any

import orjson

from .responder import get, prompt_tokens

# The Developer API's words for a create past a batch quota (its rate-limits page).
DEVELOPER_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
)
QUOTA_FIELDS = ("max_active_jobs", "max_enqueued_tokens")


def item_tokens(item: Any) -> int:
    """The prompt tokens of one input item, `{"request": {...}}` (anything else counts none)."""
    request = get(item, "request")
    return prompt_tokens(request) if isinstance(request, dict) else 0


def line_tokens(line: bytes) -> int:
    """The prompt tokens of one input line (a line that is not JSON counts none)."""
    try:
        return item_tokens(orjson.loads(line))
    except orjson.JSONDecodeError:
        return 0


def _model_id(model: str) -> str:
    """`models/x` (Developer API) and `publishers/google/models/x` (Vertex AI) are one model x."""
    return model.rsplit("/", 1)[-1]


def _limit(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1 or null (no limit), got {value!r}")
    return value


class Quotas:
    """The live quota settings of one emulator process (thread-safe); None is no limit."""

    def __init__(self, max_active_jobs: int | None = None, max_enqueued_tokens: int | None = None):
        self._lock = threading.Lock()
        self.max_active_jobs = _limit("max_active_jobs", max_active_jobs)
        self.max_enqueued_tokens = _limit("max_enqueued_tokens", max_enqueued_tokens)

    def snapshot(self) -> dict[str, int | None]:
        with self._lock:
            return {name: getattr(self, name) for name in QUOTA_FIELDS}

    def update(self, update: dict[str, Any]) -> dict[str, int | None]:
        """Apply a partial update (`{"max_active_jobs": 2}`; null lifts a limit); returns them all."""
        if not isinstance(update, dict) or set(update) - set(QUOTA_FIELDS):
            raise ValueError(f"expected a JSON object with any of {', '.join(QUOTA_FIELDS)}")
        clean = {name: _limit(name, value) for name, value in update.items()}
        with self._lock:
            for name, value in clean.items():
                setattr(self, name, value)
        return self.snapshot()

    def refusal(self, active: list[dict], model: str, tokens: int, protocol: str) -> tuple[str, str] | None:
        """(the message of the 429 to answer, why, for the log) when a job of `tokens` on `model`
        does not fit beside the `active` job records; None when it does."""
        limits = self.snapshot()
        jobs_limit, tokens_limit = limits["max_active_jobs"], limits["max_enqueued_tokens"]
        enqueued = sum(r.get("input_tokens", 0) for r in active if _model_id(r["model"]) == _model_id(model))
        if jobs_limit is not None and len(active) >= jobs_limit:
            why = f"{len(active)} of {jobs_limit} jobs active"
        elif tokens_limit is not None and enqueued + tokens > tokens_limit:
            why = f"{enqueued} + {tokens} enqueued tokens on {model} would pass {tokens_limit}"
        else:
            return None
        if protocol == "vertex":
            return f"Quota exceeded for batch prediction jobs: {why}. Try again when a job has ended.", why
        return DEVELOPER_MESSAGE, why
