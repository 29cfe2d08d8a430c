"""k answers per problem in-process against the emulator: one click of `extend` to CoT and CoD."""

import pytest

from cotgen_assets.defs.assets.batches import summarization_batch
from cotgen_assets_tests.harness.pipeline import read_jsonl, requested_ids

pytestmark = pytest.mark.pipeline


def test_extend_with_four_answers_per_problem_gives_every_answer_and_drafts_of_the_correct_ones(
    pipeline, emulator, sources, data_dir
):
    sources("easy")
    emulator.set_faults(wrong_rate=0.3)
    pipeline.submit_generation("easy", mode="extend", limit=5, samples_per_problem=4, dry_run=True)
    dry = pipeline.metadata("generation_batch", "easy")
    assert (dry["num_problems"], dry["samples_per_problem"], dry["num_requests"]) == (5, 4, 20)
    assert dry["batch_names"] == [] and dry["projected_cost_usd"] > 0
    pipeline.submit_generation("easy", mode="extend", limit=5, samples_per_problem=4)
    batch = pipeline.metadata("generation_batch", "easy")
    assert (batch["num_problems"], batch["samples_per_problem"], batch["num_requests"]) == (5, 4, 20)
    assert batch["projected_cost_usd"] == dry["projected_cost_usd"] and len(batch["batch_names"]) == 1
    problems = [f"easy-{n}" for n in range(5)]
    keys = [p if s == 0 else f"{p}#{s}" for p in problems for s in range(4)]
    assert requested_ids(batch) == keys
    pipeline.drain()

    cot = read_jsonl(data_dir / "cot_easy.jsonl")
    assert sorted((r["id"], r["sample"]) for r in cot) == [(p, s) for p in problems for s in range(4)]
    correct = {(r["id"], r["sample"]) for r in cot if r["correct"]}
    assert 0 < len(correct) < 20, "at a 30 % wrong-answer rate, drawn per answer: some of each"
    mixed = [p for p in problems if 0 < sum((p, s) in correct for s in range(4)) < 4]
    assert mixed, "the answers to one problem are independent draws"
    cod = read_jsonl(data_dir / "cod_easy.jsonl")
    assert sorted((r["id"], r["sample"]) for r in cod) == sorted(correct), "a draft of each correct answer"

    # nothing is paid twice: a fill at the limit and another summarization send nothing
    pipeline.submit_generation("easy", limit=len(correct), samples_per_problem=4)
    assert pipeline.metadata("generation_batch", "easy")["num_requests"] == 0
    pipeline.materialize([summarization_batch], "easy")
    assert pipeline.metadata("summarization_batch", "easy")["num_requests"] == 0
    pipeline.drain()
    assert len(read_jsonl(data_dir / "cot_easy.jsonl")) == 20
    assert len(read_jsonl(data_dir / "cod_easy.jsonl")) == len(correct)
