"""Numeric settings read from the environment, each with its default and the least value it takes.

A value that is not a number, or below its least value, is one error naming the variable and what
it takes, where it is read and when the code location loads: never a bare conversion error, and
never a value such as `COTGEN_RUN_ATTEMPTS=0` silently accepted.
"""

import math
import os

# variable: (default, least value, whole number only)
NUMBERS = {
    "COTGEN_SENSOR_INTERVAL_SECONDS": (30, 1, True),
    "COTGEN_STALE_AFTER_SECONDS": (24 * 3600, 0, False),  # Gemini's target for a batch is 24 h
    "COTGEN_RUN_ATTEMPTS": (4, 1, True),
    "COTGEN_RETRY_DELAY_SECONDS": (60, 0, False),
    "COTGEN_LOCK_WAIT_SECONDS": (1800, 0, False),  # a million-line ingestion takes minutes, not half an hour
    "COTGEN_SOURCE_WORKERS": (2, 1, True),  # processes decontaminating a source of more than one batch
    # Batch quotas (ai.google.dev/gemini-api/docs/rate-limits, "Batch API rate limits"): 100 concurrent
    # batch jobs per project; Tier 1 enqueues 50,000,000 tokens of Gemini 3 Pro Preview at once.
    "COTGEN_MAX_ACTIVE_JOBS": (100, 1, True),
    "COTGEN_MAX_ENQUEUED_TOKENS": (50_000_000, 1, True),
}


class SettingError(ValueError):
    """An environment variable holds a value its setting cannot take."""


def number(name: str) -> float:
    """`$name` as a number (an int for whole-number settings); its default when unset or empty."""
    default, least, whole = NUMBERS[name]
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < least:
        raise SettingError(
            f"{name}={raw!r} is not valid: it takes {'a whole number' if whole else 'a number'} of at "
            f"least {least} (default {default}); fix it or unset it"
        )
    return value


def validate_settings() -> None:
    """Read every numeric setting once, so that a bad one is said before anything runs."""
    for name in NUMBERS:
        number(name)
