"""The whole chain in-process against the emulator: batch -> sensor -> CoT -> sensor -> CoD."""

import dagster as dg
import pytest

from cotgen_assets.defs.assets.previews import problem_preview
from cotgen_assets.defs.assets.publishing import dataset_report, hf_dataset
from cotgen_assets.defs.assets.samples import cod_samples, cot_samples
from cotgen_assets.defs.assets.sources import source_problems
from cotgen_assets.defs.resources import HubResource
from cotgen_assets_tests.harness.pipeline import ALL_ASSETS, read_jsonl

pytestmark = pytest.mark.pipeline


def test_easy_chain_from_click_to_cod(pipeline, data_dir):
    pipeline.materialize([source_problems], "easy")
    pipeline.submit_generation("easy", limit=6)
    submitted = pipeline.metadata("generation_batch", "easy")
    asked = submitted["num_requests"]  # enough to reach 6 correct samples at 95 % (core/test_rounds.py)
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
    assert all(r["sample"] == 0 for r in cot), "one answer per problem: every record is sample 0"
    assert (cot_meta["num_problems"], cot_meta["answers_per_problem"]) == (asked, 1)
    assert cot_meta["pass_at_1"] == cot_meta["pass_at_k"] == cot_meta["maj_at_k"] == cot_meta["accuracy"]
    assert cot_meta["pass_rates"].startswith("![pass rates](data:image/png;base64,")

    summarization = pipeline.metadata("summarization_batch", "easy")
    assert summarization["num_requests"] == asked
    [request] = pipeline.tick_until_launch()
    assert request.job_name == "summarization_results_job"
    assert pipeline.run(request).success

    cod = read_jsonl(data_dir / "cod_easy.jsonl")
    assert [(r["id"], r["sample"]) for r in cod] == [(r["id"], r["sample"]) for r in cot]
    assert cod[0]["cod"].startswith("<draft>") and cod[0]["cod"].endswith("\\boxed{72}")
    assert cod[0]["generation"] == generation and cod[0]["summarization"]["prompt_version"] == "cod-sum-v1"
    cod_meta = pipeline.metadata("cod_samples", "easy")
    assert cod_meta["num_samples"] == asked and cod_meta["answer_agreement"] == 1.0
    assert 0 < cod_meta["draft_to_thought_token_ratio"] < 1
    assert cod_meta["cost_usd"] == pytest.approx(sum(r["summarization"]["cost_usd"] for r in cod))


def test_second_fill_submits_nothing_and_extend_adds_new_problems(pipeline, data_dir):
    pipeline.materialize([source_problems], "medium")
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
    pipeline.materialize([source_problems], "hard")
    pipeline.submit_generation("hard", limit=2)
    name = pipeline.metadata("generation_batch", "hard")["batch_names"][0]
    result = pipeline.submit_generation("hard", limit=2, raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("generation_batch").error.message
    # latency 0: the job has ended already, but it is not ingested, so it still blocks a new one
    assert "generation_batch for scenario 'hard'" in failure and name in failure
    assert "results are not saved yet" in failure


def test_budget_guard_refuses_above_max_cost(pipeline):
    pipeline.materialize([source_problems], "easy")
    result = pipeline.submit_generation("easy", limit=50, max_cost_usd=0.01, raise_on_error=False)
    assert not result.success
    message = result.failure_data_for_node("generation_batch").error.message
    assert "above max_cost_usd $0.01 by $" in message and "Nothing was submitted" in message


def test_dry_run_writes_requests_and_submits_nothing(pipeline):
    pipeline.materialize([source_problems], "easy")
    pipeline.submit_generation("easy", limit=5, dry_run=True)
    meta = pipeline.metadata("generation_batch", "easy")
    assert meta["dry_run"] is True and meta["batch_names"] == [] and meta["num_requests"] > 5
    assert len(open(meta["request_files"][0]).readlines()) == meta["num_requests"]
    assert pipeline.tick().run_requests == []


# The type of every metadata key the assets and their checks write. The UI plots a key across
# materializations: an int where a float was (a cost of 0, a batch of no requests) or a null breaks it.
METADATA_TYPES = {
    "Int": """generation_requests_asked generation_rounds limit max_rounds num_correct_pairs num_missing round
        num_rows num_matched num_dropped_no_answer num_contaminated num_duplicates dataset_rows
        contamination_ngram dagster/row_count num_requests num_retries num_new_problems num_given_up
        num_problems samples_per_problem
        num_skipped_incorrect num_skipped_contaminated num_shards projected_input_tokens
        projected_thinking_tokens projected_output_tokens cot_samples_storage_id num_succeeded
        num_failed num_failed_jobs num_cancelled_jobs num_samples num_new num_unknown_keys num_duplicate_keys
        input_tokens cached_tokens thinking_tokens output_tokens num_repeats num_cot_samples num_cod_samples
        num_rows_cot_easy num_rows_cod_easy num_rows_problems_easy num_repeated_lines_dropped
        answers_per_problem num_correct num_drafts num_no_answer num_refused
        num_jobs_created num_jobs_queued""",
    "Float": """accuracy_estimate retry_accuracy_estimate expected_correct earlier_rounds_cost_usd
        extra_asks_cost_usd projected_cost_usd skipped_projected_cost_usd cost_usd total_cost_usd
        accuracy draft_to_thought_token_ratio answer_agreement cot_accuracy cod_accuracy cot_cost_usd
        cod_cost_usd spent_usd spent_per_1000_correct_pairs_usd cot_cost_per_1000_samples_usd
        cod_cost_per_1000_samples_usd unused_lines_cost_usd pass_at_1 pass_at_k maj_at_k
        click_to_table_seconds online_rounds_usd preview_usd quota_wait_minutes""",
    "Bool": "decontaminated offline dry_run include_incorrect adopted auto_fill cap_at_limit",
    "Json": """num_over_limit rounds_config dropped_ids contaminated_ids duplicate_ids
        num_contaminated_by_benchmark num_contaminated_by_match num_overlapping_skipped
        overlapping_skipped_ids benchmarks benchmarks_skipped skipped_not_compared filters batch_names
        reused_batches request_files result_files job_errors failed_by_reason by_scenario rows left_out""",
    "Text": """accuracy_source rounds_id decontamination contamination_rule dataset config split submission_id
        model prompt_version gemini_endpoint job_state fingerprint preview_id tier""",
    "Path": "path picture_path",
    "Markdown": "report costs picture card rounds pass_rates",
    "Table": "preview contamination_examples",
    "TableSchema": "dagster/column_schema",
    "TableColumnLineage": "dagster/column_lineage",
}
CHECK_TYPES = {  # <check>.<key>
    "Int": """no_benchmark_overlap.num_overlapping tags_well_formed.num_malformed
        no_contaminated_samples.num_contaminated no_contaminated_samples.num_repeats
        draft_steps_short.max_words draft_numbers_from_thought.num_unsupported""",
    "Float": """accuracy.accuracy accuracy.threshold answer_agrees_with_cot.answer_agreement
        answer_agrees_with_cot.threshold token_ratio_in_band.draft_to_thought_token_ratio
        token_ratio_in_band.low token_ratio_in_band.high draft_steps_short.short_step_share
        draft_steps_short.threshold draft_numbers_from_thought.unsupported_share
        draft_numbers_from_thought.threshold""",
    "Json": """no_benchmark_overlap.benchmarks_checked no_benchmark_overlap.overlapping_ids
        no_overlap_with_skipped_benchmarks.benchmarks_skipped
        no_overlap_with_skipped_benchmarks.num_overlapping
        no_overlap_with_skipped_benchmarks.overlapping_ids""",
}


def types_of(table: dict[str, str]) -> dict[str, set[str]]:
    return {key: {f"{kind}MetadataValue"} for kind, keys in table.items() for key in keys.split()}


def test_metadata_keeps_its_types_whatever_the_values(pipeline, instance, monkeypatch):
    """Every asset of a scenario, twice (the second fill asks nothing), then the report and export."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sources = pipeline.materialize([source_problems], "easy")
    pipeline.materialize([problem_preview], "easy")
    pipeline.submit_generation("easy", limit=2)
    pipeline.drain()
    pipeline.submit_generation("easy", limit=2)  # nothing left to ask: zeros
    samples = pipeline.materialize([cot_samples, cod_samples], "easy")
    for asset in (dataset_report, hf_dataset):
        assert dg.materialize([asset], instance=instance, resources={"hub": HubResource()}).success

    found = {}
    for asset in [*ALL_ASSETS, dataset_report, hf_dataset]:
        records = instance.fetch_materializations(asset.key, limit=100).records
        assert records, asset.key
        for record in records:
            for key, value in record.asset_materialization.metadata.items():
                found.setdefault(key, set()).add(type(value).__name__)
    assert found == types_of(METADATA_TYPES)
    checks = {}
    for evaluation in sources.get_asset_check_evaluations() + samples.get_asset_check_evaluations():
        for key, value in evaluation.metadata.items():
            checks.setdefault(f"{evaluation.check_name}.{key}", set()).add(type(value).__name__)
    assert checks == types_of(CHECK_TYPES)
