"""Reading the states of many jobs at once: list calls (pages) rather than a get per job.

A tick that follows a few jobs gets each (one call apiece, short timeout); past `LIST_FROM` jobs it
lists the project's jobs page by page, newest first, until it has seen every one it follows (a job
not listed is then got on its own). One `Poller` per tick: the pages it read serve every submission
that tick.
"""

from cotgen_assets.gemini.backend import BatchInfo
from cotgen_assets.gemini.resource import GeminiBatchResource

LIST_FROM = 8  # jobs followed at once from which listing pages is cheaper than a get per job
PAGE_SIZE = 100
MAX_PAGES = 20  # a job not among the newest 2,000 is got on its own
POLL_TIMEOUT_SECONDS = 10


class Poller:
    """The state of the jobs a tick follows, in as few API calls as it can."""

    def __init__(self, gemini: GeminiBatchResource, list_from: int = LIST_FROM):
        self.gemini, self.list_from = gemini, list_from
        self._listed: dict[str, BatchInfo] = {}

    def jobs(self, names: list[str]) -> list[BatchInfo]:
        """Each named job, in order (an API failure raises: the caller says so and tries next tick)."""
        missing = [name for name in names if name not in self._listed]
        if len(missing) >= self.list_from:
            self._list_until_seen(set(missing))
        return [self._listed.get(name) or self._get(name) for name in names]

    def _list_until_seen(self, wanted: set[str]) -> None:
        for number, page in enumerate(self.gemini.batch_pages(PAGE_SIZE), start=1):
            for job in page:
                self._listed[job.name] = job
            wanted -= {job.name for job in page}
            if not wanted or number >= MAX_PAGES:
                return

    def _get(self, name: str) -> BatchInfo:
        job = self.gemini.get_batch(name, timeout_seconds=POLL_TIMEOUT_SECONDS, max_attempts=2)
        self._listed[name] = job
        return job
