"""Batch output lines, one at a time, each turned into a definite outcome.

An output line is `{"key", "response"}` or `{"key", "error"}` (the Gemini Developer API), or
`{"key", "request", "status", "response"}` (Vertex AI: `status` is "" on success, else why that
request failed; `request` the request sent, re-serialized), in any order; the caller joins by key
and, where a line carries its request, checks it is the one sent under that key (`request_digest`).
Files can be large, so nothing here reads a whole file at once.
"""

import dataclasses
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

OK = "ok"
LINE_ERROR = "line_error"
TRUNCATED = "truncated"
BAD_FINISH = "bad_finish"
NO_THOUGHTS = "no_thoughts"
EMPTY = "empty"
NOT_JSON = "not_json"
INVALID_UTF8 = "invalid_utf8"
NO_KEY = "no_key"
REQUEST_MISMATCH = "request_mismatch"  # the line's echoed request is not the one sent under its key

# How a batch job ends, in the SDK's JOB_STATE_* spelling (the API says BATCH_STATE_*).
SUCCEEDED_STATES = frozenset({"JOB_STATE_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED"})
CANCELLED_STATE = "JOB_STATE_CANCELLED"  # someone cancelled the job (`cotgen cancel`, the console)
FAILED_STATES = frozenset({"JOB_STATE_FAILED", CANCELLED_STATE, "JOB_STATE_EXPIRED"})
TERMINAL_STATES = SUCCEEDED_STATES | FAILED_STATES


def overall_state(states: list[str]) -> str:
    """One state for a submission: the shared state, or MIXED(a, b) when its jobs differ."""
    distinct = sorted(set(states))
    return distinct[0] if len(distinct) == 1 else f"MIXED({', '.join(distinct)})"


# Recovers the key of a line that does not parse, so its request still counts as failed.
_LEADING_KEY = re.compile(rb'^\s*\{\s*"key"\s*:\s*"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Usage:
    """Token counts of one response; `input_tokens` is promptTokenCount and includes cached."""

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
class ResultLine:
    """The outcome of one output line; `reason` says why when `status` is not "ok"."""

    key: str | None
    status: str
    thought: str = ""
    answer: str = ""
    finish_reason: str | None = None
    usage: Usage = Usage()
    model_version: str | None = None
    reason: str | None = None
    request_digest: str | None = None  # of the request the line echoes (Vertex AI), else None

    @property
    def ok(self) -> bool:
        return self.status == OK


def _int(value) -> int:
    """Proto-JSON counts: numbers, or int64 strings; absent means 0."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _usage(metadata) -> Usage:
    if not isinstance(metadata, dict):
        return Usage()
    return Usage(
        input_tokens=_int(metadata.get("promptTokenCount")),
        cached_tokens=_int(metadata.get("cachedContentTokenCount")),
        thinking_tokens=_int(metadata.get("thoughtsTokenCount")),
        output_tokens=_int(metadata.get("candidatesTokenCount")),
    )


def _failed_status(key: str, line: dict) -> ResultLine:
    """Vertex AI: any `status` but "" is that request's failure, its text the reason."""
    status, response = line["status"], line.get("response")
    reason = status if isinstance(status, str) else orjson.dumps(status).decode()
    usage = _usage(response.get("usageMetadata")) if isinstance(response, dict) else Usage()
    return ResultLine(key, LINE_ERROR, usage=usage, reason=reason)


def _texts(value) -> Iterator[str]:
    """Every `text` string inside `value`, in order."""
    if isinstance(value, dict):
        for name, item in value.items():
            if name == "text" and isinstance(item, str):
                yield item
            else:
                yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


def request_digest(request) -> str | None:
    """A digest of what a request asks: the texts of its `contents`, in order. Vertex AI echoes a
    request re-serialized (snake_case names, nulls added), so its bytes cannot be compared; its
    texts survive. None for something that is not a request."""
    if not isinstance(request, dict):
        return None
    digest = hashlib.sha256()
    for text in _texts(request.get("contents")):
        digest.update(text.encode() + b"\0")
    return digest.hexdigest()


def _unparsable(raw: bytes) -> ResultLine:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        status, reason = INVALID_UTF8, f"line is not valid UTF-8 (byte {exc.start})"
    else:
        status, reason = NOT_JSON, f"line is not JSON ({len(raw)} bytes, starts {raw[:40]!r})"
    match = _LEADING_KEY.match(raw)
    key = None
    if match:
        try:
            key = orjson.loads(b'"' + match.group(1) + b'"')
        except orjson.JSONDecodeError:
            key = None
    return ResultLine(key=key, status=status, reason=reason)


def parse_result_line(raw: bytes, require_thoughts: bool = True) -> ResultLine:
    """Classify one output line.

    Truncated and other non-STOP responses keep their usage: they were billed.
    """
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _unparsable(raw)
    if not isinstance(line, dict):
        return ResultLine(None, NOT_JSON, reason=f"line is a JSON {type(line).__name__}, not an object")
    key = line.get("key")
    if not isinstance(key, str) or not key:
        return ResultLine(None, NO_KEY, reason="line has no 'key'")
    outcome = _classify(key, line, require_thoughts)
    if "request" in line:
        return dataclasses.replace(outcome, request_digest=request_digest(line["request"]) or "")
    return outcome


def _classify(key: str, line: dict, require_thoughts: bool) -> ResultLine:
    """The outcome of a keyed output line."""
    if line.get("status"):
        return _failed_status(key, line)
    error = line.get("error")
    if error is not None:
        if isinstance(error, dict):
            message = error.get("message") or "no message"
            code = error.get("code")
            status = error.get("status")
            label = " ".join(str(x) for x in (code, status) if x)
            reason = f"per-line error {label}: {message}" if label else f"per-line error: {message}"
        else:
            reason = f"per-line error: {error}"
        return ResultLine(key, LINE_ERROR, reason=reason)

    response = line.get("response")
    if not isinstance(response, dict):
        return ResultLine(key, EMPTY, reason="line has neither 'response' nor 'error'")
    usage = _usage(response.get("usageMetadata"))
    model_version = response.get("modelVersion")
    candidates = response.get("candidates") or []
    if not candidates or not isinstance(candidates[0], dict):
        feedback = response.get("promptFeedback") or {}
        block = feedback.get("blockReason") if isinstance(feedback, dict) else None
        if block:
            return ResultLine(
                key,
                BAD_FINISH,
                finish_reason=block,
                usage=usage,
                model_version=model_version,
                reason=f"prompt blocked: {block}",
            )
        return ResultLine(key, EMPTY, usage=usage, model_version=model_version, reason="no candidates")

    candidate = candidates[0]
    finish = candidate.get("finishReason")
    parts = (candidate.get("content") or {}).get("parts") or []
    thoughts, answers = [], []
    for part in parts:
        text = part.get("text") if isinstance(part, dict) else None
        if not isinstance(text, str):
            continue  # e.g. a signature-only part
        (thoughts if part.get("thought") else answers).append(text)
    thought, answer = "".join(thoughts), "".join(answers)
    result = dict(
        key=key,
        thought=thought,
        answer=answer,
        finish_reason=finish,
        usage=usage,
        model_version=model_version,
    )

    if finish == "MAX_TOKENS":
        return ResultLine(
            status=TRUNCATED, reason="output truncated at the token limit (MAX_TOKENS)", **result
        )
    if finish not in (None, "STOP"):
        return ResultLine(status=BAD_FINISH, reason=f"finish reason {finish}", **result)
    if not answer.strip():
        return ResultLine(status=EMPTY, reason="response has no answer text", **result)
    if require_thoughts and not thought.strip():
        return ResultLine(status=NO_THOUGHTS, reason="response has no thought summary", **result)
    return ResultLine(status=OK, **result)


def iter_result_lines(path: str | Path, require_thoughts: bool = True) -> Iterator[ResultLine]:
    """Every non-blank line of a results file, parsed, in file order."""
    with open(path, "rb", buffering=1 << 20) as f:  # lines are KBs: a small buffer means a syscall each
        for raw in f:
            if raw.strip():
                yield parse_result_line(raw.rstrip(b"\r\n"), require_thoughts=require_thoughts)
