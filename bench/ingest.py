"""Ingestion throughput and memory against a floor: `python bench/ingest.py --lines 1000000`.

Writes a realistic synthetic generation submission (request shards, their contexts and
results files whose lines look like the emulator's: thought summaries of a few KB, answer,
usage; 1% per-line errors, 0.5% truncations, 10% wrong answers, shuffled), then turns it into
a CoT JSONL several ways, each in its own process so that its peak RSS is its own:

* floor     a bare `orjson` parse and write of every results line (no join, no records);
* naive     the old way: `json` loads every line into one list, joins, builds, writes
            (run under an address-space limit so that it cannot take the machine down);
* project   `cotgen_assets.core.ingest.ingest_submission` into a new samples file;
* asset     the same with the `SampleStats` observer that the `cot_samples` asset passes;
* reingest  the asset's path again into the now-full file: every record replaced (the merge's
            worst case).

Ends with `vs_floor=<project s / floor s> peak_rss_mb=<largest peak RSS of the project's variants>`.
Targets: vs_floor <= 3; peak RSS at 1M lines <= 1.5x that at 10k. Files go under --workdir
(default: a temp dir, removed at the end unless --keep); 1M lines need ~25 GB of disk.
"""

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = "easy"
MODEL = "gemini-3.1-pro-preview"
MB = 1024 * 1024


# --------------------------------------------------------------------------- synthetic data


def problem_pool() -> list[dict]:
    """Real GSM8K problems through the project's own source code (ids, questions, answers)."""
    from cotgen_assets.core.scenarios import get_scenario
    from cotgen_assets_tests.harness.sources import load_source_problems

    table, _, _ = load_source_problems(get_scenario(SCENARIO))
    return table.select(
        ["question", "solution", "answer", "source_dataset", "source_config", "source_split", "source_row"]
    ).to_pylist()


def thought_text(solution: str, size: int) -> str:
    """Thought summaries as a thinking model sends them: headed paragraphs, about `size` characters."""
    reasoning = "\n".join(line.split("####")[0].rstrip() for line in solution.splitlines()).strip()
    headings = [
        "**Reading the problem**",
        "**Setting up the quantities**",
        "**Working it out**",
        "**Checking the arithmetic**",
        "**Double-checking the units**",
        "**Confirming the result**",
    ]
    parts, i = [], 0
    while sum(len(p) for p in parts) < size:
        parts.append(f"{headings[i % len(headings)]}\n\nI will go through it again carefully. {reasoning}")
        i += 1
    return "\n\n".join(parts)


def result_line(key: str, problem: dict, thought_size: int, rng: random.Random) -> bytes:
    """One batch output line: mostly good answers, some wrong ones, a few errors and truncations."""
    import orjson

    roll = rng.random()
    if roll < 0.01:
        return orjson.dumps(
            {"key": key, "error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}}
        )
    thought = thought_text(problem["solution"], thought_size)
    answer = problem["answer"] if roll > 0.1 else str(int(float(problem["answer"].replace(",", ""))) + 1)
    text = (
        f"Working through the problem step by step gives ${answer}$.\n\n"
        f"The final answer is \\boxed{{{answer}}}."
    )
    truncated = 0.01 <= roll < 0.015
    prompt, thoughts, candidates = len(problem["question"]) // 4 + 60, len(thought) // 4, len(text) // 4
    return orjson.dumps(
        {
            "key": key,
            "response": {
                "candidates": [
                    {
                        "content": {
                            "role": "model",
                            "parts": [
                                {"text": thought[: len(thought) // 2], "thought": True},
                                {"text": thought[len(thought) // 2 :], "thought": True},
                                {
                                    "text": text[:40] if truncated else text,
                                    "thoughtSignature": "Q2lRQjBlMks" * 8,
                                },
                            ],
                        },
                        "finishReason": "MAX_TOKENS" if truncated else "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": prompt,
                    "candidatesTokenCount": candidates,
                    "thoughtsTokenCount": thoughts,
                    "totalTokenCount": prompt + candidates + thoughts,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
                },
                "modelVersion": MODEL,
                "responseId": f"r{key}",
            },
        }
    )


def write_submission(lines: int, requests_per_job: int, thought_size: int) -> str:
    """A submission folder as `generation_batch` leaves it, plus downloaded results; returns its id."""
    from cotgen_assets.backends.developer import WIRE
    from cotgen_assets.core.prompts import GENERATION_PROMPT_VERSION, generation_prompt
    from cotgen_assets.core.shards import write_shards
    from cotgen_assets.core.stages import GENERATION
    from cotgen_assets.core.submissions import Submission

    pool = problem_pool()
    submission = Submission(
        scenario=SCENARIO,
        stage=GENERATION,
        submission_id=f"bench{lines}",
        model=MODEL,
        prompt_version=GENERATION_PROMPT_VERSION,
        num_requests=lines,
        offline=True,
    )

    def items():
        for i in range(lines):
            problem = pool[i % len(pool)]
            source = {
                "dataset": problem["source_dataset"],
                "config": problem["source_config"],
                "split": problem["source_split"],
                "row": problem["source_row"],
            }
            context = {
                "id": f"{SCENARIO}-{i}",
                "scenario": SCENARIO,
                "question": problem["question"],
                "answer": problem["answer"],
                "source": source,
            }
            yield WIRE.input_line(generation_prompt(context["id"], problem["question"])), context

    write_shards(submission, items(), requests_per_job, 1_900_000_000)
    submission.batch_names = [f"batches/bench-{shard}" for shard in submission.shards]
    rng = random.Random(8)
    first = 0
    for shard in submission.shards:
        count = sum(1 for _ in open(submission.context_path(shard), "rb"))
        order = list(range(first, first + count))
        rng.shuffle(order)  # Gemini gives no order: the join must go by key
        with open(submission.results_path(shard), "wb") as out:
            for i in order:
                out.write(result_line(f"{SCENARIO}-{i}", pool[i % len(pool)], thought_size, rng) + b"\n")
        first += count
    submission.save()
    return submission.submission_id


# --------------------------------------------------------------------------- the variants


def results_files(data: Path) -> list[Path]:
    return sorted(data.glob(f"{SCENARIO}/submissions/generation-*/shard-*.results.jsonl"))


def run_floor(data: Path, out: Path) -> int:
    """The least any ingestion must do: parse each line and write it back."""
    import orjson

    count = 0
    with open(out, "wb") as sink:
        for path in results_files(data):
            with open(path, "rb") as lines:
                for raw in lines:
                    sink.write(orjson.dumps(orjson.loads(raw)) + b"\n")
                    count += 1
    return count


def write_source_problems(lines: int, data: Path) -> None:
    """A source_problems.parquet of `lines` problems (GSM8K repeated under new ids), for `prepare`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cotgen_assets.core.scenarios import get_scenario
    from cotgen_assets_tests.harness.sources import load_source_problems

    table, _, _ = load_source_problems(get_scenario(SCENARIO))
    table = pa.concat_tables([table] * -(-lines // table.num_rows)).slice(0, lines)
    table = table.set_column(0, "problem_id", pa.array([f"{SCENARIO}-{i}" for i in range(lines)]))
    (data / SCENARIO).mkdir(parents=True, exist_ok=True)
    pq.write_table(table, data / SCENARIO / "source_problems.parquet")


def run_prepare(data: Path, out: Path) -> int:
    """`prepare_generation` for every problem: plan, then write request shards and contexts."""
    import pyarrow.parquet as pq

    import cotgen_assets.backends  # noqa: F401 - the Developer API's wire format, registered as in the assets
    from cotgen_assets.core.ask import GenerationAsk
    from cotgen_assets.core.prepare import prepare_generation
    from cotgen_assets.core.scenarios import get_scenario

    rows = pq.read_metadata(data / SCENARIO / "source_problems.parquet").num_rows
    submission = prepare_generation(
        GenerationAsk(
            scenario=get_scenario(SCENARIO),
            limit=rows,
            mode="extend",
            max_tries=3,
            model=MODEL,
            thinking_level="high",
            max_requests_per_job=10_000,
        ),
        offline=True,
    ).submission
    written = sum(
        submission.requests_path(s).stat().st_size + submission.context_path(s).stat().st_size
        for s in submission.shards
    )
    print(
        json.dumps(
            {
                "shards": len(submission.shards),
                "requests": submission.num_requests,
                "requests_and_contexts_mb": round(written / MB),
            }
        ),
        file=sys.stderr,
    )
    shutil.rmtree(submission.folder)  # mind the disk
    return submission.num_requests


LOADED = [0]  # lines the naive variant had loaded, for its MemoryError report


def run_naive(data: Path, out: Path) -> int:
    """Everything in memory, as the old scripts did: all lines, all contexts, then records."""
    contexts, lines = {}, []
    for path in sorted(data.glob(f"{SCENARIO}/submissions/generation-*/shard-*.context.jsonl")):
        with open(path) as handle:
            contexts.update((c["id"], c) for c in map(json.loads, handle))
    for path in results_files(data):
        with open(path) as handle:
            lines += [json.loads(line) for line in handle]
        LOADED[0] = len(lines)
    records = []
    for line in lines:
        response = line.get("response")
        if not response:
            continue
        parts = response["candidates"][0]["content"]["parts"]
        thought = "".join(p["text"] for p in parts if p.get("thought"))
        answer = "".join(p["text"] for p in parts if not p.get("thought"))
        context = contexts[line["key"]]
        cot = f"<thought>{thought}</thought>\n{answer}"
        records.append(
            {
                **context,
                "cot": cot,
                "messages": [
                    {"role": "user", "content": context["question"]},
                    {"role": "assistant", "content": cot},
                ],
                "usage": response["usageMetadata"],
            }
        )
    with open(out, "w") as sink:
        for record in records:
            sink.write(json.dumps(record) + "\n")
    return len(lines)


def run_project(data: Path, out: Path, observer: bool = False) -> int:
    """The project's own path: `ingest_submission`, with the asset's observer or without."""
    import cotgen_assets.backends  # noqa: F401 - the Developer API's wire format, registered as in the assets
    from cotgen_assets.core.ingest import ingest_submission
    from cotgen_assets.core.quality import SampleStats
    from cotgen_assets.core.stages import GENERATION
    from cotgen_assets.core.submissions import load_submission

    [folder] = (data / SCENARIO / "submissions").glob("generation-*")
    submission = load_submission(SCENARIO, GENERATION, folder.name.removeprefix(f"{GENERATION.name}-"))
    stats = SampleStats(GENERATION)
    ingest = ingest_submission(submission, out, **({"observe": stats} if observer else {}))
    detail = {
        "num_new": ingest.num_new,
        "statuses": dict(ingest.statuses),
        "math_verify_workers": _math_verify_workers(),
    }
    if observer:
        detail |= {"num_samples": stats.num_samples, "accuracy": round(stats.accuracy, 4)}
    print(json.dumps(detail), file=sys.stderr)
    return sum(ingest.statuses.values())


def _math_verify_workers() -> int:
    """How many math-verify processes grading started (0 when the cheap comparison settled all)."""
    from cotgen_assets.core import grading

    return len(grading._POOL.workers) if grading._POOL else 0


VARIANTS = {
    "floor": run_floor,
    "naive": run_naive,
    "project": run_project,
    "asset": lambda data, out: run_project(data, out, observer=True),
    "reingest": lambda data, out: run_project(data, out, observer=True),
    "prepare": run_prepare,
}
PROJECT_VARIANTS = ("project", "asset", "reingest")


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; ru_maxrss would carry the parent's over exec)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(variant: str, workdir: Path, memory_limit_mb: int) -> None:
    """Run one variant in this process and print its figures as one JSON line."""
    data = workdir / ("prepare-data" if variant == "prepare" else "data")
    os.environ["COTGEN_DATA_DIR"] = str(data)
    sys.path.insert(0, str(ROOT))
    if memory_limit_mb:
        limit = memory_limit_mb * MB
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if variant == "prepare":
        import cotgen_assets.core.prepare
    if variant in PROJECT_VARIANTS:
        import cotgen_assets.core.ingest  # imports are not ingestion time
        import cotgen_assets.core.quality  # noqa: F401
    import orjson  # noqa: F401

    baseline = peak_rss_mb()
    out = workdir / "out" / ("cot_bench.jsonl" if variant in PROJECT_VARIANTS else f"{variant}.jsonl")
    if variant in ("project", "asset"):
        out.unlink(missing_ok=True)  # a new samples file; reingest merges into the one asset wrote
    out.parent.mkdir(exist_ok=True)
    start = time.perf_counter()
    error = None
    try:
        count = VARIANTS[variant](data, out)
    except MemoryError:
        count, error = (
            0,
            (
                f"MemoryError under a {memory_limit_mb:,} MB address-space limit, "
                f"after loading {LOADED[0]:,} lines"
            ),
        )
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "variant": variant,
                "seconds": seconds,
                "lines": count,
                "error": error,
                "out_bytes": out.stat().st_size if out.exists() else 0,
                "baseline_rss_mb": baseline,
                "peak_rss_mb": peak_rss_mb(),
                "children_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            }
        )
    )


def measure(variant: str, workdir: Path, memory_limit_mb: int, repeat: int) -> dict:
    """The variant's figures from `repeat` fresh processes: the best time, the largest peak RSS."""
    best = None
    for _ in range(repeat):
        command = [
            sys.executable,
            __file__,
            "--child",
            variant,
            "--workdir",
            str(workdir),
            "--memory-limit-mb",
            str(memory_limit_mb),
        ]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            return {"variant": variant, "error": f"exit {done.returncode}: {done.stderr.strip()[-400:]}"}
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        figures["detail"] = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
        if figures.get("error"):
            return figures
        if best is None or figures["seconds"] < best["seconds"]:
            figures["peak_rss_mb"] = max(figures["peak_rss_mb"], best["peak_rss_mb"] if best else 0)
            best = figures
        else:
            best["peak_rss_mb"] = max(best["peak_rss_mb"], figures["peak_rss_mb"])
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument(
        "--requests-per-job",
        type=int,
        default=10_000,
        help="max_requests_per_job of the synthetic submission (project default 10,000)",
    )
    parser.add_argument("--thought-bytes", type=int, default=3000, help="size of each thought summary")
    parser.add_argument("--variants", default="floor,naive,project,asset,reingest")
    parser.add_argument(
        "--naive-memory-limit-mb",
        type=int,
        default=8000,
        help="address-space limit for the naive variant, so it cannot take the machine down",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help="runs per variant, best time kept "
        "(default 3 up to 100,000 lines, where one run is too short to trust, else 1)",
    )
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--memory-limit-mb", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.workdir, args.memory_limit_mb)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cotgen-bench-ingest-"))
    os.environ["COTGEN_DATA_DIR"] = str(workdir / "data")
    os.environ.setdefault("COTGEN_DATASETS_DIR", str(ROOT.parent / "shared" / "data"))
    sys.path.insert(0, str(ROOT))
    try:
        start = time.perf_counter()
        write_submission(args.lines, args.requests_per_job, args.thought_bytes)
        size = sum(p.stat().st_size for p in results_files(workdir / "data"))
        shards = len(results_files(workdir / "data"))
        print(
            f"synthetic submission: {args.lines:,} results lines in {shards} shard(s), {size / MB:,.0f} MB "
            f"({size / args.lines / 1024:.1f} KB a line), written in {time.perf_counter() - start:.0f} s"
        )
        if "prepare" in args.variants.split(","):
            write_source_problems(args.lines, workdir / "prepare-data")
        repeat = args.repeat or (3 if args.lines <= 100_000 else 1)
        print(f"each variant in its own process, best of {repeat}")
        rows = {}
        for variant in args.variants.split(","):
            limit = args.naive_memory_limit_mb if variant == "naive" else 0
            rows[variant] = figures = measure(variant, workdir, limit, repeat)
            if figures.get("error"):
                print(f"{variant:9} FAILED: {figures['error']}")
            else:
                seconds = figures["seconds"]
                print(
                    f"{variant:9} {seconds:8.2f} s {figures['lines'] / seconds:10,.0f} lines/s "
                    f"{size / MB / seconds:8.1f} MB/s  peak RSS {figures['peak_rss_mb']:7.0f} MB "
                    f"(after imports {figures['baseline_rss_mb']:.0f} MB)  "
                    f"output {figures['out_bytes'] / MB:,.0f} MB"
                    + (f"  {figures['detail']}" if figures.get("detail") else "")
                )
            if variant in ("floor", "naive"):
                (workdir / "out" / f"{variant}.jsonl").unlink(missing_ok=True)  # mind the disk
        floor, project = rows.get("floor", {}), rows.get("project", {})
        if floor.get("seconds") and project.get("seconds"):
            peak = max(rows[v]["peak_rss_mb"] for v in PROJECT_VARIANTS if rows.get(v, {}).get("peak_rss_mb"))
            print(f"vs_floor={project['seconds'] / floor['seconds']:.2f} peak_rss_mb={peak:.0f}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
