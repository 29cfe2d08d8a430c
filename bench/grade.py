"""Grading throughput on real answers: `python bench/grade.py [--datasets-dir DIR]`.

For GSM8K (7,473) and MATH (12,498) reference answers, half the pairs grade the reference against
itself and half against a wrong answer (GSM8K: the number plus one; MATH: another problem's
answer), the way a run sees right and wrong samples. Two ways, in the same run:

* project   `cotgen_assets.core.grading.grade_many` (cheap comparison, math-verify in worker processes);
* baseline  `math_verify.verify(parse(gold), parse(pred))` on every pair, serially, in this
            process's main thread with math-verify's own timeouts; on a subset, extrapolated.

Ends with `gsm8k_per_s=<n> math_per_s=<n>` (the project's figures). Target: gsm8k_per_s >= 2000.
"""

import argparse
import logging
import os
import random
import time
from pathlib import Path

import pyarrow.parquet as pq

from cotgen_assets.core import grading
from cotgen_assets.core.answers import extract_boxed_answer, extract_gsm8k_answer

ROOT = Path(__file__).resolve().parents[1]


def gsm8k_pairs(datasets_dir: Path) -> list[tuple[str, str]]:
    """(predicted, reference): every other prediction is the reference plus one."""
    rows = pq.read_table(datasets_dir / "gsm8k" / "main" / "train.parquet").to_pylist()
    references = [extract_gsm8k_answer(row["answer"]) for row in rows]
    return [(ref if i % 2 == 0 else str(int(ref) + 1), ref) for i, ref in enumerate(references)]


def math_pairs(datasets_dir: Path) -> list[tuple[str, str]]:
    """(predicted, reference): every other prediction is another (random) problem's answer."""
    rows = pq.read_table(datasets_dir / "competition_math" / "train.parquet").to_pylist()
    references = [a for a in (extract_boxed_answer(row["solution"]) for row in rows) if a]
    rng = random.Random(0)
    return [(ref if i % 2 == 0 else rng.choice(references), ref) for i, ref in enumerate(references)]


def run_project(pairs: list[tuple[str, str]], workers: int) -> tuple[float, list[bool]]:
    start = time.perf_counter()
    verdicts = grading.grade_many(pairs, workers=workers)
    return time.perf_counter() - start, verdicts


def run_baseline(pairs: list[tuple[str, str]]) -> tuple[float, list[bool]]:
    """math-verify alone, as its README shows it; answers as inline math so bare LaTeX parses."""
    from math_verify import parse, verify

    start = time.perf_counter()
    verdicts = [verify(parse(grading._as_latex(ref)), parse(grading._as_latex(pred))) for pred, ref in pairs]
    return time.perf_counter() - start, verdicts


def bench(name: str, pairs: list[tuple[str, str]], workers: int, baseline_size: int) -> float:
    seconds, verdicts = run_project(pairs, workers)
    subset = random.Random(1).sample(range(len(pairs)), min(baseline_size, len(pairs)))
    baseline_seconds, baseline_verdicts = run_baseline([pairs[i] for i in subset])
    agreement = sum(baseline_verdicts[k] == verdicts[i] for k, i in enumerate(subset)) / len(subset)
    settled = sum(grading._cheap_match(p, r) is not None for p, r in pairs) / len(pairs)
    per_s, baseline_per_s = len(pairs) / seconds, len(subset) / baseline_seconds
    extrapolated = "" if len(subset) == len(pairs) else f", extrapolated from {len(subset):,} pairs"
    print(
        f"{name}: {len(pairs):,} pairs, {sum(verdicts) / len(pairs):.1%} graded correct, "
        f"{settled:.1%} settled by the cheap comparison"
    )
    print(f"  project   {per_s:>9,.0f} samples/s   {seconds:7.2f} s   ({workers} math-verify workers)")
    print(
        f"  baseline  {baseline_per_s:>9,.0f} samples/s   {len(pairs) / baseline_per_s:7.2f} s   "
        f"(serial math-verify{extrapolated})"
    )
    print(
        f"  speed-up  {per_s / baseline_per_s:>9,.1f}x        verdicts agree with the baseline on "
        f"{agreement:.1%} of its pairs"
    )
    return per_s


def main() -> None:
    default_dir = os.environ.get("COTGEN_DATASETS_DIR") or ROOT.parent / "shared" / "data"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", type=Path, default=Path(default_dir))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--baseline-pairs",
        type=int,
        default=1000,
        help="pairs the serial baseline grades per dataset (extrapolated to all)",
    )
    args = parser.parse_args()
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # the baseline's timeout warnings

    start = time.perf_counter()  # workers start once per process; not part of either figure
    grading.grade_many([("x(x+2)", "x^2+2x")] * args.workers, workers=args.workers)
    print(
        f"starting {args.workers} math-verify workers: {time.perf_counter() - start:.2f} s (once per process)"
    )
    gsm8k_per_s = bench("GSM8K", gsm8k_pairs(args.datasets_dir), args.workers, args.baseline_pairs)
    math_per_s = bench("MATH", math_pairs(args.datasets_dir), args.workers, args.baseline_pairs)
    print(f"gsm8k_per_s={gsm8k_per_s:.0f} math_per_s={math_per_s:.0f}")


if __name__ == "__main__":
    main()
