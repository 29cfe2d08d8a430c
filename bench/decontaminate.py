"""Decontamination speed: all 12,500 competition_math problems against GSM8K test, MATH test, MATH-500.

Prints the project's `decontaminate` (index build with the benchmark loads, then the pass), how many
problems it keeps that share only boilerplate with a benchmark problem (the plain 13-word rule would
leave them out), and two baselines: an exact-only pass (one normalised-text lookup per problem: the
floor) and a naive O(n*m) pass (each problem's 13-grams against each benchmark problem's), timed on a
sample and extrapolated. Target: under 10 s for the 12,500 rows. Not a timed test.
`--edits` also prints, per benchmark and edit (an instruction added, HTML entities, look-alike
letters: cotgen_assets_tests.harness.decontamination.py), how many edited benchmark problems escape.

    COTGEN_DATASETS_DIR=../shared/data .venv/bin/python bench/decontaminate.py [--sample 100] [--edits]
"""

import argparse
import dataclasses
import os
import time

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=100, help="problems timed for the naive baseline")
    parser.add_argument("--edits", action="store_true", help="count edited benchmark problems that escape")
    args = parser.parse_args()

    import datasets

    datasets.disable_progress_bars()
    from cotgen_assets.core import decontamination as dc
    from cotgen_assets.core.scenarios import load_scenarios_and_benchmarks
    from cotgen_assets.core.sources import load_benchmark_questions
    from cotgen_assets_tests.harness.sources import decontaminate, load_source_problems

    scenarios, benchmarks = load_scenarios_and_benchmarks()
    everything = dataclasses.replace(scenarios["hard"], name="all", filters=())
    problems, dropped, rows = load_source_problems(everything)
    questions = problems["question"].to_pylist()
    print(f"scenario: all of competition_math, {rows} rows ({problems.num_rows} with an answer)")

    start = time.perf_counter()
    index = dc.benchmark_index(benchmarks.values())
    build = time.perf_counter() - start
    sizes = {name: len(texts) for name, texts in index.questions.items()}
    start = time.perf_counter()
    clean, report = decontaminate(problems, everything, benchmarks)
    run = time.perf_counter() - start

    # The same pass under the plain 13-word rule, where boilerplate counts as evidence.
    plain = dc.BenchmarkIndex(index.questions, ignore_boilerplate=False)
    kept = clean["question"].to_pylist()
    boilerplate_only = sum(plain.match(q) is not None for q in kept)

    start = time.perf_counter()
    exact = set().union(*(index.exact[name] for name in index.names))
    exact_hits = sum(dc.normalize(q) in exact for q in questions)
    exact_only = time.perf_counter() - start

    bench_grams = [
        set(dc.ngrams(dc.words(q))) for name in benchmarks for q in load_benchmark_questions(benchmarks[name])
    ]
    sample = questions[: args.sample]
    start = time.perf_counter()
    for question in sample:
        grams = dc.ngrams(dc.words(question))
        any(g in other for other in bench_grams for g in grams)
    naive = (time.perf_counter() - start) / len(sample) * len(questions)

    print(f"benchmarks: {sizes}")
    print(
        f"kept {clean.num_rows}, contaminated {report.num_contaminated} {report.by_benchmark} "
        f"{report.by_match}, duplicates {report.num_duplicates}; exact-only finds {exact_hits}"
    )
    print(
        f"kept although they share a 13-word run with a benchmark problem (boilerplate only): "
        f"{boilerplate_only}; the plain 13-word rule would keep {clean.num_rows - boilerplate_only}"
    )
    print("| variant | s |")
    print("|---|---|")
    print(f"| index build (loads the 3 benchmarks, once per process) | {build:.2f} |")
    print(f"| decontaminate, 12,500 rows (exact + 13-gram + repeats) | {run:.2f} |")
    print(f"| build + decontaminate | {build + run:.2f} |")
    print(f"| exact-only pass (floor) | {exact_only:.2f} |")
    print(f"| naive O(n*m) 13-gram pass, extrapolated from {len(sample)} problems | {naive:.1f} |")
    if args.edits:
        print_escaped_edits(index, {name: load_benchmark_questions(b) for name, b in benchmarks.items()})


def print_escaped_edits(index, questions: dict[str, list[str]]) -> None:
    from cotgen_assets_tests.harness.decontamination import EDITS, escaped

    print("| edit | " + " | ".join(f"{name} escaped / altered" for name in questions) + " |")
    print("|---|" + "---|" * len(questions))
    for kind, edit in EDITS.items():
        counts = [escaped(index, texts, edit) for texts in questions.values()]
        print(
            f"| {kind} | " + " | ".join(f"{len(slipped)} / {changed}" for changed, slipped in counts) + " |"
        )


if __name__ == "__main__":
    main()
