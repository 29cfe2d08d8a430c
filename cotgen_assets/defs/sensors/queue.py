"""Sending queued shards: each tick, the jobs of shards that waited on the batch quota are created,
the submission queued first first, while the project's jobs in flight (read from the data folder,
across scenarios and stages, their states read again) leave room. Each create is tried once a tick
(a failure keeps the shard queued for the next tick, said once); a 429 from the API keeps the
shard queued; the tick says once how many shards wait, and nothing fails. A submission with a
request file deleted or locked by hand, or naming a batch this backend rejects, is said and left
out; the others go on.

Only a submission its batch materialization recorded is sent from here: until then the run that
made it is still sending it (under the submission lock), and two senders could make one shard
into two jobs.
"""

from pathlib import Path

import dagster as dg

from cotgen_assets.backends.lifecycle import send_queued
from cotgen_assets.backends.polling import Poller, refresh_live_states
from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets.core.queue import (
    InFlight,
    Quota,
    in_flight,
    live_submissions,
    queued_shards,
    recorded_as,
    waiting_order,
)
from cotgen_assets.core.submissions import Submission
from cotgen_assets.defs.history import submitted_metadata
from cotgen_assets.defs.sensors.results import rejected_batch_message
from cotgen_assets.defs.sensors.run_retries import TickOutcome


def send_queued_shards(
    instance: dg.DagsterInstance, gemini: GeminiBatchResource, poller: Poller, outcome: TickOutcome
) -> None:
    """Create what the quota has room for, oldest first."""
    submissions = live_submissions()
    waiting = [s for s in waiting_order(submissions) if recorded(instance, s)]
    if not waiting:
        return
    held, stopped = count_in_flight(submissions, poller, outcome)
    quota, jobs, created = Quota.from_env(), gemini.batch_api().single_attempts(), 0
    for submission in waiting:
        if submission.folder in stopped:  # said: it waits until its batch names are put right
            continue
        if submission.backend != jobs.backend.name:  # its request files are in another API's format
            outcome.say(
                f"{submission.stage.name}|{submission.scenario}: submission {submission.submission_id} "
                f"was sent to the {submission.backend} backend: its queued shards wait until "
                f"COTGEN_GEMINI_BACKEND is {submission.backend!r} again"
            )
            continue
        try:
            created += len(send_queued(submission, jobs, held, quota))
        except OSError as error:  # a request file deleted or locked by hand: the younger ones go on
            outcome.say(
                f"{submission.stage.name}|{submission.scenario}: submission {submission.submission_id}'s "
                f"queued shards wait: a request file cannot be read ({error}); put it back, the next "
                "tick sends them"
            )
            continue
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


def count_in_flight(
    submissions: list[Submission], poller: Poller, outcome: TickOutcome
) -> tuple[InFlight, set[Path]]:
    """The project's jobs in flight, their states read again, and the folders of the submissions
    that name a batch this backend rejects; what is wrong is said."""
    rejected = refresh_live_states(submissions, poller)
    for submission, why in rejected:
        outcome.say(rejected_batch_message(submission, why))
    held = in_flight(submissions)
    for path in held.unreadable:
        outcome.say(
            f"the request file {path} of a batch job in flight cannot be read: the job still counts "
            "in flight, its tokens do not (the API refuses a create over its token quota)"
        )
    return held, {submission.folder for submission, _ in rejected}


def recorded(instance: dg.DagsterInstance, submission: Submission) -> bool:
    """Whether the stage's newest batch materialization recorded this submission as it is saved."""
    batch = submitted_metadata(instance, submission.scenario, submission.stage)
    return (
        bool(batch)
        and batch["submission_id"] == submission.submission_id
        and recorded_as(submission, batch["batch_names"])
    )
