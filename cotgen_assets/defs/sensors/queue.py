"""Sending queued shards: each tick, the jobs of shards that waited on the batch quota are created,
the submission queued first first, while the project's jobs in flight (read from the data folder,
across scenarios and stages, their states read again) leave room. A 429 from the API keeps the
shard queued; the tick says once how many shards wait, and nothing fails.

Only a submission its batch materialization recorded is sent from here: until then the run that
made it is still sending it (under the submission lock), and two senders could make one shard
into two jobs.
"""

import dagster as dg

from cotgen_assets.backends.lifecycle import send_queued
from cotgen_assets.backends.polling import Poller, project_in_flight
from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets.core.queue import Quota, all_submissions, queued_shards, recorded_as, waiting_order
from cotgen_assets.core.submissions import Submission
from cotgen_assets.defs.history import submitted_metadata
from cotgen_assets.defs.sensors.run_retries import TickOutcome


def send_queued_shards(
    instance: dg.DagsterInstance, gemini: GeminiBatchResource, poller: Poller, outcome: TickOutcome
) -> None:
    """Create what the quota has room for, oldest first."""
    waiting = [s for s in waiting_order(all_submissions()) if recorded(instance, s)]
    if not waiting:
        return
    quota, held = Quota.from_env(), project_in_flight(gemini.batch_api(), poller)
    created = 0
    for submission in waiting:
        try:
            created += len(send_queued(submission, gemini.batch_api(), held, quota))
        except Exception as error:  # the API unwell: say so, the shards stay queued for the next tick
            outcome.messages.append(f"could not create queued batch jobs ({error}); will try next tick")
            break
        if queued_shards(submission):  # no room left: a younger submission does not jump ahead
            break
    left = sum(len(queued_shards(s)) for s in waiting)
    outcome.messages.append(
        f"queue: created {created} batch job(s), {held.jobs} in flight"
        + (f"; {left} shard(s) wait for the batch quota ({quota.max_active_jobs} jobs)" if left else "")
    )


def recorded(instance: dg.DagsterInstance, submission: Submission) -> bool:
    """Whether the stage's newest batch materialization recorded this submission as it is saved."""
    batch = submitted_metadata(instance, submission.scenario, submission.stage)
    return (
        bool(batch)
        and batch["submission_id"] == submission.submission_id
        and recorded_as(submission, batch["batch_names"])
    )
