"""Decontamination on the real data in ../shared/data (issue 13)."""

import csv
import dataclasses
import json
import os
from pathlib import Path

import pyarrow as pa
import pytest

from cotgen_assets.core.decontamination import (
    NGRAM,
    benchmark_index,
    decontaminate,
    deduplicate,
    normalize,
    verify_no_overlap,
    words,
)
from cotgen_assets.core.scenarios import ScenarioError, load_scenarios_and_benchmarks
from cotgen_assets.core.sources import load_benchmark_questions, load_source_problems

DATA = Path(os.environ["COTGEN_DATASETS_DIR"])


@pytest.fixture(scope="module")
def defaults():
    return load_scenarios_and_benchmarks()


@pytest.fixture(scope="module")
def results(defaults):
    """Each default scenario's problems before and after decontamination, and the report."""
    scenarios, benchmarks = defaults
    out = {}
    for name, scenario in scenarios.items():
        problems, _, _ = load_source_problems(scenario)
        clean, report = decontaminate(problems, scenario, benchmarks)
        out[name] = (problems, clean, report)
    return out


@pytest.fixture(scope="module")
def math_index():
    """competition_math row -> (original MATH split, original file), the README's independent oracle."""
    with open(DATA / "competition_math" / "source_index.csv", newline="") as handle:
        return {int(r["row"]): (r["hendrycks_split"], r["hendrycks_path"]) for r in csv.DictReader(handle)}


def test_benchmarks_load_with_their_row_counts(defaults):
    _, benchmarks = defaults
    sizes = {name: len(load_benchmark_questions(b)) for name, b in benchmarks.items()}
    assert sizes == {"gsm8k_test": 1319, "math_test": 5000, "math500": 500}


def test_counts_per_scenario(results):
    problems, clean, report = results["easy"]
    assert report.by_match["exact"] == 0
    assert 0 < report.by_benchmark["gsm8k_test"] <= 10  # a handful of 13-word overlaps
    assert report.by_benchmark["math_test"] == report.by_benchmark["math500"] == 0
    assert clean.num_rows == 7473 - report.num_contaminated - report.num_duplicates

    _, clean, report = results["medium"]
    assert clean.num_rows <= 1830
    _, clean, report = results["hard"]
    assert clean.num_rows <= 2453
    for name in ("easy", "medium", "hard"):
        problems, clean, report = results[name]
        assert report.num_kept == clean.num_rows
        assert clean.num_rows + report.num_contaminated + report.num_duplicates == problems.num_rows


def test_every_math_test_problem_is_excluded(results, math_index):
    """All 2,932 MATH-test rows of medium + hard (308 of them MATH-500) are left out."""
    excluded_test = 0
    for name in ("medium", "hard"):
        problems, clean, report = results[name]
        kept_rows = set(clean["source_row"].to_pylist())
        test_rows = {r for r in problems["source_row"].to_pylist() if math_index[r][0] == "test"}
        assert not test_rows & kept_rows
        excluded = set(report.contaminated_ids)
        assert {f"{name}-{r}" for r in test_rows} <= excluded
        excluded_test += len(test_rows)
    assert excluded_test == 2932


def test_every_math500_problem_is_excluded(results, math_index):
    by_file = {path: row for row, (_, path) in math_index.items()}
    with open(DATA / "MATH-500" / "test.jsonl") as handle:
        math500_rows = {by_file[json.loads(line)["unique_id"]] for line in handle}
    assert len(math500_rows) == 500
    inside = 0
    for name in ("medium", "hard"):
        problems, clean, _ = results[name]
        rows = set(problems["source_row"].to_pylist()) & math500_rows
        assert not rows & set(clean["source_row"].to_pylist())
        inside += len(rows)
    assert inside == 308


def test_dropping_rows_keeps_the_other_ids_and_rows(results):
    for name in ("easy", "medium", "hard"):
        problems, clean, report = results[name]
        before = {r["problem_id"]: r for r in problems.to_pylist()}
        for row in clean.to_pylist():
            assert row == before[row["problem_id"]]
            assert row["problem_id"] == f"{name}-{row['source_row']}"
        assert set(before) - set(clean["problem_id"].to_pylist()) == set(report.excluded_ids)


def test_the_written_table_passes_the_check_and_the_raw_one_fails(defaults, results):
    scenarios, benchmarks = defaults
    problems, clean, report = results["hard"]
    chosen = [benchmarks[b] for b in scenarios["hard"].decontaminate]
    assert verify_no_overlap(clean, chosen) == []
    assert sorted(verify_no_overlap(problems, chosen)) == sorted(report.contaminated_ids)


def _table(questions: list[str], scenario: str = "probe") -> pa.Table:
    return pa.table({"problem_id": [f"{scenario}-{i}" for i in range(len(questions))], "question": questions})


def _probe(defaults, **changes):
    scenarios, _ = defaults
    return dataclasses.replace(scenarios["medium"], name="probe", **changes)


def test_planted_near_duplicates_are_caught(defaults):
    scenarios, benchmarks = defaults
    math500 = load_benchmark_questions(benchmarks["math500"])
    original = next(q for q in math500 if "\\frac" in q and "$" in q and len(words(q)) > 30)
    respaced = original.replace("\\frac", "\\dfrac").replace("$", "$ ").replace(" ", "\\,  ")
    assert respaced != original and normalize(respaced) == normalize(original)
    gsm = load_benchmark_questions(benchmarks["gsm8k_test"])[17]
    extended = "Here is a new puzzle for the class. " + gsm.replace(".", ". Think carefully.", 1)
    clean_text = (
        "What is the sum of all values of $y$ for which the expression $\\frac{y+6}{y^2-5y+4}$ is "
        "undefined? Express your answer as a common fraction in simplest form."
    )
    table = _table([clean_text, respaced, extended])
    kept, report = decontaminate(table, _probe(defaults), benchmarks)
    assert kept["problem_id"].to_pylist() == ["probe-0"], report.examples
    matches = {e["problem_id"]: (e["benchmark"], e["match"]) for e in report.examples}
    assert matches["probe-1"] == ("math_test", "exact")  # the first benchmark in file order that matches
    assert matches["probe-2"] == ("gsm8k_test", "ngram")
    assert report.by_benchmark == {"gsm8k_test": 1, "math_test": 1, "math500": 1}  # MATH-500 ⊂ MATH test


def test_a_clean_problem_sharing_common_phrases_is_kept(defaults):
    _, benchmarks = defaults
    index = benchmark_index(benchmarks.values())
    # Phrases that occur all over MATH test, in an order no benchmark problem has.
    text = (
        "Let $x$ be a positive real number. What is the smallest possible value of $x$ such that the "
        "remainder when $x^2$ is divided by $7$ is $2$? Express your answer as a common fraction."
    )
    assert index.match(text) is None
    assert len(words(text)) > NGRAM


def test_short_benchmark_problems(defaults):
    _, benchmarks = defaults
    index = benchmark_index(benchmarks.values())
    math_test = load_benchmark_questions(benchmarks["math_test"])
    medium_length = next(q for q in math_test if 9 <= len(words(q)) < NGRAM)
    caught = index.match("First, a warm-up. " + medium_length + " Then explain your steps.")
    assert caught is not None and caught.match == "ngram"
    tiny = next(q for q in math_test if len(words(q)) < 5 and "$" in q)
    assert index.match(tiny).match == "exact"
    assert index.match("First, a warm-up. " + tiny + " Then explain your steps.") is None


def test_an_opted_out_scenario_says_so(defaults):
    _, benchmarks = defaults
    math500 = load_benchmark_questions(benchmarks["math500"])
    table = _table([math500[0], math500[1], "  " + math500[0].upper()])
    kept, report = decontaminate(table, _probe(defaults, decontaminate=()), benchmarks)
    assert not report.decontaminated and report.benchmarks == ()
    assert "NOT decontaminated" in report.note()
    assert report.metadata()["decontaminated"] is False
    # Still deduplicated: the third row repeats the first in other case and spacing.
    assert kept["problem_id"].to_pylist() == ["probe-0", "probe-1"]
    assert report.duplicate_ids == {"probe-2": "probe-0"}


def test_repeats_keep_the_first_id():
    assert deduplicate(["A  b?", "c", "a B", "c.", "d"]) == {2: 0, 3: 1}


def test_unknown_benchmark_in_a_hand_made_scenario(defaults):
    _, benchmarks = defaults
    with pytest.raises(ScenarioError, match=r"scenario 'probe'.*unknown benchmarks \['mmlu'\]"):
        decontaminate(_table(["x"]), _probe(defaults, decontaminate=("mmlu",)), benchmarks)


def test_report_metadata_keys(results):
    _, _, report = results["medium"]
    metadata = report.metadata()
    assert metadata["num_contaminated"] == report.num_contaminated > 1000
    assert set(metadata["num_contaminated_by_benchmark"]) == {"gsm8k_test", "math_test", "math500"}
    assert metadata["contamination_ngram"] == NGRAM and str(NGRAM) in metadata["contamination_rule"]
    example = metadata["contamination_examples"][0]
    assert set(example) == {"problem_id", "question", "benchmark", "benchmark_question", "match", "shared"}
    json.dumps(metadata)  # plain values only
