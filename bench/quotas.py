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

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cotgen_assets_tests.harness.emulator import start_emulator  # noqa: E402


def lines_in(path: Path) -> int:
    return sum(1 for _ in open(path, "rb")) if path.exists() else 0


def in_flight_seconds(state_dir: Path) -> tuple[float, float, float]:
    """(first create, last end, seconds with at least one job in flight) from the emulator's records."""
    spans = []
    for path in (state_dir / "batches").glob("*.json"):
        record = orjson.loads(path.read_bytes())
        start = record["start_time"]
        spans.append((record["create_time"], start + record["latency"]))
    spans.sort()
    covered, reach = 0.0, 0.0
    for begin, end in spans:
        if end > reach:
            covered += end - max(begin, reach)
            reach = end
    return spans[0][0], max(end for _, end in spans), covered


def drive(pipeline, gemini, emu, problems: int, deadline: float) -> dict:
    """Click, then tick and run until every CoD sample is written; the times and each tick's calls."""
    from cotgen_assets.core.queue import all_submissions, live_jobs
    from cotgen_assets.defs.sensors import decide_launches
    from cotgen_assets.defs.sensors.cursor import SensorCursor

    data = Path(os.environ["COTGEN_DATA_DIR"])
    cursor, ticks, marks = SensorCursor(), [], {}
    clicked = time.time()
    pipeline.submit_generation(
        "easy", limit=problems, ask="missing", max_requests_per_job=ARGS.requests_per_job
    )
    marks["click returned"] = time.time() - clicked
    while lines_in(data / "cod_easy.jsonl") < problems:
        if time.time() > deadline:
            raise TimeoutError("the chain did not finish in time")
        followed = sum(len(live_jobs(s)) for s in all_submissions())
        before, made = gemini.api_calls, len(emu.created_jobs())
        outcome = decide_launches(pipeline.instance, gemini, ["easy"], cursor)
        ticks.append((followed, gemini.api_calls - before, len(emu.created_jobs()) - made))
        for request in outcome.run_requests:
            assert pipeline.run(request).success, f"{request.job_name} failed"
        if "cot" not in marks and lines_in(data / "cot_easy.jsonl") >= problems:
            marks["cot"] = time.time() - clicked
        time.sleep(ARGS.tick_seconds)
    marks["cod"] = time.time() - clicked
    marks["clicked"] = clicked
    return {"marks": marks, "ticks": ticks}


def report(result: dict, emu) -> None:
    marks, ticks = result["marks"], result["ticks"]
    first, last, covered = in_flight_seconds(emu.state_dir)
    created = emu.created_jobs()
    names = [job["display_name"] for job in created]
    busy = [t for t in ticks if t[0]]
    print(
        f"problems {ARGS.problems}, {ARGS.requests_per_job} requests a job, "
        f"quota {ARGS.max_active_jobs} jobs, latency {ARGS.latency} s, tick every {ARGS.tick_seconds} s"
    )
    print(f"click returned in {marks['click returned']:.1f} s")
    print(f"click -> last CoT sample: {marks['cot']:.1f} s; click -> last CoD sample: {marks['cod']:.1f} s")
    print(
        f"emulator's own time (a job in flight): {covered:.1f} s of {last - first:.1f} s between its first "
        f"create and last end; platform time beside it: {marks['cod'] - covered:.1f} s"
    )
    print(
        f"jobs created: {len(created)}, distinct shards: {len(set(names))}, "
        f"most in flight at once: {max(j['active'] for j in created)}"
    )
    print(f"sensor ticks: {len(ticks)}; with jobs in flight: {len(busy)}")
    polling = [calls for followed, calls, made in busy if not made]
    creating = [(calls, made) for followed, calls, made in busy if made]
    if polling:
        followed = [f for f, _, made in busy if not made]
        print(
            f"ticks that only polled: {len(polling)}, API calls mean {sum(polling) / len(polling):.1f}, "
            f"max {max(polling)}, for {sum(followed) / len(followed):.1f} jobs followed on average "
            f"(max {max(followed)}; a get per job would be as many calls)"
        )
    if creating:
        calls, made = sum(c for c, _ in creating), sum(m for _, m in creating)
        print(
            f"ticks that created queued jobs: {len(creating)}, {made} jobs, {calls} API calls "
            f"({calls / made:.1f} a job: the display-name lookup, the upload and the create, plus polling)"
        )
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
                gemini = pipeline.resources["gemini"]
                result = drive(pipeline, gemini, emu, ARGS.problems, time.time() + ARGS.timeout)
                report(result, emu)
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
