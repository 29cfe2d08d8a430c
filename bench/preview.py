"""Click to first sample: a preview beside a batch, `python bench/preview.py` (about a minute).

`easy`, 3 problems, against a fresh emulator at its DEFAULT latencies (a batch job takes
`--latency` 10 s from create to SUCCEEDED; a standard-tier generateContent call 0.5 s, a Flex one
2 s). Each path is the pipeline's own logic without Dagster's run launch:

* preview: `core.preview.run_preview` (generation, grading, a draft of each correct answer, the
  preview file written), on the standard and on the Flex tier;
* batch: `prepare_generation` (plan and request file), the `gemini` resource (upload, create,
  poll every 0.2 s, download), `ingest_submission`, until the first CoT record is in `cot_easy.jsonl`
  (no draft yet: that is another batch).

Prints seconds to the first sample of each, three runs each, the median. Each emulator answers
one warm-up call first (it loads its reference problems on the first answer).
"""

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cotgen_assets_tests.harness.emulator import start_emulator  # noqa: E402

MODEL = "gemini-3.1-pro-preview"
PROBLEMS = 3
RUNS = 3


def asks(scenario):
    from cotgen_assets.core.ask import GenerationAsk, SummarizationAsk

    common = {"scenario": scenario, "model": MODEL, "max_tries": 3, "max_requests_per_job": 10_000}
    return (
        GenerationAsk(limit=PROBLEMS, thinking_level="high", ask_enough=False, **common),
        SummarizationAsk(thinking_level="low", **common),
    )


def preview_seconds(gemini, scenario, tier: str) -> float:
    from cotgen_assets.core.preview import run_preview

    generation, drafts = asks(scenario)
    started = time.monotonic()
    preview = run_preview(
        generation, drafts, PROBLEMS, tier, lambda line, t: gemini.generate(MODEL, line, t), offline=True
    )
    assert len(preview.records) == PROBLEMS
    return time.monotonic() - started


def batch_seconds(gemini, scenario) -> float:
    from cotgen_assets.backends.lifecycle import download_finished, submit
    from cotgen_assets.core.ingest import ingest_submission
    from cotgen_assets.core.prepare import prepare_generation
    from cotgen_assets.core.stages import GENERATION
    from cotgen_assets.core.storage import samples_path

    generation, _ = asks(scenario)
    started = time.monotonic()
    submission = prepare_generation(generation, offline=True).submission
    submit(submission, gemini.batch_api(), "bench")
    while not all(job.done for job in download_finished(submission, gemini.batch_api())):
        time.sleep(0.2)
    ingest_submission(submission, samples_path(GENERATION, scenario.suffix))
    assert samples_path(GENERATION, scenario.suffix).stat().st_size > 0
    return time.monotonic() - started


def one_run(work: Path, problems: Path, measure) -> float:
    """A fresh data folder and emulator at its default latencies."""
    from cotgen_assets.backends.resource import GeminiBatchResource
    from cotgen_assets.core.scenarios import get_scenario
    from cotgen_assets_tests.harness.emulator import generation_request, request_line

    data = work / "data"
    (data / "easy").mkdir(parents=True)
    shutil.copy(problems, data / "easy" / "source_problems.parquet")
    os.environ["COTGEN_DATA_DIR"] = str(data)
    emulator = start_emulator(work / "emulator", latency=10.0)  # the emulator's default --latency
    try:
        gemini = GeminiBatchResource(base_url=emulator.base_url)
        # warm up: the emulator loads its reference problems on the first answer (seconds), a cost of
        # the stand-in that Gemini does not have
        gemini.generate(MODEL, request_line("warm-up", generation_request("Warm up.")), "standard")
        return measure(gemini, get_scenario("easy"))
    finally:
        emulator.stop()


def main() -> None:
    os.environ.setdefault("COTGEN_DATASETS_DIR", str((ROOT.parent / "shared" / "data").resolve()))
    import pyarrow.parquet as pq

    from cotgen_assets.core.scenarios import get_scenario
    from cotgen_assets_tests.harness.sources import load_source_problems

    ways = {
        "preview, standard tier": lambda g, s: preview_seconds(g, s, "standard"),
        "preview, Flex tier": lambda g, s: preview_seconds(g, s, "flex"),
        "batch (CoT only)": batch_seconds,
    }
    with tempfile.TemporaryDirectory(prefix="cotgen-bench-preview-") as tmp:
        problems = Path(tmp) / "easy.parquet"
        pq.write_table(load_source_problems(get_scenario("easy"))[0], problems)
        print(f"| click to first sample, {PROBLEMS} easy problems | median of {RUNS} (s) | runs (s) |")
        print("|---|---:|---|")
        for name, measure in ways.items():
            seconds = [
                one_run(Path(tmp) / f"{name}-{i}".replace(" ", "_"), problems, measure) for i in range(RUNS)
            ]
            runs = ", ".join(f"{s:.1f}" for s in seconds)
            print(f"| {name} | {statistics.median(seconds):.1f} | {runs} |")


if __name__ == "__main__":
    main()
