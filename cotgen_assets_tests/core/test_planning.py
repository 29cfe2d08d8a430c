"""What a batch asks for: the summarization plan, a plain function beside generation's, and the ask."""

import pytest

from cotgen_assets.core.planning import plan_summarization
from cotgen_assets.core.prepare import prepare_generation
from cotgen_assets_tests.harness.asks import generation_ask


def cot(problem_id: str, batch: str = "batches/g1", correct: bool = True) -> dict:
    return {
        "id": problem_id,
        "question": "What is 2+2?",
        "cot": "<thought>2+2=4</thought>\n\\boxed{4}",
        "correct": correct,
        "generation": {"batch": batch},
    }


def test_only_correct_samples_lacking_a_draft_of_that_very_cot_are_asked():
    records = [
        cot("easy-1"),  # drafted from this very CoT: nothing to do
        cot("easy-2", batch="batches/g2"),  # CoT made again since its draft: draft it again
        cot("easy-3", correct=False),  # wrong reasoning: never paid for
        cot("easy-4"),  # a benchmark match: never summarized
        cot("easy-5"),  # new
    ]
    drafted = {"easy-1": "batches/g1", "easy-2": "batches/g1"}
    plan = plan_summarization(records, drafted, {"easy-4"}, {"easy-2": 1}, only_correct=True, max_tries=3)
    assert plan.items == [("easy-2", 2), ("easy-5", 1)]
    assert plan.skipped == {"incorrect": 1, "contaminated_or_repeat": 1}
    assert plan.skipped_chars == 2 * (len(records[2]["question"]) + len(records[2]["cot"]))
    assert plan.given_up == []


def test_all_drafts_incorrect_samples_too_and_gives_up_after_max_tries():
    records = [cot("easy-1", correct=False), cot("easy-2")]
    plan = plan_summarization(records, {}, set(), {"easy-2": 3}, only_correct=False, max_tries=3)
    assert plan.items == [("easy-1", 1)]
    assert plan.given_up == ["easy-2"]
    assert plan.skipped == {}


@pytest.mark.parametrize("samples_per_problem", [0, 65])
def test_samples_per_problem_out_of_bounds_is_refused_before_anything_is_written(
    data_dir, samples_per_problem
):
    """0 answers asks nothing, more than 64 is past any dataset's k: a config error, not a batch."""
    ask = generation_ask(limit=2, max_requests_per_job=10, samples_per_problem=samples_per_problem)
    with pytest.raises(
        ValueError, match=f"samples_per_problem must be between 1 and 64, got {samples_per_problem}"
    ):
        prepare_generation(ask, offline=True)
    assert not data_dir.exists() or not any(data_dir.rglob("*"))
