"""The round planner: a conservative accuracy estimate and an ask that reaches `limit` in one round."""

import math

import pytest

from cotgen_assets.core.rounds import (
    RETRY_PRIOR_FACTOR,
    Accuracy,
    estimate_accuracy,
    new_problems_to_ask,
    wilson_lower_bound,
)


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
