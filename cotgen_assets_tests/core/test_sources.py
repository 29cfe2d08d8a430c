"""source_problems on the real GSM8K and MATH copies in ../shared/data."""

import dataclasses
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cotgen_assets.core.scenarios import ScenarioError, get_scenario, parse_filter
from cotgen_assets_tests.harness.sources import load_source_problems


@pytest.mark.parametrize(
    "name, rows, matched", [("easy", 7473, 7473), ("medium", 3099, 3099), ("hard", 4116, 4118)]
)
def test_scenarios_have_the_expected_rows_and_answers(name, rows, matched):
    problems, dropped, _ = load_source_problems(get_scenario(name))
    assert problems.num_rows == rows
    assert problems.num_rows + len(dropped) == matched
    assert all(problems["answer"].to_pylist()), "every kept row has a reference answer"
    ids = problems["problem_id"].to_pylist()
    assert len(set(ids)) == len(ids)


def test_two_math_rows_without_a_boxed_answer_are_dropped_and_named():
    # Both are Level 5 Number Theory solutions ending in an empty "\boxed{}" in the source data.
    _, dropped, _ = load_source_problems(get_scenario("hard"))
    assert dropped == ["hard-5529", "hard-5531"]


def test_reference_answers_and_source_columns():
    easy, _, _ = load_source_problems(get_scenario("easy"))
    first = easy.slice(0, 1).to_pylist()[0]
    assert first["problem_id"] == "easy-0"
    assert first["question"].startswith("Natalia sold clips to 48 of her friends in April")
    assert first["answer"] == "72"
    assert (first["source_dataset"], first["source_config"], first["source_split"], first["source_row"]) == (
        "gsm8k",
        "main",
        "train",
        0,
    )

    medium, _, _ = load_source_problems(get_scenario("medium"))
    assert set(medium["level"].to_pylist()) == {"Level 1", "Level 2", "Level 3"}
    assert set(medium["type"].to_pylist()) == {"Algebra", "Intermediate Algebra", "Precalculus"}
    row = medium.slice(0, 1).to_pylist()[0]
    assert row["problem_id"] == f"medium-{row['source_row']}"
    assert f"\\boxed{{{row['answer']}}}" in row["solution"]


def test_gsm8k_answers_lose_thousands_separators():
    easy, _, _ = load_source_problems(get_scenario("easy"))
    answers = easy["answer"].to_pylist()
    assert not any("," in a for a in answers)
    assert all(a.lstrip("-").replace(".", "", 1).isdigit() for a in answers)


def test_ids_are_stable_across_loads():
    first, _, _ = load_source_problems(get_scenario("hard"))
    second, _, _ = load_source_problems(get_scenario("hard"))
    assert first["problem_id"].to_pylist() == second["problem_id"].to_pylist()


def _variant(name, **changes):
    return dataclasses.replace(get_scenario(name), **changes)


def test_unknown_filter_column_names_the_columns_that_exist():
    scenario = _variant("medium", filters=(parse_filter("difficulty=hard"),))
    with pytest.raises(
        ScenarioError, match=r"'difficulty'.*columns are \['problem', 'level', 'type', 'solution'\]"
    ):
        load_source_problems(scenario)


def test_filter_matching_nothing_is_an_error():
    scenario = _variant("medium", filters=(parse_filter("level=Level 9"),))
    with pytest.raises(ScenarioError, match="no row of 'qwedsacf/competition_math'.*level=Level 9"):
        load_source_problems(scenario)


def test_unknown_question_column():
    with pytest.raises(ScenarioError, match="column 'prompt' is not in dataset 'gsm8k'"):
        load_source_problems(_variant("easy", question_column="prompt"))


def test_unknown_dataset_says_how_to_point_at_a_local_copy():
    with pytest.raises(ScenarioError, match="could not load dataset 'acme/no-such-set'.*COTGEN_DATASETS_DIR"):
        load_source_problems(_variant("easy", dataset="acme/no-such-set"))


def test_malformed_dataset_file(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"this is not parquet")
    with pytest.raises(ScenarioError, match="could not load dataset .* from the scenario's path"):
        load_source_problems(_variant("easy", path=str(broken)))


def test_explicit_path_comes_before_the_datasets_dir(tmp_path, monkeypatch):
    import os

    table = pq.read_table(os.path.join(os.environ["COTGEN_DATASETS_DIR"], "gsm8k/main/test.parquet"))
    local = tmp_path / "mine.parquet"
    pq.write_table(table.slice(0, 12), local)
    problems, _, dataset_rows = load_source_problems(_variant("easy", path=str(local)))
    assert problems.num_rows == dataset_rows == 12


def test_benchmarks_resolve_like_scenarios(tmp_path):
    import dataclasses as dc

    from cotgen_assets.core.scenarios import load_benchmarks
    from cotgen_assets.core.sources import benchmark_location, load_benchmark_questions

    math_test = load_benchmarks()["math_test"]
    assert benchmark_location(math_test) == (
        os.path.join(os.environ["COTGEN_DATASETS_DIR"], "hendrycks_math"),
        "$COTGEN_DATASETS_DIR",
    )
    algebra = dc.replace(math_test, configs=("algebra",))
    assert len(load_benchmark_questions(algebra)) == 1187
    math500 = dc.replace(
        load_benchmarks()["math500"], path=os.path.join(os.environ["COTGEN_DATASETS_DIR"], "MATH-500")
    )
    assert len(load_benchmark_questions(math500)) == 500
    with pytest.raises(ScenarioError, match=r"benchmark 'math500'.*from the benchmark's path.*`path:`"):
        load_benchmark_questions(dc.replace(math500, path=str(tmp_path / "missing")))
    with pytest.raises(ScenarioError, match=r"benchmark 'math_test': column 'question' is not in"):
        load_benchmark_questions(dc.replace(algebra, question_column="question"))


def test_an_edited_local_copy_loads_as_it_is_now(tmp_path, monkeypatch):
    """datasets caches a local folder by its name: an edited copy once loaded as it was before."""
    import shutil

    source = os.path.join(os.environ["COTGEN_DATASETS_DIR"], "gsm8k")
    copy = tmp_path / "gsm8k"
    shutil.copytree(source, copy)
    monkeypatch.setenv("COTGEN_DATASETS_DIR", str(tmp_path))
    assert load_source_problems(get_scenario("easy"))[0]["question"][0].as_py().startswith("Natalia")
    table = pq.read_table(copy / "main" / "train.parquet")
    questions = table["question"].to_pylist()
    questions[0] = "Edited: " + questions[0]
    (copy / "main" / "train.parquet").chmod(0o644)
    pq.write_table(table.set_column(0, "question", pa.array(questions)), copy / "main" / "train.parquet")
    assert load_source_problems(get_scenario("easy"))[0]["question"][0].as_py().startswith("Edited: Natalia")
