"""The queue of shards: jobs are created only while the project stays inside the batch quotas.

A submission records all its shards before anything is sent; a shard whose job is not created yet
is `queued` (its batch name is ""). What is in flight project-wide is read from the data folder:
every submission's recorded jobs, across scenarios and stages, that have not been seen to end.
A job's enqueued tokens are estimated from its request file: its bytes / 4 (the API's rule of
thumb of ~4 characters a token, over the whole JSON line, so never less than the prompt's tokens).
"""

import json
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cotgen_assets.core.model_io import ANSWERED_ENDS, UNANSWERED_ENDS
from cotgen_assets.core.settings import number
from cotgen_assets.core.stages import stage_named
from cotgen_assets.core.storage import atomic_write, data_dir
from cotgen_assets.core.submissions import Submission, load_submission

QUEUED = ""  # the batch name of a shard whose job is not created yet
# How a queued shard that `cotgen cancel` dropped ends, never created: each wire reads it as a job
# cancelled before it ran (ingestion: its requests were never run).
DROPPED = "DROPPED_FROM_QUEUE"
# A shard's live state is its job's neutral end (`model_io`), "" while it runs (or is unseen), or:
GONE = "gone"  # the API no longer has the job (deleted): it holds no quota
ENDED = ANSWERED_ENDS | UNANSWERED_ENDS | {GONE}
# After a 429 the quota is taken to be the jobs then in flight, for this long: no create (and no
# upload, which would pile up in the Files API's 20 GB) is tried again until one of them ends.
REFUSAL_FILE = "batch-quota-refusal.json"
REFUSAL_KEPT_SECONDS = 600


class QuotaFull(Exception):
    """The API refused a create with 429 RESOURCE_EXHAUSTED: its batch quota is full now."""


@dataclass(frozen=True)
class Quota:
    max_active_jobs: int
    max_enqueued_tokens: int  # per model

    @classmethod
    def from_env(cls) -> "Quota":
        return cls(number("COTGEN_MAX_ACTIVE_JOBS"), number("COTGEN_MAX_ENQUEUED_TOKENS"))


@dataclass
class InFlight:
    """The project's jobs in flight: how many, and their enqueued tokens per model."""

    jobs: int = 0
    tokens: dict[str, int] = field(default_factory=dict)
    refused_at: int | None = None  # the jobs in flight when the API last refused a create (recently)
    # Request files of jobs in flight that could not be read (deleted or locked by hand): each job
    # still holds its slot, its tokens are not counted (the API's 429 still guards the token quota).
    unreadable: list[str] = field(default_factory=list)

    def fits(self, quota: Quota, model: str, tokens: int) -> bool:
        ceiling = (
            quota.max_active_jobs if self.refused_at is None else min(quota.max_active_jobs, self.refused_at)
        )
        return self.jobs < ceiling and self.tokens.get(model, 0) + tokens <= quota.max_enqueued_tokens

    def refused(self) -> None:
        """The API refused a create: the quota is full at what is in flight now (remembered a while)."""
        self.refused_at = self.jobs
        with atomic_write(data_dir() / REFUSAL_FILE, "w") as handle:
            json.dump({"jobs": self.jobs, "at": time.time()}, handle)

    def add(self, model: str, tokens: int) -> None:
        self.jobs += 1
        self.tokens[model] = self.tokens.get(model, 0) + tokens


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def shard_tokens(submission: Submission, shard: str) -> int:
    """The enqueued tokens of a shard's job, estimated from its request file."""
    return math.ceil(submission.requests_path(shard).stat().st_size / 4)


def queued_shards(submission: Submission) -> list[str]:
    """The shards still waiting for a job, in order (none once the queue was dropped)."""
    if submission.queue_dropped:
        return []
    return [shard for shard, name in zip(submission.shards, submission.batch_names) if name == QUEUED]


def live_jobs(submission: Submission) -> list[str]:
    """The shards whose job was created and not yet seen to end."""
    if submission.job_states:  # every job ended
        return []
    seen = dict(zip(submission.shards, submission.live_states))
    return [
        shard
        for shard, name in zip(submission.shards, submission.batch_names)
        if name != QUEUED and seen.get(shard) not in ENDED
    ]


def all_submissions() -> list[Submission]:
    """Every submission in the data folder, across scenarios and stages."""
    found = []
    for path in sorted(data_dir().glob("*/submissions/*/submission.json")):
        stage_name, _, submission_id = path.parent.name.partition("-")
        scenario = path.parent.parent.parent.name
        try:
            found.append(load_submission(scenario, stage_named(stage_name), submission_id))
        except (OSError, ValueError, KeyError, TypeError):  # damaged: the sensor says so for its scenario
            continue
    return found


def live_submissions() -> list[Submission]:
    """The submissions that hold the quota or wait for it: jobs created and not seen to end, or
    shards queued. A tick reads them once, for its queue and its count of jobs in flight."""
    return [s for s in all_submissions() if live_jobs(s) or queued_shards(s)]


def in_flight(submissions: list[Submission]) -> InFlight:
    """What the quota holds now: each submission's created jobs not yet seen to end."""
    held = InFlight(refused_at=recent_refusal())
    for submission in submissions:
        for shard in live_jobs(submission):
            try:
                tokens = shard_tokens(submission, shard)
            except OSError as error:
                held.unreadable.append(f"{submission.requests_path(shard)} ({error.strerror or error})")
                tokens = 0
            held.add(submission.model, tokens)
    return held


def save_live_states(submission: Submission, ends: dict[str, str]) -> None:
    """Save the neutral ends (`ends`, by shard; "" while a job runs) its jobs were just seen in: what
    the queue counts as in flight. A shard not in `ends` keeps the state it was last seen in."""
    last = dict(zip(submission.shards, submission.live_states))
    seen = [ends.get(shard, last.get(shard, "")) for shard in submission.shards]
    if seen != submission.live_states:
        submission.live_states = seen
        submission.save()


def recent_refusal() -> int | None:
    """The jobs in flight when the API last refused a create, if that was recent."""
    path = data_dir() / REFUSAL_FILE
    if not path.exists():
        return None
    try:
        refusal = json.loads(path.read_text())
        return refusal["jobs"] if time.time() - refusal["at"] < REFUSAL_KEPT_SECONDS else None
    except (ValueError, KeyError, TypeError):  # damaged: forget it, the API says again if need be
        return None


def waiting_order(submissions: list[Submission]) -> list[Submission]:
    """Submissions with queued shards, the one queued first first."""
    waiting = [s for s in submissions if queued_shards(s)]
    return sorted(waiting, key=lambda s: (s.queued_at, s.submission_id))


def recorded_as(submission: Submission, recorded_names: list[str]) -> bool:
    """Whether a batch materialization that recorded `recorded_names` recorded this submission as
    it is saved: the same jobs, but for shards queued then, created since by the sensor."""
    return len(recorded_names) == len(submission.batch_names) and all(
        recorded in (QUEUED, saved) for recorded, saved in zip(recorded_names, submission.batch_names)
    )


def job_counts(submission: Submission, ends: dict[str, str]) -> dict[str, int]:
    """Its jobs created / queued / running (created, not ended) / done, from each created shard's
    job's neutral end (`ends`, by shard; "" while it runs)."""
    created = [shard for shard, name in zip(submission.shards, submission.batch_names) if name != QUEUED]
    done = sum(1 for shard in created if ends.get(shard) in ENDED)
    return {
        "jobs_created": len(created),
        "jobs_queued": len(queued_shards(submission)),
        "jobs_running": len(created) - done,
        "jobs_done": done,
    }


def drop_queue(submission: Submission) -> int:
    """`cotgen cancel`: the shards still queued are never created; returns how many were dropped."""
    dropped = len(queued_shards(submission))
    if dropped:
        submission.queue_dropped = True
        submission.save()
    return dropped


def quota_wait_seconds(submission: Submission) -> float:
    """How long its shards waited on the batch quota: from the first queued to the last created."""
    if not submission.queued_at or not submission.dequeued_at:
        return 0.0
    waited = datetime.fromisoformat(submission.dequeued_at) - datetime.fromisoformat(submission.queued_at)
    return waited.total_seconds()
