"""The round planner: a conservative accuracy estimate and an ask that reaches `limit` in one round."""

import math

import pytest

from cotgen_assets.core.planning import plan_generation
from cotgen_assets.core.rounds import (
    CANCELLED,
    LIMIT_REACHED,
    MAX_ASKS_PER_MISSING,
    RETRY_PRIOR_FACTOR,
    Accuracy,
    accuracy_from_tries,
    after_round,
    estimate_accuracy,
    expected_correct,
    new_problems_to_ask,
    wilson_lower_bound,
)
from cotgen_assets_tests.harness.pipeline import finish_generation, read_jsonl


def binomial_pmf(n: int, p: float, k: int) -> float:
    return math.exp(
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * math.log(p)
        + (n - k) * math.log1p(-p)
    )


@pytest.mark.parametrize(
    ("successes", "trials", "expected"),
    [(0, 10, 0.0), (10, 10, 0.7225), (70, 100, 0.6042), (700, 1000, 0.6709), (1, 1, 0.2065)],
)
def test_the_wilson_lower_bound_matches_its_formula(successes, trials, expected):
    assert wilson_lower_bound(successes, trials) == pytest.approx(expected, abs=1e-4)


def test_a_lucky_small_sample_is_not_taken_at_its_word():
    """3 of 3 correct says little: the estimate stays well below 1, so the next round does not under-ask."""
    lucky = estimate_accuracy(3, 3, 0, 0, prior=0.8)
    assert lucky.first_try < 0.5 and lucky.source == "samples"


def test_without_asks_the_prior_stands_in_and_retries_count_lower():
    accuracy = estimate_accuracy(0, 0, 0, 0, prior=0.8)
    assert accuracy == Accuracy(0.8, 0.8 * RETRY_PRIOR_FACTOR, 0, 0, "prior")
    measured = estimate_accuracy(700, 1000, 20, 100, prior=0.8)
    assert measured.retry == pytest.approx(wilson_lower_bound(20, 100))


@pytest.mark.parametrize("accuracy", [0.5, 0.7, 0.95])
@pytest.mark.parametrize("missing", [10, 40, 1000])
def test_the_ask_reaches_the_missing_count_in_at_least_95_percent_of_rounds(accuracy, missing):
    """At the estimated accuracy, the chance that the ask falls short (the exact binomial tail) is
    about 5 %: the normal approximation the planner uses is off by at most a point."""
    estimate = Accuracy(accuracy, accuracy * RETRY_PRIOR_FACTOR)
    asked = new_problems_to_ask(missing, 0, estimate, available=100_000)
    short = sum(binomial_pmf(asked, accuracy, k) for k in range(missing))
    assert short <= 0.06
    assert sum(binomial_pmf(asked - 1, accuracy, k) for k in range(missing)) > 0.04  # and the smallest
    assert asked < missing / accuracy * 1.5  # and not wildly more than the mean needs


def test_retries_count_and_supply_bounds_the_ask():
    estimate = Accuracy(0.7, 0.35)
    without = new_problems_to_ask(100, 0, estimate, available=10_000)
    with_retries = new_problems_to_ask(100, 60, estimate, available=10_000)
    assert with_retries < without
    assert new_problems_to_ask(100, 0, estimate, available=50) == 50  # all there is
    assert new_problems_to_ask(0, 0, estimate, available=50) == 0


def test_the_estimate_counts_first_tries_and_retries_from_the_asks_on_disk():
    """A good problem's last try was right and its earlier ones wrong; a problem not good got all wrong."""
    tries = {"a": 1, "b": 1, "c": 2, "d": 3, "e": 1}
    good = {"a", "b", "c", "unasked"}  # a, b right at once; c at its second try; d, e never
    accuracy = accuracy_from_tries(tries, good, prior=0.8)
    assert (accuracy.first_try_asked, accuracy.retry_asked) == (5, 3)
    assert accuracy.first_try == pytest.approx(wilson_lower_bound(2, 5))
    assert accuracy.retry == pytest.approx(wilson_lower_bound(1, 3))
    assert accuracy_from_tries({}, set(), prior=0.8) == Accuracy(0.8, 0.4, 0, 0, "prior")


def test_fill_asks_the_wrong_problems_again_first_then_enough_new_ones():
    problems = [f"p{i}" for i in range(400)]
    tries = {f"p{i}": 1 for i in range(20)}  # 14 right, 6 wrong
    good = {f"p{i}" for i in range(14)}
    accuracy = Accuracy(0.7, 0.35)
    plan = plan_generation(problems, good, set(tries), tries, 40, "fill", 3, accuracy)
    assert (plan.num_good, plan.num_missing, plan.num_retries) == (14, 26, 6)
    assert plan.items[:6] == [(f"p{i}", 2) for i in range(14, 20)]
    assert plan.num_new == new_problems_to_ask(26, 6, accuracy, available=380) > 26 - 6
    assert plan.expected_correct == pytest.approx(expected_correct(6, plan.num_new, accuracy))
    assert plan.expected_correct >= 26
    assert {p for p, _ in plan.items[6:]}.isdisjoint(tries), "new problems are ones never asked"
    exact = plan_generation(problems, good, set(tries), tries, 40, "fill", 3)
    assert (exact.num_retries, exact.num_new) == (6, 20), "without an estimate: exactly what is missing"
    hopeless = plan_generation(problems, good, set(tries), tries, 40, "fill", 3, Accuracy(0.0, 0.0))
    assert len(hopeless.items) == MAX_ASKS_PER_MISSING * 26, (
        "an estimate of 0 does not ask the whole scenario"
    )
    extend = plan_generation(problems, good, set(tries), tries, 40, "extend", 3, accuracy)
    assert (extend.num_retries, extend.num_new) == (0, 40), "extend is unchanged: limit new problems"


def test_a_fill_asks_enough_by_the_prior_then_by_the_scenarios_own_samples(pipeline, sources, data_dir):
    """The first round sizes its ask by the prior (0.8); the dry run and the metadata show the
    estimate, the ask, the expected correct samples and the cost; samples beyond limit are kept."""
    sources("easy")
    pipeline.submit_generation("easy", limit=40, dry_run=True)
    dry = pipeline.metadata("generation_batch", "easy")
    asked = new_problems_to_ask(40, 0, Accuracy(0.8, 0.4), available=10_000)
    assert dry["num_requests"] == dry["num_new_problems"] == asked > 40 and dry["batch_names"] == []
    assert (dry["accuracy_estimate"], dry["retry_accuracy_estimate"], dry["accuracy_source"]) == (
        0.8,
        0.4,
        "prior",
    )
    assert dry["num_missing"] == 40 and dry["expected_correct"] == pytest.approx(0.8 * asked)
    assert dry["projected_cost_usd"] > 0 and dry["round"] == 1

    pipeline.submit_generation("easy", limit=40)
    assert finish_generation(pipeline, "easy").success
    cot = read_jsonl(data_dir / "cot_easy.jsonl")
    assert len(cot) == asked and all(r["correct"] for r in cot), "every correct sample is kept, past limit"

    pipeline.submit_generation("easy", limit=asked + 20, dry_run=True)
    again = pipeline.metadata("generation_batch", "easy")
    measured = wilson_lower_bound(asked, asked)
    assert again["accuracy_source"] == "samples" and again["accuracy_estimate"] == pytest.approx(measured)
    assert again["num_missing"] == 20
    assert again["num_requests"] == new_problems_to_ask(20, 0, Accuracy(measured, measured / 2), 10_000)


def test_a_cancelled_round_ends_the_run_of_rounds_unless_the_limit_was_reached():
    assert after_round(3, 10, 1, 3) is None
    assert after_round(3, 10, 1, 3, cancelled=True) == CANCELLED
    assert after_round(10, 10, 1, 3, cancelled=True) == LIMIT_REACHED


def test_a_preview_counts_as_first_tries_with_the_usual_caution():
    """limit 8, nothing asked yet: the prior (0.8) asks 13. A preview's answers are first tries,
    estimated by the Wilson lower bound like any: 5 of 5 right (0.57) asks more, 20 of 20 (0.84) fewer."""
    prior = accuracy_from_tries({}, set(), 0.8)
    five = accuracy_from_tries({}, set(), 0.8, preview=(5, 5))
    twenty = accuracy_from_tries({}, set(), 0.8, preview=(20, 20))
    assert (prior.source, five.source, twenty.source) == ("prior", "preview", "preview")
    assert five.first_try == pytest.approx(wilson_lower_bound(5, 5)) and five.first_try_asked == 5
    asks = [new_problems_to_ask(8, 0, a, 7000) for a in (prior, five, twenty)]
    assert asks == [13, 20, 12]


def test_preview_and_samples_add_up():
    tries = {"a": 1, "b": 1, "c": 2}
    both = accuracy_from_tries(tries, {"a", "c"}, 0.8, preview=(3, 4))
    assert both.source == "samples and preview"
    assert both.first_try == pytest.approx(wilson_lower_bound(1 + 3, 3 + 4))
    assert both.retry == pytest.approx(wilson_lower_bound(1, 1))
