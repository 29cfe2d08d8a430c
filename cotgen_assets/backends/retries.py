"""Calls to a batch API: transient failures retried with backoff, secrets scrubbed from errors.

Retries live here, not in the SDK, because creating a batch is not idempotent: a retried create
whose response was lost would pay twice, so a create looks for its job before trying again
(`on_transient`). A secret (the API key) must never leave the client: errors are re-raised as
`GeminiError` with it scrubbed and without the SDK exception (whose request carries it) attached.
"""

import random
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import quote

import dagster as dg
from google.genai import errors as genai_errors

try:
    import httpx2
except ImportError:  # the SDK may run on plain httpx instead
    httpx2 = None
try:
    import httpx
except ImportError:
    httpx = None

# Dagster's logger: inside a run its messages (retries, reused batches, lost creates) go to the
# run's event log, where a person looks; outside one they reach Python logging as before.
logger = dg.get_dagster_logger("cotgen_assets.backends")

_TRANSIENT_CODES = frozenset({408, 429, 500, 502, 503, 504})
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = tuple(
    module.TransportError for module in (httpx2, httpx) if module is not None
) + (ConnectionError, TimeoutError)
_MAX_DELAY_SECONDS = 60.0

T = TypeVar("T")


class GeminiError(RuntimeError):
    """A batch API call failed for good; carries the API's own message and status code."""

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        status: str | None = None,
        transient: bool = False,
    ):
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.status = status
        self.transient = transient  # retries ran out on a transient error


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: rate limits, server errors, dropped or timed-out connections."""
    if isinstance(exc, genai_errors.APIError):
        return exc.code in _TRANSIENT_CODES
    return isinstance(exc, _TRANSPORT_ERRORS)


def may_have_run(exc: BaseException) -> bool:
    """A transient failure that may hide a call the server carried out: a timeout, a dropped
    connection or a server error, unlike a rate limit (429), which refused it."""
    rate_limited = isinstance(exc, genai_errors.APIError) and exc.code == 429
    return is_transient(exc) and not rate_limited


class Retrying:
    """Runs API calls with retries; `secret` (an API key, or None) is scrubbed from every message."""

    def __init__(self, max_attempts: int, backoff_seconds: float, secret: str | None = None):
        self.max_attempts, self.backoff_seconds, self.secret = max_attempts, backoff_seconds, secret
        self.calls = 0  # API calls made (each attempt, each page), for the sensor's log and the benchmark

    def scrub(self, text: str) -> str:
        if self.secret:
            for secret in {self.secret, quote(self.secret, safe="")}:
                text = text.replace(secret, "***")
        return text

    def explain(self, exc: BaseException) -> str:
        if isinstance(exc, genai_errors.APIError):
            return self.scrub(
                f"{exc.code} {exc.status or ''}: {exc.message or exc.details}".replace(" :", ":")
            )
        return self.scrub(f"{type(exc).__name__}: {exc}")

    def final_error(self, what: str, exc: BaseException, attempts: int) -> BaseException:
        """The exception to raise: a GeminiError for API and network failures, else `exc`."""
        tried = f" after {attempts} attempts" if attempts > 1 else ""
        if isinstance(exc, genai_errors.APIError):
            return GeminiError(
                f"{what} failed{tried}: {self.explain(exc)}",
                status_code=exc.code,
                status=exc.status,
                transient=is_transient(exc),
            )
        if is_transient(exc):
            return GeminiError(f"{what} failed{tried}: {self.explain(exc)}", transient=True)
        if self.secret and self.secret in f"{exc}{exc!r}":
            return GeminiError(f"{what} failed: {self.explain(exc)}")
        return exc

    def delay(self, attempt: int) -> float:
        delay = min(self.backoff_seconds * 2 ** (attempt - 1), _MAX_DELAY_SECONDS)
        return delay * random.uniform(0.8, 1.2)  # spread out processes that failed together

    def call(
        self,
        what: str,
        call: Callable[[], T],
        on_transient: Callable[[BaseException], T | None] | None = None,
        max_attempts: int | None = None,
    ) -> T:
        """Run `call`, retrying transient failures with exponential backoff.

        `on_transient(exc)` runs after each transient failure and returns a result to use instead of
        retrying, or None to go on (create uses it to find a job whose create response was lost).
        The final exception is raised outside the `except` block, so the SDK's exception, whose
        request holds the key, is not chained to it.
        """
        attempts = max(1, max_attempts or self.max_attempts)
        for attempt in range(1, attempts + 1):
            failure = transient = None
            self.calls += 1
            try:
                return call()
            except Exception as exc:  # classified below; unknown errors re-raised as they are
                if not is_transient(exc) or attempt == attempts:
                    failure = self.final_error(what, exc, attempt)
                else:
                    transient, explanation = exc, self.explain(exc)
            if failure is not None:
                raise failure
            if on_transient is not None:
                found = on_transient(transient)
                if found is not None:
                    return found
            delay = self.delay(attempt)
            logger.warning(
                "%s failed: %s; retrying (%d of %d) in %.1f s",
                what,
                explanation,
                attempt,
                attempts - 1,
                delay,
            )
            time.sleep(delay)
        raise AssertionError("unreachable")
