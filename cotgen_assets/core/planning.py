"""What a batch asset should ask for next, and what it will cost.

Generation: `fill` tops a scenario up to `limit` good samples (retrying failed or wrong problems
first), `extend` takes `limit` problems never asked before. Summarization: every CoT sample
still lacking a CoD of that very CoT, correct ones only by default. Plain functions over ids and
records; `prepare` reads the files and writes the requests.
"""

import math
from collections import Counter
from collections.abc import Container, Iterable
from dataclasses import dataclass, field, replace

from cotgen_assets.core.model_io import Usage, wire_for
from cotgen_assets.core.pricing import UnknownModelError, cost_usd, model_price
from cotgen_assets.core.prompts import validate_thinking_level
from cotgen_assets.core.rounds import MAX_ASKS_PER_MISSING, Accuracy, expected_correct, new_problems_to_ask
from cotgen_assets.core.sample_keys import problem_and_sample, request_key, sample_key

FILL = "fill"
EXTEND = "extend"
MODES = (FILL, EXTEND)
SUMMARIZE = ("correct", "all")  # which CoT samples get a draft
CHARS_PER_TOKEN = 4  # a rough, conservative estimate for projected costs


@dataclass
class Plan:
    """Problem ids to request with their try numbers, and why the others are left out."""

    items: list[tuple[str, int]] = field(default_factory=list)
    num_retries: int = 0
    num_new: int = 0
    num_good: int = 0
    given_up: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # why samples were not asked: "incorrect", ...
    skipped_chars: int = 0  # the text the skipped ones would have sent (for the cost they saved)
    num_missing: int = 0  # fill: good samples short of `limit` when planned
    accuracy: Accuracy | None = None  # fill: the estimate the ask was sized by (None: exactly the missing)
    expected_correct: float = 0.0  # fill: good samples the ask should give, at that estimate
    samples_per_problem: int = 1  # answers asked of each new problem (k request lines)

    @property
    def num_problems(self) -> int:
        """The problems the plan asks (each of `items` is one answer of one)."""
        return len({problem_and_sample(key)[0] for key, _ in self.items})


def validate_max_tries(max_tries: int) -> None:
    """Below 1 every problem would count as given up before it was ever asked."""
    if max_tries < 1:
        raise ValueError(f"max_tries must be at least 1, got {max_tries}")


def validate_job_settings(
    model: str, thinking_level: str, max_requests_per_job: int, backend: str = "developer"
) -> None:
    """Before anything is written: a job of no requests, a model the price table lacks (whose
    cost could be neither projected nor recorded), or a thinking level the model does not take
    is a config error."""
    if max_requests_per_job < 1:
        raise ValueError(f"max_requests_per_job must be at least 1, got {max_requests_per_job}")
    wire = wire_for(backend)
    most = wire.limits.max_requests_per_job
    if most is not None and max_requests_per_job > most:
        raise ValueError(
            f"max_requests_per_job must be at most {most} on {wire.label} (its limit "
            f"per batch job), got {max_requests_per_job}"
        )
    try:
        model_price(model, backend=backend)
    except UnknownModelError as error:
        raise ValueError(str(error)) from None
    validate_thinking_level(model, thinking_level)


def plan_generation(
    problem_ids: list[str],
    good: set[str],
    used: set[str],
    tries: dict[str, int],
    limit: int,
    mode: str,
    max_tries: int,
    accuracy: Accuracy | None = None,
    *,
    samples_per_problem: int = 1,
    answered: Container[str] = frozenset(),
) -> Plan:
    """`fill`: ask failed (with one answer per problem: or wrong) requests again, then new problems,
    so that `limit` answers would be correct: with `accuracy`, enough to get there at 95 % (`rounds`);
    without, exactly the number missing. `extend`: `limit` problems never asked before. Each new
    problem is asked `samples_per_problem` (k) times, under the keys of `sample_keys`.

    `good` holds the keys with a correct answer, `answered` those with any answer, `used` every
    problem id ever asked, `tries` the ingested asks per key (0: sent, but its job never ran it). With
    k > 1 a wrong answer is data (it lowers the problem's pass rate): only requests that got no answer
    are asked again, keeping their sample index. A request (k = 1: a problem) that reached
    `max_tries` without a good answer is given up.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: expected one of {MODES}")
    if limit <= 0:
        raise ValueError(f"limit must be a positive number of samples, got {limit}")
    validate_max_tries(max_tries)
    correct_answers = Counter(problem_and_sample(key)[0] for key in good)
    plan = Plan(
        num_good=sum(correct_answers.get(p, 0) for p in problem_ids),  # of problems still in the source
        samples_per_problem=samples_per_problem,
    )
    if samples_per_problem == 1:
        retries, plan.given_up = _unsolved_problems(problem_ids, good, used, tries, max_tries)
    else:
        retries, plan.given_up = _failed_requests(problem_ids, used, answered, tries, max_tries)
    need_new = limit
    if mode == FILL:
        plan.num_missing = max(limit - plan.num_good, 0)
        most_retries = plan.num_missing * (1 if samples_per_problem == 1 else MAX_ASKS_PER_MISSING)
        plan.items += [(key, tries.get(key, 0) + 1) for key in retries[:most_retries]]
        plan.num_retries = len(plan.items)
        if accuracy is not None and samples_per_problem > 1:
            # a failed request asked again is a fresh answer: the first-try rate, not a wrong one's
            accuracy = replace(accuracy, retry=accuracy.first_try)
        need_new = _new_problems_for_fill(plan, accuracy, sum(1 for p in problem_ids if p not in used))
    for problem_id in (p for p in problem_ids if p not in used):
        if plan.num_new >= need_new:
            break
        plan.items += [(sample_key(problem_id, sample), 1) for sample in range(samples_per_problem)]
        plan.num_new += 1
    if mode == FILL and accuracy is not None:
        plan.accuracy = accuracy
        plan.expected_correct = expected_correct(
            plan.num_retries, plan.num_new * samples_per_problem, accuracy
        )
    return plan


def _unsolved_problems(
    problem_ids: list[str], good: set[str], used: set[str], tries: dict[str, int], max_tries: int
) -> tuple[list[str], list[str]]:
    """One answer per problem: (problems to ask again, problems given up). A problem asked before
    with no correct answer (failed or wrong) is asked again under its own id (sample 0)."""
    solved = {problem_and_sample(key)[0] for key in good}
    unsolved = [p for p in problem_ids if p not in solved]
    retries = [p for p in unsolved if p in used and tries.get(p, 0) < max_tries]
    return retries, [p for p in unsolved if tries.get(p, 0) >= max_tries]


def _failed_requests(
    problem_ids: list[str], used: set[str], answered: Container[str], tries: dict[str, int], max_tries: int
) -> tuple[list[str], list[str]]:
    """k answers per problem: (keys to ask again, keys given up), in table order then sample order.
    Only requests of asked problems that got no answer (an error, no line, a job that never ran
    them) count; a wrong answer is kept as it is."""
    failed: dict[str, list[tuple[int, str]]] = {}
    for key in tries:
        if key not in answered:
            problem_id, sample = problem_and_sample(key)
            failed.setdefault(problem_id, []).append((sample, key))
    keys = [key for p in problem_ids if p in used for _, key in sorted(failed.get(p, ()))]
    return [k for k in keys if tries[k] < max_tries], [k for k in keys if tries[k] >= max_tries]


def _new_problems_for_fill(plan: Plan, accuracy: Accuracy | None, available: int) -> int:
    """How many new problems (k answers each) a fill asks beside its retries: enough at `accuracy`
    (per answer), else exactly the number missing; never more than MAX_ASKS_PER_MISSING answers per
    missing one. Answers needed / k, rounded up: the k answers of a problem are drawn independently."""
    k = plan.samples_per_problem
    if accuracy is None:
        return math.ceil(max(plan.num_missing - plan.num_retries, 0) / k)
    answers = min(
        new_problems_to_ask(plan.num_missing, plan.num_retries, accuracy, available * k),
        MAX_ASKS_PER_MISSING * plan.num_missing - plan.num_retries,
    )
    return math.ceil(max(answers, 0) / k)


def validate_summarize(summarize: str) -> None:
    if summarize not in SUMMARIZE:
        raise ValueError(f"summarize must be one of {SUMMARIZE}, got {summarize!r}")


def plan_summarization(
    cot_records: Iterable[dict],
    drafted: dict[str, str],
    excluded: Container[str],
    tries: dict[str, int],
    only_correct: bool,
    max_tries: int,
) -> Plan:
    """The CoT samples to cut into drafts: each that lacks a CoD of that very CoT.

    Records are keyed by (id, sample) (`sample_keys.request_key`): each correct answer gets its draft.
    `drafted` maps a key to the generation batch its CoD was made from, so a CoT made again gets
    a new draft. Only correct samples when `only_correct` (a draft of wrong reasoning is paid for
    and never trained on), and never one of a problem in `excluded` (source_problems now leaves
    it out: a benchmark match or a repeat). A sample asked `max_tries` times is given up.
    """
    plan = Plan()
    for record in cot_records:
        key = request_key(record)
        if drafted.get(key) == record["generation"]["batch"]:
            continue
        why_not = (
            "contaminated_or_repeat"
            if record["id"] in excluded
            else "incorrect"
            if only_correct and not record["correct"]
            else None
        )
        if why_not:
            plan.skipped[why_not] = plan.skipped.get(why_not, 0) + 1
            plan.skipped_chars += len(record["question"]) + len(record["cot"])
            continue
        if tries.get(key, 0) >= max_tries:
            plan.given_up.append(key)
            continue
        plan.items.append((key, tries.get(key, 0) + 1))
    return plan


def round_facts(plan: Plan, mode: str, limit: int) -> dict:
    """How a generation ask was sized, kept with its submission (the report's rounds read it)."""
    accuracy = plan.accuracy
    return {
        "mode": mode,
        "limit": limit,
        "missing": plan.num_missing,
        "num_retries": plan.num_retries,
        "num_new": plan.num_new,
        "samples_per_problem": plan.samples_per_problem,
        "accuracy": accuracy.first_try if accuracy else None,
        "retry_accuracy": accuracy.retry if accuracy else None,
        "accuracy_source": accuracy.source if accuracy else None,
        "expected_correct": plan.expected_correct if accuracy else None,
    }


def projected_cost_usd(
    model: str, request_bytes: int, num_requests: int, average: Usage, backend: str = "developer"
) -> tuple[float, Usage]:
    """The batch's projected cost on `backend` from its request sizes and the average answer so far."""
    per_request_input = request_bytes // max(num_requests, 1) // CHARS_PER_TOKEN
    per_request = Usage(
        input_tokens=per_request_input,
        thinking_tokens=average.thinking_tokens,
        output_tokens=average.output_tokens,
    )
    total = Usage(
        input_tokens=per_request.input_tokens * num_requests,
        thinking_tokens=per_request.thinking_tokens * num_requests,
        output_tokens=per_request.output_tokens * num_requests,
    )
    return cost_usd(model, per_request, batch=True, backend=backend) * num_requests, total


class UsageAverage:
    """Running average of thinking and output tokens over earlier samples."""

    def __init__(self, prior: Usage):
        self.prior, self.count, self.thinking, self.output = prior, 0, 0, 0

    def add(self, usage: dict) -> None:
        self.count += 1
        self.thinking += usage.get("thinking_tokens", 0)
        self.output += usage.get("output_tokens", 0)

    def value(self) -> Usage:
        if not self.count:
            return self.prior
        return Usage(thinking_tokens=self.thinking // self.count, output_tokens=self.output // self.count)
