"""A submission's life on any batch backend, written once: its jobs sent, adopted, fetched.

`BatchJobs` wraps a `base.Backend` with what every API needs and none provides: retries with
backoff, the lookup of a job whose create answer was lost (creating is not idempotent; the job may
appear only after the client gave up, so it is looked for over a grace period), and never paying
twice for one display name (of two jobs, the oldest is kept and the other cancelled). Below it,
what the batch and results assets do with a submission: `submit` its shards, `adopt` one whose
run died before recording its jobs, and `download_finished` what ended.
"""

import dataclasses
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from google.genai import errors as genai_errors

from cotgen_assets.backends.base import Backend, BatchInfo
from cotgen_assets.backends.online import online_batch_info
from cotgen_assets.backends.polling import project_in_flight
from cotgen_assets.backends.retries import GeminiError, logger, may_have_run
from cotgen_assets.core.online_round import is_online
from cotgen_assets.core.queue import (
    DROPPED,
    QUEUED,
    InFlight,
    Quota,
    QuotaFull,
    now_iso,
    queued_shards,
    shard_tokens,
)
from cotgen_assets.core.submissions import Submission, refuse_foreign_job

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LOST_CREATE_LOOKUPS = 10  # how often a lost create's job is looked for during its grace period


class CreateLost(GeminiError):
    """A create whose answer was lost (a timeout, a dropped connection, a server error): the API
    may still make its job."""


class CreatePending(GeminiError):
    """A shard whose create lost its answer a short while ago: not created again yet."""


class BatchJobs:
    """Every call of `backend` retried, with the rules all backends share."""

    def __init__(self, backend: Backend, max_attempts: int | None = None):
        self.backend, self.retrying = backend, backend.retrying
        self.max_attempts = max_attempts  # of an upload, a create, a list page; None: the backend's

    def single_attempts(self) -> "BatchJobs":
        """These calls, each tried once: for the sensor, whose tick must not wait through retries
        (what failed is tried again next tick)."""
        return BatchJobs(self.backend, max_attempts=1)

    def upload(self, path: str | Path, display_name: str, folder: str = "") -> str:
        """Upload a request file (local, or an object in a bucket); `folder` names its submission
        (`<scenario>/<stage>-<id>`) where the API keeps files in folders."""
        path = Path(path) if isinstance(path, str) else path
        if not path.is_file():
            raise FileNotFoundError(f"request file {path} does not exist")
        source = self.retrying.call(
            f"upload of {path.name}",
            lambda: self.backend.upload(path, display_name, folder),
            max_attempts=self.max_attempts,
        )
        logger.info("uploaded %s (%d bytes) as %s", path.name, path.stat().st_size, source)
        return source

    def create_batch(self, model: str, source: str, display_name: str) -> BatchInfo:
        """Create a batch job from an uploaded request file.

        Creating is not idempotent: a create whose answer was lost (a timeout, a dropped connection,
        a server error) may still make its job, even after the client gave up. So after such a
        failure it looks for the job by display name for up to the create timeout before creating
        again, and after any retried create it keeps the oldest job of that name and cancels the
        others (`_keep_oldest`).
        A 429 RESOURCE_EXHAUSTED means the batch quota is full: `QuotaFull`, at once, nothing made.
        A create whose last attempt's answer was lost raises `CreateLost`.
        """
        retried = False

        def find_lost_create(failure: BaseException) -> BatchInfo | None:
            nonlocal retried
            retried = True
            grace = self.backend.create_timeout_seconds if may_have_run(failure) else 0.0
            return self._await_job(display_name, grace)

        def create() -> BatchInfo:
            try:
                return self.backend.create(model.removeprefix("models/"), source, display_name)
            except genai_errors.APIError as error:
                if error.code == 429:  # not retried: the quota stays full until a job ends
                    raise QuotaFull(
                        f"create of batch {display_name!r}: {self.retrying.explain(error)}"
                    ) from None
                raise

        try:
            info = self.retrying.call(
                f"create of batch {display_name!r}",
                create,
                on_transient=find_lost_create,
                max_attempts=self.max_attempts,
            )
        except GeminiError as error:
            if error.transient:  # a 429 is QuotaFull: what is left may have made the job
                raise CreateLost(error.message, error.status_code, error.status, transient=True) from None
            raise
        if retried:
            named = {job.name: job for job in (info, *self.find_batches(lambda name: name == display_name))}
            info = self._keep_oldest(display_name, list(named.values()))
        logger.info("batch %s (%s) created on %s: %s", info.name, display_name, model, info.state)
        return info

    def _await_job(self, display_name: str, grace_seconds: float) -> BatchInfo | None:
        """The job of a create whose answer was lost, looked up until it appears or `grace_seconds`
        pass (a server may commit it only after the client timed out); None if it did not appear."""
        deadline = time.monotonic() + grace_seconds
        while True:
            try:
                found = self.find_batch(display_name)
            except GeminiError:
                found = None  # the API is still unwell; look again, or let the next attempt decide
            if found is not None:
                logger.warning("create of %s failed, but the job exists: %s", display_name, found.name)
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(left, grace_seconds / _LOST_CREATE_LOOKUPS))

    def _keep_oldest(self, display_name: str, named: list[BatchInfo]) -> BatchInfo:
        """Of the jobs named `display_name`, the oldest (its answers come first); the others that
        have not ended are cancelled at once, so that the requests are paid for once."""
        keep = min(named, key=_age)
        for job in named:
            if job.name != keep.name and not job.done:
                logger.warning(
                    "PAID TWICE AVERTED: batch %r exists twice (a create whose answer was lost made "
                    "its job after all); keeping %s, the oldest, and cancelling %s now (a job "
                    "cancelled before it runs costs nothing)",
                    display_name,
                    keep.name,
                    job.name,
                )
                self.cancel_batch(job.name)
        return keep

    def submit_jsonl(
        self, path: str | Path, model: str, display_name: str, same_ask: str = "", folder: str = ""
    ) -> BatchInfo:
        """Upload and create a batch, never paying twice for the same display name.

        A live or succeeded job with this display name is returned as it is (the oldest, if a lost
        create made two: the others are cancelled). `same_ask` is the start
        of the display names of jobs that ask the same but may send other bytes: such a job is not
        reused, and the log says why.
        """
        found = self.find_batches(
            lambda name: name == display_name or bool(same_ask and name.startswith(same_ask))
        )
        named = [job for job in found if job.display_name == display_name]
        if named:
            existing = self._keep_oldest(display_name, named)
            logger.warning(
                "REUSED: batch %r exists already as %s (%s), so it is not submitted again; its "
                "answers are used (the content hash in its name is that of these very requests)",
                display_name,
                existing.name,
                existing.state,
            )
            return dataclasses.replace(existing, reused=True)
        for other in found:
            _log_not_reused(other, display_name)
        source = self.upload(path, display_name, folder)
        created = self.create_batch(model, source, display_name)
        return dataclasses.replace(created, source=created.source or source)

    def get_batch(
        self, name: str, timeout_seconds: float | None = None, max_attempts: int | None = None
    ) -> BatchInfo:
        """The job's state and counts, in one API call (per attempt).

        The sensor passes a short timeout and few attempts, so a slow API cannot stall a tick. An
        online round's shard (`core.online_round`) has no job: it ended when its answers were saved.
        """
        if is_online(name):
            return online_batch_info(name)
        self.backend.check_name(name)
        return self.retrying.call(
            f"get of {name}", lambda: self.backend.get(name, timeout_seconds), max_attempts=max_attempts
        )

    def pages(self, page_size: int) -> Iterator[list[BatchInfo]]:
        token = None
        while True:
            page, token = self.retrying.call(
                "list of batches",
                lambda token=token: self.backend.page(page_size, token),
                max_attempts=self.max_attempts,
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
            matches += [i for i in page if i.display_name and match(i.display_name) and not i.failed]
            if number >= max_pages:
                break
        return sorted(matches, key=_age, reverse=True)

    def find_batch(self, display_name: str, max_pages: int = 20) -> BatchInfo | None:
        """The oldest job with this display name that is live or succeeded, if any: the one kept
        when a lost create made two (`_keep_oldest`)."""
        found = self.find_batches(lambda name: name == display_name, max_pages)
        return found[-1] if found else None

    def cancel_batch(self, name: str) -> None:
        """Ask the API to cancel a job; it then ends cancelled."""
        self.backend.check_name(name)
        self.retrying.call(f"cancel of {name}", lambda: self.backend.cancel(name))
        logger.info("cancel requested for %s", name)

    def delete_batch(self, name: str) -> None:
        """Delete a job; a job already gone after a retried delete counts as deleted."""
        retried = False

        def gone(_failure: BaseException) -> None:
            nonlocal retried
            retried = True
            return None

        self.backend.check_name(name)
        try:
            self.retrying.call(f"delete of {name}", lambda: self.backend.delete(name), on_transient=gone)
        except GeminiError as exc:
            if not (retried and exc.status_code == 404):
                raise
        logger.info("deleted %s", name)

    def download_results(self, result_file: str, dest: str | Path) -> Path:
        """Download a job's answers to `dest` (local, or an object in a bucket); a crash or a failed
        attempt leaves no half-written `dest`."""
        dest = Path(dest) if isinstance(dest, str) else dest
        self.retrying.call(f"download of {result_file}", lambda: self.backend.download(result_file, dest))
        logger.info("downloaded %s to %s (%d bytes)", result_file, dest, dest.stat().st_size)
        return dest


def _age(job: BatchInfo) -> tuple[datetime, str]:
    """Sorts jobs oldest first (by name when created at the same instant)."""
    return job.create_time or _EPOCH, job.name


def _log_not_reused(other: BatchInfo, display_name: str) -> None:
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


# --------------------------------------------------------------------------- submissions


def submit(
    submission: Submission,
    jobs: BatchJobs,
    sent_by: str = "outside a run",
    quota: Quota | None = None,
) -> list[BatchInfo]:
    """Send every shard once, as far as the batch quotas allow; returns the jobs created (or reused,
    `reused`, when their display name had one already). The rest stay queued in the submission, for
    the sensor to send as earlier jobs end (`send_queued`).
    A shard an online round answered (`core.online_round`) keeps its online name and is not sent.

    Who sends it (`sent_by`, a run id) is saved before the first upload, so that if that run dies
    between a create and its record, the next fill finds the submission and adopts it (`adopt`).
    A shard sent again to a new job loses the results file of its earlier job (already
    ingested), so the new job's answers are downloaded.
    """
    sent = submission.saved()
    before = dict(zip(sent.shards, sent.batch_names)) if sent else {}
    online = {
        shard: name for shard, name in zip(submission.shards, submission.batch_names) if is_online(name)
    }
    submission.sent_by, submission.backend = sent_by, jobs.backend.name
    submission.batch_names = [online.get(shard, QUEUED) for shard in submission.shards]
    submission.queued_at = submission.dequeued_at = ""
    _record_jobs(submission)
    answered = [online_batch_info(name) for name in online.values()]
    for job in answered:  # ended: they hold no quota
        submission.live_states[submission.batch_names.index(job.name)] = job.end
    submission.save()
    sent_jobs = answered + send_queued(submission, jobs, project_in_flight(jobs), quota or Quota.from_env())
    for shard, name in zip(submission.shards, submission.batch_names):
        if before.get(shard, name) != name:  # an earlier job's answers, already ingested
            submission.results_path(shard).unlink(missing_ok=True)
    return sent_jobs


def send_queued(submission: Submission, jobs: BatchJobs, held: InFlight, quota: Quota) -> list[BatchInfo]:
    """Create the jobs of the submission's queued shards, in order, while `held` (the project's jobs
    in flight, counted up as jobs are made) stays inside `quota`; each job is recorded at once.

    Stops at the first shard that does not fit, or that the API refuses as over quota (its count
    is fuller than the folder's, e.g. another project's work): the rest stay queued, oldest first.
    """
    created = []
    for shard in queued_shards(submission):
        tokens = shard_tokens(submission, shard)
        if not held.fits(quota, submission.model, tokens):
            break
        index = submission.shards.index(shard)
        try:
            job = _send(submission, jobs, shard, submission.display_names[index])
        except QuotaFull as full:
            logger.info("%s stays queued: %s", submission.display_names[index], full)
            held.refused()
            break
        created.append(job)
        held.add(submission.model, tokens)
        submission.lost_creates.pop(shard, None)
        submission.batch_names[index] = job.name
        submission.job_inputs[index] = job.source or ""
        submission.live_states[index] = job.end
        submission.save()
    _note_queue(submission)
    return created


def _note_queue(submission: Submission) -> None:
    """When the submission first waited on the quota, and when its last waiting shard got a job."""
    waiting = bool(queued_shards(submission))
    if waiting and not submission.queued_at:
        submission.queued_at = now_iso()
    elif not waiting and submission.queued_at and not submission.dequeued_at:
        submission.dequeued_at = now_iso()
    submission.save()


def _send(submission: Submission, jobs: BatchJobs, shard: str, display_name: str) -> BatchInfo:
    """One shard to its job (an existing one with its display name, else a new one).

    After a create whose answer was lost, the shard's job is only looked up, until the create
    timeout has passed since: the API may still make that job (a tick tries a create once, so
    the next tick may come sooner than the job)."""
    lost_at = submission.lost_creates.get(shard)
    if lost_at is not None and time.time() < lost_at + jobs.backend.create_timeout_seconds:
        found = jobs.find_batch(display_name)
        if found is None:
            raise CreatePending(
                f"the create of batch {display_name!r} lost its answer {time.time() - lost_at:.0f} s "
                f"ago, so its job may still appear: it is looked up, not created again, until "
                f"{jobs.backend.create_timeout_seconds:.0f} s have passed"
            )
        return dataclasses.replace(found, reused=True)
    try:
        return jobs.submit_jsonl(
            submission.requests_path(shard),
            submission.model,
            display_name,
            submission.job_name_prefix(shard),
            folder=f"{submission.scenario}/{submission.folder.name}",
        )
    except CreateLost:
        submission.lost_creates[shard] = time.time()
        submission.save()
        raise


def _record_jobs(submission: Submission) -> None:
    """From now on, no job has ended or answered; per shard, the request file its job reads."""
    count = len(submission.shards)
    submission.job_states, submission.job_outputs = [], []
    submission.job_inputs, submission.live_states = [""] * count, [""] * count
    submission.queue_dropped = False


def adopt(submission: Submission, jobs: BatchJobs, sent_by: str) -> list[BatchInfo] | None:
    """Take over a submission whose run died after creating its jobs, before recording them.

    Each shard's job is the one saved for it, else the one with its display name (whose content
    hash proves it is for these very requests). None when no job of it exists: it was never
    sent, and is marked so (its run is over: none can appear). Shards the dead run did not get to
    create are queued, and sent now as far as the quota allows.
    """
    # none if it died creating; a queued shard's name is ""
    saved = {shown: name for shown, name in zip(submission.display_names, submission.batch_names) if name}
    found = [
        (_saved_job(jobs, saved[name], name) if name in saved else None) or jobs.find_batch(name)
        for name in submission.display_names
    ]
    if not any(found):
        submission.sent_by = ""
        submission.save()
        return None
    submission.batch_names = [job.name if job else QUEUED for job in found]
    submission.sent_by, submission.backend = sent_by, jobs.backend.name
    _record_jobs(submission)
    for index, job in enumerate(found):
        if job:
            submission.job_inputs[index], submission.live_states[index] = job.source or "", job.end
    submission.save()
    adopted = [dataclasses.replace(job, reused=True) for job in found if job]
    return adopted + send_queued(submission, jobs, project_in_flight(jobs), Quota.from_env())


def _saved_job(jobs: BatchJobs, name: str, display_name: str) -> BatchInfo | None:
    """The job saved under `name`, if it still exists and is the one named `display_name`."""
    try:
        job = jobs.get_batch(name)
    except GeminiError as error:
        if error.status_code == 404:
            return None
        raise
    return job if job.display_name == display_name else None


def download_finished(submission: Submission, jobs: BatchJobs) -> list[BatchInfo]:
    """Fetch each shard's job; download the results file of every finished job (once).

    Not only of those that succeeded: a cancelled job hands back the answers it finished, which
    were paid for. A job that is not the one the submission made is refused (SubmissionRefused).
    Once every job has ended and none is queued, how they ended is saved for the ingestion (a shard
    dropped from the queue ended `DROPPED`: nothing of it was asked).
    """
    fetched = {}
    for shard, name in zip(submission.shards, submission.batch_names):
        if name == QUEUED:
            continue
        fetched[shard] = job = jobs.get_batch(name)
        results = submission.results_path(shard)
        if job.done and job.result_file and not results.exists():
            refuse_foreign_job(submission, shard, name, job.display_name)
            jobs.download_results(job.result_file, results)
    if all(job.done for job in fetched.values()) and not queued_shards(submission):
        ended = [fetched.get(shard) for shard in submission.shards]  # None: dropped from the queue
        submission.job_states = [job.state if job else DROPPED for job in ended]
        submission.job_outputs = [(job.result_file or "") if job else "" for job in ended]
        submission.save()
    return list(fetched.values())
