"""Reading the states of many jobs at once: list calls (pages) rather than a get per job.

A tick that follows a few jobs gets each (one call apiece, short timeout); past `LIST_FROM` jobs it
lists the project's jobs page by page, newest first, until it has seen every one it follows (a job
not listed is then got on its own). One `Poller` per tick: the pages it read serve every submission
that tick.
"""

from collections.abc import Iterator
from typing import Protocol

from cotgen_assets.backends.base import BatchInfo
from cotgen_assets.backends.retries import GeminiError
from cotgen_assets.core.queue import GONE, InFlight, in_flight, live_jobs, live_submissions, save_live_states
from cotgen_assets.core.submissions import Submission


class JobReader(Protocol):
    """What polling needs of `lifecycle.BatchJobs` (which sends through this module)."""

    def get_batch(
        self, name: str, timeout_seconds: float | None = None, max_attempts: int | None = None
    ) -> BatchInfo: ...

    def pages(self, page_size: int) -> Iterator[list[BatchInfo]]: ...


LIST_FROM = 8  # jobs followed at once from which listing pages is cheaper than a get per job
PAGE_SIZE = 100
MAX_PAGES = 20  # a job not among the newest 2,000 is got on its own
POLL_TIMEOUT_SECONDS = 10


class Poller:
    """The state of the jobs a tick follows, in as few API calls as it can."""

    def __init__(self, jobs_api: JobReader, list_from: int = LIST_FROM):
        self.jobs_api, self.list_from = jobs_api, list_from
        self._listed: dict[str, BatchInfo] = {}

    def jobs(self, names: list[str]) -> list[BatchInfo]:
        """Each named job, in order (an API failure raises: the caller says so and tries next tick)."""
        self.prefetch(names)
        return [self._listed.get(name) or self._get(name) for name in names]

    def prefetch(self, names: list[str]) -> None:
        """List pages when `names` are many; a job not listed is got when asked for."""
        missing = [name for name in names if name not in self._listed]
        if len(missing) >= self.list_from:
            self._list_until_seen(set(missing))

    def _list_until_seen(self, wanted: set[str]) -> None:
        for number, page in enumerate(self.jobs_api.pages(PAGE_SIZE), start=1):
            for job in page:
                self._listed[job.name] = job
            wanted -= {job.name for job in page}
            if not wanted or number >= MAX_PAGES:
                return

    def _get(self, name: str) -> BatchInfo:
        job = self.jobs_api.get_batch(name, timeout_seconds=POLL_TIMEOUT_SECONDS, max_attempts=2)
        self._listed[name] = job
        return job


def refresh_live_states(submissions: list[Submission], poller: Poller) -> list[tuple[Submission, str]]:
    """Read again the state of every job the folder counts as in flight (one listing serves them
    all), so that a submission no sensor tick follows any more (an older one, another
    deployment's) does not hold the quota after its jobs ended. A job the API no longer has is
    `GONE`; another failure leaves the saved state (the API decides with its 429). Returns the
    submissions that name a batch this backend rejects (a hand edit, a job of the other backend),
    with why: their jobs stay counted in flight."""
    live = [(s, live_jobs(s)) for s in submissions]
    try:
        poller.prefetch([s.batch_names[s.shards.index(shard)] for s, shards in live for shard in shards])
    except GeminiError:
        return []
    rejected = {}
    for submission, shards in live:
        ends = {}
        for shard in shards:
            try:
                ends[shard] = poller.jobs([submission.batch_names[submission.shards.index(shard)]])[0].end
            except GeminiError as error:
                if error.status_code == 404:
                    ends[shard] = GONE
            except ValueError as error:
                rejected.setdefault(submission.folder, (submission, str(error)))
        save_live_states(submission, ends)
    return list(rejected.values())


def project_in_flight(jobs_api: JobReader) -> InFlight:
    """The project's jobs in flight now, across scenarios and stages, as the batch quota counts them."""
    submissions = live_submissions()
    refresh_live_states(submissions, Poller(jobs_api))
    return in_flight(submissions)
