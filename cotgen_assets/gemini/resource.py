"""The `gemini` resource: the Gemini Batch API through the real google-genai client.

Without an API key it talks to the local emulator through the same client, so offline runs
exercise the same code. Every call has a timeout; transient failures (429, 5xx, dropped or
timed-out connections) are retried here with exponential backoff, not by the SDK, because
creating a batch is not idempotent: a retried create that lost its response would pay
twice. `submit_jsonl` therefore looks a batch up by display name before creating it again.

The key must never leave the client: errors are re-raised as `GeminiError` with the key
scrubbed and without the SDK exception (whose request object carries the key) attached.
"""

import dataclasses
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import dagster as dg
import orjson
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from pydantic import PrivateAttr

from cotgen_assets.core.batch_output import FAILED_STATES, SUCCEEDED_STATES, TERMINAL_STATES
from cotgen_assets.core.storage import atomic_write, is_local
from cotgen_assets.core.submissions import Submission

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
logger = dg.get_dagster_logger(__name__)

API_VERSION = "v1beta"
REAL_API_HOST = "generativelanguage.googleapis.com"
OFFLINE_KEY = "offline-emulator"  # any non-empty key works with the emulator
OFFLINE_TAG = {"cotgen/gemini": "offline-emulator"}  # on assets and runs, so offline mode shows in the UI
EMULATOR_HEADER = "x-cotgen-emulator"  # the emulator sends it on every answer; Gemini never does


_TRANSIENT_CODES = frozenset({408, 429, 500, 502, 503, 504})
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = tuple(
    module.TransportError for module in (httpx2, httpx) if module is not None
) + (ConnectionError, TimeoutError)
_MAX_DELAY_SECONDS = 60.0
_announced_offline: set[str] = set()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

T = TypeVar("T")


class GeminiError(RuntimeError):
    """A Gemini API call failed for good; carries the API's own message and status code."""

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


@dataclass(frozen=True)
class BatchInfo:
    """What the pipeline needs to know about one batch job.

    `state` is the SDK's `JOB_STATE_*` spelling. Counts come from the job's `batchStats`
    and are None when the API did not report them (e.g. right after create).
    """

    name: str
    display_name: str | None
    state: str
    model: str | None
    result_file: str | None
    create_time: datetime | None
    end_time: datetime | None
    request_count: int | None
    succeeded_count: int | None
    failed_count: int | None
    error: str | None
    reused: bool = False  # an existing job returned by submit_jsonl instead of a new one

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.state in SUCCEEDED_STATES

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES


def _job_state(state: str | None) -> str:
    """The API says BATCH_STATE_*; the SDK and this project say JOB_STATE_*."""
    if not state:
        return "JOB_STATE_UNSPECIFIED"
    if state.startswith("BATCH_STATE_"):
        return "JOB_STATE_" + state.removeprefix("BATCH_STATE_")
    return state


def _timestamp(value: Any) -> datetime | None:
    """RFC 3339 with up to nanoseconds, as the API sends it."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).replace("Z", "+00:00")
    if "." in text:  # Python 3.11 reads at most 6 fractional digits
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest[len(digits) :]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _count(stats: dict | None, field: str) -> int | None:
    if stats is None:
        return None
    return int(stats.get(field) or 0)


def batch_info_from_operation(operation: dict) -> BatchInfo:
    """A BatchInfo from the raw Operation JSON of the Gemini API (see reference doc §1.5)."""
    metadata = operation.get("metadata") or {}
    output = metadata.get("output") or operation.get("response") or {}
    stats = metadata.get("batchStats")
    error = operation.get("error")
    if error:
        error = f"{error.get('message') or 'no message'} (code {error.get('code')})"
    model = metadata.get("model")
    return BatchInfo(
        name=operation.get("name") or metadata.get("name"),
        display_name=metadata.get("displayName"),
        state=_job_state(metadata.get("state")),
        model=model.removeprefix("models/") if model else None,
        result_file=output.get("responsesFile"),
        create_time=_timestamp(metadata.get("createTime")),
        end_time=_timestamp(metadata.get("endTime")),
        request_count=_count(stats, "requestCount"),
        succeeded_count=_count(stats, "successfulRequestCount"),
        failed_count=_count(stats, "failedRequestCount"),
        error=error or None,
    )


def batch_info_from_job(job: genai_types.BatchJob) -> BatchInfo:
    """A BatchInfo from the SDK's BatchJob, which carries no counts on the Gemini API."""
    state = job.state.value if hasattr(job.state, "value") else job.state
    return BatchInfo(
        name=job.name,
        display_name=job.display_name,
        state=_job_state(state),
        model=job.model.removeprefix("models/") if job.model else None,
        result_file=job.dest.file_name if job.dest else None,
        create_time=_timestamp(job.create_time),
        end_time=_timestamp(job.end_time),
        request_count=None,
        succeeded_count=None,
        failed_count=None,
        error=job.error.message if job.error else None,
    )


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: rate limits, server errors, dropped or timed-out connections."""
    if isinstance(exc, genai_errors.APIError):
        return exc.code in _TRANSIENT_CODES
    return isinstance(exc, _TRANSPORT_ERRORS)


class GeminiBatchResource(dg.ConfigurableResource):
    """Upload request files, run batch jobs and download their results.

    With no `api_key` it is offline and uses the emulator at `base_url`, else `emulator_url`; with
    a key it is offline too when the endpoint at `base_url` turns out to be the emulator.
    """

    api_key: str | None = None
    base_url: str | None = None
    emulator_url: str = "http://127.0.0.1:8765"
    timeout_seconds: float = 30.0
    max_attempts: int = 6
    backoff_seconds: float = 1.0

    _client: Any = PrivateAttr(default=None)
    _emulator_answers: bool | None = PrivateAttr(default=None)

    def __repr_args__(self):
        """Never show the key, even in a pytest failure or a debug print."""
        for name, value in super().__repr_args__():
            yield name, ("***" if name == "api_key" and value else value)

    # -- where we talk to -----------------------------------------------------------------

    @property
    def offline(self) -> bool:
        """Whether the local emulator answers, not Gemini. Who answers decides, not the key: with a
        key and `base_url`, the endpoint is asked once, so that emulator data never passes as Gemini's."""
        if not self.api_key:
            return True
        if not self.base_url:
            return False  # Google's own endpoint
        if self._emulator_answers is None:
            self._emulator_answers = self._ask_who_answers()
        return self._emulator_answers

    def _ask_who_answers(self) -> bool:
        client = self._get_client()
        response = self._with_retries(
            f"list of batches at {self.base_url}",
            lambda: client._api_client.request("get", "batches?pageSize=1", {}, None),
        )
        emulator = EMULATOR_HEADER in {name.lower() for name in response.headers}
        if emulator:
            logger.warning(
                "OFFLINE: %s is the local Gemini emulator, although GEMINI_API_KEY is set: what it "
                "makes is recorded as offline and is never pushed (no real API calls, no cost)",
                self.base_url,
            )
        return emulator

    @property
    def endpoint(self) -> str | None:
        """The base URL in use; None means Google's own endpoint."""
        if self.base_url:
            return self.base_url
        return None if self.api_key else self.emulator_url

    def describe(self) -> str:
        """For logs and metadata: where calls go, never with the key."""
        if self.offline:
            return f"offline: local Gemini emulator at {self.endpoint}"
        if self.base_url:
            return f"Gemini API at {self.base_url}"
        return f"Gemini API ({REAL_API_HOST})"

    def _get_client(self) -> genai.Client:
        if self._client is None:
            if not self.api_key and self.endpoint not in _announced_offline:
                _announced_offline.add(self.endpoint)
                logger.warning(
                    "GEMINI_API_KEY is not set: offline mode, using the local Gemini emulator at %s "
                    "(no real API calls, no cost)",
                    self.endpoint,
                )
            options = genai_types.HttpOptions(
                api_version=API_VERSION,
                base_url=self.endpoint,
                timeout=self._timeout_ms(self.timeout_seconds),
            )
            self._client = genai.Client(
                vertexai=False, api_key=self.api_key or OFFLINE_KEY, http_options=options
            )
        return self._client

    @staticmethod
    def _timeout_ms(seconds: float) -> int:
        return max(1, int(seconds * 1000))  # HttpOptions.timeout is in milliseconds

    # -- errors and retries ---------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        if self.api_key:
            for secret in {self.api_key, quote(self.api_key, safe="")}:
                text = text.replace(secret, "***")
        return text

    def _explain(self, exc: BaseException) -> str:
        if isinstance(exc, genai_errors.APIError):
            return self._scrub(
                f"{exc.code} {exc.status or ''}: {exc.message or exc.details}".replace(" :", ":")
            )
        return self._scrub(f"{type(exc).__name__}: {exc}")

    def _final_error(self, what: str, exc: BaseException, attempts: int) -> BaseException:
        """The exception to raise: a GeminiError for API and network failures, else `exc`."""
        tried = f" after {attempts} attempts" if attempts > 1 else ""
        if isinstance(exc, genai_errors.APIError):
            return GeminiError(
                f"{what} failed{tried}: {self._explain(exc)}",
                status_code=exc.code,
                status=exc.status,
                transient=is_transient(exc),
            )
        if is_transient(exc):
            return GeminiError(f"{what} failed{tried}: {self._explain(exc)}", transient=True)
        if self.api_key and self.api_key in f"{exc}{exc!r}":
            return GeminiError(f"{what} failed: {self._explain(exc)}")
        return exc

    def _retry_delay(self, attempt: int) -> float:
        delay = min(self.backoff_seconds * 2 ** (attempt - 1), _MAX_DELAY_SECONDS)
        return delay * random.uniform(0.8, 1.2)  # spread out processes that failed together

    def _with_retries(
        self, what: str, call: Callable[[], T], on_transient=None, max_attempts: int | None = None
    ) -> T:
        """Run `call`, retrying transient failures with exponential backoff.

        `on_transient()` runs after each transient failure and returns a result to use
        instead of retrying, or None to go on (create uses it to find a job whose create
        response was lost).
        The final exception is raised outside the `except` block, so the SDK's exception,
        whose request holds the key, is not chained to it.
        """
        attempts = max(1, max_attempts or self.max_attempts)
        for attempt in range(1, attempts + 1):
            failure = None
            try:
                return call()
            except Exception as exc:  # classified below; unknown errors re-raised as they are
                if not is_transient(exc) or attempt == attempts:
                    failure = self._final_error(what, exc, attempt)
                else:
                    explanation = self._explain(exc)
            if failure is not None:
                raise failure
            if on_transient is not None:
                found = on_transient()
                if found is not None:
                    return found
            delay = self._retry_delay(attempt)
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

    def _http_options(self, timeout_seconds: float | None) -> dict | None:
        if timeout_seconds is None:
            return None
        return {"timeout": self._timeout_ms(timeout_seconds)}

    def _raw_get(self, path: str, timeout_seconds: float | None = None) -> dict:
        """GET through the SDK's own transport, for fields the SDK drops (batchStats, error)."""
        client = self._get_client()
        response = client._api_client.request("get", path, {}, self._http_options(timeout_seconds))
        return orjson.loads(response.body) if response.body else {}

    # -- files ----------------------------------------------------------------------------

    def upload_jsonl(self, path: str | Path, display_name: str) -> str:
        """Upload a request file (local, or an object in a bucket) through the Files API;
        returns its name, `files/...`. The SDK reads a bucket's object as a binary file object."""
        path = Path(path) if isinstance(path, str) else path
        if not path.is_file():
            raise FileNotFoundError(f"request file {path} does not exist")
        config = {"mime_type": "jsonl", "display_name": display_name[:512]}

        def upload() -> str:
            if is_local(path):
                return self._get_client().files.upload(file=str(path), config=config).name
            with path.open("rb") as handle:
                return self._get_client().files.upload(file=handle, config=config).name

        name = self._with_retries(f"upload of {path.name}", upload)
        logger.info("uploaded %s (%d bytes) as %s", path.name, path.stat().st_size, name)
        return name

    def download_results(self, file_name: str, dest: Path) -> Path:
        """Download a result file to `dest` (local, or an object in a bucket); a crash or a failed
        attempt leaves no half-written `dest`."""
        dest = Path(dest) if isinstance(dest, str) else dest

        def download() -> Path:
            with atomic_write(dest) as handle:
                self._get_client().files.download(file=file_name, destination=handle)
            return dest

        self._with_retries(f"download of {file_name}", download)
        logger.info("downloaded %s to %s (%d bytes)", file_name, dest, dest.stat().st_size)
        return dest

    # -- batches --------------------------------------------------------------------------

    def create_batch(self, model: str, file_name: str, display_name: str) -> BatchInfo:
        """Create a batch job from an uploaded file.

        Creating is not idempotent, so after a transient failure (the job may exist although
        the response was lost) it looks for a job with this display name before trying again.
        """
        config = {"display_name": display_name}

        def create() -> BatchInfo:
            job = self._get_client().batches.create(model=model, src=file_name, config=config)
            return batch_info_from_job(job)

        def find_lost_create() -> BatchInfo | None:
            try:
                found = self.find_batch(display_name)
            except GeminiError:
                return None  # the API is still unwell; the next attempt decides
            if found is not None:
                logger.warning("create of %s failed, but the job exists: %s", display_name, found.name)
            return found

        info = self._with_retries(f"create of batch {display_name!r}", create, on_transient=find_lost_create)
        logger.info("batch %s (%s) created on %s: %s", info.name, display_name, model, info.state)
        return info

    def submit_jsonl(self, path: str | Path, model: str, display_name: str, same_ask: str = "") -> BatchInfo:
        """Upload and create a batch, never paying twice for the same display name.

        A live or succeeded job with this display name is returned as it is. `same_ask` is the
        start of the display names of jobs that ask the same but may send other bytes: such a
        job is not reused, and the log says why.
        """
        found = self.find_batches(
            lambda name: name == display_name or bool(same_ask and name.startswith(same_ask))
        )
        existing = next((job for job in found if job.display_name == display_name), None)
        if existing is not None:
            logger.warning(
                "REUSED: batch %r exists already as %s (%s), so it is not submitted again; its "
                "answers are used (the content hash in its name is that of these very requests)",
                display_name,
                existing.name,
                existing.state,
            )
            return dataclasses.replace(existing, reused=True)
        for other in found:
            logger.warning(
                "NOT REUSED: batch %s (%r, %s) asks for the same problems, tries and settings, but its "
                "requests differ from these (content hash %s, ours %s: other questions or prompts under "
                "the same ids, e.g. another deployment on this API key or a changed dataset); "
                "submitting %r anew",
                other.name,
                other.display_name,
                other.state,
                other.display_name.rpartition("-")[2],
                display_name.rpartition("-")[2],
                display_name,
            )
        file_name = self.upload_jsonl(path, display_name)
        return self.create_batch(model, file_name, display_name)

    def get_batch(
        self, name: str, timeout_seconds: float | None = None, max_attempts: int | None = None
    ) -> BatchInfo:
        """The job's state and counts, in one API call (per attempt).

        The sensor passes a short timeout and few attempts, so a slow API cannot stall a tick.
        """
        if not name.startswith("batches/"):
            raise ValueError(f"batch name must look like 'batches/ID', not {name!r}")
        path = "batches/" + quote(name.removeprefix("batches/"), safe="")
        return self._with_retries(
            f"get of {name}",
            lambda: batch_info_from_operation(self._raw_get(path, timeout_seconds)),
            max_attempts=max_attempts,
        )

    def _pages(self, page_size: int) -> Iterator[list[BatchInfo]]:
        token = None
        while True:
            path = f"batches?pageSize={int(page_size)}"
            if token:
                path += f"&pageToken={quote(token, safe='')}"
            page = self._with_retries("list of batches", lambda path=path: self._raw_get(path))
            yield [batch_info_from_operation(op) for op in page.get("operations") or []]
            token = page.get("nextPageToken")
            if not token:
                return

    def list_batches(self, page_size: int = 50) -> Iterator[BatchInfo]:
        """Every batch job of the project, fetching pages as the caller iterates."""
        for page in self._pages(page_size):
            yield from page

    def find_batches(self, match: Callable[[str], bool], max_pages: int = 20) -> list[BatchInfo]:
        """Live or succeeded jobs whose display name passes `match`, newest first."""
        matches = []
        for number, page in enumerate(self._pages(50), start=1):
            matches += [
                i for i in page if i.display_name and match(i.display_name) and i.state not in FAILED_STATES
            ]
            if number >= max_pages:
                break
        return sorted(matches, key=lambda i: i.create_time or _EPOCH, reverse=True)

    def find_batch(self, display_name: str, max_pages: int = 20) -> BatchInfo | None:
        """The newest job with this display name that is live or succeeded, if any."""
        found = self.find_batches(lambda name: name == display_name, max_pages)
        return found[0] if found else None

    def cancel_batch(self, name: str) -> None:
        """Ask the API to cancel a job; it then ends as JOB_STATE_CANCELLED."""
        self._with_retries(f"cancel of {name}", lambda: self._get_client().batches.cancel(name=name))
        logger.info("cancel requested for %s", name)

    def delete_batch(self, name: str) -> None:
        """Delete a job; a job already gone after a retried delete counts as deleted."""
        retried = False

        def gone() -> None:
            nonlocal retried
            retried = True
            return None

        try:
            self._with_retries(
                f"delete of {name}", lambda: self._get_client().batches.delete(name=name), on_transient=gone
            )
        except GeminiError as exc:
            if not (retried and exc.status_code == 404):
                raise
        logger.info("deleted %s", name)


def gemini_from_env() -> GeminiBatchResource:
    """The real Gemini API when GEMINI_API_KEY is set, else the local emulator (offline mode)."""
    return GeminiBatchResource(
        api_key=dg.EnvVar("GEMINI_API_KEY") if os.environ.get("GEMINI_API_KEY") else None,
        base_url=os.environ.get("COTGEN_GEMINI_BASE_URL") or None,
    )


# --------------------------------------------------------------------------- submissions


def submit(
    submission: Submission, gemini: GeminiBatchResource, sent_by: str = "outside a run"
) -> list[BatchInfo]:
    """Send every shard once; returns each shard's job, `reused` when its display name had one already.

    Who sends it (`sent_by`, a run id) is saved before the first upload, so that if that run dies
    between a create and its record, the next fill finds the submission and adopts it (`adopt`).
    A shard sent again to a new job loses the results file of its earlier job (already
    ingested), so the new job's answers are downloaded.
    """
    sent = submission.saved()
    before = dict(zip(sent.shards, sent.batch_names)) if sent else {}
    submission.sent_by, submission.batch_names = sent_by, []
    submission.save()
    jobs = [
        gemini.submit_jsonl(
            submission.requests_path(shard),
            submission.model,
            display_name,
            submission.job_name_prefix(shard),
        )
        for shard, display_name in zip(submission.shards, submission.display_names)
    ]
    submission.batch_names = [job.name for job in jobs]
    for shard, name in zip(submission.shards, submission.batch_names):
        if before.get(shard, name) != name:
            submission.results_path(shard).unlink(missing_ok=True)
    submission.job_states = []
    submission.save()
    return jobs


def adopt(submission: Submission, gemini: GeminiBatchResource, sent_by: str) -> list[BatchInfo] | None:
    """Take over a submission whose run died after creating its jobs, before recording them.

    Each shard's job is the one saved for it, else the one with its display name (whose content
    hash proves it is for these very requests). None when no job of it exists: it was never
    sent, and is marked so (its run is over: none can appear). Shards the dead run did not get to
    create are sent now, once.
    """
    saved = dict(zip(submission.display_names, submission.batch_names))  # none if it died creating
    found = [
        (_saved_job(gemini, saved[name], name) if name in saved else None) or gemini.find_batch(name)
        for name in submission.display_names
    ]
    if not any(found):
        submission.sent_by = ""
        submission.save()
        return None
    jobs = [
        dataclasses.replace(job, reused=True)
        if job
        else gemini.submit_jsonl(
            submission.requests_path(shard), submission.model, name, submission.job_name_prefix(shard)
        )
        for job, shard, name in zip(found, submission.shards, submission.display_names)
    ]
    submission.batch_names, submission.sent_by, submission.job_states = [j.name for j in jobs], sent_by, []
    submission.save()
    return jobs


def _saved_job(gemini: GeminiBatchResource, name: str, display_name: str) -> BatchInfo | None:
    """The job saved under `name`, if it still exists and is the one named `display_name`."""
    try:
        job = gemini.get_batch(name)
    except GeminiError as error:
        if error.status_code == 404:
            return None
        raise
    return job if job.display_name == display_name else None


def download_finished(submission: Submission, gemini: GeminiBatchResource) -> list:
    """Fetch each shard's job; download the results file of every finished job (once).

    Not only of those that succeeded: a cancelled job hands back the answers it finished, which
    were paid for. Once every job has ended, their states are saved for the ingestion.
    """
    jobs = []
    for shard, name in zip(submission.shards, submission.batch_names):
        job = gemini.get_batch(name)
        jobs.append(job)
        results = submission.results_path(shard)
        if job.done and job.result_file and not results.exists():
            gemini.download_results(job.result_file, results)
    if jobs and all(job.done for job in jobs):
        submission.job_states = [job.state for job in jobs]
        submission.save()
    return jobs
