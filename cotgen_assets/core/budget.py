"""The budget check: a submission projected to cost more than the run may spend is not sent."""

from cotgen_assets.core.submissions import Submission, SubmissionRefused


def refuse_over_budget(submission: Submission, max_cost_usd: float, spent_before: float = 0.0) -> None:
    """`spent_before`: what the earlier rounds of this run of rounds cost; the budget is for all of them."""
    total = submission.projected_cost_usd + spent_before
    if total > max_cost_usd:
        earlier = (
            f" plus ${spent_before:.2f} spent by the earlier rounds of this run of rounds"
            if spent_before
            else ""
        )
        raise SubmissionRefused(
            f"projected cost ${submission.projected_cost_usd:.2f} of {submission.num_requests} "
            f"{submission.stage.name} requests for scenario {submission.scenario!r}{earlier} is above "
            f"max_cost_usd ${max_cost_usd:.2f} by ${total - max_cost_usd:.2f}: "
            "raise max_cost_usd or lower limit. Nothing was submitted."
        )
