"""A scenario's problems as one table, decontaminated the way `source_problems` does it, and a
decontamination worker killed as the out-of-memory killer would."""

import multiprocessing.context
import signal

import psutil
import pyarrow as pa

from cotgen_assets.core.decontamination import Decontamination, Decontaminator
from cotgen_assets.core.scenarios import Benchmark, Scenario
from cotgen_assets.core.sources import stream_source_problems


def load_source_problems(scenario: Scenario) -> tuple[pa.Table, list[str], int]:
    """The scenario's filtered, prepared problems (before decontamination), dropped ids, dataset rows."""
    problems = stream_source_problems(scenario)
    table = pa.Table.from_batches(list(problems.batches), problems.schema)
    return table, problems.dropped, problems.dataset_rows


def decontaminate(
    problems: pa.Table, scenario: Scenario, benchmarks: dict[str, Benchmark], workers: int = 1
) -> tuple[pa.Table, Decontamination]:
    """The kept rows of a whole table and the report, through the asset's `Decontaminator`."""
    with Decontaminator(scenario, benchmarks, workers) as decontaminator:
        kept = [decontaminator.filter(batch) for batch in problems.to_batches()]
        outcome = decontaminator.finish()
    return pa.Table.from_batches(kept, problems.schema), outcome


def kill_a_worker_before_the_second_batch(monkeypatch) -> list[int]:
    """Make `Decontaminator.filter` SIGKILL one worker (what the OOM killer does) as the second batch
    comes, when the workers are up; the rows of each batch it was given, filled as they come."""
    batches_seen: list[int] = []
    original = Decontaminator.filter

    def filter_after_a_kill(self, batch):
        batches_seen.append(batch.num_rows)
        if len(batches_seen) == 2:
            _kill_a_forkserver_child()
        return original(self, batch)

    monkeypatch.setattr(Decontaminator, "filter", filter_after_a_kill)
    return batches_seen


def _kill_a_forkserver_child() -> None:
    servers = [p for p in psutil.Process().children() if "forkserver" in " ".join(p.cmdline())]
    workers = [worker for server in servers for worker in server.children()]
    assert workers, "no decontamination worker is running"
    workers[0].send_signal(signal.SIGKILL)


class CountedProcess(multiprocessing.context.ForkServerProcess):
    """A forkserver process that notes its start in `STARTED` (module level: it is pickled)."""

    STARTED: list[int] = []

    def start(self):
        super().start()
        CountedProcess.STARTED.append(self.pid)
