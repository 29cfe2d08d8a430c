"""Batch submissions on disk: planning and writing the request shards, and what came back.

One submission is one click on a batch asset: a folder
`<data>/<scenario>/submissions/<stage>-<id>/` holding, per shard, the uploaded request file
(`shard-000.requests.jsonl`), what is needed to turn each answer into a record
(`shard-000.context.jsonl`), the downloaded results (`shard-000.results.jsonl`), and after
ingestion `outcomes.jsonl` + `summary.json`.

A submission is what it sends. Its id hashes what is asked and how (problem ids, their try
numbers, model, prompt version, every request setting, the shard layout: the "ask") together with
every request byte, and each job's display name carries the ask and a hash of its shard's bytes.
So re-running a crashed submission finds the same folder and the same display names (nothing is
paid twice), while a changed setting, or other questions under the same ids (another deployment
on the same API key, a changed dataset), is never answered by a batch of the old requests.
"""

import hashlib
import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cotgen_assets.core.batch_output import Usage
from cotgen_assets.core.decontamination import excluded_problems
from cotgen_assets.core.planning import (
    Plan,
    UsageAverage,
    plan_generation,
    plan_summarization,
    projected_cost_usd,
    round_facts,
    validate_job_settings,
    validate_max_tries,
    validate_summarize,
)
from cotgen_assets.core.prompts import generation_request, request_line, summarization_request
from cotgen_assets.core.quality import numbers_in
from cotgen_assets.core.rounds import DEFAULT_EXPECTED_ACCURACY, accuracy_from_tries
from cotgen_assets.core.scenarios import Scenario
from cotgen_assets.core.stages import GENERATION, SUMMARIZATION, Stage, stage_named
from cotgen_assets.core.storage import (
    atomic_write,
    read_jsonl,
    read_parquet,
    read_samples,
    scenario_dir,
    source_problems_path,
)

MAX_SHARD_BYTES = 1_000_000_000  # input files: up to 1 GB on Vertex AI, 2 GB on the Developer Batch API
PROBLEM_BATCH_ROWS = 10_000  # source rows turned into requests at a time
CONTENT_HASH_CHARS = 16  # of a shard's sha256, at the end of its job's display name
CONTEXT_COLUMNS = {
    "problem_id",
    "question",
    "answer",
    "source_dataset",
    "source_config",
    "source_split",
    "source_row",
    "level",
    "type",
}
NOT_RUN = "not_run"  # the outcome of a request its job (failed, cancelled, expired) never answered: not a try


class SubmissionRefused(Exception):
    """A batch asset declined to submit; the message says why and what to do."""


@dataclass
class Submission:
    """What a batch asset submitted, saved as `submission.json` and in its metadata."""

    scenario: str
    stage: Stage  # saved as its name
    submission_id: str
    model: str
    prompt_version: str
    num_requests: int
    shards: list[str] = field(default_factory=list)  # shard names: "shard-000", ...
    display_names: list[str] = field(default_factory=list)
    batch_names: list[str] = field(default_factory=list)  # filled once submitted
    job_states: list[str] = field(default_factory=list)  # how each shard's job ended, once all have
    projected_cost_usd: float = 0.0
    offline: bool = False  # True when sent to the local emulator, not Gemini
    ask_id: str = ""  # what is asked and how, without the request bytes (ask_id_for)
    sent_by: str = ""  # the run that sends it, saved before its first upload ("" until then)
    backend: str = "developer"  # the batch API it is sent to: "developer" or "vertex"
    job_inputs: list[str] = field(default_factory=list)  # per shard, the request file its job reads
    job_outputs: list[str] = field(default_factory=list)  # per shard, where its job put the answers
    round: dict = field(default_factory=dict)  # generation: how the ask was sized, its round (round_facts)

    @property
    def folder(self) -> Path:
        return submission_folder(self.scenario, self.stage, self.submission_id)

    def requests_path(self, shard: str) -> Path:
        return self.folder / f"{shard}.requests.jsonl"

    def context_path(self, shard: str) -> Path:
        return self.folder / f"{shard}.context.jsonl"

    def results_path(self, shard: str) -> Path:
        return self.folder / f"{shard}.results.jsonl"

    def job_name_prefix(self, shard: str) -> str:
        """A shard's display name without its content hash: what is asked, not what is sent."""
        return f"cotgen-{self.scenario}-{self.stage.name}-{self.ask_id or self.submission_id}-{shard}-"

    def save(self) -> None:
        saved = {f.name: getattr(self, f.name) for f in fields(self)} | {"stage": self.stage.name}
        with atomic_write(self.folder / "submission.json", "w") as handle:
            json.dump(saved, handle, indent=2)

    def saved(self) -> "Submission | None":
        """This submission as last saved in its folder, if it was."""
        path = self.folder / "submission.json"
        return load_submission(self.scenario, self.stage, self.submission_id) if path.exists() else None


def submissions_root(scenario: str) -> Path:
    return scenario_dir(scenario) / "submissions"


def submission_folder(scenario: str, stage: Stage, submission_id: str) -> Path:
    return submissions_root(scenario) / f"{stage.name}-{submission_id}"


def load_submission(scenario: str, stage: Stage, submission_id: str) -> Submission:
    path = submission_folder(scenario, stage, submission_id) / "submission.json"
    saved = json.loads(path.read_text())
    return Submission(**saved | {"stage": stage_named(saved["stage"])})


def ask_id_for(
    scenario: str,
    stage: Stage,
    model: str,
    prompt_version: str,
    settings: dict,
    keys_and_tries: Iterable[tuple[str, int]],
) -> str:
    """A stable id for "these problems, at these try numbers, asked this way" (`request_settings`).

    Not the submission's identity on its own: the same ids may hold other questions elsewhere.
    """
    asked = orjson.dumps(settings, option=orjson.OPT_SORT_KEYS).decode()
    digest = hashlib.sha256(f"{scenario}|{stage.name}|{model}|{prompt_version}|{asked}".encode())
    for key, tries in keys_and_tries:
        digest.update(f"\n{key}#{tries}".encode())
    return digest.hexdigest()[:12]


def submission_id_for(ask_id: str, request_lines: Iterable[bytes]) -> str:
    """The submission's id: its ask and every byte it sends."""
    digest = hashlib.sha256(ask_id.encode())
    for line in request_lines:
        digest.update(line)
    return digest.hexdigest()[:12]


def request_settings(empty_request: dict, max_requests_per_job: int) -> dict:
    """What changes how problems are asked: the request with empty problem texts (so its
    instructions, thinking level and every generation setting) and how requests become jobs."""
    return {
        "request": empty_request,
        "max_requests_per_job": max_requests_per_job,
        "max_shard_bytes": MAX_SHARD_BYTES,
    }


def write_shards(
    submission: Submission,
    items: Iterable[tuple[bytes, dict]],
    max_requests_per_shard: int,
    max_bytes_per_shard: int,
) -> None:
    """Write request lines and their contexts into shards no larger than the limits.

    `items` yields (request line, context); each context has the request's `id` (its key).
    """
    submission.shards, requests, contexts, hashes = [], None, None, []
    count = size = 0
    shard_files = ExitStack()  # each shard's two files, written atomically (whole, or not at all)
    try:
        for line, context in items:
            if requests is None or count >= max_requests_per_shard or size + len(line) > max_bytes_per_shard:
                shard_files.close()
                shard = f"shard-{len(submission.shards):03d}"
                submission.shards.append(shard)
                hashes.append(hashlib.sha256())
                requests = shard_files.enter_context(atomic_write(submission.requests_path(shard)))
                contexts = shard_files.enter_context(atomic_write(submission.context_path(shard)))
                count = size = 0
            requests.write(line)
            hashes[-1].update(line)
            contexts.write(orjson.dumps(context) + b"\n")
            count += 1
            size += len(line)
    except BaseException:
        shard_files.__exit__(*sys.exc_info())  # the shard being written is thrown away
        raise
    shard_files.close()
    # A job found by this name later is provably for these very bytes.
    submission.display_names = [
        submission.job_name_prefix(shard) + digest.hexdigest()[:CONTENT_HASH_CHARS]
        for shard, digest in zip(submission.shards, hashes)
    ]


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


def tries_by_problem(scenario: str, stage: Stage) -> dict[str, int]:
    """How many ingested submissions asked for each problem id (requests no job ran don't count)."""
    tries: dict[str, int] = {}
    for folder in ingested_submissions(scenario, stage):
        for outcome in read_jsonl(folder / "outcomes.jsonl", ("id", "status")):
            if outcome["status"] != NOT_RUN:
                tries[outcome["id"]] = tries.get(outcome["id"], 0) + 1
    return tries


def total_cost_usd(scenario: str, stage: Stage) -> float:
    """What every ingested submission of this stage cost, rejected lines included."""
    return sum(
        json.loads((f / "summary.json").read_text())["cost_usd"]
        for f in ingested_submissions(scenario, stage)
    )


def submission_cost_usd(scenario: str, stage: Stage, submission_id: str) -> float:
    """What a submission cost once ingested, else what it is projected to cost (still in flight)."""
    summary = submission_folder(scenario, stage, submission_id) / "summary.json"
    if summary.exists():
        return json.loads(summary.read_text())["cost_usd"]
    return load_submission(scenario, stage, submission_id).projected_cost_usd


@dataclass
class Prepared:
    """A submission written to disk but not yet sent, with the plan that made it."""

    submission: Submission
    plan: Plan
    projected_usage: Usage
    saved_cost_usd: float = 0.0  # projected cost of the samples the plan skipped


def source_problem_ids(scenario: Scenario) -> tuple[pa.ChunkedArray, Path]:
    """The scenario's problem ids in table order, and the Parquet file they come from."""
    path = source_problems_path(scenario.name)
    if not path.exists():
        raise SubmissionRefused(
            f"source_problems for scenario {scenario.name!r} is not materialized yet: materialize it first"
        )
    return read_parquet(path, columns=["problem_id"])["problem_id"], path


def planned_submission(
    scenario: str,
    stage: Stage,
    model: str,
    empty_request: dict,
    max_requests_per_job: int,
    plan: Plan,
    offline: bool,
    backend: str,
) -> Submission:
    """A submission of `plan`'s items, named by what it asks; its id comes with its requests (_finish).

    `empty_request` is the stage's request with empty problem texts: how every problem is asked.
    """
    return Submission(
        scenario=scenario,
        stage=stage,
        model=model,
        prompt_version=stage.prompt_version,
        num_requests=len(plan.items),
        offline=offline,
        backend=backend,
        submission_id="",
        ask_id=ask_id_for(
            scenario,
            stage,
            model,
            stage.prompt_version,
            request_settings(empty_request, max_requests_per_job),
            plan.items,
        ),
    )


def num_good_samples(scenario: Scenario) -> int:
    """Correct CoT samples of the scenario's clean problems: what `fill` counts towards `limit`."""
    id_column, _ = source_problem_ids(scenario)
    clean = set(id_column.to_pylist())
    records = read_samples(GENERATION, scenario.suffix)
    return sum(1 for record in records if record["correct"] and record["id"] in clean)


def asked_so_far(scenario: Scenario) -> tuple[set[str], set[str], dict[str, int], UsageAverage]:
    """The scenario's generation asks so far: ids with a correct sample, every id asked, ingested
    tries per id, and the average answer's tokens (for projected costs)."""
    good, used, average = set(), set(), UsageAverage(GENERATION.usage_prior)
    for record in read_samples(GENERATION, scenario.suffix):
        used.add(record["id"])
        average.add(record["generation"]["usage"])
        if record["correct"]:
            good.add(record["id"])
    tries = tries_by_problem(scenario.name, GENERATION)
    return good, used | tries.keys(), tries, average


def prepare_generation(
    scenario: Scenario,
    limit: int,
    mode: str,
    max_tries: int,
    model: str,
    thinking_level: str,
    max_requests_per_job: int,
    offline: bool,
    backend: str = "developer",
    rounds: dict | None = None,
    ask_enough: bool = True,
) -> Prepared:
    """Plan a generation submission and write its request shards.

    A fill asks enough to reach `limit` at the scenario's estimated accuracy (`ask_enough`; False
    asks exactly the number missing). `rounds` (round, rounds_id) is kept with the submission."""
    validate_job_settings(model, thinking_level, max_requests_per_job, backend)
    id_column, problems_path = source_problem_ids(scenario)
    problem_ids = id_column.to_pylist()
    good, used, tries, average = asked_so_far(scenario)
    prior = scenario.expected_accuracy or DEFAULT_EXPECTED_ACCURACY
    accuracy = accuracy_from_tries(tries, good, prior) if ask_enough else None
    plan = plan_generation(problem_ids, good, used, tries, limit, mode, max_tries, accuracy)
    submission = planned_submission(
        scenario.name,
        GENERATION,
        model,
        generation_request("", thinking_level),
        max_requests_per_job,
        plan,
        offline,
        backend,
    )
    submission.round = {
        **(rounds or {}),
        **round_facts(plan, mode, limit),
        "planned_at": datetime.now(UTC).isoformat(),
    }
    # Which rows to ask for, decided once over the id column (not once per batch).
    asked = pc.is_in(id_column, value_set=pa.array([p for p, _ in plan.items], pa.string())).combine_chunks()

    def items():
        """Requests in table order, one Parquet batch at a time (never the whole table as rows)."""
        with problems_path.open("rb") as handle:
            yield from generation_requests(scenario.name, pq.ParquetFile(handle), asked, thinking_level)

    return _finish(submission, plan, items, max_requests_per_job, average.value())


def generation_requests(
    scenario: str, problems: pq.ParquetFile, asked: pa.BooleanArray, thinking_level: str
) -> Iterator[tuple[bytes, dict]]:
    """(request line, context) of each problem row `asked` marks, in table order."""
    columns = [c for c in problems.schema_arrow.names if c in CONTEXT_COLUMNS]  # not the long solutions
    offset = 0
    for batch in problems.iter_batches(batch_size=PROBLEM_BATCH_ROWS, columns=columns):
        mask, offset = asked.slice(offset, batch.num_rows), offset + batch.num_rows
        for row in batch.filter(mask).to_pylist():
            source = {
                "dataset": row["source_dataset"],
                "config": row["source_config"],
                "split": row["source_split"],
                "row": row["source_row"],
            }
            # level/type always present ("" where the dataset has none, not null: datasets
            # infers a null column from an all-null file and then cannot load MATH files with it)
            source |= {c: row.get(c) or "" for c in ("level", "type")}
            context = {
                "id": row["problem_id"],
                "scenario": scenario,
                "question": row["question"],
                "answer": row["answer"],
                "source": source,
            }
            yield (
                request_line(row["problem_id"], generation_request(row["question"], thinking_level)),
                context,
            )


def prepare_summarization(
    scenario: Scenario,
    max_tries: int,
    model: str,
    thinking_level: str,
    max_requests_per_job: int,
    offline: bool,
    summarize: str = "correct",
    backend: str = "developer",
) -> Prepared:
    """Plan the drafts of the CoT samples that lack one (`planning.plan_summarization`) and write
    their request shards."""
    validate_max_tries(max_tries)
    validate_job_settings(model, thinking_level, max_requests_per_job, backend)
    validate_summarize(summarize)
    drafted: dict[str, str] = {}
    average = UsageAverage(SUMMARIZATION.usage_prior)
    for record in read_samples(SUMMARIZATION, scenario.suffix):
        drafted[record["id"]] = record["generation"]["batch"]
        average.add(record["summarization"]["usage"])
    plan = plan_summarization(
        read_samples(GENERATION, scenario.suffix),
        drafted,
        excluded_problems(scenario.name),
        tries_by_problem(scenario.name, SUMMARIZATION),
        only_correct=summarize == "correct",
        max_tries=max_tries,
    )
    submission = planned_submission(
        scenario.name,
        SUMMARIZATION,
        model,
        summarization_request("", "", "", thinking_level),
        max_requests_per_job,
        plan,
        offline,
        backend,
    )
    wanted = {problem_id for problem_id, _ in plan.items}

    def items():
        for record in read_samples(GENERATION, scenario.suffix):
            if record["id"] in wanted:
                yield summarization_request_of(record, thinking_level)

    return _finish(submission, plan, items, max_requests_per_job, average.value())


def summarization_request_of(record: dict, thinking_level: str) -> tuple[bytes, dict]:
    """(request line, context) that asks to cut a CoT record down to a draft."""
    thought, _, answer = record["cot"].removeprefix("<thought>").partition("</thought>\n")
    context = {k: record[k] for k in ("id", "scenario", "question", "answer", "source", "generation")}
    context["cot_predicted_answer"] = record["predicted_answer"]
    context["thought_numbers"] = sorted(numbers_in(thought))
    request = summarization_request(record["question"], thought, answer, thinking_level)
    return request_line(record["id"], request), context


def _finish(submission: Submission, plan: Plan, items, max_requests_per_job: int, average: Usage) -> Prepared:
    """Name the submission by what it sends, then write the shards, unless these very requests
    were sent before, or a run began to send them (their job failed, this is a dry run while they
    are in flight, or their run died sending them): then the folder stays as it is.

    `items()` makes the (request line, context) pairs afresh: once to hash, once to write, so the
    folder is named before anything is written into it (no rename, which a bucket lacks)."""
    submission.submission_id = submission_id_for(submission.ask_id, (line for line, _ in items()))
    sent = submission.saved()
    already_sent = sent is not None and bool(sent.batch_names or sent.sent_by)
    if already_sent:
        submission.shards, submission.display_names = sent.shards, sent.display_names
    else:
        write_shards(submission, items(), max_requests_per_job, MAX_SHARD_BYTES)
    request_bytes = sum(submission.requests_path(s).stat().st_size for s in submission.shards)
    submission.projected_cost_usd, usage = projected_cost_usd(
        submission.model, request_bytes, submission.num_requests, average, submission.backend
    )
    if not already_sent:
        submission.save()
    # what the samples left out would have cost (their text stands in for their requests)
    saved_usd, _ = projected_cost_usd(
        submission.model, plan.skipped_chars, sum(plan.skipped.values()), average, submission.backend
    )
    return Prepared(submission, plan, usage, saved_usd)


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
