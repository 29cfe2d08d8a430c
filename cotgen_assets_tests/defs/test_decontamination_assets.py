"""Decontamination as a user meets it: source_problems, samples made before it existed, summarization."""

import json
import logging
import os
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from cotgen_assets.core.decontamination import decontamination_path, words
from cotgen_assets.core.scenarios import DEFAULT_SCENARIOS_FILE
from cotgen_assets.core.storage import source_problems_path
from cotgen_assets.defs.assets.sources import _decontamination_note, source_problems
from cotgen_assets.publish.trace import trace
from cotgen_assets_tests.harness.decontamination import EDITS
from cotgen_assets_tests.harness.pipeline import read_jsonl

pytestmark = pytest.mark.pipeline


def small_medium_dataset(folder: Path) -> Path:
    """Six MATH training and six MATH test problems (Algebra, Level 1), in that order."""
    math = pq.read_table(Path(os.environ["COTGEN_DATASETS_DIR"]) / "competition_math" / "train.parquet")
    rows = pc.and_(pc.equal(math["type"], "Algebra"), pc.equal(math["level"], "Level 1"))
    algebra = pc.indices_nonzero(rows).to_pylist()
    train = [row for row in algebra if row < 7500][:6]
    test = [row for row in algebra if row >= 7500][:6]  # rows 7500-12499 are MATH's test split
    path = folder / "medium.parquet"
    pq.write_table(math.take(train + test), path)
    return path


def edited_medium_dataset(folder: Path) -> tuple[Path, list[str]]:
    """Three MATH training problems of `medium`, then MATH test problems of `medium` edited as scraped
    data is, one per edit of EDITS: short ones (no 13-gram to share) get an instruction or look-alike
    letters, ones with an apostrophe or `<` get HTML entities. Returns the file and the edited texts."""
    math = pq.read_table(Path(os.environ["COTGEN_DATASETS_DIR"]) / "competition_math" / "train.parquet")
    levels = pc.is_in(math["level"], pa.array(["Level 1", "Level 2", "Level 3"]))
    kinds = pc.is_in(math["type"], pa.array(["Algebra", "Intermediate Algebra", "Precalculus"]))
    medium = pc.indices_nonzero(pc.and_(levels, kinds)).to_pylist()
    problems = math["problem"].to_pylist()
    test = [row for row in medium if row >= 7500]  # rows 7500-12499 are MATH's test split
    short = iter(row for row in test if len(words(problems[row])) < 8)
    quoted = iter(row for row in test if "'" in problems[row] or "<" in problems[row])
    rows = [row for row in medium if row < 7500][:3]
    texts = [problems[row] for row in rows]
    for kind, edit in EDITS.items():
        row = next(quoted if "HTML" in kind else short)
        rows.append(row)
        texts.append(edit(problems[row]))
    table = math.take(rows)
    table = table.set_column(table.schema.get_field_index("problem"), "problem", pa.array(texts))
    path = folder / "medium-edited.parquet"
    pq.write_table(table, path)
    return path, texts[3:]


def scenarios_file(folder: Path, dataset: Path, opt_out: bool, checks: list[str] | None = None) -> Path:
    """The packaged scenarios with `medium` reading `dataset`; `checks` is its `decontaminate:` list."""
    document = yaml.safe_load(DEFAULT_SCENARIOS_FILE.read_text())
    document["scenarios"]["medium"]["path"] = str(dataset)
    if opt_out:
        checks = []
    if checks is not None:
        document["scenarios"]["medium"]["decontaminate"] = checks
    path = folder / f"scenarios-{'all' if checks is None else '-'.join(checks) or 'none'}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def metadata_of(result, asset: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(asset)[0].metadata.items()}


def test_samples_made_before_decontamination_are_kept_counted_and_never_summarized(
    pipeline, tmp_path, monkeypatch
):
    dataset = small_medium_dataset(tmp_path)
    monkeypatch.setenv("COTGEN_SCENARIOS_FILE", str(scenarios_file(tmp_path, dataset, opt_out=True)))
    assert "NOT decontaminated: medium" in _decontamination_note()
    before = metadata_of(pipeline.materialize([source_problems], "medium"), "source_problems")
    assert before["decontaminated"] is False and "NOT decontaminated" in before["decontamination"]
    assert before["num_rows"] == 12
    pipeline.submit_generation("medium", limit=12, ask="missing")

    # The user upgrades: decontamination on (the default), the problem table materialized again.
    monkeypatch.setenv("COTGEN_SCENARIOS_FILE", str(scenarios_file(tmp_path, dataset, opt_out=False)))
    result = pipeline.materialize([source_problems], "medium")
    after = metadata_of(result, "source_problems")
    assert (after["num_rows"], after["num_contaminated"]) == (6, 6)
    assert after["num_contaminated_by_benchmark"]["math_test"] == 6
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"no_benchmark_overlap": True, "no_overlap_with_skipped_benchmarks": True}
    excluded = set(after["contaminated_ids"])

    cot_run = pipeline.run(pipeline.tick_until_launch()[0])
    cot = metadata_of(cot_run, "cot_samples")
    assert (cot["num_samples"], cot["num_contaminated"]) == (12, 6)  # paid for, so kept
    checks = {c.check_name: c.passed for c in cot_run.get_asset_check_evaluations()}
    assert checks["no_contaminated_samples"] is False
    summarization = metadata_of(cot_run, "summarization_batch")
    assert (summarization["num_requests"], summarization["num_skipped_contaminated"]) == (6, 6)

    pipeline.run(pipeline.tick_until_launch()[0])
    data = Path(os.environ["COTGEN_DATA_DIR"])
    assert len(read_jsonl(data / "cot_medium.jsonl")) == 12
    drafted = {record["id"] for record in read_jsonl(data / "cod_medium.jsonl")}
    assert len(drafted) == 6 and not drafted & excluded
    contaminated = sorted(excluded)[0]
    (sample,) = trace(contaminated)["samples"]
    assert "source_problems leaves this problem out (contaminated)" in sample["no_cod_because"]

    # Fill counts only clean, correct samples: the six clean problems all have one, so nothing is asked.
    fill = metadata_of(pipeline.submit_generation("medium", limit=6), "generation_batch")
    assert fill["num_requests"] == 0


def test_a_medium_scenario_checked_against_gsm8k_only_is_not_called_decontaminated(
    tmp_path, monkeypatch, instance, data_dir
):
    dataset = small_medium_dataset(tmp_path)
    scenarios = scenarios_file(tmp_path, dataset, opt_out=False, checks=["gsm8k_test"])
    monkeypatch.setenv("COTGEN_SCENARIOS_FILE", str(scenarios))
    assert "PARTLY decontaminated: medium (not checked against math_test, math500)" in (
        _decontamination_note()
    )
    result = dg.materialize([source_problems], partition_key="medium", instance=instance)
    metadata = metadata_of(result, "source_problems")
    assert metadata["decontaminated"] is False and metadata["num_rows"] == 12  # the 6 test problems kept
    assert metadata["benchmarks_skipped"] == ["math_test", "math500"]
    assert metadata["decontamination"].startswith("PARTLY decontaminated: checked against gsm8k_test only")
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    assert any("NOT checked against math_test, math500" in w for w in warnings), warnings

    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["no_benchmark_overlap"].passed  # what it did check, it checked
    skipped = checks["no_overlap_with_skipped_benchmarks"]
    assert not skipped.passed and skipped.severity == dg.AssetCheckSeverity.WARN
    assert skipped.metadata["num_overlapping"].value == {"math_test": 6, "math500": 1}
    assert "6 kept problems match benchmarks this scenario does not check" in skipped.description


def test_benchmark_problems_edited_as_scraped_data_are_left_out_and_listed(
    tmp_path, monkeypatch, instance, data_dir
):
    """The probe: MATH test problems with an instruction added, HTML entities or look-alike letters,
    in a `medium` dataset: source_problems leaves them out and decontamination.json lists them."""
    dataset, edited = edited_medium_dataset(tmp_path)
    monkeypatch.setenv("COTGEN_SCENARIOS_FILE", str(scenarios_file(tmp_path, dataset, opt_out=False)))
    result = dg.materialize([source_problems], partition_key="medium", instance=instance)
    metadata = metadata_of(result, "source_problems")
    kept = pq.read_table(source_problems_path("medium"))
    assert [q for q in kept["question"].to_pylist() if q in edited] == []
    assert metadata["num_rows"] == 3  # the three training problems, nothing else
    saved = json.loads(decontamination_path("medium").read_text())
    assert saved["decontaminated"] is True
    assert len(saved["contaminated_ids"]) == len(edited) == len(set(edited))
    assert saved["num_contaminated_by_benchmark"]["math_test"] == len(edited)
