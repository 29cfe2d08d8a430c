"""Batch submissions on disk: the request shards sent to Gemini and what came back.

One submission is one click on a batch asset: a folder
`<data>/<scenario>/submissions/<stage>-<id>/` holding, per shard, the uploaded request file
(`shard-000.requests.jsonl`), what is needed to turn each answer into a record
(`shard-000.context.jsonl`), the downloaded results (`shard-000.results.jsonl`), and after
ingestion `outcomes.jsonl` + `summary.json`. The id is a hash of what is asked (problem ids,
their try numbers, model, prompt version), so re-running a crashed submission finds the same
folder and the same batch display names: nothing is paid twice.
"""

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from cotgen_assets.storage import atomic_write, scenario_dir

GENERATION = "generation"
SUMMARIZATION = "summarization"
STAGES = (GENERATION, SUMMARIZATION)
NOT_RUN = "not_run"  # the outcome of a request its job (failed, cancelled, expired) never answered: not a try


@dataclass
class Submission:
    """What a batch asset submitted, saved as `submission.json` and in its metadata."""

    scenario: str
    stage: str
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

    @property
    def folder(self) -> Path:
        return submission_folder(self.scenario, self.stage, self.submission_id)

    def requests_path(self, shard: str) -> Path:
        return self.folder / f"{shard}.requests.jsonl"

    def context_path(self, shard: str) -> Path:
        return self.folder / f"{shard}.context.jsonl"

    def results_path(self, shard: str) -> Path:
        return self.folder / f"{shard}.results.jsonl"

    def save(self) -> None:
        with atomic_write(self.folder / "submission.json", "w") as handle:
            json.dump(asdict(self), handle, indent=2)

    def saved(self) -> "Submission | None":
        """This submission as last saved in its folder, if it was."""
        path = self.folder / "submission.json"
        return load_submission(self.scenario, self.stage, self.submission_id) if path.exists() else None


def submissions_root(scenario: str) -> Path:
    return scenario_dir(scenario) / "submissions"


def submission_folder(scenario: str, stage: str, submission_id: str) -> Path:
    return submissions_root(scenario) / f"{stage}-{submission_id}"


def load_submission(scenario: str, stage: str, submission_id: str) -> Submission:
    path = submission_folder(scenario, stage, submission_id) / "submission.json"
    return Submission(**json.loads(path.read_text()))


def submission_id_for(
    scenario: str, stage: str, model: str, prompt_version: str, keys_and_tries: Iterable[tuple[str, int]]
) -> str:
    """A stable id for "these problems, at these try numbers, with this model and prompt"."""
    digest = hashlib.sha256(f"{scenario}|{stage}|{model}|{prompt_version}".encode())
    for key, tries in keys_and_tries:
        digest.update(f"\n{key}#{tries}".encode())
    return digest.hexdigest()[:12]


def write_shards(
    submission: Submission,
    items: Iterable[tuple[bytes, dict]],
    max_requests_per_shard: int,
    max_bytes_per_shard: int,
) -> None:
    """Write request lines and their contexts into shards no larger than the limits.

    `items` yields (request line, context); each context has the request's `id` (its key).
    """
    submission.folder.mkdir(parents=True, exist_ok=True)
    submission.shards, requests, contexts = [], None, None
    count = size = 0
    try:
        for line, context in items:
            if requests is None or count >= max_requests_per_shard or size + len(line) > max_bytes_per_shard:
                for handle in (requests, contexts):
                    if handle:
                        handle.close()
                shard = f"shard-{len(submission.shards):03d}"
                submission.shards.append(shard)
                requests = open(submission.requests_path(shard), "wb")
                contexts = open(submission.context_path(shard), "wb")
                count = size = 0
            requests.write(line)
            contexts.write(orjson.dumps(context) + b"\n")
            count += 1
            size += len(line)
    finally:
        for handle in (requests, contexts):
            if handle:
                handle.close()
    submission.display_names = [
        f"cotgen-{submission.scenario}-{submission.stage}-{submission.submission_id}-{shard}"
        for shard in submission.shards
    ]


def read_jsonl(path: Path) -> Iterator[dict]:
    """Objects of a JSONL file, streamed. Our files are written atomically, so a line that does not
    parse can only come from a hand edit; it is skipped rather than stopping a plan or a trace."""
    if not path.exists():
        return
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue


def ingested_submissions(scenario: str, stage: str) -> Iterator[Path]:
    """Folders of this stage's submissions whose results were ingested (they hold outcomes)."""
    root = submissions_root(scenario)
    if root.exists():
        yield from sorted(p for p in root.glob(f"{stage}-*") if (p / "summary.json").exists())


def tries_by_problem(scenario: str, stage: str) -> dict[str, int]:
    """How many ingested submissions asked for each problem id (requests no job ran don't count)."""
    tries: dict[str, int] = {}
    for folder in ingested_submissions(scenario, stage):
        for outcome in read_jsonl(folder / "outcomes.jsonl"):
            if outcome["status"] != NOT_RUN:
                tries[outcome["id"]] = tries.get(outcome["id"], 0) + 1
    return tries


def total_cost_usd(scenario: str, stage: str) -> float:
    """What every ingested submission of this stage cost, rejected lines included."""
    return sum(
        json.loads((f / "summary.json").read_text())["cost_usd"]
        for f in ingested_submissions(scenario, stage)
    )
