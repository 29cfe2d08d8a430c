"""The platform at a million problems: `python bench/scale.py [--rows 1000000]`.

Makes a synthetic dataset from GSM8K's train split with the numbers of each problem varied (see
`vary`): the first 7,473 rows are GSM8K itself, every further row a variant of one of its problems
whose solution's arithmetic (the `<<expr=result>>` annotations) is replayed with the new numbers, so
the reference answer (`#### n`) is right. It is written as one Parquet file that a scenario points
at with `path:` (a scenarios file of its own, `scale`, with the shipped benchmarks), then each step
runs in its own process, so that its peak memory is its own:

* source_problems  the real asset, `dg.materialize` on a temporary Dagster instance: read, filter,
                   decontaminate against GSM8K test, MATH test and MATH-500, drop repeats, write, and
                   the asset check reading the written table again;
* dry_run          `generation_batch` with `dry_run: true, mode: extend, limit: <rows>`: the plan and
                   the request files (shards of 10,000) for every problem, nothing sent;
* batch            the click (`generation_batch`, `mode: extend, limit: <rows>`) carried to the last
                   CoD sample against the emulator at a quota of `--max-active-jobs` (10) jobs in
                   flight, jobs of `--requests-per-job` (10,000) requests, each taking `--latency` s:
                   the sensor's ticks and the runs they ask for in this process
                   (`bench/batch_chain.py`, as `bench/quotas.py`); the emulator knows the synthetic
                   problems, so it answers them right and every kept problem gets its draft.

The same steps run on a baseline tree (`--baseline-ref`, default main before this work: its files
extracted with `git archive` into the workdir, first on the children's PYTHONPATH) unless
`--no-baseline`.
Printed: step, rows, wall seconds, CPU seconds (the process and its children), peak RSS of the
step's process and of its largest child (a forked decontamination worker, or another child of the
run). The batch step has a row per kind of work in its process (the click, the sensor's ticks, each
job the sensor launched, with its assets' wall times), each with its own peak (reset before each),
then click to CoT and to CoD, the emulator's own time (a job in flight) beside the platform's, the
most jobs in flight, shards made into two jobs, and API calls per tick beside a get per job; the
baseline tree (no quota queue) skips it. Limits: source_problems at 1M rows <= 2 min and <= 1 GB;
request files for 1M problems <= 1 min.
"""

import argparse
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GSM8K = Path(os.environ.get("COTGEN_DATASETS_DIR") or ROOT.parent.parent / "shared" / "data") / "gsm8k"
SCENARIO = "scale"
MB = 1024 * 1024
CHUNK_ROWS = 100_000
BEFORE_STREAMING = "42b092e"  # main before source_problems streamed: the default baseline

NUMBER = re.compile(r"\d+(?:\.\d+)?")
ANNOTATION = re.compile(r"<<([^=<>]+)=([^<>]+)>>")
ARITHMETIC = re.compile(r"[\d.+\-*/() ]+")
# Numbers left as they are: small ones and those that are often a unit (days in a week, months in a
# year, minutes in an hour, percent): changing them could change what the question means.
FIXED = {1, 2, 3, 4, 7, 10, 12, 24, 30, 52, 60, 100, 365, 1000}


# --- the synthetic dataset -------------------------------------------------------------------


def _format(value: float) -> str | None:
    """A result as GSM8K writes it, or None when it is not a number a problem would have (negative,
    more than two decimals)."""
    if value < 0 or abs(value * 100 - round(value * 100)) > 1e-6:
        return None
    value = round(value, 2)
    return str(int(value)) if value == int(value) else f"{value:g}"


class Template:
    """A GSM8K problem taken apart once: its text around its numbers, and its solution's arithmetic
    (each `<<expr=result>>` as a compiled function of the expression's numbers)."""

    def __init__(self, question: str, solution: str):
        self.question, self.solution = question, solution
        body, self.answer = solution.rsplit("####", 1)
        self.answer = self.answer.strip()
        self.question_parts = NUMBER.split(question)
        self.question_numbers = NUMBER.findall(question)
        self.body_parts, self.body_numbers = NUMBER.split(body), NUMBER.findall(body)
        self.steps = []  # (function, the expression's numbers, old result)
        for expression, result in ANNOTATION.findall(body):
            numbers = NUMBER.findall(expression)
            parts = NUMBER.split(expression)  # the expression with v0, v1, ... for its numbers
            code = "".join(f"{part}v{i}" for i, part in enumerate(parts[:-1])) + parts[-1]
            arguments = ", ".join(f"v{i}" for i in range(len(numbers)))
            try:  # digits and operators only (checked), so eval makes just the arithmetic
                if not ARITHMETIC.fullmatch(expression):
                    raise SyntaxError(expression)
                function = eval(f"lambda {arguments}: {code}", {"__builtins__": {}})
            except SyntaxError:  # not plain arithmetic (units, text, `.5`): the problem is not varied
                self.steps = None
                return
            self.steps.append((function, numbers, result))
        self.known = set(self.question_numbers) | set(self.body_numbers)

    def vary(self, multipliers: list[int]) -> tuple[str, str] | None:
        """The problem with its numbers multiplied (the i-th varied number of the question by
        `multipliers[i]`, the last one for the rest) and its arithmetic replayed, or None when that
        cannot be done safely (a result that is not a plain number, or that collides with another
        number; an answer that is not a whole number). Multiplying keeps most divisions whole."""
        if not self.steps:
            return None
        mapping: dict[str, str] = {}
        for number in dict.fromkeys(self.question_numbers):
            value = float(number)
            if value == int(value) and int(value) not in FIXED and value >= 5:
                mapping[number] = str(int(value) * multipliers[min(len(mapping), len(multipliers) - 1)])
        if not mapping or set(mapping.values()) & self.known:
            return None
        used: set[str] = set()  # numbers the replayed expressions read as they were
        for function, numbers, result in self.steps:
            try:
                new = _format(float(function(*(float(mapping.get(n, n)) for n in numbers))))
            except ArithmeticError:
                return None
            if new is None or mapping.get(result, new) != new or (new != result and result in used):
                return None
            used.update(n for n in numbers if n not in mapping)
            if new != result:
                mapping[result] = new
        answer = mapping.get(self.answer)
        if answer is None or not answer.isdigit() or not self._replays(mapping):
            return None
        return _join(self.question_parts, self.question_numbers, mapping), (
            f"{_join(self.body_parts, self.body_numbers, mapping)}#### {answer}"
        )

    def _replays(self, mapping: dict[str, str]) -> bool:
        """Does every annotation, as the varied solution shows it, still compute its result? (A number
        mapped later may stand for another in an earlier step.)"""
        for function, numbers, result in self.steps:
            try:
                value = float(function(*(float(mapping.get(n, n)) for n in numbers)))
            except ArithmeticError:
                return False
            if _format(value) != mapping.get(result, result):
                return False
        return True


def _join(parts: list[str], numbers: list[str], mapping: dict[str, str]) -> str:
    return "".join(part + mapping.get(number, number) for part, number in zip(parts, numbers)) + parts[-1]


def variant(template: Template, number: int, row: int) -> tuple[str, str]:
    """The problem's `number`-th variant (from 1), deterministic: its first varied number multiplied
    by `number + 1`, so that no two variants of a problem are the same text, the others by random
    multipliers, or all by `number + 1` (ratios kept); the problem itself when no variation works
    (a repeat, which source_problems leaves out)."""
    rng = random.Random(row)
    for attempt in range(4):
        others = [rng.randint(2, 20) for _ in range(8)] if attempt < 3 else []
        varied = template.vary([number + 1, *others])
        if varied:
            return varied
    return template.question, template.solution


def write_dataset(rows: int, path: Path) -> dict:
    """`rows` rows: GSM8K train, then variants of its problems, written a chunk at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    gsm8k = pq.read_table(GSM8K / "main" / "train.parquet").to_pylist()
    problems = [Template(problem["question"], problem["answer"]) for problem in gsm8k]
    # Variants of the problems whose numbers can be varied (about half: the others have no
    # arithmetic to replay, or only small numbers and units).
    variable = [p for p in problems if any(p.vary([m]) for m in range(2, 12))]
    repeats = 0
    with pq.ParquetWriter(path, pa.schema([("question", pa.string()), ("answer", pa.string())])) as writer:
        for start in range(0, rows, CHUNK_ROWS):
            questions, answers = [], []
            for row in range(start, min(rows, start + CHUNK_ROWS)):
                if row < len(problems):
                    question, answer = problems[row].question, problems[row].solution
                else:
                    number, position = divmod(row - len(problems), len(variable))
                    problem = variable[position]
                    question, answer = variant(problem, number + 1, row)
                    repeats += question == problem.question
                questions.append(question)
                answers.append(answer)
            writer.write_table(pa.table({"question": questions, "answer": answers}))
    return {"rows": rows, "templates": len(variable), "unvaried": repeats, "mb": path.stat().st_size / MB}


def write_scenarios(workdir: Path, dataset: Path) -> Path:
    """A scenarios file with one scenario, `scale`, on the synthetic dataset, and the shipped benchmarks."""
    import yaml

    shipped = yaml.safe_load((ROOT / "cotgen_assets" / "scenarios.yaml").read_text())
    scenario = {
        "dataset": "synthetic/gsm8k-varied",
        "path": str(dataset),
        "split": "train",
        "filters": [],
        "question_column": "question",
        "solution_column": "answer",
        "answer_format": "gsm8k",
        "suffix": SCENARIO,
        "limit": 1000,
    }
    path = workdir / "scenarios.yaml"
    path.write_text(yaml.safe_dump({"scenarios": {SCENARIO: scenario}, "benchmarks": shipped["benchmarks"]}))
    return path


# --- the steps (each in a child process) ------------------------------------------------------


def _materialize(selection: str, run_config: dict) -> dict:
    import dagster as dg

    from cotgen_assets.defs.assets.batches import generation_batch
    from cotgen_assets.defs.assets.sources import source_problems

    try:
        from cotgen_assets.backends.resource import gemini_from_env
    except ImportError:  # the baseline tree, before the backends had their folder
        from cotgen_assets.gemini.resource import gemini_from_env

    assets = {"source_problems": source_problems, "generation_batch": generation_batch}
    result = dg.materialize(
        list(assets.values()),
        selection=[selection],
        partition_key=SCENARIO,
        resources={"gemini": gemini_from_env()},
        instance=dg.DagsterInstance.get(),
        run_config=run_config,
    )
    [materialization] = result.asset_materializations_for_node(selection)
    return {key: getattr(value, "value", value) for key, value in materialization.metadata.items()}


def step_source_problems(rows: int) -> int:
    metadata = _materialize("source_problems", {})
    print(
        json.dumps({k: metadata.get(k) for k in ("num_contaminated", "num_duplicates", "num_rows")}),
        file=sys.stderr,
    )
    return metadata["num_rows"]


def step_dry_run(rows: int) -> int:
    config = {"dry_run": True, "mode": "extend", "limit": rows}
    metadata = _materialize("generation_batch", {"ops": {"generation_batch": {"config": config}}})
    return metadata["num_requests"]


def kept_problems(instance) -> int:
    """The rows source_problems kept (an earlier step of this run, in the same Dagster home)."""
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("source_problems"), asset_partitions=[SCENARIO]), limit=1
    ).records
    if not records:
        raise SystemExit(
            "the batch step needs source_problems first: run it with --steps source_problems,batch"
        )
    return records[0].asset_materialization.metadata["num_rows"].value


class Meter:
    """Wall, CPU and peak RSS of each kind of work in this process (the peak reset before each), and
    the wall time of each asset of the runs."""

    def __init__(self, instance):
        self.instance, self.parts = instance, {}

    @contextmanager
    def __call__(self, label: str):
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM back to the current RSS
        note, start, cpu = {}, time.perf_counter(), cpu_seconds()
        try:
            yield note
        finally:
            part = self.parts.setdefault(
                label, {"step": label, "count": 0, "seconds": 0.0, "cpu_seconds": 0.0, "peak_rss_mb": 0.0}
            )
            part["count"] += 1
            part["seconds"] += time.perf_counter() - start
            part["cpu_seconds"] += cpu_seconds() - cpu
            part["peak_rss_mb"] = max(part["peak_rss_mb"], peak_rss_mb())
            if "run_id" in note:
                assets = part.setdefault("assets", {})
                for asset, seconds in asset_seconds(self.instance, note["run_id"]).items():
                    assets[asset] = assets.get(asset, 0.0) + seconds


def asset_seconds(instance, run_id: str) -> dict[str, float]:
    """Each step of a run, from its start to its success (the event log's times)."""
    import dagster as dg

    started, seconds = {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event and event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = entry.timestamp
        elif event and event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            seconds[event.step_key] = entry.timestamp - started.get(event.step_key, entry.timestamp)
    return seconds


def step_batch(rows: int) -> dict:
    """The click carried to the last CoD sample, against an emulator that knows the synthetic
    problems (a child of this step's process: its CPU and peak are printed apart; its CPU is also
    in the step's total, its peak in the "children" column)."""
    import dagster as dg
    from batch_chain import BIG_BUDGET_USD, describe, drive

    from cotgen_assets_tests.harness.emulator import start_emulator
    from cotgen_assets_tests.harness.pipeline import Pipeline

    instance = dg.DagsterInstance.get()
    samples = min(rows, kept_problems(instance))
    workdir = Path(os.environ["COTGEN_SCENARIOS_FILE"]).parent
    references = workdir / "references"  # the emulator's datasets: the synthetic one (GSM8K train first)
    shutil.rmtree(references, ignore_errors=True)
    references.mkdir()
    (references / "scale.parquet").symlink_to(workdir / f"gsm8k-varied-{rows}.parquet")
    shutil.rmtree(workdir / "emulator", ignore_errors=True)
    (workdir / "emulator.log").unlink(missing_ok=True)  # its created jobs are read from the log
    os.environ["COTGEN_MAX_ACTIVE_JOBS"] = str(ARGS.max_active_jobs)
    flags = ["--max-active-jobs", str(ARGS.max_active_jobs), "--datasets-dir", str(references)]
    emulator = start_emulator(workdir / "emulator", latency=ARGS.latency, extra_args=flags)
    try:
        emulator.wait_for_references()  # loaded once, before the click: not the chain's time
        meter = Meter(instance)
        jobs = {"max_requests_per_job": ARGS.requests_per_job}
        chain = drive(
            Pipeline(instance, emulator.base_url),
            SCENARIO,
            samples,
            {"mode": "extend", "limit": rows, "max_cost_usd": BIG_BUDGET_USD, **jobs},
            tick_seconds=ARGS.tick_seconds,
            deadline=time.time() + ARGS.timeout,
            summarization_config=jobs,
            measure=meter,
        )
        lines = describe(chain, emulator) + [emulator_usage(emulator)]
    finally:
        emulator.stop()
    parts = list(meter.parts.values())
    # The process's peak over its parts (each reset it); "children" is the emulator from here.
    return {
        "rows": samples,
        "parts": parts,
        "lines": lines,
        "peak_rss_mb": max(p["peak_rss_mb"] for p in parts),
    }


def emulator_usage(emulator) -> str:
    """The emulator process's CPU and peak memory so far (from /proc, before it is stopped)."""
    fields = Path(f"/proc/{emulator.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    peak = next(line for line in open(f"/proc/{emulator.proc.pid}/status") if line.startswith("VmHWM:"))
    return f"emulator process: {cpu:.1f} CPU-s, peak {int(peak.split()[1]) / 1024:.0f} MB"


STEPS = {"source_problems": step_source_problems, "dry_run": step_dry_run, "batch": step_batch}
NEEDS_QUEUE = {"batch"}  # steps the baseline tree (before the quota queue) cannot run


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; ru_maxrss would carry the parent's over exec)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """This process's CPU time and that of its children that ended (forked workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def stop_forkserver() -> None:
    """End the forkserver the decontamination workers were forked from, and wait for it: only then
    are the workers' CPU time and peak memory in this process's RUSAGE_CHILDREN (it waited for them,
    this process waits for it). Without this a step's CPU time leaves out its workers' (a private
    call, for a benchmark: multiprocessing has no public one)."""
    from multiprocessing import forkserver

    forkserver._forkserver._stop()


def child(step: str, rows: int) -> None:
    """Run one step in this process (its environment set by `run_step`), print its figures as JSON."""
    import dagster  # noqa: F401  (imports are not the step's time)

    import cotgen_assets.defs.assets.batches  # noqa: F401

    after_imports = peak_rss_mb()
    start, cpu = time.perf_counter(), cpu_seconds()
    done = STEPS[step](rows)
    stop_forkserver()
    figures = {
        "step": step,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": cpu_seconds() - cpu,
        "after_imports_mb": after_imports,
        "peak_rss_mb": peak_rss_mb(),
        "children_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        **(done if isinstance(done, dict) else {"rows": done}),
    }
    print(json.dumps(figures))


def run_step(step: str, workdir: Path, label: str, tree: Path) -> dict:
    """One step in a fresh process on `tree`'s code, with the label's own data and Dagster home."""
    home = workdir / f"dagster-{label}"
    home.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "DAGSTER_HOME": str(home),
        "COTGEN_DATA_DIR": str(workdir / f"data-{label}"),
        "COTGEN_SCENARIOS_FILE": str(workdir / "scenarios.yaml"),
    }
    env.pop("GEMINI_API_KEY", None)  # only the emulator answers; no key near a benchmark
    flags = [f"--{name.replace('_', '-')}={getattr(ARGS, name)}" for name in BATCH_FLAGS]
    command = [sys.executable, str(Path(__file__).resolve()), "--child", step, f"--rows={ARGS.rows}", *flags]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tree, env=env)
    if done.returncode != 0:
        return {"step": step, "error": f"exit {done.returncode}: {done.stderr.strip()[-600:]}"}
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["detail"] = next(
        (line for line in reversed(done.stderr.splitlines()) if line.startswith("{")), ""
    )
    return figures


def baseline_tree(ref: str, workdir: Path) -> Path:
    """`ref`'s files, extracted (no worktree: the repository's metadata is left alone)."""
    tree = workdir / "baseline-tree"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def print_row(label: str, figures: dict) -> None:
    if figures.get("error"):
        print(f"{label:9} {figures['step']:16} FAILED: {figures['error']}", flush=True)
        return
    print(
        f"{label:9} {figures['step']:16} {figures['rows']:>10,} {figures['seconds']:8.1f} s "
        f"{figures['cpu_seconds']:8.1f} s {figures['peak_rss_mb']:8.0f} MB "
        f"{figures['children_peak_rss_mb']:8.0f} MB {figures['after_imports_mb']:6.0f} MB"
        f"   {figures['detail']}"
    )
    for part in figures.get("parts", []):  # the batch step's kinds of work, then its figures
        assets = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in part.get("assets", {}).items())
        print(
            f"{'':9}   {part['step']:26} {part['count']:>4} x {part['seconds']:8.1f} s "
            f"{part['cpu_seconds']:8.1f} s {part['peak_rss_mb']:8.0f} MB   {assets}"
        )
    for line in figures.get("lines", []):
        print(f"{'':9}   {line}")
    sys.stdout.flush()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument(
        "--baseline-ref", default=BEFORE_STREAMING, help="the git revision measured beside this tree"
    )
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--workdir", type=Path, help="default: a temp dir, removed at the end")
    parser.add_argument("--keep", action="store_true", help="keep the workdir (the dataset is reused)")
    batch = parser.add_argument_group("the batch step")
    batch.add_argument("--max-active-jobs", type=int, default=10, help="the quota, emulator and platform")
    batch.add_argument("--requests-per-job", type=int, default=10_000)
    batch.add_argument("--latency", type=float, default=2.0, help="seconds a job takes in the emulator")
    batch.add_argument("--tick-seconds", type=float, default=1.0, help="pause between sensor ticks")
    batch.add_argument("--timeout", type=float, default=4 * 3600)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args()


BATCH_FLAGS = ("max_active_jobs", "requests_per_job", "latency", "tick_seconds", "timeout")


def main() -> None:
    if ARGS.child:
        return child(ARGS.child, ARGS.rows)
    workdir = ARGS.workdir or Path(tempfile.mkdtemp(prefix="cotgen-bench-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("COTGEN_DATASETS_DIR", str(GSM8K.parent))
    try:
        dataset = workdir / f"gsm8k-varied-{ARGS.rows}.parquet"
        if not dataset.exists():
            start = time.perf_counter()
            made = write_dataset(ARGS.rows, dataset)
            print(
                f"dataset: {made['rows']:,} rows (variants of {made['templates']:,} GSM8K problems, "
                f"{made['unvaried']:,} left unvaried), {made['mb']:.0f} MB, "
                f"made in {time.perf_counter() - start:.0f} s"
            )
        write_scenarios(workdir, dataset)
        trees = {"this": ROOT}
        if not ARGS.no_baseline:
            shutil.rmtree(workdir / "baseline-tree", ignore_errors=True)
            trees = {f"baseline ({ARGS.baseline_ref})": baseline_tree(ARGS.baseline_ref, workdir), **trees}
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(
            f"{'tree':9} {'step':16} {'rows':>10} {'wall':>10} {'cpu':>10} {'peak':>11} {'children':>11} "
            f"{'imports':>9}",
            flush=True,
        )
        for label, tree in trees.items():
            name = label.split()[0]
            shutil.rmtree(workdir / f"data-{name}", ignore_errors=True)
            shutil.rmtree(workdir / f"dagster-{name}", ignore_errors=True)
            for step in ARGS.steps.split(","):
                if tree == ROOT or step not in NEEDS_QUEUE:
                    print_row(label, run_step(step, workdir, name, tree))
                print(f"load average now: {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        for name in ("data-this", "data-baseline", "emulator"):  # request and result files: GBs
            shutil.rmtree(workdir / name, ignore_errors=True)
        if not ARGS.keep and not ARGS.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    ARGS = parse_args()
    main()
