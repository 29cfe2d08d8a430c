"""The `gemini` resource: the batch API the assets and the sensor use, chosen by configuration.

One seam, two backends (`backend.Backend`): the Gemini Developer API (`developer`, Files +
`batchGenerateContent`; offline it is the local emulator) and Vertex AI batch prediction (`vertex`,
`batchPredictionJobs` over a gs:// staging prefix). Assets, sensor, records, cost and trace do not
know which one runs. Below the resource: sending a submission's shards, adopting one whose run
died before recording it, and downloading what finished, the same on both.
"""

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

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
from cotgen_assets.core.submissions import Submission
from cotgen_assets.gemini.backend import Backend, BatchInfo
from cotgen_assets.gemini.config import (
    DEVELOPER,
    VERTEX,
    backend_from_env,
    check_vertex,
    vertex_from_env,
)
from cotgen_assets.gemini.developer import DeveloperBatches
from cotgen_assets.gemini.polling import project_in_flight
from cotgen_assets.gemini.retries import GeminiError, Retrying, logger
from cotgen_assets.gemini.vertex import VertexBatches

OFFLINE_TAG = {"cotgen/gemini": "offline-emulator"}  # on assets and runs, so offline mode shows in the UI


class GeminiBatchResource(dg.ConfigurableResource):
    """Stage request files, run batch jobs and download their answers, on the backend configured.

    `developer`: with no `api_key` it is offline and uses the emulator at `base_url`, else
    `emulator_url`. `vertex`: jobs of `project` in `location`, staged under `staging` (gs://);
    with `base_url`, a local server (the emulator) and the GCS stand-in instead of Google.
    """

    backend: str = DEVELOPER
    api_key: str | None = None
    base_url: str | None = None
    emulator_url: str = "http://127.0.0.1:8765"
    project: str | None = None
    location: str = "global"
    staging: str | None = None
    timeout_seconds: float = 30.0
    max_attempts: int = 6
    backoff_seconds: float = 1.0

    _batches: Any = PrivateAttr(default=None)

    def __repr_args__(self):
        """Never show the key, even in a pytest failure or a debug print."""
        for name, value in super().__repr_args__():
            yield name, ("***" if name == "api_key" and value else value)

    def batches(self) -> Backend:
        """The backend, made at first use (a bad Vertex AI setting is a SettingError here)."""
        if self._batches is None:
            if self.backend == VERTEX:
                check_vertex(self.project, self.location, self.staging, self.base_url)
                retrying = Retrying(self.max_attempts, self.backoff_seconds)
                self._batches = VertexBatches(
                    retrying, self.project, self.location, self.staging, self.base_url, self.timeout_seconds
                )
            elif self.backend == DEVELOPER:
                retrying = Retrying(self.max_attempts, self.backoff_seconds, secret=self.api_key)
                self._batches = DeveloperBatches(
                    retrying, self.api_key, self.base_url, self.emulator_url, self.timeout_seconds
                )
            else:
                raise ValueError(f"backend must be {DEVELOPER!r} or {VERTEX!r}, not {self.backend!r}")
        return self._batches

    @property
    def offline(self) -> bool:
        """Whether a local stand-in answers, not Gemini (on the Developer API, asked once with a key)."""
        return self.batches().offline

    @property
    def surely_offline(self) -> bool:
        """Offline, known without a call (when the code location loads): no key on the Developer
        API, a local server on Vertex AI."""
        return bool(self.base_url) if self.backend == VERTEX else not self.api_key

    @property
    def endpoint(self) -> str | None:
        """The base URL in use; None means Google's own endpoint."""
        batches = self.batches()
        return batches.endpoint if isinstance(batches, DeveloperBatches) else self.base_url

    @property
    def api_calls(self) -> int:
        """API calls made through this resource so far (each attempt and page counts one)."""
        return self.batches().retrying.calls

    def describe(self) -> str:
        """For logs and metadata: which API, where; never a key."""
        return self.batches().describe()

    def upload_jsonl(self, path: str | Path, display_name: str, folder: str = "") -> str:
        return self.batches().stage(path, display_name, folder)

    def create_batch(self, model: str, source: str, display_name: str) -> BatchInfo:
        return self.batches().create_batch(model, source, display_name)

    def submit_jsonl(
        self, path: str | Path, model: str, display_name: str, same_ask: str = "", folder: str = ""
    ) -> BatchInfo:
        return self.batches().submit_jsonl(path, model, display_name, same_ask, folder)

    def get_batch(
        self, name: str, timeout_seconds: float | None = None, max_attempts: int | None = None
    ) -> BatchInfo:
        return self.batches().get_batch(name, timeout_seconds, max_attempts)

    def list_batches(self, page_size: int = 50) -> Iterator[BatchInfo]:
        return self.batches().list_batches(page_size)

    def batch_pages(self, page_size: int = 50) -> Iterator[list[BatchInfo]]:
        """The API's jobs a page at a time, newest first: one call per page."""
        return self.batches().pages(page_size)

    def find_batches(self, match: Callable[[str], bool], max_pages: int = 20) -> list[BatchInfo]:
        return self.batches().find_batches(match, max_pages)

    def find_batch(self, display_name: str, max_pages: int = 20) -> BatchInfo | None:
        return self.batches().find_batch(display_name, max_pages)

    def cancel_batch(self, name: str) -> None:
        self.batches().cancel_batch(name)

    def delete_batch(self, name: str) -> None:
        self.batches().delete_batch(name)

    def download_results(self, result_file: str, dest: str | Path) -> Path:
        return self.batches().download_results(result_file, dest)


def gemini_from_env() -> GeminiBatchResource:
    """The resource the environment configures (see `config`); a bad setting is a SettingError.

    Developer API: the real one when GEMINI_API_KEY is set, else the local emulator (offline).
    Vertex AI: never the key; Application Default Credentials, or a fixed token for a local server.
    """
    base_url = os.environ.get("COTGEN_GEMINI_BASE_URL") or None
    if backend_from_env() == VERTEX:
        vertex = vertex_from_env(base_url)
        return GeminiBatchResource(
            backend=VERTEX,
            base_url=base_url,
            project=vertex.project,
            location=vertex.location,
            staging=vertex.staging,
        )
    return GeminiBatchResource(
        api_key=dg.EnvVar("GEMINI_API_KEY") if os.environ.get("GEMINI_API_KEY") else None,
        base_url=base_url,
    )


# --------------------------------------------------------------------------- submissions


def submit(
    submission: Submission,
    gemini: GeminiBatchResource,
    sent_by: str = "outside a run",
    quota: Quota | None = None,
) -> list[BatchInfo]:
    """Send every shard once, as far as the batch quotas allow; returns the jobs created (or reused,
    `reused`, when their display name had one already). The rest stay queued in the submission, for
    the sensor to send as earlier jobs end (`send_queued`).

    Who sends it (`sent_by`, a run id) is saved before the first upload, so that if that run dies
    between a create and its record, the next fill finds the submission and adopts it (`adopt`).
    A shard sent again to a new job loses the results file of its earlier job (already
    ingested), so the new job's answers are downloaded.
    """
    sent = submission.saved()
    before = dict(zip(sent.shards, sent.batch_names)) if sent else {}
    submission.sent_by, submission.backend = sent_by, gemini.backend
    submission.batch_names = [QUEUED] * len(submission.shards)
    submission.queued_at = submission.dequeued_at = ""
    _record_jobs(submission)
    submission.save()
    jobs = send_queued(submission, gemini, project_in_flight(gemini), quota or Quota.from_env())
    for shard, name in zip(submission.shards, submission.batch_names):
        if before.get(shard, name) != name:  # an earlier job's answers, already ingested
            submission.results_path(shard).unlink(missing_ok=True)
    return jobs


def send_queued(
    submission: Submission, gemini: GeminiBatchResource, held: InFlight, quota: Quota
) -> list[BatchInfo]:
    """Create the jobs of the submission's queued shards, in order, while `held` (the project's jobs
    in flight, counted up as jobs are made) stays inside `quota`; each job is recorded at once.

    Stops at the first shard that does not fit, or that the API refuses as over quota (its count
    is fuller than the folder's, e.g. another project's work): the rest stay queued, oldest first.
    """
    jobs = []
    for shard in queued_shards(submission):
        tokens = shard_tokens(submission, shard)
        if not held.fits(quota, submission.model, tokens):
            break
        index = submission.shards.index(shard)
        try:
            job = _send(submission, gemini, shard, submission.display_names[index])
        except QuotaFull as full:
            logger.info("%s stays queued: %s", submission.display_names[index], full)
            held.refused()
            break
        jobs.append(job)
        held.add(submission.model, tokens)
        submission.batch_names[index] = job.name
        submission.job_inputs[index] = job.source or ""
        submission.live_states[index] = job.state
        submission.save()
    _note_queue(submission)
    return jobs


def _note_queue(submission: Submission) -> None:
    """When the submission first waited on the quota, and when its last waiting shard got a job."""
    waiting = bool(queued_shards(submission))
    if waiting and not submission.queued_at:
        submission.queued_at = now_iso()
    elif not waiting and submission.queued_at and not submission.dequeued_at:
        submission.dequeued_at = now_iso()
    submission.save()


def _send(submission: Submission, gemini: GeminiBatchResource, shard: str, display_name: str) -> BatchInfo:
    """One shard to its job (an existing one with its display name, else a new one)."""
    return gemini.submit_jsonl(
        submission.requests_path(shard),
        submission.model,
        display_name,
        submission.job_name_prefix(shard),
        folder=f"{submission.scenario}/{submission.folder.name}",
    )


def _record_jobs(submission: Submission) -> None:
    """From now on, no job has ended or answered; per shard, the request file its job reads."""
    count = len(submission.shards)
    submission.job_states, submission.job_outputs = [], []
    submission.job_inputs, submission.live_states = [""] * count, [""] * count
    submission.queue_dropped = False


def adopt(submission: Submission, gemini: GeminiBatchResource, sent_by: str) -> list[BatchInfo] | None:
    """Take over a submission whose run died after creating its jobs, before recording them.

    Each shard's job is the one saved for it, else the one with its display name (whose content
    hash proves it is for these very requests). None when no job of it exists: it was never
    sent, and is marked so (its run is over: none can appear). Shards the dead run did not get to
    create are queued, and sent now as far as the quota allows.
    """
    # none if it died creating; a queued shard's name is ""
    saved = {shown: name for shown, name in zip(submission.display_names, submission.batch_names) if name}
    found = [
        (_saved_job(gemini, saved[name], name) if name in saved else None) or gemini.find_batch(name)
        for name in submission.display_names
    ]
    if not any(found):
        submission.sent_by = ""
        submission.save()
        return None
    submission.batch_names = [job.name if job else QUEUED for job in found]
    submission.sent_by, submission.backend = sent_by, gemini.backend
    _record_jobs(submission)
    for index, job in enumerate(found):
        if job:
            submission.job_inputs[index], submission.live_states[index] = job.source or "", job.state
    submission.save()
    adopted = [dataclasses.replace(job, reused=True) for job in found if job]
    return adopted + send_queued(submission, gemini, project_in_flight(gemini), Quota.from_env())


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
    were paid for. Once every job has ended and none is queued, their states are saved for the
    ingestion (a shard dropped from the queue ended `DROPPED`: nothing of it was asked).
    """
    jobs = {}
    for shard, name in zip(submission.shards, submission.batch_names):
        if name == QUEUED:
            continue
        jobs[shard] = job = gemini.get_batch(name)
        results = submission.results_path(shard)
        if job.done and job.result_file and not results.exists():
            gemini.download_results(job.result_file, results)
    if all(job.done for job in jobs.values()) and not queued_shards(submission):
        ended = [jobs.get(shard) for shard in submission.shards]  # None: dropped from the queue
        submission.job_states = [job.state if job else DROPPED for job in ended]
        submission.job_outputs = [(job.result_file or "") if job else "" for job in ended]
        submission.save()
    return list(jobs.values())
