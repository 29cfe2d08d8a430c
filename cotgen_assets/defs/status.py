"""`cotgen status`: where every scenario's batches are, on one screen.

Between a click and a dataset lie hours. This reads what was submitted and saved (the Dagster
instance), the samples and costs (the data folder) and the state of the jobs in flight (the API:
a short call per job, or list pages when there are many), per scenario and stage: jobs created /
queued on the batch quota / running / done, and requests done of total.
"""

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg

from cotgen_assets.backends.polling import Poller
from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets.core.batch_output import overall_state
from cotgen_assets.core.ingest import MISSING
from cotgen_assets.core.preview import preview_spend_usd
from cotgen_assets.core.queue import QUEUED, job_counts
from cotgen_assets.core.scenarios import Scenario
from cotgen_assets.core.stages import GENERATION, STAGES, SUMMARIZATION, Stage
from cotgen_assets.core.storage import read_samples
from cotgen_assets.core.submission_history import num_good_samples, online_cost_usd_so_far, total_cost_usd
from cotgen_assets.core.submissions import NOT_RUN, SubmissionRefused, submission_folder
from cotgen_assets.defs.history import (
    newest_metadata_where,
    pending_submission,
    submitted_metadata,
)

SAVED = "saved"  # the newest submission's samples are saved
NOTHING = "-"


@dataclass
class StageStatus:
    """One line of the screen: a scenario's stage."""

    scenario: str
    stage: str
    submission_id: str = ""
    state: str = NOTHING  # the jobs' JOB_STATE_*, SAVED once ingested, NOTHING when never submitted
    done: int | None = None  # requests answered, of `total` (once saved: those with an answer line)
    total: int | None = None
    age_minutes: float | None = None  # since the newest submission's jobs were created
    jobs: str = NOTHING  # its jobs created / queued (on the batch quota) / running / done
    rounds: str = NOTHING  # generation: "2 of 3, auto_fill"
    good: int = 0  # correct samples (generation: of clean problems, what fill counts)
    limit: int = 0
    cost_usd: float = 0.0  # ingested submissions
    online_usd: float = 0.0  # of it: rounds answered on the Flex tier (generation)
    preview_usd: float = 0.0  # previews, never in the dataset (shown on the generation line)
    in_flight_usd: float = 0.0  # projected cost of the one in flight
    error: str = ""  # why the state is unknown (the API's whole message, shown below the table)


def stage_status(
    instance: dg.DagsterInstance,
    poller: Poller,
    scenario: Scenario,
    stage: Stage,
    now: datetime | None = None,
) -> StageStatus:
    now = now or datetime.now(UTC)
    status = StageStatus(scenario.name, stage.name, cost_usd=total_cost_usd(scenario.name, stage))
    if stage == GENERATION:
        status.online_usd = online_cost_usd_so_far(scenario.name, stage)
        status.preview_usd = preview_spend_usd(scenario.name)
    newest = newest_metadata_where(
        instance, GENERATION.batch_asset, scenario.name, lambda m: not m.get("dry_run")
    )
    status.limit = (newest or {}).get("limit") or scenario.limit
    status.good = good_samples(scenario, stage)
    if stage == GENERATION and newest and newest.get("round"):
        status.rounds = f"{newest['round']} of {newest['max_rounds']}" + (
            ", auto_fill" if newest["auto_fill"] else ""
        )
    batch = submitted_metadata(instance, scenario.name, stage)
    if not batch:
        return status
    status.submission_id, status.total = batch["submission_id"], batch["num_requests"]
    pending = pending_submission(instance, scenario.name, stage)
    if pending is None:
        status.state, status.done = SAVED, answered(scenario, stage, batch["submission_id"])
        return status
    status.in_flight_usd = pending.projected_cost_usd
    try:
        jobs = poller.jobs([name for name in pending.batch_names if name != QUEUED])
    except Exception as error:  # said in full below the table; the rest of the screen stands
        status.state, status.error = UNKNOWN, " ".join(str(error).split())
        return status
    by_name = {job.name: job.end for job in jobs}
    counts = job_counts(pending, {s: by_name[n] for s, n in zip(pending.shards, pending.batch_names) if n})
    status.jobs = "{jobs_created}/{jobs_queued}/{jobs_running}/{jobs_done}".format(**counts)
    status.state = overall_state([job.state for job in jobs]) if jobs else "QUEUED"
    status.done = sum((job.succeeded_count or 0) + (job.failed_count or 0) for job in jobs)
    status.total = sum(job.request_count or 0 for job in jobs) or pending.num_requests
    started = min((job.create_time for job in jobs if job.create_time), default=None)
    status.age_minutes = (now - started).total_seconds() / 60 if started else None
    return status


def answered(scenario: Scenario, stage: Stage, submission_id: str) -> int | None:
    """Requests of a saved submission that got an answer line (a sample or a failed answer), from
    what its ingestion recorded: not those its jobs never ran (cancelled, expired, partial) or left
    without a line. None when the data folder does not hold it."""
    summary = submission_folder(scenario.name, stage, submission_id) / "summary.json"
    if not summary.exists():
        return None
    statuses = json.loads(summary.read_text())["statuses"]
    return sum(n for status, n in statuses.items() if status not in (NOT_RUN, MISSING))


def good_samples(scenario: Scenario, stage: Stage) -> int:
    """Generation: correct CoT samples of clean problems; summarization: correct CoD samples."""
    if stage == GENERATION:
        try:
            return num_good_samples(scenario)
        except SubmissionRefused:  # no source_problems yet: nothing counts
            return 0
    return sum(1 for record in read_samples(SUMMARIZATION, scenario.suffix) if record["correct"])


def status_screen(
    instance: dg.DagsterInstance, gemini: GeminiBatchResource, scenarios: list[Scenario]
) -> list[StageStatus]:
    now, poller = datetime.now(UTC), Poller(gemini.batch_api())  # one listing serves every scenario's jobs
    return [
        stage_status(instance, poller, scenario, stage, now) for scenario in scenarios for stage in STAGES
    ]


UNKNOWN = "unknown: the API failed (below)"
COLUMNS = (
    "scenario",
    "stage",
    "state",
    "jobs c/q/r/d",
    "done/total",
    "age",
    "rounds",
    "correct/limit",
    "cost so far",
)


def cost_cell(line: StageStatus) -> str:
    """What was spent: batch and online rounds apart when a round went online, then previews."""
    text = f"${line.cost_usd:.4f}"
    if line.online_usd:
        text += f" (batch ${line.cost_usd - line.online_usd:.4f}, online ${line.online_usd:.4f})"
    if line.in_flight_usd:
        text += f" (+${line.in_flight_usd:.4f} in flight)"
    if line.preview_usd:
        text += f" + previews ${line.preview_usd:.4f}"
    return text


def render(lines: list[StageStatus]) -> str:
    """A plain table, columns aligned."""
    rows = [COLUMNS] + [
        (
            line.scenario,
            line.stage,
            line.state,
            line.jobs,
            NOTHING if line.total is None else f"{NOTHING if line.done is None else line.done}/{line.total}",
            NOTHING if line.age_minutes is None else f"{line.age_minutes:.0f} min",
            line.rounds,
            f"{line.good}/{line.limit}",
            cost_cell(line),
        )
        for line in lines
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    table = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    errors = [f"{line.scenario} {line.stage}: the API: {line.error}" for line in lines if line.error]
    return "\n".join(table + ([""] + errors if errors else []))
