"""What was asked so far, read off disk: the problems there are, the samples made, and the
submissions sent and ingested (their tries and costs)."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from cotgen_assets.core.online_round import ONLINE_PREFIX
from cotgen_assets.core.planning import UsageAverage
from cotgen_assets.core.sample_keys import problem_and_sample, request_key
from cotgen_assets.core.scenarios import Scenario
from cotgen_assets.core.stages import GENERATION, Stage
from cotgen_assets.core.storage import read_jsonl, read_parquet, read_samples, source_problems_path
from cotgen_assets.core.submissions import (
    NOT_RUN,
    Submission,
    SubmissionRefused,
    load_submission,
    submission_folder,
    submissions_root,
)


def ingested_submissions(scenario: str, stage: Stage) -> Iterator[Path]:
    """Folders of this stage's submissions whose results were ingested (they hold outcomes)."""
    root = submissions_root(scenario)
    if root.exists():
        yield from sorted(p for p in root.glob(f"{stage.name}-*") if (p / "summary.json").exists())


def unfinished_sends(scenario: str, stage: Stage) -> Iterator[Submission]:
    """Submissions a run began to send whose jobs' answers were never ingested: in flight, or
    orphans of a run that died before recording them (the Dagster side tells which)."""
    root = submissions_root(scenario)
    if not root.exists():
        return
    for folder in sorted(root.glob(f"{stage.name}-*")):
        if not (folder / "submission.json").exists():
            continue
        submission = load_submission(scenario, stage, folder.name.removeprefix(f"{stage.name}-"))
        if not submission.sent_by:
            continue
        summary = folder / "summary.json"
        if summary.exists() and json.loads(summary.read_text()).get("batch_names") == submission.batch_names:
            continue
        yield submission


def tries_by_key(scenario: str, stage: Stage) -> dict[str, int]:
    """How many ingested submissions asked each request key (a problem id, or `<id>#<sample>`):
    requests no job ran count no try, but their key is there (with 0), known as asked."""
    tries: dict[str, int] = {}
    for folder in ingested_submissions(scenario, stage):
        for outcome in read_jsonl(folder / "outcomes.jsonl", ("id", "status")):
            tries[outcome["id"]] = tries.get(outcome["id"], 0) + (outcome["status"] != NOT_RUN)
    return tries


def tries_by_problem(scenario: str, stage: Stage) -> dict[str, int]:
    """The keys asked at least once (`tries_by_key`), with their tries."""
    return {key: n for key, n in tries_by_key(scenario, stage).items() if n}


def total_cost_usd(scenario: str, stage: Stage) -> float:
    """What every ingested submission of this stage cost, rejected lines included."""
    return sum(
        json.loads((f / "summary.json").read_text())["cost_usd"]
        for f in ingested_submissions(scenario, stage)
    )


def online_cost_usd_so_far(scenario: str, stage: Stage) -> float:
    """What the stage's online rounds cost (answers on the Flex tier, `online_round`), of `total_cost_usd`."""
    return sum(
        outcome["cost_usd"]
        for folder in ingested_submissions(scenario, stage)
        for outcome in read_jsonl(folder / "outcomes.jsonl")
        if outcome["batch"].startswith(ONLINE_PREFIX)
    )


def submission_cost_usd(scenario: str, stage: Stage, submission_id: str) -> float:
    """What a submission cost once ingested, else what it is projected to cost (still in flight)."""
    summary = submission_folder(scenario, stage, submission_id) / "summary.json"
    if summary.exists():
        return json.loads(summary.read_text())["cost_usd"]
    return load_submission(scenario, stage, submission_id).projected_cost_usd


def source_problem_ids(scenario: Scenario) -> tuple[pa.ChunkedArray, Path]:
    """The scenario's problem ids in table order, and the Parquet file they come from."""
    path = source_problems_path(scenario.name)
    if not path.exists():
        raise SubmissionRefused(
            f"source_problems for scenario {scenario.name!r} is not materialized yet: materialize it first"
        )
    return read_parquet(path, columns=["problem_id"])["problem_id"], path


def num_good_samples(scenario: Scenario) -> int:
    """Correct CoT samples of the scenario's clean problems: what `fill` counts towards `limit`."""
    id_column, _ = source_problem_ids(scenario)
    clean = set(id_column.to_pylist())
    records = read_samples(GENERATION, scenario.suffix)
    return sum(1 for record in records if record["correct"] and record["id"] in clean)


@dataclass
class AskedSoFar:
    """A scenario's generation asks so far, by request key (`sample_keys`) and by problem."""

    good: set[str]  # keys with a correct answer
    answered: set[str]  # keys with an answer
    used: set[str]  # problem ids ever asked (an answer, or a try)
    tries: dict[str, int]  # ingested tries per key (0: sent, never run)
    average: UsageAverage  # the average answer's tokens (for projected costs)


def asked_so_far(scenario: Scenario) -> AskedSoFar:
    """What the scenario's CoT records and ingested generation outcomes say was asked."""
    good, answered, average = set(), set(), UsageAverage(GENERATION.usage_prior)
    for record in read_samples(GENERATION, scenario.suffix):
        key = request_key(record)
        answered.add(key)
        average.add(record["generation"]["usage"])
        if record["correct"]:
            good.add(key)
    tries = tries_by_key(scenario.name, GENERATION)
    tried = (problem_and_sample(key)[0] for key, n in tries.items() if n)
    used = {problem_and_sample(key)[0] for key in answered}.union(tried)
    return AskedSoFar(good, answered, used, tries, average)
