"""Auto-fill rounds: for a scenario with `auto_fill`, once a fill round's CoT samples are saved,
the sensor launches the next round while the scenario is short of `limit`, inside `max_rounds`
(the budget of the whole run of rounds is the batch asset's to check). How the run of rounds
ended is said once: the limit reached, the rounds used up, no problem left, or a round cancelled.
"""

from datetime import datetime

import dagster as dg

from cotgen_assets.core.rounds import CANCELLED, LIMIT_REACHED, NOTHING_LEFT, ROUNDS_USED_UP, after_round
from cotgen_assets.core.scenarios import get_scenario
from cotgen_assets.core.stages import GENERATION
from cotgen_assets.core.submission_history import num_good_samples, submission_cost_usd
from cotgen_assets.defs.history import (
    is_ingested,
    latest_metadata,
    newest_metadata_where,
    rounds_cancelled,
    rounds_submissions,
)
from cotgen_assets.defs.jobs import ROUND_TAG, ROUNDS_TAG
from cotgen_assets.defs.sensors.cursor import Runs, SensorCursor
from cotgen_assets.defs.sensors.run_retries import Launch, TickOutcome, launch_with_retries

ADVICE = {
    LIMIT_REACHED: "nothing",
    ROUNDS_USED_UP: f"raise max_rounds, or materialize {GENERATION.batch_asset} (a new run of rounds)",
    NOTHING_LEFT: "raise max_tries, add problems to the scenario, or accept",
    CANCELLED: f"materialize {GENERATION.batch_asset} (a new run of rounds asks what is missing)",
}


def launch_next_round(
    instance: dg.DagsterInstance, outcome: TickOutcome, partition: str, cursor: SensorCursor, now: datetime
) -> None:
    """For a scenario with `auto_fill`: once a fill round's CoT samples are saved, launch the next
    round while it is short of `limit`, inside `max_rounds`; else say once why the rounds end."""
    newest = newest_metadata_where(
        instance, GENERATION.batch_asset, partition, lambda m: not m.get("dry_run")
    )
    if not newest or not newest.get("auto_fill"):
        return
    rounds_id, number = newest["rounds_id"], newest["round"]
    if cursor.rounds_ended.get(partition) == rounds_id:
        return  # said once
    stage_partition = f"{GENERATION.name}|{partition}"
    launch = next_round_launch(partition, newest)
    runs = cursor.round_runs.get(partition)
    if runs and runs.key == launch.key:  # launched, not materialized yet
        if launch_with_retries(instance, outcome, stage_partition, launch, runs, now):
            cursor.rounds_ended[partition] = rounds_id  # it refused or failed for good: reported as such
        return
    if newest.get("batch_names") and not is_ingested(
        newest, latest_metadata(instance, GENERATION.samples_asset, partition)
    ):
        return  # its results come first
    num_good = num_good_samples(get_scenario(partition))
    why = why_rounds_end(instance, partition, newest, num_good)
    if why is None:
        limit, max_rounds = newest["rounds_config"]["limit"], newest["rounds_config"]["max_rounds"]
        cursor.round_runs[partition] = runs = Runs(key=launch.key)
        outcome.messages.append(
            f"{stage_partition}: AUTO-FILL: {num_good} good samples of limit {limit} after round {number}; "
            f"launching round {number + 1} of at most {max_rounds} ({GENERATION.batch_job})"
        )
        launch_with_retries(instance, outcome, stage_partition, launch, runs, now)
        return
    cursor.rounds_ended[partition] = rounds_id
    report_rounds_end(instance, outcome, partition, newest, why, num_good)


def why_rounds_end(instance: dg.DagsterInstance, partition: str, newest: dict, num_good: int) -> str | None:
    """None when the saved round `newest` is to be followed by another; else why the rounds end."""
    if not newest.get("batch_names"):
        return NOTHING_LEFT
    results = latest_metadata(instance, GENERATION.results_asset, partition)
    cancelled = (
        is_ingested(newest, results) and results.get("num_cancelled_jobs", 0) > 0
    ) or rounds_cancelled(instance, newest["rounds_id"])
    config = newest["rounds_config"]
    return after_round(num_good, config["limit"], newest["round"], config["max_rounds"], cancelled)


def next_round_launch(partition: str, newest: dict) -> Launch:
    """The run of the next fill round: the click's config again, tagged with its round."""
    number = newest["round"] + 1
    return Launch(
        job_name=GENERATION.batch_job,
        partition=partition,
        key=f"auto-fill|{partition}|{newest['rounds_id']}|round-{number}",
        tags={ROUND_TAG: str(number), ROUNDS_TAG: newest["rounds_id"]},
        asset=GENERATION.batch_asset,
        subject=f"fill round {number} of scenario {partition!r} (auto_fill)",
        advice=(
            f"do what the reason says, then materialize {GENERATION.batch_asset} for partition "
            f"{partition!r} (a click begins a new run of rounds)"
        ),
        run_config={"ops": {GENERATION.batch_asset: {"config": newest["rounds_config"]}}},
        headline=f"AUTO-FILL STOPPED at round {number}: ",
    )


def report_rounds_end(
    instance: dg.DagsterInstance, outcome: TickOutcome, partition: str, newest: dict, why: str, num_good: int
) -> None:
    """Say once how a run of rounds ended: in the tick log and as an observation on the batch asset."""
    limit, number = newest["rounds_config"]["limit"], newest["round"]
    spent = sum(
        submission_cost_usd(partition, GENERATION, submission_id)
        for submission_id in rounds_submissions(instance, partition, newest["rounds_id"])
    )
    text = f"{why}: {num_good} good samples of limit {limit} after {number} round(s), ${spent:.4f} spent"
    if why == NOTHING_LEFT:
        text += f"; round {number} found nothing to ask ({newest.get('num_given_up', 0)} problems given up)"
    if why == CANCELLED:
        text += f"; round {number} was cancelled, so no round {number + 1} is asked"
    advice = ADVICE[why]
    stage_partition = f"{GENERATION.name}|{partition}"
    if why == LIMIT_REACHED:
        outcome.messages.append(f"{stage_partition}: AUTO-FILL DONE: {text}")
    elif why == CANCELLED:  # asked for: not an error
        outcome.messages.append(f"{stage_partition}: AUTO-FILL CANCELLED: {text}. To go on: {advice}")
    else:
        outcome.alerts.append(f"{stage_partition}: AUTO-FILL ENDED SHORT: {text}. To go on: {advice}")
    outcome.observe(
        GENERATION.batch_asset,
        partition,
        {
            "auto_fill_ended": why,
            "rounds_used": number,
            "num_good": num_good,
            "limit": limit,
            "spent_usd": float(spent),
            "reason": text,
            "advice": advice,
        },
    )
