"""What a batch asset should ask for next, and what it will cost (DESIGN §3 `fill` / `extend`)."""

from dataclasses import dataclass, field

from cotgen_assets.core.batch_output import Usage
from cotgen_assets.core.pricing import UnknownModelError, cost_usd, model_price
from cotgen_assets.core.prompts import check_thinking_level

FILL = "fill"
EXTEND = "extend"
MODES = (FILL, EXTEND)
CHARS_PER_TOKEN = 4  # a rough, conservative estimate for projected costs
VERTEX_MAX_REQUESTS_PER_JOB = 200_000  # Vertex AI batch prediction's limit

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


def check_max_tries(max_tries: int) -> None:
    """Below 1 every problem would count as given up before it was ever asked."""
    if max_tries < 1:
        raise ValueError(f"max_tries must be at least 1, got {max_tries}")


def check_job_settings(
    model: str, thinking_level: str, max_requests_per_job: int, backend: str = "developer"
) -> None:
    """Before anything is written: a job of no requests, a model the price table lacks (whose
    cost could be neither projected nor recorded), or a thinking level the model does not take
    is a config error."""
    if max_requests_per_job < 1:
        raise ValueError(f"max_requests_per_job must be at least 1, got {max_requests_per_job}")
    if backend == "vertex" and max_requests_per_job > VERTEX_MAX_REQUESTS_PER_JOB:
        raise ValueError(
            f"max_requests_per_job must be at most {VERTEX_MAX_REQUESTS_PER_JOB} on Vertex AI (its limit "
            f"per batch job), got {max_requests_per_job}"
        )
    try:
        model_price(model, backend=backend)
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
) -> Plan:
    """`fill`: retry failed or wrong problems, then take new ones, until `limit` would be good.
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
        need_retry, need_new = 0, limit
    else:
        need_retry = need_new = max(limit - plan.num_good, 0)
    if need_retry:
        retries = [p for p in problem_ids if p in used and p not in good and tries.get(p, 0) < max_tries]
        plan.items += [(p, tries.get(p, 0) + 1) for p in retries[:need_retry]]
        plan.num_retries = len(plan.items)
        need_new -= plan.num_retries
    if need_new > 0:
        fresh = (p for p in problem_ids if p not in used)
        for problem_id in fresh:
            if plan.num_new >= need_new:
                break
            plan.items.append((problem_id, 1))
            plan.num_new += 1
    return plan


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
