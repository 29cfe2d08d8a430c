"""What a batch asset should ask for next, and what it will cost (DESIGN §3 `fill` / `extend`)."""

from dataclasses import dataclass, field

from cotgen_assets.core.batch_output import Usage
from cotgen_assets.core.pricing import UnknownModelError, cost_usd, model_price
from cotgen_assets.core.prompts import check_thinking_level
from cotgen_assets.core.rounds import MAX_ASKS_PER_MISSING, Accuracy, expected_correct, new_problems_to_ask

FILL = "fill"
EXTEND = "extend"
MODES = (FILL, EXTEND)
CHARS_PER_TOKEN = 4  # a rough, conservative estimate for projected costs

# Priors for the projected cost until a scenario has samples to average over.
DEFAULT_GENERATION_USAGE = Usage(thinking_tokens=3000, output_tokens=400)
DEFAULT_SUMMARIZATION_USAGE = Usage(thinking_tokens=300, output_tokens=150)


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


def check_max_tries(max_tries: int) -> None:
    """Below 1 every problem would count as given up before it was ever asked."""
    if max_tries < 1:
        raise ValueError(f"max_tries must be at least 1, got {max_tries}")


def check_job_settings(model: str, thinking_level: str, max_requests_per_job: int) -> None:
    """Before anything is written: a job of no requests, a model the price table lacks (whose
    cost could be neither projected nor recorded), or a thinking level the model does not take
    is a config error."""
    if max_requests_per_job < 1:
        raise ValueError(f"max_requests_per_job must be at least 1, got {max_requests_per_job}")
    try:
        model_price(model)
    except UnknownModelError as error:
        raise ValueError(str(error)) from None
    check_thinking_level(model, thinking_level)


def check_max_cost(max_cost_usd: float) -> None:
    """A negative budget refuses every batch with a confusing "above max_cost_usd $-1.00"."""
    if max_cost_usd < 0:
        raise ValueError(f"max_cost_usd must be 0 or more, got {max_cost_usd}")


def plan_generation(
    problem_ids: list[str],
    good: set[str],
    used: set[str],
    tries: dict[str, int],
    limit: int,
    mode: str,
    max_tries: int,
    accuracy: Accuracy | None = None,
) -> Plan:
    """`fill`: retry failed or wrong problems, then take new ones, so that `limit` would be good:
    with `accuracy`, enough to get there at 95 % (`rounds`); without, exactly the number missing.
    `extend`: `limit` problems never asked before.

    `good` holds ids with a correct sample, `used` every id ever asked, `tries` the number of
    ingested asks per id. A problem that reached `max_tries` without a good sample is given up.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: expected one of {MODES}")
    if limit <= 0:
        raise ValueError(f"limit must be a positive number of samples, got {limit}")
    check_max_tries(max_tries)
    plan = Plan(num_good=sum(1 for p in problem_ids if p in good))
    plan.given_up = [p for p in problem_ids if p not in good and tries.get(p, 0) >= max_tries]
    if mode == EXTEND:
        need_new = limit
    else:
        plan.num_missing = max(limit - plan.num_good, 0)
        retries = [p for p in problem_ids if p in used and p not in good and tries.get(p, 0) < max_tries]
        plan.items += [(p, tries.get(p, 0) + 1) for p in retries[: plan.num_missing]]
        plan.num_retries = len(plan.items)
        need_new = plan.num_missing - plan.num_retries
        if accuracy is not None:
            available = sum(1 for p in problem_ids if p not in used)
            need_new = min(
                new_problems_to_ask(plan.num_missing, plan.num_retries, accuracy, available),
                MAX_ASKS_PER_MISSING * plan.num_missing - plan.num_retries,
            )
    for problem_id in (p for p in problem_ids if p not in used):
        if plan.num_new >= need_new:
            break
        plan.items.append((problem_id, 1))
        plan.num_new += 1
    if mode == FILL and accuracy is not None:
        plan.accuracy = accuracy
        plan.expected_correct = expected_correct(plan.num_retries, plan.num_new, accuracy)
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
        "accuracy": accuracy.first_try if accuracy else None,
        "retry_accuracy": accuracy.retry if accuracy else None,
        "accuracy_source": accuracy.source if accuracy else None,
        "expected_correct": plan.expected_correct if accuracy else None,
    }


def projected_cost_usd(
    model: str, request_bytes: int, num_requests: int, average: Usage
) -> tuple[float, Usage]:
    """The batch's projected cost from its request sizes and the average answer so far."""
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
    return cost_usd(model, per_request, batch=True) * num_requests, total


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
