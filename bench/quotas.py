"""A submission of many jobs through the batch quota, in-process: `python bench/quotas.py`.

`easy` (GSM8K's training problems) with `--problems N`, in jobs of `--requests-per-job`, against
an emulator that allows `--max-active-jobs` jobs in flight (each takes `--latency` s) and a platform
told the same quota (COTGEN_MAX_ACTIVE_JOBS). One click of generation_batch, then sensor ticks
(`decide_launches`, every run they ask for executed here, as the daemon would) until every CoD
sample is written. Prints:

* wall time from the click to the last CoT sample and to the last CoD sample;
* the emulator's own time: how long at least one job was in flight (from its job records), and
  the platform's time beside it (wall minus that: planning, uploads, creates, downloads, ingestion,
  waiting for the next tick);
* per sensor tick: the jobs it followed (created, not yet seen to end) and the API calls it made
  (gets or list pages, uploads, creates), with what a get per job would have cost;
* the most jobs the emulator ever had in flight, and that no shard was made into two jobs.

Figures only, no assertion on time: the machine is shared.
"""

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batch_chain import describe, drive  # noqa: E402

from cotgen_assets_tests.harness.emulator import start_emulator  # noqa: E402


def report(chain, emu) -> None:
    print(
        f"problems {ARGS.problems}, {ARGS.requests_per_job} requests a job, "
        f"quota {ARGS.max_active_jobs} jobs, latency {ARGS.latency} s, tick every {ARGS.tick_seconds} s"
    )
    for line in describe(chain, emu):
        print(line)
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def main() -> None:
    import dagster as dg

    from cotgen_assets_tests.harness.pipeline import Pipeline

    with tempfile.TemporaryDirectory(prefix="cotgen-quotas-") as tmp:
        os.environ["COTGEN_DATA_DIR"] = str(Path(tmp) / "data")
        os.environ["COTGEN_MAX_ACTIVE_JOBS"] = str(ARGS.max_active_jobs)
        args = ["--max-active-jobs", str(ARGS.max_active_jobs)]
        emu = start_emulator(Path(tmp) / "emulator", latency=ARGS.latency, extra_args=args)
        try:
            with dg.instance_for_test() as instance:
                pipeline = Pipeline(instance, emu.base_url)
                from cotgen_assets.defs.assets.sources import source_problems

                pipeline.materialize([source_problems], "easy")
                click = {
                    "limit": ARGS.problems,
                    "ask": "missing",
                    "max_requests_per_job": ARGS.requests_per_job,
                }
                chain = drive(
                    pipeline,
                    "easy",
                    ARGS.problems,
                    click,
                    tick_seconds=ARGS.tick_seconds,
                    deadline=time.time() + ARGS.timeout,
                )
                report(chain, emu)
        finally:
            emu.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", type=int, default=2000, help="CoT samples to make (up to 7,473)")
    parser.add_argument("--requests-per-job", type=int, default=100)
    parser.add_argument("--max-active-jobs", type=int, default=10)
    parser.add_argument("--latency", type=float, default=3.0, help="seconds a job takes in the emulator")
    parser.add_argument("--tick-seconds", type=float, default=1.0, help="pause between sensor ticks")
    parser.add_argument("--timeout", type=float, default=1800)
    ARGS = parser.parse_args()
    main()
