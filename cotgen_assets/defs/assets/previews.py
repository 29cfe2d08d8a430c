"""`problem_preview`: a few problems answered, graded and drafted through synchronous calls, shown in
the UI within a minute, before any batch is paid for (the logic: `core.preview`)."""

import time
from typing import Literal

import dagster as dg
from pydantic import Field

from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets.core.ask import GenerationAsk, SummarizationAsk
from cotgen_assets.core.online import DEFAULT_CONCURRENCY, MAX_CONCURRENCY
from cotgen_assets.core.preview import MAX_PROBLEMS, MIN_PROBLEMS, Preview, preview_path, run_preview
from cotgen_assets.core.scenarios import get_scenario
from cotgen_assets.core.submissions import SubmissionRefused
from cotgen_assets.defs.assets.batches import DEFAULT_MODEL, THINKING_LEVELS, BoundedConfig
from cotgen_assets.defs.assets.ui import GROUP, preview_table
from cotgen_assets.defs.partitions import scenario_partitions

EXCERPT_CHARS = 200
COLUMNS = ["id", "question", "thought", "answer", "correct", "draft", "tokens", "cost_usd"]


class PreviewConfig(BoundedConfig):
    """Every field has a default, so a plain click previews five problems on the standard tier."""

    num_problems: int = Field(
        5,
        ge=MIN_PROBLEMS,
        le=MAX_PROBLEMS,
        description=f"problems to preview, chosen as the next fill would ({MIN_PROBLEMS}-{MAX_PROBLEMS})",
    )
    model: str = Field(DEFAULT_MODEL, description="the Gemini model; it must have a row in the price table")
    thinking_level: str = Field("high", description=THINKING_LEVELS)
    summarization_thinking_level: str = Field("low", description="the drafts' thinking level")
    tier: Literal["standard", "flex"] = Field(
        "standard",
        description="standard: answers in seconds at full price; flex: half price, best effort, "
        "minutes (Google's target 1-15 min), may be shed (retried with backoff)",
    )
    concurrency: int = Field(
        DEFAULT_CONCURRENCY, ge=1, le=MAX_CONCURRENCY, description="calls at once (1-16)"
    )


def preview_rows(preview: Preview) -> list[dict]:
    """One row per problem for the UI: excerpts of the thought and the answer, the draft, the spend."""
    rows = []
    for record in preview.records:
        thought, _, answer = (record.get("cot") or "").removeprefix("<thought>").partition("</thought>\n")
        usages = [record.get(block, {}).get("usage") or {} for block in ("generation", "summarization")]
        costs = [record.get(block, {}).get("cost_usd") or 0.0 for block in ("generation", "summarization")]
        rows.append(
            {
                "id": record["id"],
                "question": record["question"],
                "thought": thought[:EXCERPT_CHARS],
                "answer": answer or record.get("failure"),
                "correct": record.get("correct"),
                "draft": record.get("cod"),
                "tokens": sum(sum(usage.values()) - usage.get("cached_tokens", 0) for usage in usages),
                "cost_usd": f"{sum(costs):.6f}",
            }
        )
    return rows


@dg.asset(
    partitions_def=scenario_partitions,
    group_name=GROUP,
    kinds={"gemini", "jsonl"},
    deps=["source_problems"],
    description="The first thing to click: a few problems, chosen as the next fill would choose them, "
    "answered, graded and drafted through synchronous calls (standard or Flex tier), shown in a table "
    "within a minute. Never written into cot_/cod_ files or the export; its graded answers inform the "
    "next fill's accuracy estimate.",
)
def problem_preview(
    context: dg.AssetExecutionContext, config: PreviewConfig, gemini: GeminiBatchResource
) -> dg.MaterializeResult:
    started = time.monotonic()
    scenario = get_scenario(context.partition_key)
    common = {"scenario": scenario, "model": config.model, "max_tries": 3, "max_requests_per_job": 10_000}
    generation = GenerationAsk(limit=config.num_problems, thinking_level=config.thinking_level, **common)
    drafts = SummarizationAsk(thinking_level=config.summarization_thinking_level, **common)
    try:
        preview = run_preview(
            generation,
            drafts,
            config.num_problems,
            config.tier,
            lambda line, tier: gemini.generate(config.model, line, tier),
            offline=gemini.offline,
            backend=gemini.backend,
            concurrency=config.concurrency,
        )
    except (SubmissionRefused, ValueError, KeyError) as error:
        raise dg.Failure(description=str(error)) from None
    seconds = time.monotonic() - started
    context.log.info(
        f"preview of {len(preview.records)} {scenario.name} problems on the {config.tier} tier "
        f"({gemini.describe()}): click to table in {seconds:.1f}s, ${preview.cost_usd:.6f}; "
        f"{preview.stats.summary()}"
    )
    if preview.stats.gave_up:
        context.log.warning(f"no answer for {len(preview.stats.gave_up)} problems: {preview.stats.gave_up}")
    return dg.MaterializeResult(metadata=preview_metadata(preview, config, gemini, seconds, scenario.suffix))


def preview_metadata(preview: Preview, config: PreviewConfig, gemini, seconds: float, suffix: str) -> dict:
    records = preview.records
    graded = [r for r in records if r.get("correct") is not None]
    return {
        "preview": preview_table(preview_rows(preview), COLUMNS),
        "preview_id": preview.preview_id,
        "num_problems": len(records),
        "num_correct": sum(1 for r in graded if r["correct"]),
        "num_drafts": sum(1 for r in records if r.get("cod")),
        "accuracy": dg.MetadataValue.float(
            sum(1 for r in graded if r["correct"]) / len(graded) if graded else 0.0
        ),
        "input_tokens": preview.usage.input_tokens,
        "thinking_tokens": preview.usage.thinking_tokens,
        "output_tokens": preview.usage.output_tokens,
        "cost_usd": dg.MetadataValue.float(preview.cost_usd),
        "tier": preview.tier,
        "model": config.model,
        "num_refused": preview.stats.num_refused,
        "num_no_answer": len(preview.stats.gave_up),
        "click_to_table_seconds": dg.MetadataValue.float(seconds),
        "path": dg.MetadataValue.path(str(preview_path(suffix))),
        "gemini_endpoint": gemini.describe(),
        "offline": gemini.offline,
    }
