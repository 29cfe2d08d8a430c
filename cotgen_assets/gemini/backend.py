"""The seam between the pipeline and a batch API: `Backend`, and `BatchInfo`, what it says of a job.

Two implementations: `developer.DeveloperBatches` (the Gemini Developer API: Files +
`batchGenerateContent`) and `vertex.VertexBatches` (Vertex AI batch prediction over a gs://
staging prefix). Each says how to stage a request file, create, read, list, cancel and delete a
job, and download its answers, one call at a time; what both share lives here: retries, the
lookup of a job whose create response was lost, and never paying twice for one display name.
"""

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.genai import errors as genai_errors

from cotgen_assets.core.batch_output import FAILED_STATES, SUCCEEDED_STATES, TERMINAL_STATES
from cotgen_assets.core.queue import QuotaFull
from cotgen_assets.gemini.retries import GeminiError, Retrying, logger

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class BatchInfo:
    """What the pipeline needs to know about one batch job.

    `state` is the SDK's `JOB_STATE_*` spelling. Counts are None when the API did not report them
    (e.g. right after create). `result_file` is where its answers are once it ended: a Files API
    name (`files/...`) on the Developer API, the job's gs:// output directory on Vertex AI.
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
    source: str | None = None  # the request file it reads (gs:// on Vertex AI)
    dest: str | None = None  # where it writes its answers (gs:// prefix on Vertex AI)

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.state in SUCCEEDED_STATES

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES


def job_state(state: str | None) -> str:
    """The Developer API says BATCH_STATE_*; the SDK, Vertex AI and this project say JOB_STATE_*."""
    if not state:
        return "JOB_STATE_UNSPECIFIED"
    if state.startswith("BATCH_STATE_"):
        return "JOB_STATE_" + state.removeprefix("BATCH_STATE_")
    return state


def timestamp(value: Any) -> datetime | None:
    """RFC 3339 with up to nanoseconds, as the APIs send it."""
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


def count(stats: dict | None, field: str) -> int | None:
    """A proto-JSON count (a number or an int64 string); None when the API sent no stats at all."""
    if stats is None:
        return None
    return int(stats.get(field) or 0)


class Backend:
    """One batch API. Subclasses make single calls (`_stage`, `_create`, `_get`, `_page`, `_cancel`,
    `_delete`, `_download`); the methods here add retries and the rules both APIs share."""

    kind = ""  # "developer" or "vertex": recorded in each submission

    def __init__(self, retrying: Retrying):
        self.retrying = retrying

    # -- what each API says differently -----------------------------------------------------

    @property
    def offline(self) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def _stage(self, path: Path, display_name: str, folder: str) -> str:
        """Put a request file where the API reads it; returns what `_create` takes as source."""
        raise NotImplementedError

    def _create(self, model: str, source: str, display_name: str) -> BatchInfo:
        raise NotImplementedError

    def _get(self, name: str, timeout_seconds: float | None) -> BatchInfo:
        raise NotImplementedError

    def _page(self, page_size: int, token: str | None) -> tuple[list[BatchInfo], str | None]:
        raise NotImplementedError

    def _cancel(self, name: str) -> None:
        raise NotImplementedError

    def _delete(self, name: str) -> None:
        raise NotImplementedError

    def _download(self, result_file: str, dest: Path) -> None:
        """Write the job's answers to `dest` (whole, or not at all)."""
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------

    def stage(self, path: str | Path, display_name: str, folder: str = "") -> str:
        """Upload a request file (local, or an object in a bucket); `folder` names its submission
        (`<scenario>/<stage>-<id>`) where the API keeps files in folders."""
        path = Path(path) if isinstance(path, str) else path
        if not path.is_file():
            raise FileNotFoundError(f"request file {path} does not exist")
        source = self.retrying.call(f"upload of {path.name}", lambda: self._stage(path, display_name, folder))
        logger.info("uploaded %s (%d bytes) as %s", path.name, path.stat().st_size, source)
        return source

    def create_batch(self, model: str, source: str, display_name: str) -> BatchInfo:
        """Create a batch job from a staged request file.

        Creating is not idempotent, so after a transient failure (the job may exist although the
        response was lost) it looks for a job with this display name before trying again. A 429
        RESOURCE_EXHAUSTED means the batch quota is full: `QuotaFull`, at once, nothing made.
        """

        def find_lost_create() -> BatchInfo | None:
            try:
                found = self.find_batch(display_name)
            except GeminiError:
                return None  # the API is still unwell; the next attempt decides
            if found is not None:
                logger.warning("create of %s failed, but the job exists: %s", display_name, found.name)
            return found

        def create() -> BatchInfo:
            try:
                return self._create(model.removeprefix("models/"), source, display_name)
            except genai_errors.APIError as error:
                if error.code == 429:  # not retried: the quota stays full until a job ends
                    raise QuotaFull(
                        f"create of batch {display_name!r}: {self.retrying.explain(error)}"
                    ) from None
                raise

        info = self.retrying.call(f"create of batch {display_name!r}", create, on_transient=find_lost_create)
        logger.info("batch %s (%s) created on %s: %s", info.name, display_name, model, info.state)
        return info

    def submit_jsonl(
        self, path: str | Path, model: str, display_name: str, same_ask: str = "", folder: str = ""
    ) -> BatchInfo:
        """Stage and create a batch, never paying twice for the same display name.

        A live or succeeded job with this display name is returned as it is. `same_ask` is the start
        of the display names of jobs that ask the same but may send other bytes: such a job is not
        reused, and the log says why.
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
                "the same ids, e.g. another deployment on this project or key, or a changed dataset); "
                "submitting %r anew",
                other.name,
                other.display_name,
                other.state,
                other.display_name.rpartition("-")[2],
                display_name.rpartition("-")[2],
                display_name,
            )
        source = self.stage(path, display_name, folder)
        created = self.create_batch(model, source, display_name)
        return dataclasses.replace(created, source=created.source or source)

    def get_batch(
        self, name: str, timeout_seconds: float | None = None, max_attempts: int | None = None
    ) -> BatchInfo:
        """The job's state and counts, in one API call (per attempt).

        The sensor passes a short timeout and few attempts, so a slow API cannot stall a tick.
        """
        self.check_name(name)
        return self.retrying.call(
            f"get of {name}", lambda: self._get(name, timeout_seconds), max_attempts=max_attempts
        )

    def check_name(self, name: str) -> None:
        """A ValueError for a name this API cannot have given (e.g. one of the other backend)."""

    def pages(self, page_size: int) -> Iterator[list[BatchInfo]]:
        token = None
        while True:
            page, token = self.retrying.call(
                "list of batches", lambda token=token: self._page(page_size, token)
            )
            yield page
            if not token:
                return

    def list_batches(self, page_size: int = 50) -> Iterator[BatchInfo]:
        """Every batch job the API lists, fetching pages as the caller iterates."""
        for page in self.pages(page_size):
            yield from page

    def find_batches(self, match: Callable[[str], bool], max_pages: int = 20) -> list[BatchInfo]:
        """Live or succeeded jobs whose display name passes `match`, newest first."""
        matches = []
        for number, page in enumerate(self.pages(50), start=1):
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
        self.check_name(name)
        self.retrying.call(f"cancel of {name}", lambda: self._cancel(name))
        logger.info("cancel requested for %s", name)

    def delete_batch(self, name: str) -> None:
        """Delete a job; a job already gone after a retried delete counts as deleted."""
        retried = False

        def gone() -> None:
            nonlocal retried
            retried = True
            return None

        self.check_name(name)
        try:
            self.retrying.call(f"delete of {name}", lambda: self._delete(name), on_transient=gone)
        except GeminiError as exc:
            if not (retried and exc.status_code == 404):
                raise
        logger.info("deleted %s", name)

    def download_results(self, result_file: str, dest: str | Path) -> Path:
        """Download a job's answers to `dest` (local, or an object in a bucket); a crash or a failed
        attempt leaves no half-written `dest`."""
        dest = Path(dest) if isinstance(dest, str) else dest
        self.retrying.call(f"download of {result_file}", lambda: self._download(result_file, dest))
        logger.info("downloaded %s to %s (%d bytes)", result_file, dest, dest.stat().st_size)
        return dest
