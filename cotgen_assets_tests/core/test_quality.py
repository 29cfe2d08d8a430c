"""The quality gates of cot_samples / cod_samples, on hand-made records and on a real chain."""

import dagster as dg
import pytest

from cotgen_assets.core.quality import SampleStats
from cotgen_assets.core.stages import GENERATION, SUMMARIZATION
from cotgen_assets.core.text import tagged_block
from cotgen_assets.defs.assets.sources import source_problems
from cotgen_assets.defs.checks import gate_checks
from cotgen_assets_tests.harness.pipeline import Pipeline


def usage(thinking: int = 0, output: int = 0) -> dict:
    return {"input_tokens": 50, "cached_tokens": 0, "thinking_tokens": thinking, "output_tokens": output}


def cot(text: str, correct: bool = True, thinking: int = 100) -> dict:
    return {
        "id": "x",
        "cot": text,
        "correct": correct,
        "generation": {"cost_usd": 0.01, "usage": usage(thinking=thinking, output=5)},
    }


def cod(text: str, correct=True, agrees=True, unsupported=(), thinking=100, draft=10) -> dict:
    return {
        "id": "x",
        "cod": text,
        "correct": correct,
        "agrees_with_cot": agrees,
        "unsupported_draft_numbers": list(unsupported),
        "generation": {"cost_usd": 0.01, "usage": usage(thinking=thinking, output=5)},
        "summarization": {"cost_usd": 0.001, "usage": usage(output=draft)},
    }


def results(checks) -> dict:
    return {check.check_name: check for check in checks}


def test_tagged_block_accepts_exactly_one_block_then_an_answer():
    assert tagged_block("<thought>think</thought>\n\\boxed{1}", "thought") == "think"
    for bad in [
        "think</thought>\n1",
        "<thought>a</thought>1",
        "<thought>a</thought>\n",
        "<thought></thought>\n1",
        "<thought>a<thought>b</thought>\n1",
        "<thought>a</thought>\n1</thought>",
        " <thought>a</thought>\n1",
    ]:
        assert tagged_block(bad, "thought") is None, bad


def test_cot_gates_fail_on_a_malformed_record_and_warn_on_low_accuracy():
    stats = SampleStats(GENERATION)
    for record in [
        cot("<thought>a</thought>\n1"),
        cot("no tags at all", correct=False),
        cot("<thought>b</thought>\n2", correct=False),
    ]:
        stats(record)
    checks = results(gate_checks(stats))
    assert not checks["tags_well_formed"].passed
    assert checks["tags_well_formed"].severity == dg.AssetCheckSeverity.ERROR
    assert checks["tags_well_formed"].metadata["num_malformed"].value == 1
    assert not checks["accuracy"].passed and checks["accuracy"].severity == dg.AssetCheckSeverity.WARN
    assert checks["accuracy"].metadata["accuracy"].value == 1 / 3


def test_cod_gates_each_catch_their_problem():
    good = SampleStats(SUMMARIZATION)
    for _ in range(10):
        good(cod("<draft>48/2 = 24\n48+24 = 72</draft>\n\\boxed{72}"))
    assert all(check.passed for check in gate_checks(good))

    bad = SampleStats(SUMMARIZATION)
    long_step = "this step is written out in far too many words to be a draft"
    for _ in range(10):
        bad(
            cod(
                f"<draft>{long_step}</draft>\n\\boxed{{7}}",
                agrees=False,
                unsupported=["13"],
                thinking=100,
                draft=90,
            )
        )
    checks = results(gate_checks(bad))
    assert {name for name, check in checks.items() if not check.passed} == {
        "answer_agrees_with_cot",
        "token_ratio_in_band",
        "draft_steps_short",
        "draft_numbers_from_thought",
    }
    assert checks["token_ratio_in_band"].metadata["draft_to_thought_token_ratio"].value == 0.9
    assert all(
        checks[name].severity == dg.AssetCheckSeverity.WARN for name in checks if name != "tags_well_formed"
    )


@pytest.mark.pipeline
def test_a_real_chain_passes_its_gates(instance, emulator, data_dir):
    pipeline = Pipeline(instance, emulator.base_url)
    pipeline.materialize([source_problems], "medium")
    pipeline.submit_generation("medium", limit=8)
    cot_run = pipeline.run(pipeline.tick_until_launch()[0])
    cod_run = pipeline.run(pipeline.tick_until_launch()[0])
    evaluations = cot_run.get_asset_check_evaluations() + cod_run.get_asset_check_evaluations()
    by_name = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in evaluations}
    assert by_name == {
        ("generation_results", "batch_succeeded"): True,
        ("cot_samples", "tags_well_formed"): True,
        ("cot_samples", "accuracy"): True,
        ("cot_samples", "no_contaminated_samples"): True,
        ("summarization_results", "batch_succeeded"): True,
        ("cod_samples", "tags_well_formed"): True,
        ("cod_samples", "accuracy"): True,
        ("cod_samples", "no_contaminated_samples"): True,
        ("cod_samples", "answer_agrees_with_cot"): True,
        ("cod_samples", "token_ratio_in_band"): True,
        ("cod_samples", "draft_steps_short"): True,
        ("cod_samples", "draft_numbers_from_thought"): True,
    }


@pytest.mark.parametrize("counts", [[7], [3, 1], [5, 5, 5], [0, 2, 9, 2], [1, 40, 40, 3, 900]])
def test_token_counts_give_the_median_mean_and_sum_of_every_sample(counts):
    import statistics

    from cotgen_assets.core.quality import TokenCounts

    tally = TokenCounts(counts)
    assert tally.median() == statistics.median(counts)
    assert tally.mean() == statistics.mean(counts)
    assert tally.sum() == sum(counts)
    assert TokenCounts().median() is None and TokenCounts().mean() is None
