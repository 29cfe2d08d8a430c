"""The whole chain in-process against the emulator: batch -> sensor -> CoT -> sensor -> CoD."""

import pytest

from cotgen_assets.defs import assets
from cotgen_assets_tests.pipeline_harness import read_jsonl


def test_easy_chain_from_click_to_cod(pipeline, data_dir):
    pipeline.materialize([assets.source_problems], "easy")
    pipeline.submit_generation("easy", limit=6)
    submitted = pipeline.metadata("generation_batch", "easy")
    asked = submitted["num_requests"]  # enough to reach 6 correct samples at 95 % (test_rounds.py)
    assert asked > 6 and len(submitted["batch_names"]) == 1
    assert submitted["projected_cost_usd"] > 0 and submitted["offline"] is True

    [request] = pipeline.tick_until_launch()
    assert request.job_name == "generation_results_job" and request.partition_key == "easy"
    assert pipeline.tick().run_requests == [], "a handled submission is not launched twice"
    assert pipeline.run(request).success

    cot = read_jsonl(data_dir / "cot_easy.jsonl")
    assert [r["id"] for r in cot] == [f"easy-{i}" for i in range(asked)]
    first = cot[0]
    assert first["answer"] == "72" and first["correct"] is True and first["predicted_answer"] == "72"
    assert first["cot"].startswith("<thought>") and "</thought>\n" in first["cot"]
    assert first["messages"][1] == {"role": "assistant", "content": first["cot"]}
    assert first["source"] == {
        "dataset": "gsm8k",
        "config": "main",
        "split": "train",
        "row": 0,
        "level": "",
        "type": "",
    }
    generation = first["generation"]
    assert generation["batch"] == submitted["batch_names"][0]
    assert generation["model"] == "gemini-3.1-pro-preview" and generation["prompt_version"] == "cot-gen-v1"
    assert generation["usage"]["thinking_tokens"] > 0 and generation["cost_usd"] > 0

    cot_meta = pipeline.metadata("cot_samples", "easy")
    assert cot_meta["num_samples"] == cot_meta["num_new"] == asked and cot_meta["accuracy"] == 1.0
    assert cot_meta["cost_usd"] == pytest.approx(sum(r["generation"]["cost_usd"] for r in cot))
    assert cot_meta["thinking_tokens"] == sum(r["generation"]["usage"]["thinking_tokens"] for r in cot)

    summarization = pipeline.metadata("summarization_batch", "easy")
    assert summarization["num_requests"] == asked
    [request] = pipeline.tick_until_launch()
    assert request.job_name == "summarization_results_job"
    assert pipeline.run(request).success

    cod = read_jsonl(data_dir / "cod_easy.jsonl")
    assert [r["id"] for r in cod] == [r["id"] for r in cot]
    assert cod[0]["cod"].startswith("<draft>") and cod[0]["cod"].endswith("\\boxed{72}")
    assert cod[0]["generation"] == generation and cod[0]["summarization"]["prompt_version"] == "cod-sum-v1"
    cod_meta = pipeline.metadata("cod_samples", "easy")
    assert cod_meta["num_samples"] == asked and cod_meta["answer_agreement"] == 1.0
    assert 0 < cod_meta["draft_to_thought_token_ratio"] < 1
    assert cod_meta["cost_usd"] == pytest.approx(sum(r["summarization"]["cost_usd"] for r in cod))


def test_second_fill_submits_nothing_and_extend_adds_new_problems(pipeline, data_dir):
    pipeline.materialize([assets.source_problems], "medium")
    pipeline.submit_generation("medium", limit=4)
    asked = pipeline.metadata("generation_batch", "medium")["num_requests"]
    pipeline.run(pipeline.tick_until_launch()[0])

    pipeline.submit_generation("medium", limit=4)
    assert pipeline.metadata("generation_batch", "medium")["num_requests"] == 0
    pipeline.submit_generation("medium", limit=3, mode="extend")
    assert pipeline.metadata("generation_batch", "medium")["num_new_problems"] == 3
    pipeline.run(pipeline.tick_until_launch()[0])
    ids = [r["id"] for r in read_jsonl(data_dir / "cot_medium.jsonl")]
    assert len(ids) == len(set(ids)) == asked + 3


def test_a_second_submission_while_one_is_in_flight_is_refused(pipeline):
    pipeline.materialize([assets.source_problems], "hard")
    pipeline.submit_generation("hard", limit=2)
    name = pipeline.metadata("generation_batch", "hard")["batch_names"][0]
    result = pipeline.submit_generation("hard", limit=2, raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("generation_batch").error.message
    # latency 0: the job has ended already, but it is not ingested, so it still blocks a new one
    assert "generation_batch for scenario 'hard'" in failure and name in failure
    assert "results are not saved yet" in failure


def test_budget_guard_refuses_above_max_cost(pipeline):
    pipeline.materialize([assets.source_problems], "easy")
    result = pipeline.submit_generation("easy", limit=50, max_cost_usd=0.01, raise_on_error=False)
    assert not result.success
    message = result.failure_data_for_node("generation_batch").error.message
    assert "above max_cost_usd $0.01 by $" in message and "Nothing was submitted" in message


def test_dry_run_writes_requests_and_submits_nothing(pipeline):
    pipeline.materialize([assets.source_problems], "easy")
    pipeline.submit_generation("easy", limit=5, dry_run=True)
    meta = pipeline.metadata("generation_batch", "easy")
    assert meta["dry_run"] is True and meta["batch_names"] == [] and meta["num_requests"] > 5
    assert len(open(meta["request_files"][0]).readlines()) == meta["num_requests"]
    assert pipeline.tick().run_requests == []
