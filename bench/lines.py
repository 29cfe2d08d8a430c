"""Memory against the number of lines: `python bench/lines.py [--lines 100000,1000000]`.

For each N, writes a synthetic generation submission of N results lines (real GSM8K problems and,
`--math-share` of them, real MATH problems with LaTeX answers; 10% wrong answers, a MATH wrong
answer being another problem's, so math-verify decides it; 1% errors), then runs each step in its
own process, so that its peak RSS is its own:

* ingest  `ingest_submission`: the results file to a CoT samples file, graded as it goes
          (`--ingest-lines M`: only M lines, the CoT file then repeated to N for the next steps);
* grade   every CoT sample's predicted answer graded again against its reference, streamed from
          the samples file 1,000 at a time (`grade_many`, math-verify in worker processes);
* export  `write_export` of that scenario: configs `cot`, `cod`, `problems`, `pairs`, the card.
          Its input is the ingested CoT file with k = 4 answers a problem (ids renumbered) and
          a CoD sample made for each CoT sample (unmeasured setup).

The steps in `--baseline-steps` (default: export) also run on a baseline tree (`--baseline-ref`,
default the branch point before the export streamed: its files extracted with `git archive`, first
on the children's PYTHONPATH), under an address-space limit so it cannot take the machine down.
Printed per step and N: lines, wall s, CPU s (with its children: the math-verify workers), peak
RSS of the process and of its largest child; then whether the two trees' export files hold the same
rows (and how many are byte-identical). Memory is flat when the 1M row's peak RSS is about the
100k row's. No figure is asserted.
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
sys.path.insert(0, str(ROOT / "bench"))
import ingest as ingest_bench  # noqa: E402 - bench/ingest.py: the synthetic submission writer

SCENARIO = ingest_bench.SCENARIO
DATASETS = Path(os.environ.get("COTGEN_DATASETS_DIR") or ROOT.parents[1] / "shared" / "data")
BEFORE_STREAMING = "fbdbb3b"  # q-merge before the export streamed: the default baseline
K = 4  # answers a problem in the export's input
GRADE_CHUNK = 1_000  # as ingestion grades
MB = 1024 * 1024
# bench/ingest.py's own, before `prepare` puts ours in their place
INGEST_PROBLEM_POOL, INGEST_RESULT_LINE = ingest_bench.problem_pool, ingest_bench.result_line


# --------------------------------------------------------------------------- synthetic data


def problem_pool(math_share: float) -> list[dict]:
    """GSM8K problems (the project's own loading), and MATH problems in the share asked, mixed."""
    import pyarrow.parquet as pq

    from cotgen_assets.core.answers import extract_boxed_answer

    gsm8k = INGEST_PROBLEM_POOL()
    for problem in gsm8k:
        problem["wrong"] = str(int(float(problem["answer"].replace(",", ""))) + 1)
    rows = pq.read_table(DATASETS / "competition_math" / "train.parquet").to_pylist()
    math = [
        {
            "question": row["problem"],
            "solution": row["solution"],
            "answer": answer,
            "source_dataset": "qwedsacf/competition_math",
            "source_config": "",
            "source_split": "train",
            "source_row": n,
        }
        for n, row in enumerate(rows)
        if (answer := extract_boxed_answer(row["solution"]))
    ]
    rng = random.Random(3)
    for problem in math:
        problem["wrong"] = rng.choice(math)["answer"]
    count = round(len(gsm8k) * math_share / (1 - math_share)) if math_share < 1 else len(math)
    pool = gsm8k + math[:count] if math_share < 1 else math
    rng.shuffle(pool)
    return pool


def result_line(key: str, problem: dict, thought_size: int, rng: random.Random) -> bytes:
    """bench/ingest.py's results line (its answer "1" when right, "2" when wrong), with this pool's
    answers put in (MATH's are LaTeX)."""
    import orjson

    line = INGEST_RESULT_LINE(key, {**problem, "answer": "1"}, thought_size, rng)
    given = problem["answer"] if b"boxed{1}" in line else problem["wrong"]
    escaped = orjson.dumps(given)[1:-1]  # as it stands inside a JSON string
    for shown in (b"1", b"2"):  # the answer text comes last in the line: replace from the right
        for before, after in ((b"$", b"$"), (b"boxed{", b"}")):
            head, found, tail = line.rpartition(before + shown + after)
            line = head + before + escaped + after + tail if found else line
    return line


def write_export_input(data: Path, out: Path) -> int:
    """The ingested CoT file with K answers a problem, a CoD sample for each, and source_problems."""
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cotgen_assets.core.scenarios import get_scenario
    from cotgen_assets.core.stages import GENERATION, SUMMARIZATION

    suffix = get_scenario(SCENARIO).suffix
    ids, count = set(), 0
    cot_out = open(out / GENERATION.samples_file(suffix), "wb")
    cod_out = open(out / SUMMARIZATION.samples_file(suffix), "wb")
    with open(data / GENERATION.samples_file(suffix), "rb") as cot_in, cot_out, cod_out:
        for line in cot_in:
            record = orjson.loads(line)
            row = int(record["id"].rpartition("-")[2])
            record["id"], record["sample"] = f"{SCENARIO}-{row // K}", row % K
            ids.add(record["id"])
            cot_out.write(orjson.dumps(record) + b"\n")
            cod_out.write(orjson.dumps(cod_record(record)) + b"\n")
            count += 1
    (out / SCENARIO).mkdir(parents=True, exist_ok=True)
    table = pa.table({"problem_id": sorted(ids)})
    pq.write_table(table, out / SCENARIO / "source_problems.parquet")
    return count


def cod_record(cot: dict) -> dict:
    """A draft of the CoT sample, graded as the CoT was."""
    answer = cot["predicted_answer"]
    cod = f"<draft>read\nwork it out\ncheck</draft>\n\\boxed{{{answer}}}"
    usage = {**cot["generation"]["usage"], "thinking_tokens": 0, "output_tokens": len(cod) // 4}
    return {
        **{k: cot[k] for k in ("id", "sample", "scenario", "question", "answer")},
        "cod": cod,
        "messages": [{"role": "user", "content": cot["question"]}, {"role": "assistant", "content": cod}],
        "predicted_answer": answer,
        "correct": cot["correct"],
        "agrees_with_cot": True,
        "unsupported_draft_numbers": [],
        "source": cot["source"],
        "generation": cot["generation"],
        "summarization": {**cot["generation"], "usage": usage},
    }


# --------------------------------------------------------------------------- the steps


def step_ingest(workdir: Path) -> int:
    return ingest_bench.run_project(workdir / "data", samples_file())


def samples_file() -> Path:
    from cotgen_assets.core.scenarios import get_scenario
    from cotgen_assets.core.stages import GENERATION
    from cotgen_assets.core.storage import samples_path

    return samples_path(GENERATION, get_scenario(SCENARIO).suffix)


def step_grade(workdir: Path) -> int:
    """Every sample's answer graded against its reference, a chunk at a time (ingestion's way)."""
    import orjson

    from cotgen_assets.core.grading import grade_many

    count, correct, chunk = 0, 0, []
    with open(samples_file(), "rb") as lines:
        for line in lines:
            record = orjson.loads(line)
            chunk.append((record["predicted_answer"], record["answer"]))
            if len(chunk) == GRADE_CHUNK:
                correct += sum(grade_many(chunk))
                count, chunk = count + len(chunk), []
    correct += sum(grade_many(chunk))
    print(
        json.dumps({"graded_correct": correct, "math_verify_workers": ingest_bench._math_verify_workers()}),
        file=sys.stderr,
    )
    return count + len(chunk)


def step_export(workdir: Path) -> int:
    from cotgen_assets.core.scenarios import get_scenario
    from cotgen_assets.publish.export import write_export

    export = write_export(scenarios={SCENARIO: get_scenario(SCENARIO)})
    print(json.dumps({"rows": export.rows}), file=sys.stderr)
    return sum(1 for _ in open(samples_file(), "rb"))


STEPS = {"ingest": step_ingest, "grade": step_grade, "export": step_export}


def child(step: str, workdir: Path, memory_limit_mb: int) -> None:
    """Run one step in this process (its environment set by `run_step`), print its figures as JSON."""
    if memory_limit_mb:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit_mb * MB, memory_limit_mb * MB))
    # imports are not the step's time
    import cotgen_assets.backends
    import cotgen_assets.core.ingest
    import cotgen_assets.publish.export  # noqa: F401

    after_imports = ingest_bench.peak_rss_mb()
    start, cpu = time.perf_counter(), time.process_time()
    error = None
    try:
        count = STEPS[step](workdir)
    except MemoryError:
        count, error = 0, f"MemoryError under a {memory_limit_mb:,} MB address-space limit"
    from cotgen_assets.core import grading

    if grading._POOL:  # its workers' CPU and memory count once they have ended
        grading._POOL.close()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    figures = {
        "step": step,
        "lines": count,
        "error": error,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu + children.ru_utime + children.ru_stime,
        "after_imports_mb": after_imports,
        "peak_rss_mb": ingest_bench.peak_rss_mb(),
        "children_peak_rss_mb": children.ru_maxrss / 1024,
    }
    print(json.dumps(figures))


def run_step(step: str, workdir: Path, data: Path, tree: Path, memory_limit_mb: int) -> dict:
    """One step in a fresh process on `tree`'s code, over the data folder `data`."""
    env = {**os.environ, "PYTHONPATH": str(tree), "COTGEN_DATA_DIR": str(data)}
    env.pop("GEMINI_API_KEY", None)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", step, "--workdir", str(workdir)]
    command += ["--memory-limit-mb", str(memory_limit_mb)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tree, env=env)
    if done.returncode != 0:
        return {"step": step, "error": f"exit {done.returncode}: {done.stderr.strip()[-600:]}"}
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["detail"] = next((x for x in reversed(done.stderr.splitlines()) if x.startswith("{")), "")
    return figures


def print_row(lines: int, label: str, figures: dict) -> None:
    if figures.get("error") and "seconds" not in figures:
        print(f"{lines:>10,} {label:9} {figures['step']:7} FAILED: {figures['error']}")
        return
    failed = f"   FAILED: {figures['error']}" if figures.get("error") else ""
    print(
        f"{lines:>10,} {label:9} {figures['step']:7} {figures['lines']:>10,} {figures['seconds']:8.1f} s "
        f"{figures['cpu_seconds']:8.1f} s {figures['peak_rss_mb']:8.0f} MB "
        f"{figures['children_peak_rss_mb']:8.0f} MB {figures['after_imports_mb']:6.0f} MB"
        f"{failed}   {figures.get('detail', '')}"
    )


def same_exports(this: Path, baseline: Path) -> str:
    """Whether the two exports' data files hold the same rows, and how many are the same bytes."""
    import pyarrow.parquet as pq

    files = sorted(p.relative_to(this).as_posix() for p in this.glob("data/*/*.parquet"))
    theirs = sorted(p.relative_to(baseline).as_posix() for p in baseline.glob("data/*/*.parquet"))
    if files != theirs:
        return f"different files: {files} vs {theirs}"
    same_rows = all(pq.read_table(this / f).equals(pq.read_table(baseline / f)) for f in files)
    same_bytes = sum((this / f).read_bytes() == (baseline / f).read_bytes() for f in files)
    return f"{len(files)} files, same rows: {same_rows}, byte-identical: {same_bytes} of {len(files)}"


def baseline_tree(ref: str, workdir: Path) -> Path:
    """`ref`'s files, extracted (no worktree: the repository's metadata is left alone)."""
    tree = workdir / "baseline-tree"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def prepare(lines: int, workdir: Path, args) -> None:
    """The submission of `lines` results lines under workdir/data (and its ingestion's CoT file)."""
    os.environ["COTGEN_DATA_DIR"] = str(workdir / "data")
    pool = problem_pool(args.math_share)
    ingest_bench.problem_pool = lambda: pool  # bench/ingest.py's writer, with this pool and lines
    ingest_bench.result_line = result_line
    start = time.perf_counter()
    ingest_bench.write_submission(lines, 10_000, args.thought_bytes)
    size = sum(p.stat().st_size for p in ingest_bench.results_files(workdir / "data"))
    print(f"{lines:,} results lines, {size / MB:,.0f} MB, written in {time.perf_counter() - start:.0f} s")


def replicate(data: Path, lines: int) -> None:
    """The ingested CoT file repeated, ids renumbered, to `lines` lines (the steps after ingestion)."""
    import orjson

    path = samples_file_in(data)
    source = path.with_name("ingested.jsonl")
    os.replace(path, source)
    written = 0
    with open(path, "wb") as out:
        while written < lines:
            with open(source, "rb") as records:
                for line in records:
                    record = orjson.loads(line)
                    record["id"] = f"{SCENARIO}-{written}"
                    out.write(orjson.dumps(record) + b"\n")
                    written += 1
                    if written == lines:
                        break
    source.unlink()


def measure(lines: int, workdir: Path, args, trees: dict[str, Path]) -> None:
    ingest_lines = min(args.ingest_lines or lines, lines)
    prepare(ingest_lines, workdir, args)
    steps = args.steps.split(",")
    if "ingest" not in steps:  # the other steps read its samples file: made, not shown
        run_step("ingest", workdir, workdir / "data", ROOT, 0)
    replicated = ingest_lines == lines
    for step in steps:
        if step != "ingest" and not replicated:
            replicate(workdir / "data", lines)
            replicated = True
        if step == "export":
            (workdir / "export-data").mkdir()
            write_export_input(workdir / "data", workdir / "export-data")
        for label, tree in trees.items():
            if label != "this" and step not in args.baseline_steps.split(","):
                continue
            if step == "ingest":
                samples_file_in(workdir / "data").unlink(missing_ok=True)
            data = workdir / ("export-data" if step == "export" else "data")
            limit = args.memory_limit_mb if label != "this" else 0
            print_row(
                ingest_lines if step == "ingest" else lines, label, run_step(step, workdir, data, tree, limit)
            )
            if step == "export" and (data / "export").exists():
                os.replace(data / "export", workdir / f"export-{label}")
        if step == "export" and all((workdir / f"export-{label}").exists() for label in ("this", "baseline")):
            same = same_exports(workdir / "export-this", workdir / "export-baseline")
            print(f"{lines:>10,} export files: {same}")


def samples_file_in(data: Path) -> Path:
    from cotgen_assets.core.scenarios import get_scenario
    from cotgen_assets.core.stages import GENERATION

    return data / GENERATION.samples_file(get_scenario(SCENARIO).suffix)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", default="100000,1000000", help="comma-separated numbers of lines")
    parser.add_argument("--steps", default="ingest,grade,export")
    parser.add_argument("--baseline-steps", default="export", help="steps also run on the baseline tree")
    parser.add_argument("--baseline-ref", default=BEFORE_STREAMING)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--ingest-lines",
        type=int,
        help="results lines ingested (default: N); the CoT file is then repeated to N lines for the "
        "later steps (ingestion at 1M lines is measured by bench/ingest.py)",
    )
    parser.add_argument("--math-share", type=float, default=0.2, help="share of MATH problems in the pool")
    parser.add_argument("--thought-bytes", type=int, default=1000, help="size of each thought summary")
    parser.add_argument(
        "--memory-limit-mb", type=int, default=8000, help="address-space limit of the baseline's steps"
    )
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.workdir, args.memory_limit_mb)

    os.environ.setdefault("COTGEN_DATASETS_DIR", str(DATASETS))
    root = args.workdir or Path(tempfile.mkdtemp(prefix="cotgen-bench-lines-"))
    trees = {"this": ROOT}
    if not args.no_baseline:
        trees = {"baseline": baseline_tree(args.baseline_ref, root), **trees}
    print(f"load average {os.getloadavg()[0]:.1f} at the start; baseline: {args.baseline_ref}")
    print(
        f"{'N':>10} {'tree':9} {'step':7} {'lines':>10} {'wall':>10} {'CPU':>10} {'peak RSS':>11} "
        f"{'child RSS':>11} {'imports':>9}"
    )
    try:
        for lines in map(int, args.lines.split(",")):
            workdir = root / f"n{lines}"
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir(parents=True)
            measure(lines, workdir, args, trees)
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)  # mind the disk before the next N
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
