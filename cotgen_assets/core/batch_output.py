"""Batch output lines, one at a time, each turned into a definite outcome.

The backend that ran the job reads its own line format into a neutral `Reply`
(`model_io.WireFormat.read_line`); here a reply becomes a `ResultLine` with a status the records,
outcomes and costs go by. Lines come in any order; the caller joins by key. Files can be large,
so nothing here reads a whole file at once.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cotgen_assets.core.model_io import BLOCKED, COMPLETE, CUT_OFF, Reply, Usage, WireFormat

OK = "ok"
TRUNCATED = "truncated"
BAD_FINISH = "bad_finish"
NO_THOUGHTS = "no_thoughts"
EMPTY = "empty"
REQUEST_MISMATCH = "request_mismatch"  # the line's echoed request is not the one sent under its key


def overall_state(states: list[str]) -> str:
    """One state for a submission: the shared state, or MIXED(a, b) when its jobs differ."""
    distinct = sorted(set(states))
    return distinct[0] if len(distinct) == 1 else f"MIXED({', '.join(distinct)})"


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
    request_digest: str | None = None  # of the request the line echoes (Reply.echoed), else None

    @property
    def ok(self) -> bool:
        return self.status == OK


def classify(reply: Reply, require_thoughts: bool = True) -> ResultLine:
    """The outcome of one reply. Truncated and other unfinished answers keep their usage: they were billed."""
    if reply.failure is not None:
        return ResultLine(
            reply.key,
            reply.failure,
            finish_reason=reply.finish_reason,
            usage=reply.usage,
            model_version=reply.model_version,
            reason=reply.reason,
            request_digest=reply.echoed,
        )
    result = dict(
        key=reply.key,
        thought=reply.thought,
        answer=reply.text,
        finish_reason=reply.finish_reason,
        usage=reply.usage,
        model_version=reply.model_version,
        request_digest=reply.echoed,
    )
    if reply.finish == CUT_OFF:
        reason = f"output truncated at the token limit ({reply.finish_reason})"
        return ResultLine(status=TRUNCATED, reason=reason, **result)
    if reply.finish == BLOCKED:
        return ResultLine(status=BAD_FINISH, reason=f"prompt blocked: {reply.finish_reason}", **result)
    if reply.finish != COMPLETE:
        return ResultLine(status=BAD_FINISH, reason=f"finish reason {reply.finish_reason}", **result)
    if not reply.text.strip():
        return ResultLine(status=EMPTY, reason="response has no answer text", **result)
    if require_thoughts and not reply.thought.strip():
        return ResultLine(status=NO_THOUGHTS, reason="response has no thought summary", **result)
    return ResultLine(status=OK, **result)


def iter_result_lines(
    path: str | Path, wire: WireFormat, require_thoughts: bool = True
) -> Iterator[ResultLine]:
    """Every non-blank line of a results file in `wire`'s format, classified, in file order."""
    with open(path, "rb", buffering=1 << 20) as f:  # lines are KBs: a small buffer means a syscall each
        for raw in f:
            if raw.strip():
                yield classify(wire.read_line(raw.rstrip(b"\r\n")), require_thoughts)
