"""batch_completion_sensor: when a submitted batch ends, launch the next stage for its scenario.

Each tick first creates the jobs of shards queued on the batch quota (queue.py), then decides, for
every stage and scenario, what to launch (`decide_launches`): a results run
when a submission's jobs have ended (results.py), a summarization catch-up (catch_up.py), the next
fill round of an `auto_fill` scenario (rounds.py); a launched run that fails is launched again
(run_retries.py). What it must remember between ticks is its cursor (cursor.py).
"""

from datetime import UTC, datetime

import dagster as dg

from cotgen_assets.backends.polling import Poller
from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets.core.settings import number
from cotgen_assets.core.stages import STAGES
from cotgen_assets.defs.jobs import JOBS
from cotgen_assets.defs.partitions import scenario_partitions
from cotgen_assets.defs.sensors.catch_up import launch_summarization_catch_up
from cotgen_assets.defs.sensors.cursor import SensorCursor
from cotgen_assets.defs.sensors.queue import send_queued_shards
from cotgen_assets.defs.sensors.results import launch_results_when_ended
from cotgen_assets.defs.sensors.rounds import launch_next_round
from cotgen_assets.defs.sensors.run_retries import TickOutcome


def sensor_interval_seconds() -> int:
    return number("COTGEN_SENSOR_INTERVAL_SECONDS")


def decide_launches(
    instance: dg.DagsterInstance,
    gemini: GeminiBatchResource,
    partitions: list[str],
    cursor: SensorCursor,
    now: datetime | None = None,
) -> TickOutcome:
    """Decide what to launch for every stage and scenario: a results run when a submission's jobs
    have ended, a catch-up summarization, the next fill round of an `auto_fill` scenario.

    Updates `cursor` in place, so that each of these happens, and each end is said, once.
    """
    now = now or datetime.now(UTC)
    outcome = TickOutcome()
    calls_before, poller = gemini.api_calls, Poller(gemini.batch_api())
    send_queued_shards(instance, gemini, poller, outcome)
    for stage in STAGES:
        for partition in partitions:
            launch_results_when_ended(instance, poller, outcome, stage, partition, cursor, now)
    for partition in partitions:
        launch_summarization_catch_up(instance, outcome, partition, cursor, now)
        launch_next_round(instance, outcome, partition, cursor, now)
    if gemini.api_calls > calls_before:
        outcome.messages.append(f"{gemini.api_calls - calls_before} Gemini API call(s) this tick")
    return outcome


@dg.sensor(
    jobs=JOBS,
    minimum_interval_seconds=sensor_interval_seconds(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches submitted Gemini batches; when one ends, saves its samples, starts the next stage.",
)
def batch_completion_sensor(
    context: dg.SensorEvaluationContext, gemini: GeminiBatchResource
) -> dg.SensorResult:
    cursor = SensorCursor.read(context.cursor)
    outcome = decide_launches(context.instance, gemini, scenario_partitions.get_partition_keys(), cursor)
    for message in outcome.messages:
        context.log.info(message)
    for alert in outcome.alerts:
        context.log.error(alert)
    return dg.SensorResult(
        run_requests=outcome.run_requests,
        cursor=cursor.write(),
        asset_events=outcome.observations,
        skip_reason=None
        if outcome.run_requests
        else dg.SkipReason("; ".join(outcome.alerts + outcome.messages) or "no batch in flight"),
    )
