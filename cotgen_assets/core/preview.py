"""A preview: a few problems, chosen as the next `fill` would choose them, answered, graded and drafted
through synchronous calls (`online`), and shown before any batch is paid for.

The requests are the batch's own (`requests`), the answers are read as batch lines are (`stages`,
`records`), so what a preview shows is what a fill would make. Its records go to
`preview_<suffix>.jsonl` (CoT record fields plus `cod`: the draft text, or null), never into the
`cot_`/`cod_` files or the export; its spend is kept apart, in `previews/<id>/preview.json`, priced at
the online rate of the tier used. Its graded answers are evidence for the next fill's accuracy
estimate (`preview_evidence`).
"""

import json
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from cotgen_assets.core.answers_store import AnswerStore
from cotgen_assets.core.ask import GenerationAsk, SummarizationAsk
from cotgen_assets.core.batch_output import classify
from cotgen_assets.core.grading import grade_many
from cotgen_assets.core.model_io import Usage, wire_for
from cotgen_assets.core.online import Generate, OnlineStats, Retry, call_each, validate_tier
from cotgen_assets.core.planning import FILL, plan_generation
from cotgen_assets.core.pricing import online_cost_usd
from cotgen_assets.core.records import made_by
from cotgen_assets.core.requests import generation_requests, summarization_request_of
from cotgen_assets.core.sample_keys import problem_and_sample
from cotgen_assets.core.stages import GENERATION, SUMMARIZATION
from cotgen_assets.core.storage import atomic_write, data_dir, parquet_file, read_jsonl, scenario_dir
from cotgen_assets.core.submission_history import asked_so_far, source_problem_ids
from cotgen_assets.core.submissions import Submission

MIN_PROBLEMS, MAX_PROBLEMS = 1, 50
PREVIEW_STAGE = "preview"  # how a preview's spend is labelled beside the batch stages


def preview_path(suffix: str):
    return data_dir() / f"preview_{suffix}.jsonl"


def previews_root(scenario: str):
    return scenario_dir(scenario) / "previews"


def validate_num_problems(num_problems: int) -> None:
    if not MIN_PROBLEMS <= num_problems <= MAX_PROBLEMS:
        raise ValueError(
            f"num_problems must be between {MIN_PROBLEMS} and {MAX_PROBLEMS}, got {num_problems}"
        )


@dataclass
class Preview:
    """One preview's records (in the order of the problems) and what it cost."""

    preview_id: str
    tier: str
    records: list[dict] = field(default_factory=list)
    usage: Usage = Usage()
    cost_usd: float = 0.0
    stats: OnlineStats | None = None


def preview_items(ask: GenerationAsk, num_problems: int, backend: str) -> list[tuple[bytes, dict]]:
    """(request line, context) of the problems the next fill would ask first: its retries, then new
    problems in table order (`planning.plan_generation` asked for exactly `num_problems` more)."""
    validate_num_problems(num_problems)
    id_column, problems_path = source_problem_ids(ask.scenario)
    history = asked_so_far(ask.scenario)
    problem_ids = id_column.to_pylist()
    num_good = sum(1 for p in problem_ids if p in history.good)  # one answer per problem: a key is its id
    plan = plan_generation(
        problem_ids, history.good, history.used, history.tries, num_good + num_problems, FILL, ask.max_tries
    )
    samples: dict[str, list[int]] = {}
    for key, _ in plan.items:
        problem_id, sample = problem_and_sample(key)
        samples.setdefault(problem_id, []).append(sample)
    asked = pc.is_in(id_column, value_set=pa.array(list(samples), pa.string())).combine_chunks()
    with parquet_file(problems_path) as problems:
        return list(generation_requests(ask, problems, asked, samples, wire_for(backend)))


def _submission(ask, stage, preview_id: str, offline: bool, backend: str) -> Submission:
    """Who made a preview record (`records.made_by` reads it); never saved as a submission."""
    return Submission(
        scenario=ask.scenario.name,
        stage=stage,
        submission_id=preview_id,
        model=ask.model,
        prompt_version=stage.prompt_version,
        num_requests=0,
        offline=offline,
        backend=backend,
    )


class _PreviewRun:
    """One preview's calls: generation, grading, then a draft of a correct answer, per problem."""

    def __init__(self, ask, summarize_ask, tier, preview_id, offline, backend, store: AnswerStore):
        self.ask, self.summarize_ask, self.tier, self.store = ask, summarize_ask, tier, store
        self.batch = f"preview:{tier}:{preview_id}"
        self.makers = {
            stage: _submission(a, stage, preview_id, offline, backend)
            for stage, a in ((GENERATION, ask), (SUMMARIZATION, summarize_ask))
        }
        self.backend = backend
        self.lock = threading.Lock()
        self.records: dict[str, dict] = {}
        self.usage, self.cost_usd = Usage(), 0.0

    def _answer(self, stage, line: bytes, context: dict, ask_line) -> tuple[dict | None, str | None]:
        """The record `stage` builds from the answer to `line` (None and why when there is none)."""
        output = ask_line(line)
        self.store.save(f"{stage.name}:{context['id']}", output)  # saved as it arrives: it is paid for
        result = classify(wire_for(self.backend).read_line(output), require_thoughts=stage.needs_thoughts)
        maker = self.makers[stage]
        cost = online_cost_usd(maker.model, result.usage, self.tier, backend=self.backend)
        with self.lock:
            self.usage += result.usage
            self.cost_usd += cost
        if not result.ok:
            return None, f"{result.status}: {result.reason}"
        try:
            record, gradings = stage.build(context, result, made_by(maker, self.batch, result, cost))
        except ValueError as error:
            return None, str(error)
        for (name, _, _), verdict in zip(gradings, grade_many([(p, r) for _, p, r in gradings])):
            record[name] = verdict
        return record, None

    def work(self, item: tuple[bytes, dict], ask_line) -> None:
        line, context = item
        record, why = self._answer(GENERATION, line, context, ask_line)
        if record is None:
            record = {**context, "cot": None, "correct": None, "failure": why}
        elif record["correct"]:
            draft_line, draft_context = summarization_request_of(
                record, self.summarize_ask, wire_for(self.backend)
            )
            draft, why = self._answer(SUMMARIZATION, draft_line, draft_context, ask_line)
            record["cod"] = draft["cod"] if draft else None
            record["summarization"] = draft["summarization"] if draft else {"failure": why}
        with self.lock:
            self.records[context["id"]] = {"cod": None, **record}


def run_preview(
    ask: GenerationAsk,
    summarize_ask: SummarizationAsk,
    num_problems: int,
    tier: str,
    generate: Generate,
    *,
    offline: bool,
    backend: str = "developer",
    concurrency: int = 4,
    retry: Retry = Retry(),
) -> Preview:
    """Answer, grade and draft `num_problems` problems at `tier`; write `preview_<suffix>.jsonl`."""
    validate_tier(tier)
    ask.validate(backend)
    summarize_ask.validate(backend)
    items = preview_items(ask, num_problems, backend)
    preview_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    folder = previews_root(ask.scenario.name) / preview_id
    run = _PreviewRun(ask, summarize_ask, tier, preview_id, offline, backend, AnswerStore(folder / "answers"))
    stats = call_each(
        items,
        run.work,
        lambda line: generate(line, tier),
        concurrency=concurrency,
        retry=retry,
        label=lambda item: item[1]["id"],
    )
    order = [context["id"] for _, context in items]
    preview = Preview(preview_id, tier, [run.records[i] for i in order if i in run.records], run.usage)
    preview.cost_usd, preview.stats = run.cost_usd, stats
    _write(preview, ask, folder)
    return preview


def _write(preview: Preview, ask: GenerationAsk, folder) -> None:
    with atomic_write(preview_path(ask.scenario.suffix)) as handle:
        for record in preview.records:
            handle.write(orjson.dumps(record) + b"\n")
    summary = {
        "preview_id": preview.preview_id,
        "model": ask.model,
        "tier": preview.tier,
        "num_problems": len(preview.records),
        "num_correct": sum(1 for r in preview.records if r.get("correct")),
        "num_drafts": sum(1 for r in preview.records if r.get("cod")),
        "cost_usd": preview.cost_usd,
        "usage": preview.usage.__dict__,
        "gave_up": preview.stats.gave_up if preview.stats else {},
    }
    with atomic_write(folder / "preview.json", "w") as handle:
        json.dump(summary, handle, indent=2)


def preview_spend_usd(scenario: str) -> float:
    """What every preview of the scenario cost, at the online rate of its tier."""
    root = previews_root(scenario)
    if not root.exists():
        return 0.0
    return sum(json.loads(p.read_text())["cost_usd"] for p in root.glob("*/preview.json"))


def preview_evidence(scenario, model: str) -> tuple[int, int]:
    """(correct, graded) first answers of the scenario's latest preview with `model`: evidence for
    the next fill's accuracy estimate. A preview of another model says nothing of this one."""
    path = preview_path(scenario.suffix)
    records = [r for r in read_jsonl(path) if r.get("correct") is not None] if path.exists() else []
    mine = [r for r in records if r["generation"]["model"] == model]
    return sum(1 for r in mine if r["correct"]), len(mine)
