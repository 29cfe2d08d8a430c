"""Sending queued shards: each tick, the jobs of shards that waited on the batch quota are created,
the submission queued first first, while the project's jobs in flight (read from the data folder,
across scenarios and stages) leave room. A 429 from the API keeps the shard queued; the tick says
once how many shards wait, and nothing fails.
"""

from cotgen_assets.core.queue import Quota, all_submissions, in_flight, queued_shards, waiting_order
from cotgen_assets.defs.sensors.run_retries import TickOutcome
from cotgen_assets.gemini.resource import GeminiBatchResource, send_queued


def send_queued_shards(gemini: GeminiBatchResource, outcome: TickOutcome) -> None:
    """Create what the quota has room for, oldest first."""
    submissions = all_submissions()
    waiting = waiting_order(submissions)
    if not waiting:
        return
    quota, held = Quota.from_env(), in_flight(submissions)
    created = 0
    for submission in waiting:
        try:
            jobs = send_queued(submission, gemini, held, quota)
        except Exception as error:  # the API unwell: say so, the shards stay queued for the next tick
            outcome.messages.append(f"could not create queued batch jobs ({error}); will try next tick")
            break
        created += len(jobs)
        if queued_shards(submission):  # no room left: a younger submission does not jump ahead
            break
    left = sum(len(queued_shards(s)) for s in waiting)
    outcome.messages.append(
        f"queue: created {created} batch job(s); {held.jobs} in flight"
        + (f", {left} shard(s) wait for the batch quota ({quota.max_active_jobs} jobs)" if left else "")
    )
