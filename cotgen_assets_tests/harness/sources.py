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


def kill_a_decontamination_worker() -> int:
    """SIGKILL one worker process of this process's forkserver (what the OOM killer does); its pid."""
    servers = [p for p in psutil.Process().children() if "forkserver" in " ".join(p.cmdline())]
    workers = [worker for server in servers for worker in server.children()]
    assert workers, "no decontamination worker is running"
    workers[0].send_signal(signal.SIGKILL)
    return workers[0].pid


class CountedProcess(multiprocessing.context.ForkServerProcess):
    """A forkserver process that notes its start in `STARTED` (module level: it is pickled)."""

    STARTED: list[int] = []

    def start(self):
        super().start()
        CountedProcess.STARTED.append(self.pid)
