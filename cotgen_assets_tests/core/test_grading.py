"""Grading: the answers a user would call right are right, wrong ones are wrong, and nothing hangs."""

import os
import random
import signal
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cotgen_assets.core import grading
from cotgen_assets.core.answers import extract_boxed_answer, extract_gsm8k_answer
from cotgen_assets.core.grading import answers_match, extract_predicted_answer, grade_many

DATASETS_DIR = Path(os.environ["COTGEN_DATASETS_DIR"])  # conftest.py sets a default


def _read(relative_path: str) -> list[dict]:
    path = DATASETS_DIR / relative_path
    assert path.exists(), f"{path} is missing: set COTGEN_DATASETS_DIR to the shared data directory"
    return pq.read_table(path).to_pylist()


@pytest.fixture(scope="module")
def gsm8k_answers() -> list[str]:
    return [extract_gsm8k_answer(row["answer"]) for row in _read("gsm8k/main/train.parquet")]


@pytest.fixture(scope="module")
def math_answers() -> list[str]:
    answers = [extract_boxed_answer(row["solution"]) for row in _read("competition_math/train.parquet")]
    return [answer for answer in answers if answer]  # two solutions box nothing: `\boxed{}`


# --------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "answer_text, expected",
    [
        ("So $x = \\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("First \\boxed{1}, then on reflection \\boxed{2}.", "2"),
        ("She pays 3 * 6 = 18 dollars. So the final answer is $18$.", "18"),
        ("Final Answer: The final answer is 7. I hope it is correct.", "7"),
        ("**Answer:** 42", "42"),
        ("Answer: \\(x^2 + 1\\).", "x^2 + 1"),
        ("The answer is: \\text{(B)}", "\\text{(B)}"),
        ("He had 2 bags of 625 apples, so 1,250 apples in all.", "1,250"),
        ("The temperature drops to -3.5 degrees", "-3.5"),
        ("Half of them: 1/2", "1/2"),
        ("I cannot solve this problem.", None),
        ("", None),
    ],
)
def test_extract_predicted_answer(answer_text, expected):
    assert extract_predicted_answer(answer_text) == expected


# --------------------------------------------------------------------------- comparison


@pytest.mark.parametrize(
    "predicted, reference",
    [
        ("0.5", "\\frac{1}{2}"),
        ("\\dfrac12", "\\frac{1}{2}"),
        ("1/2", "0.5"),
        ("1,000", "1000"),
        ("1{,}000", "1000"),
        ("112,\\!875", "112875"),
        ("18.0", "18"),
        ("$18$", "18"),
        ("\\$18.00", "18"),
        (" 18 ", "18"),
        ("10\\%", "10"),
        ("50\\%", "0.5"),
        ("90^\\circ", "90"),
        ("\\text{(A)}", "(A)"),
        ("A", "\\text{(A)}"),
        ("x(x+2)", "x^2+2x"),
        ("\\frac{\\sqrt2}{2}", "\\frac{1}{\\sqrt{2}}"),
        ("x = 3", "3"),
        ("(1, 2)", "(1,2)"),
        ("\\{1,2\\}", "1,2"),
        ("21", "21\\text{ dogs}"),
        ("-\\frac{5}{3}", "-\\frac{5}{3}."),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ],
)
def test_equivalent_answers_match(predicted, reference):
    assert answers_match(predicted, reference)


@pytest.mark.parametrize(
    "predicted, reference",
    [
        ("-2", "2"),
        ("1/2", "2"),
        ("2", "\\frac{1}{2}"),
        ("19", "18"),
        ("18.5", "18"),
        ("1000", "100"),
        ("x^2-2x", "x^2+2x"),
        ("\\text{(B)}", "\\text{(A)}"),
        ("(2, 1)", "(1,2)"),
        ("\\sqrt{3}", "\\sqrt{2}"),
        (None, "18"),
        ("", "18"),
        ("no idea", "18"),
    ],
)
def test_near_misses_do_not_match(predicted, reference):
    assert not answers_match(predicted, reference)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "pathological",
    [
        "10^{10^{10}}",
        "9^{9^{9^{9}}}",
        "(10^{6})!",
        "(" * 5000 + "1" + ")" * 5000,
        "\\frac{" * 300 + "1" + "}{2}" * 300,
    ],
)
def test_pathological_answer_returns_false(pathological):
    assert answers_match(pathological, "1", timeout_seconds=1.0) is False


@pytest.mark.timeout(60)
def test_grading_works_outside_the_main_thread():
    """Dagster may call from any thread, where math-verify's own signal-based timeout cannot run."""
    results = []
    thread = threading.Thread(
        target=lambda: results.append(
            (answers_match("x(x+2)", "x^2+2x"), answers_match("10^{10^{10}}", "1", timeout_seconds=1.0))
        )
    )
    thread.start()
    thread.join()
    assert results == [(True, False)]


@pytest.mark.timeout(60)
def test_a_stuck_worker_is_killed_and_replaced():
    """A worker that no signal can stop (SIGSTOPped, like one stuck in C) costs one answer, not the run."""
    pool = grading._VerifierPool()
    try:
        pool.run([("1", "1")], 1, 1.0)
        stuck = pool.workers[0].process
        os.kill(stuck.pid, signal.SIGSTOP)
        assert pool.run([("x^2+2x", "x(x+2)"), ("x^2+2x", "x(x+2)")], 1, 2.0) == [False, True]
        assert stuck.poll() is not None
    finally:
        pool.close()


@pytest.mark.timeout(60)
def test_a_worker_that_died_between_calls_is_replaced():
    pool = grading._VerifierPool()
    try:
        pool.run([("1", "1")], 1, 2.0)
        pool.workers[0].process.kill()
        pool.workers[0].process.wait()
        assert pool.run([("x^2+2x", "x(x+2)"), ("x^3", "x(x+2)")], 1, 2.0) == [True, False]
    finally:
        pool.close()


# --------------------------------------------------------------------------- real data


def test_every_gsm8k_reference_matches_itself_and_its_boxed_form(gsm8k_answers):
    assert len(gsm8k_answers) == 7473
    assert all(answers_match(answer, answer) for answer in gsm8k_answers)
    boxed = [extract_predicted_answer(f"So the total is \\boxed{{{answer}}}.") for answer in gsm8k_answers]
    assert grade_many(zip(boxed, gsm8k_answers)) == [True] * len(gsm8k_answers)


def test_gsm8k_off_by_one_answers_are_wrong(gsm8k_answers):
    wrong = [str(int(answer) + 1) for answer in gsm8k_answers]
    assert not any(grade_many(zip(wrong, gsm8k_answers)))


def test_math_references_match_themselves(math_answers):
    matched = sum(answers_match(answer, answer) for answer in math_answers)
    assert matched >= 0.995 * len(math_answers)


@pytest.mark.timeout(300)
def test_math_verify_understands_math_references(math_answers):
    """The fallback must parse references too: it is what grades answers written unlike the reference."""
    sample = random.Random(0).sample(math_answers, 2000)
    pool = grading._VerifierPool()
    try:
        verdicts = pool.run([(answer, answer) for answer in sample], 2, 2.0)
    finally:
        pool.close()
    assert sum(verdicts) >= 0.99 * len(sample)


@pytest.mark.timeout(300)
def test_another_problems_math_answer_is_mostly_wrong(math_answers):
    references = random.Random(2).sample(math_answers, 1000)
    others = references[1:] + references[:1]
    verdicts = grade_many(zip(others, references))
    assert sum(verdicts) <= 0.02 * len(references)  # a few are truly equal: "21" and "21\text{ dogs}"


@pytest.mark.timeout(300)
def test_grade_many_keeps_order_and_agrees_with_answers_match(gsm8k_answers, math_answers):
    rng = random.Random(1)
    references = rng.sample(math_answers, 60) + rng.sample(gsm8k_answers, 20)
    pairs = [(answer, answer) for answer in references]
    pairs += [(rng.choice(math_answers), answer) for answer in references]
    pairs += [("\\boxed{oops", answer) for answer in references[:5]] + [(None, "3")]
    rng.shuffle(pairs)
    one_by_one = [answers_match(predicted, reference) for predicted, reference in pairs]
    assert grade_many(pairs, workers=2) == one_by_one
    assert sum(one_by_one) >= len(references)  # the self pairs, at least: order really was tested
    assert grade_many([]) == []
