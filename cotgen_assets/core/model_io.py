"""What the pipeline asks a model and what comes back, in no API's words.

`Prompt` is one request as the pipeline means it (the prompt's texts, a JSON schema when the answer
is structured, the thinking effort, whether thought summaries are wanted, how many answers);
`Reply` is one answer as a backend read it off its own output line; `Usage` its token counts;
`JobEnd` how a batch job ended. Each batch backend turns an `Prompt` into its own input line and its
output lines into `Reply`s (its `WireFormat`), and says what it can take (`Limits`).

Backends register their wire format here (`register_wire`), keyed by the name each submission
records as its `backend`, so `core` reads any backend's files without importing one.
"""

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Usage:
    """Token counts of one answer; `input_tokens` includes `cached_tokens`."""

    input_tokens: int = 0
    cached_tokens: int = 0
    thinking_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.input_tokens + other.input_tokens,
            self.cached_tokens + other.cached_tokens,
            self.thinking_tokens + other.thinking_tokens,
            self.output_tokens + other.output_tokens,
        )


@dataclass(frozen=True)
class Prompt:
    """One request: `texts` are the prompt's texts in order (the problem's text last for a
    generation); `schema` asks for JSON of that shape; `thinking` is the effort ("" leaves the
    model's default); `answers` how many answers are wanted for it."""

    key: str
    texts: tuple[str, ...]
    model: str = ""
    schema: dict | None = None
    thinking: str = ""
    include_thoughts: bool = False
    answers: int = 1


# How an answer ended (Reply.finish): a whole answer, cut at the token limit, blocked, or another end.
COMPLETE, CUT_OFF, BLOCKED, OTHER_END = "complete", "cut_off", "blocked", "other"
# Why an output line gave no answer (Reply.failure).
LINE_ERROR, NOT_JSON, INVALID_UTF8, NO_KEY, EMPTY = (
    "line_error",
    "not_json",
    "invalid_utf8",
    "no_key",
    "empty",
)


@dataclass(frozen=True)
class Reply:
    """One output line, read. `finish_reason` is the API's own word (kept in the record),
    `finish` its meaning; `failure` (one of the kinds above) and `reason` say why there is no
    answer. Usage is kept on failed lines too: what was billed stays counted."""

    key: str | None
    text: str = ""
    thought: str = ""
    usage: Usage = Usage()
    finish: str = COMPLETE
    finish_reason: str | None = None
    model_version: str | None = None
    failure: str | None = None
    reason: str | None = None
    echoed: str | None = None  # a digest of the request the line carries (WireFormat.sent_digest), if it does


# How a batch job ended, in neutral words (WireFormat.job_end); "" while it runs.
SUCCEEDED, PARTIALLY_SUCCEEDED = "succeeded", "partially_succeeded"
FAILED, CANCELLED, EXPIRED = "failed", "cancelled", "expired"
ANSWERED_ENDS = frozenset({SUCCEEDED, PARTIALLY_SUCCEEDED})  # its results file holds answers
UNANSWERED_ENDS = frozenset({FAILED, CANCELLED, EXPIRED})


@dataclass(frozen=True)
class Limits:
    """What one batch job of a backend can take; None where it sets no limit."""

    max_requests_per_job: int | None = None
    max_bytes_per_file: int | None = None


class WireFormat(Protocol):
    """A batch API's file formats: `name` is what a submission records as its backend (and the
    price table's `backend` column)."""

    name: str
    label: str  # how people call it, in messages
    limits: Limits

    def request_body(self, prompt: Prompt) -> dict:
        """The request as the API receives it (hashed into a submission's identity)."""

    def input_line(self, prompt: Prompt) -> bytes:
        """One line of a request file, newline included."""

    def read_line(self, raw: bytes) -> Reply:
        """One line of a results file (without its newline)."""

    def job_end(self, state: str) -> str:
        """How a job in the API's `state` ended (SUCCEEDED, ...), "" while it runs."""

    def sent_digest(self, raw: bytes) -> str:
        """A digest of what the request in an input line asks, comparable with `Reply.echoed`. Only
        read for a line that echoes its request (so a wire whose lines never do may skip it)."""


_WIRES: dict[str, WireFormat] = {}


def register_wire(wire: WireFormat) -> None:
    _WIRES[wire.name] = wire


def wire_for(backend: str) -> WireFormat:
    """The wire format of `backend` (a submission's `backend`), as its module registered it."""
    try:
        return _WIRES[backend]
    except KeyError:
        known = ", ".join(sorted(_WIRES)) or "none (import cotgen_assets.backends first)"
        raise LookupError(f"no batch backend {backend!r} is registered; registered: {known}") from None
