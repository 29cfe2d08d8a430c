"""End to end through Dagster against the emulator (zero latency): `python bench/e2e.py`.

3 scenarios x 1,000 problems, from `source_problems` to `cod_samples`, then, in the same run,
a baseline: the very request files those runs uploaded, sent again with the bare google-genai
SDK to a fresh emulator (upload, create, poll, download; no Dagster, no records). Prints the
wall time of both and the overhead per sample. Target: <= 90 s for the Dagster part.

Two modes:

* `--mode daemon` (default): the real platform. `dagster dev` (webserver + daemon, the
  project's scripts/dagster.yaml) is started first and not timed; one run per scenario
  (`source_problems` + `generation_batch`) is launched over GraphQL as a person would from the
  UI, and `batch_completion_sensor` (ticking every COTGEN_SENSOR_INTERVAL_SECONDS, 1 s here)
  carries each scenario to CoD on its own. Each run is its own process, as in production.
* `--mode inprocess`: `dg.materialize` on a test instance and sensor ticks evaluated in this
  process, each run the daemon would launch executed here, one after another. It measures the
  project's code with Dagster's execution machinery but without the daemon's process launches
  and tick interval.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cotgen_assets_tests.harness.emulator import start_emulator  # noqa: E402

SCENARIOS = ("easy", "medium", "hard")
MODEL = "gemini-3.1-pro-preview"


def lines_in(path: Path) -> int:
    return sum(1 for _ in open(path, "rb")) if path.exists() else 0


# --------------------------------------------------------------------------- Dagster, in-process


def run_inprocess(base_url: str, limit: int, deadline: float) -> dict:
    import dagster as dg

    from cotgen_assets.defs.assets.batches import generation_batch
    from cotgen_assets.defs.assets.sources import source_problems
    from cotgen_assets_tests.harness.pipeline import Pipeline

    phases = {}
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(instance, base_url)
        start = time.perf_counter()
        for scenario in SCENARIOS:
            pipeline.materialize(
                [source_problems, generation_batch],
                scenario,
                {"ops": {"generation_batch": {"config": {"limit": limit}}}},
            )
        phases["source_problems + generation_batch (3 runs)"] = time.perf_counter() - start
        runs = 0
        while not all_done(limit):
            if time.perf_counter() > deadline:
                raise TimeoutError("the chain did not finish in time")
            for request in pipeline.tick().run_requests:
                began = time.perf_counter()
                assert pipeline.run(request).success, f"run {request.job_name} {request.partition_key} failed"
                runs += 1
                key = f"{request.job_name} ({request.partition_key})"
                phases[key] = time.perf_counter() - began
            time.sleep(0.05)
        phases["runs launched by the sensor"] = runs
        return phases


# --------------------------------------------------------------------------- Dagster, real daemon

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""

ENDED = ("SUCCESS", "FAILURE", "CANCELED")
RUNS = """
{ runsOrError { ... on Runs { results { runId jobName status creationTime startTime endTime
    tags { key value } } } } }"""


def run_daemon(base_url: str, limit: int, deadline: float, home: Path, env: dict) -> dict:
    from cotgen_assets_tests.harness.dagster import start_dagster_dev

    began = time.perf_counter()
    dev = start_dagster_dev(
        home, env={**env, "COTGEN_GEMINI_BASE_URL": base_url, "COTGEN_SENSOR_INTERVAL_SECONDS": "1"}
    )
    phases = {"dagster dev start (not in the wall time)": time.perf_counter() - began}
    try:
        start = time.perf_counter()
        for scenario in SCENARIOS:
            params = {
                "selector": {
                    "repositoryLocationName": "cotgen_assets",
                    "repositoryName": "__repository__",
                    "jobName": "__ASSET_JOB",
                    "assetSelection": [{"path": ["source_problems"]}, {"path": ["generation_batch"]}],
                },
                "executionMetadata": {"tags": [{"key": "dagster/partition", "value": scenario}]},
                "runConfigData": {"ops": {"generation_batch": {"config": {"limit": limit}}}},
            }
            launched = dev.graphql(LAUNCH, {"params": params})["launchPipelineExecution"]
            if launched["__typename"] != "LaunchRunSuccess":
                raise RuntimeError(f"launch failed: {launched}")
        while True:  # every CoD sample written and every run ended
            runs = dev.graphql(RUNS)["runsOrError"]["results"]
            failed = [r for r in runs if r["status"] == "FAILURE"]
            if failed:
                raise RuntimeError(f"runs failed: {failed}; see {dev.log_path}")
            if all_done(limit) and all(r["status"] in ENDED for r in runs):
                break
            if time.perf_counter() > deadline:
                raise TimeoutError(f"the chain did not finish in time; runs: {runs_summary(dev)}")
            time.sleep(0.5)
        phases["wall"] = time.perf_counter() - start
        runs = dev.graphql(RUNS)["runsOrError"]["results"]
        for run in sorted(runs, key=lambda r: r["creationTime"] or 0):
            partition = next((t["value"] for t in run["tags"] if t["key"] == "dagster/partition"), "")
            if run["startTime"] and run["endTime"]:
                phases[f"run {run['jobName']} ({partition}): queued+launch"] = (
                    run["startTime"] - run["creationTime"]
                )
                phases[f"run {run['jobName']} ({partition}): execution"] = run["endTime"] - run["startTime"]
        phases["runs"] = len(runs)
        return phases
    finally:
        dev.stop()


def runs_summary(dev) -> list:
    return [(r["jobName"], r["status"]) for r in dev.graphql(RUNS)["runsOrError"]["results"]]


# --------------------------------------------------------------------------- shared


def data_dir() -> Path:
    return Path(os.environ["COTGEN_DATA_DIR"])


def all_done(limit: int) -> bool:
    """Every scenario has `limit` CoD samples (the last step of the chain)."""
    return all(lines_in(data_dir() / f"cod_{scenario}.jsonl") >= limit for scenario in SCENARIOS)


def request_files() -> list[Path]:
    return sorted(data_dir().glob("*/submissions/*/shard-*.requests.jsonl"))


def run_baseline(files: list[Path], base_url: str, out: Path) -> float:
    """The same request files through the bare SDK: upload, create, poll, download. No Dagster."""
    from google import genai
    from google.genai import types

    client = genai.Client(
        api_key="emulator-key", http_options=types.HttpOptions(base_url=base_url, api_version="v1beta")
    )
    start = time.perf_counter()
    jobs = []
    for path in files:
        uploaded = client.files.upload(file=str(path), config={"mime_type": "jsonl"})
        jobs.append(client.batches.create(model=MODEL, src=uploaded.name))
    for number, job in enumerate(jobs):
        while True:
            job = client.batches.get(name=job.name)
            if job.state.name in (
                "JOB_STATE_SUCCEEDED",
                "JOB_STATE_FAILED",
                "JOB_STATE_CANCELLED",
                "JOB_STATE_EXPIRED",
            ):
                break
            time.sleep(0.05)
        assert job.state.name == "JOB_STATE_SUCCEEDED", job.state
        (out / f"{number}.jsonl").write_bytes(client.files.download(file=job.dest.file_name))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("daemon", "inprocess"), default="daemon")
    parser.add_argument("--limit", type=int, default=1000, help="problems per scenario")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cotgen-bench-e2e-"))
    env = {
        "COTGEN_DATA_DIR": str(workdir / "data"),
        "COTGEN_DATASETS_DIR": os.environ.get("COTGEN_DATASETS_DIR", str(ROOT.parent / "shared" / "data")),
    }
    os.environ.update(env)
    os.environ.pop("GEMINI_API_KEY", None)  # the emulator, never the real API
    emulator = start_emulator(workdir / "emulator", latency=0.0)
    try:
        deadline = time.perf_counter() + args.timeout
        start = time.perf_counter()
        if args.mode == "daemon":
            phases = run_daemon(emulator.base_url, args.limit, deadline, workdir / "dagster_home", env)
            wall = phases.pop("wall")
        else:
            phases = run_inprocess(emulator.base_url, args.limit, deadline)
            wall = time.perf_counter() - start
        samples = {
            s: (lines_in(data_dir() / f"cot_{s}.jsonl"), lines_in(data_dir() / f"cod_{s}.jsonl"))
            for s in SCENARIOS
        }
        files = request_files()
        requests = sum(lines_in(f) for f in files)
        emulator.stop()
        baseline_emulator = start_emulator(workdir / "baseline-emulator", latency=0.0)
        try:
            (workdir / "baseline").mkdir()
            baseline = run_baseline(files, baseline_emulator.base_url, workdir / "baseline")
        finally:
            baseline_emulator.stop()
    finally:
        emulator.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"mode: {args.mode}; {len(SCENARIOS)} scenarios x {args.limit} problems; emulator latency 0")
    for name, value in phases.items():
        print(f"  {name:58} {value:8.2f} s" if isinstance(value, float) else f"  {name:58} {value:8}")
    print(f"samples (cot, cod) per scenario: {json.dumps(samples)}")
    total = sum(cot + cod for cot, cod in samples.values())
    print(f"dagster   {wall:7.1f} s for {total:,} samples ({requests:,} requests in {len(files)} batch jobs)")
    print(
        f"baseline  {baseline:7.1f} s: the same {len(files)} request files through the bare SDK and emulator"
    )
    print(
        f"overhead  {(wall - baseline) / total * 1000:7.2f} ms per sample "
        f"(dagster {wall / total * 1000:.2f} ms, baseline {baseline / total * 1000:.2f} ms)"
    )
    print(f"e2e_seconds={wall:.1f} baseline_seconds={baseline:.1f} target_seconds=90")


if __name__ == "__main__":
    main()
