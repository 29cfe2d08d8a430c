"""How many problems a `fill` round asks so that it reaches `limit` correct samples in one go.

A batch round takes minutes to a day, so asking exactly the number still missing (and again for
the ones the model got wrong, and again) costs days. Instead a round asks enough that, at a
conservative estimate of the scenario's accuracy, it reaches `limit` with probability `CONFIDENCE`:

* the accuracy of first tries and of retries are estimated apart (a problem the model got wrong
  once is harder), each as the lower end of a 95 % Wilson interval over the scenario's own asks,
  so a lucky small sample does not under-ask; with no asks yet, the scenario's
  `expected_accuracy` (first tries) and half of it (retries) stand in. A preview's graded answers
  (`core.preview`) are first tries too: they count, with the same caution (5 of 5 right gives
  0.57, below the 0.8 prior, so a round asks more; 16 of 16 is the first all-correct preview
  above the prior, and with limit 8, 20 of 20 asks 12 instead of the prior's 13);
* the number of correct samples of a round is a sum of two binomials; the round asks the fewest
  new problems whose normal approximation (continuity-corrected) reaches the missing count at
  `CONFIDENCE`. Retries are asked first, as `fill` always did, so wrong problems are not left out;
* at most `MAX_ASKS_PER_MISSING` asks per missing sample: below an estimate of about 25 % a round
  asks that many and the next round asks again.
"""

import dataclasses
import math
from dataclasses import dataclass

CONFIDENCE_Z = 1.645  # one-sided 95 %
WILSON_Z = 1.96  # two-sided 95 % interval, whose lower end is the estimate
DEFAULT_EXPECTED_ACCURACY = 0.8
RETRY_PRIOR_FACTOR = 0.5  # before any retry was graded: a wrong problem is half as likely to come right
# A round never asks more than this many problems per missing sample: an estimate near 0 (say, a
# round whose requests all failed) would otherwise ask every problem of the scenario.
MAX_ASKS_PER_MISSING = 4


def wilson_lower_bound(successes: int, trials: int, z: float = WILSON_Z) -> float:
    """The lower end of the Wilson score interval: a conservative rate that is honest for small n."""
    if trials <= 0:
        return 0.0
    share = successes / trials
    denominator = 1 + z * z / trials
    centre = share + z * z / (2 * trials)
    margin = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials))
    return max(0.0, (centre - margin) / denominator)


@dataclass(frozen=True)
class Accuracy:
    """What a scenario's asks so far say about the chance that one more ask gives a correct sample."""

    first_try: float
    retry: float
    first_try_asked: int = 0
    retry_asked: int = 0
    source: str = "prior"  # "prior" before any ask was graded, else "samples", "preview" or both


def estimate_accuracy(
    first_try_correct: int, first_try_asked: int, retry_correct: int, retry_asked: int, prior: float
) -> Accuracy:
    """Each rate from its own asks (the Wilson lower bound), else from the prior."""
    first = wilson_lower_bound(first_try_correct, first_try_asked) if first_try_asked else prior
    if retry_asked:
        retry = wilson_lower_bound(retry_correct, retry_asked)
    else:
        retry = first * RETRY_PRIOR_FACTOR
    source = "samples" if first_try_asked or retry_asked else "prior"
    return Accuracy(first, retry, first_try_asked, retry_asked, source)


def accuracy_from_tries(
    tries: dict[str, int], good: set[str], prior: float, preview: tuple[int, int] = (0, 0)
) -> Accuracy:
    """The estimate from a scenario's ingested asks (`tries` per problem) and its correct samples,
    plus a preview's (correct, graded) first answers, which are first tries like any other.

    `fill` never asks a good problem again, so a good problem's last try was the correct one and
    its earlier tries were wrong; a problem that is not good got every try wrong.
    """
    first_correct, first_asked = preview
    retry_correct = retry_asked = 0
    for problem, asked in tries.items():
        if asked < 1:
            continue
        first_asked += 1
        retry_asked += asked - 1
        if problem in good:
            if asked == 1:
                first_correct += 1
            else:
                retry_correct += 1
    accuracy = estimate_accuracy(first_correct, first_asked, retry_correct, retry_asked, prior)
    if preview[1]:
        source = "preview" if first_asked == preview[1] and not retry_asked else "samples and preview"
        accuracy = dataclasses.replace(accuracy, source=source)
    return accuracy


def reaches(missing: int, retries: int, new: int, accuracy: Accuracy) -> bool:
    """Whether `retries` + `new` asks give at least `missing` correct samples at CONFIDENCE."""
    mean = retries * accuracy.retry + new * accuracy.first_try
    variance = retries * accuracy.retry * (1 - accuracy.retry) + new * accuracy.first_try * (
        1 - accuracy.first_try
    )
    return mean - CONFIDENCE_Z * math.sqrt(variance) >= missing - 0.5


def new_problems_to_ask(missing: int, retries: int, accuracy: Accuracy, available: int) -> int:
    """The fewest new problems (at most `available`) that, with `retries`, reach `missing`."""
    if missing <= 0 or reaches(missing, retries, 0, accuracy):
        return 0
    if accuracy.first_try <= 0 or not reaches(missing, retries, available, accuracy):
        return available  # even all of them may fall short: ask all, the next round sees
    low, high = 0, available  # reaches(high) holds, reaches(low) does not
    while high - low > 1:
        middle = (low + high) // 2
        if reaches(missing, retries, middle, accuracy):
            high = middle
        else:
            low = middle
    return high


def expected_correct(retries: int, new: int, accuracy: Accuracy) -> float:
    return retries * accuracy.retry + new * accuracy.first_try


# Why a run of rounds (a click, then the sensor's automatic rounds) ends. A round the budget
# refuses ends it too: the sensor says so as it does for any refused run ("AUTO-FILL STOPPED").
LIMIT_REACHED = "limit reached"
ROUNDS_USED_UP = "rounds used up"
NOTHING_LEFT = "problems given up"  # no problem left to ask: every one is good, given up, or asked
CANCELLED = "cancelled"  # a job of the round was cancelled: someone asked the rounds to stop


def after_round(
    num_good: int, limit: int, round_number: int, max_rounds: int, cancelled: bool = False
) -> str | None:
    """None when another round should be asked once round `round_number` is saved; else why not.

    A cancelled round ends the run: asking its requests again would undo the cancel."""
    if num_good >= limit:
        return LIMIT_REACHED
    if cancelled:
        return CANCELLED
    if round_number >= max_rounds:
        return ROUNDS_USED_UP
    return None
