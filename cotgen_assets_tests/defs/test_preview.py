"""`problem_preview`: a few problems through synchronous calls, shown before any batch is paid for.
In-process against the real emulator (its generateContent), on the real GSM8K data."""

import dagster as dg
import pytest

from cotgen_assets.core.model_io import Usage
from cotgen_assets.core.pricing import load_prices
from cotgen_assets.core.scenarios import get_scenario
from cotgen_assets.publish.report import scenario_figures
from cotgen_assets_tests.harness.pipeline import read_jsonl

pytestmark = pytest.mark.pipeline
MODEL = "gemini-3.1-pro-preview"


def by_hand(usage: dict, rates) -> float:
    """Cost of one call at `rates` (USD per 1M tokens), as a reader of the price table would do it."""
    fresh = usage["input_tokens"] - usage["cached_tokens"]
    return (
        fresh * rates.input
        + usage["cached_tokens"] * rates.cached_input
        + (usage["thinking_tokens"] + usage["output_tokens"]) * rates.output
    ) / 1e6


@pytest.mark.parametrize("tier", ["standard", "flex"])
def test_preview_answers_grades_and_drafts_without_touching_the_dataset(
    pipeline, emulator, sources, data_dir, tier
):
    sources("easy")
    assert pipeline.preview("easy", num_problems=3, tier=tier).success

    records = read_jsonl(data_dir / "preview_easy.jsonl")
    assert len(records) == 3
    assert all(r["correct"] and r["cod"].startswith("<draft>") for r in records)
    assert all(r["generation"]["batch"].startswith(f"preview:{tier}:") for r in records)
    assert not list(data_dir.glob("cot_*")) and not list(data_dir.glob("cod_*"))
    calls = emulator.calls()
    assert [c["path"] for c in calls] == [f"/v1beta/models/{MODEL}:generateContent"] * 6

    meta = pipeline.metadata("problem_preview", "easy")
    price = load_prices()[MODEL]
    rates = price.standard if tier == "standard" else price.flex
    usages = [r[block]["usage"] for r in records for block in ("generation", "summarization")]
    assert meta["cost_usd"] == pytest.approx(sum(by_hand(u, rates) for u in usages))
    total = sum((Usage(**u) for u in usages), Usage())
    assert (meta["input_tokens"], meta["thinking_tokens"], meta["output_tokens"]) == (
        total.input_tokens,
        total.thinking_tokens,
        total.output_tokens,
    )
    assert meta["tier"] == tier and meta["num_correct"] == 3 and meta["num_drafts"] == 3
    assert [row.data["correct"] for row in meta["preview"].records] == ["True"] * 3
    assert meta["click_to_table_seconds"] > 0
    # spent, apart from batch spend, in the report
    assert scenario_figures(get_scenario("easy")).preview_usd == pytest.approx(meta["cost_usd"])


def test_preview_picks_what_the_next_fill_would_ask(pipeline, emulator, sources, data_dir):
    sources("easy")
    assert pipeline.preview("easy", num_problems=4).success
    previewed = [r["id"] for r in read_jsonl(data_dir / "preview_easy.jsonl")]
    assert pipeline.submit_generation("easy", limit=4, ask="missing").success
    meta = pipeline.metadata("generation_batch", "easy")
    asked = [line for f in meta["request_files"] for line in open(f, "rb")]
    import orjson

    assert [orjson.loads(line)["key"] for line in asked] == previewed


def test_wrong_answers_get_no_draft_and_a_shed_flex_call_is_retried(pipeline, emulator, sources, data_dir):
    sources("easy")
    emulator.set_faults(wrong_rate=0.5, flex_shed_rate=0.3)
    result = pipeline.preview("easy", num_problems=6, tier="flex")
    assert result.success
    records = read_jsonl(data_dir / "preview_easy.jsonl")
    assert {r["correct"] for r in records} == {True, False}
    assert all((r["cod"] is not None) == r["correct"] for r in records)
    refused = [c for c in emulator.calls() if c["status"] == 503]
    meta = pipeline.metadata("problem_preview", "easy")
    assert refused and meta["num_refused"] == len(refused)
    assert meta["num_no_answer"] == 0


@pytest.mark.parametrize(("previewed", "asked"), [(0, 13), (5, 20), (20, 12)])
def test_the_first_fill_round_is_sized_from_the_preview(
    pipeline, emulator, sources, data_dir, previewed, asked
):
    """limit 8 on easy, every answer right: the prior (0.8) asks 13. A preview's graded answers are
    first tries, estimated with the usual caution (Wilson lower bound): 5 of 5 right is 0.57, so the
    round asks more; 20 of 20 is 0.84, and it asks fewer."""
    sources("easy")
    if previewed:
        assert pipeline.preview("easy", num_problems=previewed, concurrency=8).success
    assert pipeline.submit_generation("easy", limit=8, dry_run=True).success
    meta = pipeline.metadata("generation_batch", "easy")
    assert meta["num_requests"] == asked
    assert meta["accuracy_source"] == ("preview" if previewed else "prior")


@pytest.mark.parametrize(
    "config, message",
    [
        ({"num_problems": 0}, "num_problems: Input should be greater than or equal to 1, got 0"),
        ({"num_problems": 51}, "num_problems: Input should be less than or equal to 50, got 51"),
        ({"concurrency": 17}, "concurrency: Input should be less than or equal to 16, got 17"),
    ],
)
def test_preview_config_out_of_bounds_is_one_failure_naming_it_and_pays_nothing(
    pipeline, sources, data_dir, config, message
):
    sources("easy")
    result = pipeline.preview("easy", raise_on_error=False, **config)
    error = result.failure_data_for_node("problem_preview").error
    assert error.cls_name == "Failure" and error.message.strip().endswith(message), error.message
    assert not (data_dir / "easy" / "previews").exists() and not (data_dir / "preview_easy.jsonl").exists()


def test_a_tier_that_does_not_exist_is_refused_before_the_run_naming_the_tiers(pipeline, sources, data_dir):
    sources("easy")
    with pytest.raises(dg.DagsterInvalidConfigError, match="tier") as refused:
        pipeline.preview("easy", tier="premium")
    assert "standard" in str(refused.value) and "flex" in str(refused.value)
    assert not (data_dir / "easy" / "previews").exists()
