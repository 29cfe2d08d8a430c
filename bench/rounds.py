"""Rounds to a complete dataset: `python bench/rounds.py` (about 10 minutes on 2 cores).

`easy`, `limit` 1,000 correct CoT samples, the emulator answering a known share wrong
(`wrong_rate` 0.05, 0.3, 0.5; fast latency). For each rate, two ways of filling, round after
round until the limit is reached (or `--max-rounds`):

* exact: every round asks exactly the number still missing (`ask: missing`, what `fill` did before
  the planner): wrong answers are asked again next round, up to `max_tries`, then new problems;
* planner: the default `fill` (`ask: enough`), sized by the scenario's estimated accuracy.

Each run is the pipeline's own logic without Dagster: `prepare_generation` (plan and request
files), the `gemini` resource (upload, create, poll, download) against a fresh emulator of its
own, `ingest_submission` (grading and merging). Prints rounds, requests and generation cost of
both, and the planner's extra requests and cost.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cotgen_assets_tests.harness.emulator import start_emulator  # noqa: E402

RATES = (0.05, 0.3, 0.5)
MODEL = "gemini-3.1-pro-preview"


def fill_until_done(base_url: str, limit: int, ask_enough: bool, max_rounds: int) -> dict:
    """Rounds of fill until `limit` good samples (or `max_rounds`): rounds, requests, cost, good."""
    from cotgen_assets.backends.lifecycle import download_finished, submit
    from cotgen_assets.backends.resource import GeminiBatchResource
    from cotgen_assets.core.ask import GenerationAsk
    from cotgen_assets.core.ingest import ingest_submission
    from cotgen_assets.core.prepare import prepare_generation
    from cotgen_assets.core.scenarios import get_scenario
    from cotgen_assets.core.stages import GENERATION
    from cotgen_assets.core.storage import samples_path
    from cotgen_assets.core.submission_history import num_good_samples, submission_cost_usd

    scenario = get_scenario("easy")
    gemini = GeminiBatchResource(base_url=base_url, backoff_seconds=0.05)
    rounds = requests = 0
    cost = 0.0
    while num_good_samples(scenario) < limit and rounds < max_rounds:
        ask = GenerationAsk(
            scenario=scenario,
            limit=limit,
            max_tries=3,
            model=MODEL,
            thinking_level="high",
            max_requests_per_job=10_000,
            ask_enough=ask_enough,
        )
        submission = prepare_generation(ask, offline=True, rounds={"round": rounds + 1}).submission
        if not submission.num_requests:
            break  # nothing left to ask
        submit(submission, gemini.batch_api(), "bench")
        while not all(job.done for job in download_finished(submission, gemini.batch_api())):
            time.sleep(0.2)
        ingest_submission(submission, samples_path(GENERATION, scenario.suffix))
        rounds, requests = rounds + 1, requests + submission.num_requests
        cost += submission_cost_usd(scenario.name, GENERATION, submission.submission_id)
    return {"rounds": rounds, "requests": requests, "cost": cost, "good": num_good_samples(scenario)}


def one_run(work: Path, problems: Path, rate: float, limit: int, ask_enough: bool, max_rounds: int) -> dict:
    """A fresh data folder and emulator (so no job of another run is reused), at `rate`."""
    data = work / "data"
    (data / "easy").mkdir(parents=True)
    shutil.copy(problems, data / "easy" / "source_problems.parquet")
    os.environ["COTGEN_DATA_DIR"] = str(data)
    emulator = start_emulator(work / "emulator", latency=0.5)
    try:
        emulator.set_faults(wrong_rate=rate)
        return fill_until_done(emulator.base_url, limit, ask_enough, max_rounds)
    finally:
        emulator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--max-rounds", type=int, default=15)
    args = parser.parse_args()
    os.environ.setdefault("COTGEN_DATASETS_DIR", str((ROOT.parent / "shared" / "data").resolve()))

    import pyarrow.parquet as pq

    from cotgen_assets.core.scenarios import get_scenario, load_benchmarks
    from cotgen_assets_tests.harness.sources import decontaminate, load_source_problems

    with tempfile.TemporaryDirectory(prefix="cotgen-bench-rounds-") as tmp:
        problems = Path(tmp) / "easy.parquet"
        easy = get_scenario("easy")
        pq.write_table(decontaminate(load_source_problems(easy)[0], easy, load_benchmarks())[0], problems)
        header = (
            "| wrong-answer rate | exact fill: rounds | requests | cost (USD) "
            "| planner: rounds | requests | cost (USD) | extra requests | extra cost (USD) |"
        )
        lines = [header, "|" + "---:|" * 9]
        for rate in RATES:
            found = {}
            for name, ask_enough in (("exact", False), ("planner", True)):
                found[name] = one_run(
                    Path(tmp) / f"{rate}-{name}", problems, rate, args.limit, ask_enough, args.max_rounds
                )
                assert found[name]["good"] >= args.limit, f"{name} at {rate} stopped short: {found[name]}"
            exact, planner = found["exact"], found["planner"]
            extra = planner["requests"] / exact["requests"] - 1
            lines.append(
                f"| {rate} | {exact['rounds']} | {exact['requests']:,} | ${exact['cost']:.2f} "
                f"| {planner['rounds']} | {planner['requests']:,} | ${planner['cost']:.2f} | {extra:+.1%} "
                f"| ${planner['cost'] - exact['cost']:+.2f} |"
            )
            print(lines[-1], file=sys.stderr, flush=True)
        print("\n".join(lines))


if __name__ == "__main__":
    main()
