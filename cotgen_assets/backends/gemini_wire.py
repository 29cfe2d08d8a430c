"""The Gemini request and response bodies (REST JSON, camelCase), shared by both Gemini backends.

A request is a `GenerateContentRequest`: the prompt's parts as one user content, its schema and
thinking effort in `generationConfig`. A response is a `GenerateContentResponse`: thought-summary
parts carry `thought: true`, the rest is the answer; `usageMetadata` the tokens
(`candidatesTokenCount` excludes thoughts, `promptTokenCount` includes cached ones).
"""

import dataclasses
import hashlib
import re
from collections.abc import Iterator

import orjson

from cotgen_assets.core.model_io import (
    BLOCKED,
    CANCELLED,
    COMPLETE,
    CUT_OFF,
    EMPTY,
    EXPIRED,
    FAILED,
    INVALID_UTF8,
    LINE_ERROR,
    NO_KEY,
    NOT_JSON,
    OTHER_END,
    PARTIALLY_SUCCEEDED,
    SUCCEEDED,
    Limits,
    Prompt,
    Reply,
    Usage,
)
from cotgen_assets.core.queue import DROPPED

_FINISH = {None: COMPLETE, "STOP": COMPLETE, "MAX_TOKENS": CUT_OFF}
# Recovers the key of a line that does not parse, so its request still counts as failed.
_LEADING_KEY = re.compile(rb'^\s*\{\s*"key"\s*:\s*"((?:[^"\\]|\\.)*)"')


def request_body(prompt: Prompt) -> dict:
    """The GenerateContentRequest of an prompt (the model is the job's, so not in the body)."""
    config: dict = {}
    if prompt.schema is not None:
        config |= {"responseMimeType": "application/json", "responseJsonSchema": prompt.schema}
    if prompt.answers != 1:
        config["candidateCount"] = prompt.answers
    thinking: dict = {"includeThoughts": True} if prompt.include_thoughts else {}
    if prompt.thinking:
        thinking["thinkingLevel"] = prompt.thinking
    if thinking:
        config["thinkingConfig"] = thinking
    body: dict = {"contents": [{"role": "user", "parts": [{"text": text} for text in prompt.texts]}]}
    if config:
        body["generationConfig"] = config
    return body


def input_line(prompt: Prompt) -> bytes:
    """`{"key", "request"}`: both APIs carry the extra `key` into the answer's line."""
    return orjson.dumps({"key": prompt.key, "request": request_body(prompt)}) + b"\n"


def _int(value) -> int:
    """Proto-JSON counts: numbers, or int64 strings; absent means 0."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def usage(metadata) -> Usage:
    if not isinstance(metadata, dict):
        return Usage()
    return Usage(
        input_tokens=_int(metadata.get("promptTokenCount")),
        cached_tokens=_int(metadata.get("cachedContentTokenCount")),
        thinking_tokens=_int(metadata.get("thoughtsTokenCount")),
        output_tokens=_int(metadata.get("candidatesTokenCount")),
    )


def unparsable(raw: bytes) -> Reply:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        failure, reason = INVALID_UTF8, f"line is not valid UTF-8 (byte {exc.start})"
    else:
        failure, reason = NOT_JSON, f"line is not JSON ({len(raw)} bytes, starts {raw[:40]!r})"
    match = _LEADING_KEY.match(raw)
    key = None
    if match:
        try:
            key = orjson.loads(b'"' + match.group(1) + b'"')
        except orjson.JSONDecodeError:
            key = None
    return Reply(key, failure=failure, reason=reason)


def keyed_line(raw: bytes) -> tuple[dict | None, Reply | None]:
    """The line as a JSON object with a key, or the Reply that says why it is not one."""
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, unparsable(raw)
    if not isinstance(line, dict):
        return None, Reply(
            None, failure=NOT_JSON, reason=f"line is a JSON {type(line).__name__}, not an object"
        )
    key = line.get("key")
    if not isinstance(key, str) or not key:
        return None, Reply(None, failure=NO_KEY, reason="line has no 'key'")
    return line, None


def line_error(key: str, error) -> Reply:
    """A per-line `error` Status: the request failed, unbilled."""
    if isinstance(error, dict):
        message = error.get("message") or "no message"
        label = " ".join(str(x) for x in (error.get("code"), error.get("status")) if x)
        reason = f"per-line error {label}: {message}" if label else f"per-line error: {message}"
    else:
        reason = f"per-line error: {error}"
    return Reply(key, failure=LINE_ERROR, reason=reason)


def response_reply(key: str, response) -> Reply:
    """The answer in a GenerateContentResponse: its first candidate's thought and answer parts."""
    if not isinstance(response, dict):
        return Reply(key, failure=EMPTY, reason="line has neither 'response' nor 'error'")
    tokens, model_version = usage(response.get("usageMetadata")), response.get("modelVersion")
    candidates = response.get("candidates") or []
    if not candidates or not isinstance(candidates[0], dict):
        feedback = response.get("promptFeedback") or {}
        block = feedback.get("blockReason") if isinstance(feedback, dict) else None
        if block:
            return Reply(key, usage=tokens, finish=BLOCKED, finish_reason=block, model_version=model_version)
        return Reply(key, usage=tokens, model_version=model_version, failure=EMPTY, reason="no candidates")
    candidate = candidates[0]
    finish = candidate.get("finishReason")
    thoughts, answers = [], []
    for part in (candidate.get("content") or {}).get("parts") or []:
        text = part.get("text") if isinstance(part, dict) else None
        if isinstance(text, str):  # not e.g. a signature-only part
            (thoughts if part.get("thought") else answers).append(text)
    return Reply(
        key,
        text="".join(answers),
        thought="".join(thoughts),
        usage=tokens,
        finish=_FINISH.get(finish, OTHER_END),
        finish_reason=finish,
        model_version=model_version,
    )


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


def request_digest(request) -> str:
    """A digest of what a request asks: the texts of its `contents`, in order. Vertex AI echoes a
    request re-serialized (snake_case names, nulls added), so its bytes cannot be compared; its
    texts survive. Something that is not a request digests as asking nothing."""
    digest = hashlib.sha256()
    if isinstance(request, dict):
        for text in _texts(request.get("contents")):
            digest.update(text.encode() + b"\0")
    return digest.hexdigest()


def sent_digest(raw: bytes) -> str:
    """The digest of the request in an input line `{"key", "request"}`."""
    return request_digest(orjson.loads(raw)["request"])


def with_echo(line: dict, reply: Reply) -> Reply:
    """`reply`, with the digest of the request its line carries (Vertex AI echoes it), if it does."""
    if "request" not in line:
        return reply
    return dataclasses.replace(reply, echoed=request_digest(line["request"]))


def read_line(raw: bytes) -> Reply:
    """A Developer API output line: `{"key", "response"}` or `{"key", "error"}`."""
    line, refused = keyed_line(raw)
    if refused is not None:
        return refused
    if line.get("error") is not None:
        return line_error(line["key"], line["error"])
    return response_reply(line["key"], line.get("response"))


# How a job ends, in the SDK's JOB_STATE_* spelling (the Developer API says BATCH_STATE_*); a
# shard `cotgen cancel` dropped from the queue ended as a job cancelled before it ran: unanswered.
_ENDS = {
    "JOB_STATE_SUCCEEDED": SUCCEEDED,
    "JOB_STATE_PARTIALLY_SUCCEEDED": PARTIALLY_SUCCEEDED,
    "JOB_STATE_FAILED": FAILED,
    "JOB_STATE_CANCELLED": CANCELLED,
    "JOB_STATE_EXPIRED": EXPIRED,
    DROPPED: CANCELLED,
}


def job_state(state: str | None) -> str:
    """The Developer API says BATCH_STATE_*; the SDK, Vertex AI and this project say JOB_STATE_*."""
    if not state:
        return "JOB_STATE_UNSPECIFIED"
    if state.startswith("BATCH_STATE_"):
        return "JOB_STATE_" + state.removeprefix("BATCH_STATE_")
    return state


def job_end(state: str) -> str:
    """The neutral end (`model_io.SUCCEEDED`, ...) of a JOB_STATE_*; "" while the job runs."""
    return _ENDS.get(state, "")


def job_status(state) -> dict[str, str]:
    """A BatchInfo's `state` (JOB_STATE_*) and `end`, from the API's state name or the SDK's enum."""
    state = job_state(getattr(state, "value", state))
    return {"state": state, "end": job_end(state)}


class GeminiWire:
    """The batch files of a Gemini API: `{"key", "request"}` lines in (both APIs carry the extra
    `key` into the answer's line), the Developer API's output lines (`read_line`). A subclass
    names the API and its limits, and reads its own output lines if they differ."""

    name: str
    label: str
    limits: Limits
    request_body = staticmethod(request_body)
    input_line = staticmethod(input_line)
    read_line = staticmethod(read_line)
    job_end = staticmethod(job_end)
    sent_digest = staticmethod(sent_digest)
