"""The retry engine: a run the sensor launches is launched again after a failure, after a growing
delay, up to `max_attempts()` runs, unless a step refused (raised `dg.Failure`: budget, config,
nothing submitted), which no retry can fix. Either way the end is reported once: an error in the
tick log and an observation on the asset, naming what the run was for and what to do.

The sensor, not the daemon's run retries, does this because Dagster's run retries start again at
once, and cannot tell a refusal from an outage.
"""

from dataclasses import dataclass, field
from datetime import datetime

import dagster as dg

from cotgen_assets.core.settings import number
from cotgen_assets.defs.sensors.cursor import Runs

RETRY_KEY_TAG = "cotgen/retry_key"  # the first attempt's run key, on every attempt
ATTEMPT_TAG = "cotgen/attempt"
# Retrying is this sensor's job: should the instance enable run_retries, the daemon leaves these runs alone.
NO_RUN_RETRIES = {"dagster/max_retries": "0"}


def max_attempts() -> int:
    """Runs per launch (the first one and its retries) before the sensor gives up and says so."""
    return number("COTGEN_RUN_ATTEMPTS")


def retry_delay_seconds(failed_attempts: int) -> float:
    """The wait after the n-th failed run before the next: 60 s, 120 s, 240 s, ... by default."""
    return number("COTGEN_RETRY_DELAY_SECONDS") * 2 ** (failed_attempts - 1)


@dataclass
class TickOutcome:
    """What one tick decided: runs to launch, what to log, observations to record."""

    run_requests: list = field(default_factory=list)
    messages: list = field(default_factory=list)
    observations: list = field(default_factory=list)
    alerts: list = field(default_factory=list)  # given up: logged as errors

    def say(self, message: str) -> None:
        """Log `message` in this tick, once however many steps meet its cause."""
        if message not in self.messages:
            self.messages.append(message)

    def observe(self, asset: str, partition: str, metadata: dict) -> None:
        """Record `metadata` as an observation on one partition of `asset`."""
        self.observations.append(
            dg.AssetObservation(asset_key=dg.AssetKey(asset), partition=partition, metadata=metadata)
        )


@dataclass
class Launch:
    """A run the sensor launches, and carries through failures: what, for what, and what to do."""

    job_name: str
    partition: str
    key: str  # the first attempt's run key
    tags: dict
    asset: str  # where a failure it gives up on is recorded
    subject: str  # what the run is for, as the report names it
    advice: str  # what a person does once the sensor has given up
    run_config: dict = field(default_factory=dict)
    headline: str = ""  # put before the report of a failure it gives up on


def launch_with_retries(
    instance: dg.DagsterInstance,
    outcome: TickOutcome,
    slot: str,
    launch: Launch,
    runs: Runs,
    now: datetime,
) -> bool:
    """Launch `launch`; after a failed run, launch it again after a growing delay, up to max_attempts().

    `runs` (in the cursor) counts the runs requested, so that none is asked for twice before the
    daemon creates it; `slot` names the launch in the log. Returns True when nothing more will
    happen: a run succeeded or was cancelled, a step refused, or the attempts ran out (the last
    two reported here, once).
    """
    records = (
        instance.get_run_records(dg.RunsFilter(tags={RETRY_KEY_TAG: launch.key})) if runs.requested else []
    )
    if len(records) < runs.requested:
        outcome.messages.append(
            f"{slot}: waiting for the daemon to start run {runs.requested} of {launch.key}"
        )
        return False
    tags = launch.tags
    if records:
        newest, tried = records[0], len(records)
        run = newest.dagster_run
        if not run.is_finished:
            outcome.messages.append(f"{slot}: run {run.run_id} (attempt {tried}) is {run.status.value}")
            return False
        if run.status == dg.DagsterRunStatus.SUCCESS:
            return True
        if run.status == dg.DagsterRunStatus.CANCELED:
            outcome.messages.append(f"{slot}: run {run.run_id} was cancelled; not retried: {launch.advice}")
            return True
        refused, reason = why_failed(instance, run.run_id)
        if refused or tried >= max_attempts():
            report_end(outcome, slot, launch, run.run_id, tried, refused, reason)
            return True
        wait = retry_delay_seconds(tried) - (now.timestamp() - (newest.end_time or now.timestamp()))
        then = f"attempt {tried + 1} of {max_attempts()}"
        if wait > 0:
            outcome.messages.append(f"{slot}: run {run.run_id} failed ({reason}); {then} in {wait:.0f} s")
            return False
        outcome.messages.append(f"{slot}: run {run.run_id} failed ({reason}); launching {then}")
        tags = {**{k: v for k, v in run.tags.items() if k.startswith("cotgen/")}, **tags}
    attempt = len(records) + 1
    runs.requested = attempt
    outcome.run_requests.append(
        dg.RunRequest(
            job_name=launch.job_name,
            partition_key=launch.partition,
            run_key=launch.key if attempt == 1 else f"{launch.key}|attempt-{attempt}",
            run_config=launch.run_config,
            tags={**tags, **NO_RUN_RETRIES, RETRY_KEY_TAG: launch.key, ATTEMPT_TAG: str(attempt)},
        )
    )
    return False


def report_end(
    outcome: TickOutcome, slot: str, launch: Launch, run_id: str, tried: int, refused: bool, reason: str
) -> None:
    """Say loudly, once, that the sensor stops: an error in the tick log and an observation."""
    headline = "NOT RETRIED (a refusal no retry can fix)" if refused else f"GAVE UP after {tried} runs"
    outcome.alerts.append(
        f"{slot}: {launch.headline}{headline}: {launch.job_name} for {launch.subject} failed in "
        f"run {run_id}: {reason}. To go on: {launch.advice}"
    )
    outcome.observe(
        launch.asset,
        launch.partition,
        {
            "run_failed": True,
            "retried": not refused,
            "attempts": tried,
            "last_run": dg.MetadataValue.dagster_run(run_id),
            "job": launch.job_name,
            "about": launch.subject,
            "reason": reason,
            "advice": launch.advice,
        },
    )


def why_failed(instance: dg.DagsterInstance, run_id: str) -> tuple[bool, str]:
    """(refused, reason) of a failed run.

    A step that raised `dg.Failure` refused on purpose and says why (over budget, bad config,
    nothing submitted): the same run would refuse again. Any other error (the API down for
    longer than the client retries, a killed process) may pass on a later attempt.
    """
    reasons = []
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        data = entry.dagster_event.step_failure_data
        if data.user_failure_data is not None:
            return True, f"{entry.step_key}: {data.user_failure_data.description}"[:600]
        error = data.error.cause or data.error if data.error else None
        reasons.append(f"{entry.step_key}: {error.message.strip() if error else 'failed'}")
    if reasons:
        return False, reasons[0][:600]
    return False, "the run failed outside its steps (its process died or could not start)"
