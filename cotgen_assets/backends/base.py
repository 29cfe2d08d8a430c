"""What a batch backend is: `Backend`, one batch API's single calls, and `BatchInfo`, what it says of a job.

A backend owns its API's words: its wire format (`wire`: request lines, output lines, its limits;
see `core.model_io`), its job state names (turned into a neutral `end`), where it keeps request
files and answers. What every backend shares (retries, never paying twice for a display name,
finding a job whose create answer was lost, sending and adopting submissions) is written once in
`lifecycle`. `registry` says which backends exist; `docs/writing-a-backend.md` how to add one.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cotgen_assets.backends.retries import Retrying
from cotgen_assets.core.model_io import ANSWERED_ENDS, UNANSWERED_ENDS, WireFormat

# A create is not idempotent and may be slow, so it waits longer than other calls: a create that
# times out may still make its job, which the lifecycle then looks for as long again.
CREATE_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True)
class BatchInfo:
    """What the pipeline needs to know about one batch job.

    `state` is the API's own name for it (shown to people); `end` how it ended in neutral words
    (`model_io.SUCCEEDED`, ...; "" while it runs). Counts are None when the API did not report them
    (e.g. right after create). `result_file` is where its answers are once it ended, in the
    backend's terms (a Files API name, a gs:// directory, ...).
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
    end: str = ""
    reused: bool = False  # an existing job returned by submit_jsonl instead of a new one
    source: str | None = None  # the request file it reads (gs:// on Vertex AI)
    dest: str | None = None  # where it writes its answers (gs:// prefix on Vertex AI)

    @property
    def done(self) -> bool:
        return bool(self.end)

    @property
    def succeeded(self) -> bool:
        return self.end in ANSWERED_ENDS

    @property
    def failed(self) -> bool:
        return self.end in UNANSWERED_ENDS


@dataclass(frozen=True)
class BackendSettings:
    """What configuration gives every backend; each reads the fields it needs."""

    api_key: str | None = None
    base_url: str | None = None
    emulator_url: str = "http://127.0.0.1:8765"
    project: str | None = None
    location: str = "global"
    staging: str | None = None
    timeout_seconds: float = 30.0
    create_timeout_seconds: float = CREATE_TIMEOUT_SECONDS
    max_attempts: int = 6
    backoff_seconds: float = 1.0


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
    """One batch API, one call at a time, no retries (`lifecycle.BatchJobs` adds them).

    A subclass sets `wire` and implements every method that raises NotImplementedError here.
    A call that fails for a moment raises what `retrying` counts as transient (see `retries`).
    """

    wire: WireFormat  # request and output lines, limits; `wire.name` is the backend's name
    # how long a create may take; a create that timed out is looked for as long (`lifecycle`)
    create_timeout_seconds: float = CREATE_TIMEOUT_SECONDS

    def __init__(self, retrying: Retrying):
        self.retrying = retrying

    @property
    def name(self) -> str:
        return self.wire.name

    @property
    def offline(self) -> bool:
        """True when a local stand-in answers (its samples are never published as the model's)."""
        raise NotImplementedError

    @property
    def endpoint(self) -> str | None:
        """The base URL calls go to; None for the API's own."""
        return None

    def describe(self) -> str:
        """For logs and metadata: which API, where; never a secret."""
        raise NotImplementedError

    def check_staging(self) -> None:
        """Refuse, in one line naming the setting, a place for request files that cannot take them
        (asked before a submission writes anything); the Developer API uploads to its Files API."""

    def upload(self, path: Path, display_name: str, folder: str) -> str:
        """Put a request file where the API reads it; returns what `create` takes as source."""
        raise NotImplementedError

    def create(self, model: str, source: str, display_name: str) -> BatchInfo:
        raise NotImplementedError

    def get(self, name: str, timeout_seconds: float | None) -> BatchInfo:
        raise NotImplementedError

    def page(self, page_size: int, token: str | None) -> tuple[list[BatchInfo], str | None]:
        """One page of the API's jobs and the token of the next (None after the last)."""
        raise NotImplementedError

    def cancel(self, name: str) -> None:
        raise NotImplementedError

    def delete(self, name: str) -> None:
        raise NotImplementedError

    def download(self, result_file: str, dest: Path) -> None:
        """Write the job's answers to `dest` (whole, or not at all), in `wire`'s output line format."""
        raise NotImplementedError

    def check_name(self, name: str) -> None:
        """A ValueError for a name this API cannot have given (e.g. one of another backend)."""

    def generate(self, model: str, request_line: bytes, tier: str) -> bytes:
        """One synchronous answer (no batch) to one request line in `wire`'s format, at service tier
        `tier` (`core.online.TIERS`), as the output line a batch job would write: previews and small
        last rounds are read, priced and ingested as batch answers are. One attempt: a refusal (429,
        503) raises `core.online.OnlineRefused`, an answer lost in transit `OnlineLost`."""
        raise NotImplementedError(f"the {self.name} backend answers in batches only")
