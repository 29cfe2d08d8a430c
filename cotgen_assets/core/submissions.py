"""A batch submission as a record on disk, and its folder's layout.

One submission is one click on a batch asset: a folder
`<data>/<scenario>/submissions/<stage>-<id>/` holding `submission.json` (the `Submission`), per
shard the uploaded request file (`shard-000.requests.jsonl`), what is needed to turn each answer
into a record (`shard-000.context.jsonl`), the downloaded results (`shard-000.results.jsonl`), and
after ingestion `outcomes.jsonl` + `summary.json`. How its id is made: `identity`; how its shards
are written: `shards`; what the folders say of earlier asks: `submission_history`.
"""

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from cotgen_assets.core.stages import Stage, stage_named
from cotgen_assets.core.storage import atomic_write, scenario_dir

CONTENT_HASH_CHARS = 16  # of a shard's sha256, at the end of its job's display name
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
    # The queue of shards (core/queue.py): a queued shard's batch name is "" until its job is created.
    live_states: list[str] = field(default_factory=list)  # per shard, its job's end as last seen ("" running)
    queued_at: str = ""  # when a shard first waited on the quota (ISO time), "" if none ever did
    dequeued_at: str = ""  # when the last of the shards that waited got its job
    queue_dropped: bool = False  # `cotgen cancel` dropped the shards still queued: never created
    # per queued shard, when (epoch seconds) a create of its job lost its answer: the job may appear yet
    lost_creates: dict[str, float] = field(default_factory=dict)

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


def refuse_foreign_job(submission: Submission, shard: str, batch_name: str, display_name: str | None) -> None:
    """Refuse a job that is not the one this submission made for `shard`: its display name (which
    carries the shard's content hash) must be the one recorded for it, and that hash must be the one
    of the request file in the folder. A hand-edited or mixed-up `submission.json` would otherwise
    store another job's answers under these questions; the request file is the proof, since the
    file naming the job can be edited to agree with itself."""
    expected = submission.display_names[submission.shards.index(shard)]
    requests = submission.requests_path(shard)
    if display_name != expected or not expected.startswith(submission.job_name_prefix(shard)):
        why = f"its display name is {display_name!r}, not {expected!r}"
    elif not expected.endswith("-" + content_hash(requests)):
        why = f"its display name {display_name!r} does not end with the content hash of {requests}"
    else:
        return
    raise SubmissionRefused(
        f"batch {batch_name} is not the job of submission {submission.submission_id} ({shard}): {why}; "
        f"nothing was downloaded. Check batch_names in {submission.folder / 'submission.json'} "
        "(edited by hand, or copied from another deployment?)"
    )


def content_hash(requests: Path) -> str:
    """The hash a shard's job carries at the end of its display name: of its request file's bytes."""
    digest = hashlib.sha256()
    with requests.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:CONTENT_HASH_CHARS]


def submissions_root(scenario: str) -> Path:
    return scenario_dir(scenario) / "submissions"


def submission_folder(scenario: str, stage: Stage, submission_id: str) -> Path:
    return submissions_root(scenario) / f"{stage.name}-{submission_id}"


def load_submission(scenario: str, stage: Stage, submission_id: str) -> Submission:
    path = submission_folder(scenario, stage, submission_id) / "submission.json"
    saved = json.loads(path.read_text())
    return Submission(**saved | {"stage": stage_named(saved["stage"])})
