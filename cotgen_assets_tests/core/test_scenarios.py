import os
import re

import pytest

from cotgen_assets.core.scenarios import (
    Benchmark,
    Filter,
    ScenarioError,
    load_benchmarks,
    load_scenarios,
    load_scenarios_and_benchmarks,
    parse_filter,
)
from cotgen_assets.defs.partitions import scenario_partitions


def test_filter_syntax_of_the_old_cli():
    assert parse_filter("level=Level 1,Level 2") == Filter("level", ("Level 1", "Level 2"))
    assert parse_filter(" type = Algebra ") == Filter("type", ("Algebra",))


@pytest.mark.parametrize(
    "text, message",
    [
        ("level", "not of the form column=value1,value2"),
        ("=Level 1", "not of the form"),
        ("level=", "has no values"),
        ("level= , ", "has no values"),
    ],
)
def test_bad_filters_are_named(text, message):
    with pytest.raises(ScenarioError, match=message):
        parse_filter(text)


def test_default_scenarios_are_the_partitions():
    scenarios = load_scenarios()
    assert list(scenarios) == ["easy", "medium", "hard"]
    assert scenario_partitions.get_partition_keys() == ["easy", "medium", "hard"]
    assert scenarios["easy"].dataset == "gsm8k" and scenarios["easy"].config == "main"
    assert [str(f) for f in scenarios["hard"].filters] == [
        "level=Level 4,Level 5",
        "type=Algebra,Intermediate Algebra,Precalculus,Number Theory",
    ]
    assert all(s.limit == 1000 for s in scenarios.values())


GOOD = """
scenarios:
  tiny:
    dataset: gsm8k
    config: main
    split: test
    question_column: question
    solution_column: answer
    answer_format: gsm8k
"""


def test_a_user_scenario_gets_defaults(tmp_path):
    path = tmp_path / "scenarios.yaml"
    path.write_text(GOOD)
    tiny = load_scenarios(path)["tiny"]
    assert (tiny.suffix, tiny.limit, tiny.filters) == ("tiny", 1000, ())
    assert (tiny.expected_accuracy, tiny.auto_fill, tiny.max_rounds) == (None, False, 3)


def test_fill_round_settings_are_read(tmp_path):
    path = tmp_path / "scenarios.yaml"
    path.write_text(GOOD + "    expected_accuracy: 0.6\n    auto_fill: true\n    max_rounds: 2\n")
    tiny = load_scenarios(path)["tiny"]
    assert (tiny.expected_accuracy, tiny.auto_fill, tiny.max_rounds) == (0.6, True, 2)


@pytest.mark.parametrize(
    "text, message",
    [
        ("scenarios: [", "not valid YAML"),
        ("scenarios: {}", "needs a non-empty `scenarios:` mapping"),
        (
            "other: 1",
            "unknown top-level key\\(s\\) \\['other'\\]; known keys: \\['benchmarks', 'scenarios'\\]",
        ),
        ("scenarios:\n  tiny: [[[[[[[[[[[1]]]]]]]]]]]", "line 2 nests deeper than 10 levels"),
        (GOOD.replace("split: test", "split: test\n    colour: red"), "unknown fields \\['colour'\\]"),
        (GOOD.replace("    dataset: gsm8k\n", ""), "lacks required fields \\['dataset'\\]"),
        (GOOD + "    limit: 0\n", "limit: Input should be greater than 0, got 0"),
        (GOOD + "    limit: true\n", "limit: Input should be a valid integer, got True"),
        (GOOD + "    filters: ['level=']\n", "'level' has no values"),
        (
            GOOD.replace("answer_format: gsm8k", "answer_format: guess"),
            "answer_format: Input should be 'gsm8k' or 'boxed', got 'guess'",
        ),
        (GOOD + "    expected_accuracy: 0\n", "'tiny'.*expected_accuracy: Input should be greater than 0"),
        (GOOD + "    expected_accuracy: 80%\n", "expected_accuracy: Input should be a valid number.*'80%'"),
        (GOOD + "    expected_accuracy: 1.5\n", "expected_accuracy: Input should be less than or equal to 1"),
        (GOOD + "    auto_fill: yes please\n", "auto_fill: Input should be a valid boolean.*'yes please'"),
        (GOOD + "    max_rounds: 0\n", "max_rounds: Input should be greater than or equal to 1, got 0"),
    ],
)
def test_malformed_scenarios_file_says_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "scenarios.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=message):
        load_scenarios(path)


def test_every_problem_of_a_scenario_is_named_at_once(tmp_path):
    path = tmp_path / "scenarios.yaml"
    bad = GOOD.replace("answer_format: gsm8k", "answer_format: guess") + "    colour: red\n    limit: 0\n"
    path.write_text(bad)
    with pytest.raises(ScenarioError) as raised:
        load_scenarios(path)
    assert str(raised.value) == (
        f"scenario 'tiny' in {path}: has unknown fields ['colour']; known fields: ['answer_format', "
        "'auto_fill', 'config', 'dataset', 'decontaminate', 'expected_accuracy', 'filters', 'limit', "
        "'max_rounds', 'online_max_requests', 'path', 'question_column', 'samples_per_problem', "
        "'solution_column', 'split', "
        "'suffix']; "
        "answer_format: Input should be 'gsm8k' or 'boxed', got 'guess'; "
        "limit: Input should be greater than 0, got 0"
    )


def test_missing_scenarios_file(tmp_path):
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenarios(tmp_path / "nope.yaml")


def test_a_scenarios_file_that_is_not_utf8_or_not_a_file_is_named(tmp_path):
    path = tmp_path / "scenarios.yaml"
    path.write_bytes(("# café\n" + GOOD).encode("latin-1"))  # saved by an editor in Latin-1
    with pytest.raises(ScenarioError) as raised:
        load_scenarios(path)
    assert str(raised.value) == (
        f"scenarios file {path} is not UTF-8 text (byte 0xe9 at offset 5): save it as UTF-8"
    )
    with pytest.raises(ScenarioError, match=f"scenarios file {tmp_path} cannot be read: Is a directory"):
        load_scenarios(tmp_path)


# --------------------------------------------------------------------------- names, suffixes, duplicates


@pytest.mark.parametrize(
    "text, message",
    [
        (
            GOOD + "    suffix: ../../../ESCAPED\n",
            r"scenario 'tiny'.*suffix '\.\./\.\./\.\./ESCAPED'.*\[A-Za-z0-9_-\]\+",
        ),
        (GOOD + "    suffix: a/b\n", r"scenario 'tiny'.*suffix 'a/b'"),
        (GOOD + "    suffix: ''\n", None),  # empty falls back to the name: accepted
        (GOOD.replace("  tiny:", "  ../../X:"), r"scenario '\.\./\.\./X'.*name.*\[A-Za-z0-9_-\]\+"),
        (GOOD.replace("  tiny:", "  'my set':"), r"scenario 'my set'.*name"),
        (GOOD.replace("  tiny:", "  yes:"), r"scenario True.*name.*quote it"),
    ],
)
def test_names_and_suffixes_are_plain_identifiers(tmp_path, text, message):
    path = tmp_path / "scenarios.yaml"
    path.write_text(text)
    if message is None:
        assert load_scenarios(path)["tiny"].suffix == "tiny"
        return
    with pytest.raises(ScenarioError, match=message):
        load_scenarios(path)


def test_two_scenarios_may_not_share_a_suffix(tmp_path):
    other = GOOD.split("scenarios:\n", 1)[1].replace("  tiny:", "  other:") + "    suffix: tiny\n"
    path = tmp_path / "scenarios.yaml"
    path.write_text(GOOD + other)
    with pytest.raises(ScenarioError, match=r"scenarios 'tiny' and 'other'.*suffix 'tiny'.*collide"):
        load_scenarios(path)


def test_a_duplicate_scenario_name_is_refused(tmp_path):
    twice = GOOD + GOOD.split("scenarios:\n", 1)[1].replace("split: test", "split: train")
    path = tmp_path / "scenarios.yaml"
    path.write_text(twice)
    with pytest.raises(ScenarioError, match=rf"{re.escape(str(path))}: duplicate key 'tiny' at line 10"):
        load_scenarios(path)


def test_a_duplicate_field_is_refused(tmp_path):
    path = tmp_path / "scenarios.yaml"
    path.write_text(GOOD + "    split: train\n")
    with pytest.raises(ScenarioError, match="duplicate key 'split'"):
        load_scenarios(path)


def test_the_code_location_fails_to_load_with_the_reason(tmp_path):
    """The partitions come from the scenarios file, so a bad file stops the definitions from loading."""
    import subprocess
    import sys

    path = tmp_path / "scenarios.yaml"
    path.write_text(GOOD + "    suffix: ../../../ESCAPED\n")
    env = {**os.environ, "COTGEN_SCENARIOS_FILE": str(path)}
    done = subprocess.run(
        [sys.executable, "-c", "import cotgen_assets.defs.partitions"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "ScenarioError" in done.stderr and "suffix '../../../ESCAPED' must match" in done.stderr


# --------------------------------------------------------------------------- benchmarks


def test_default_benchmarks_and_every_scenario_checks_all_of_them():
    scenarios, benchmarks = load_scenarios_and_benchmarks()
    assert load_benchmarks() == benchmarks
    assert list(benchmarks) == ["gsm8k_test", "math_test", "math500"]
    assert benchmarks["gsm8k_test"] == Benchmark("gsm8k_test", "openai/gsm8k", "test", "question", ("main",))
    assert len(benchmarks["math_test"].configs) == 7 and benchmarks["math500"].configs == (None,)
    assert all(s.decontaminate == tuple(benchmarks) for s in scenarios.values())


BENCH = """
benchmarks:
  mine:
    dataset: acme/mine
    split: test
    question_column: q
"""


def test_a_file_without_benchmarks_uses_the_packaged_ones(tmp_path):
    path = tmp_path / "scenarios.yaml"
    path.write_text(GOOD)
    assert load_scenarios(path)["tiny"].decontaminate == ("gsm8k_test", "math_test", "math500")
    path.write_text(GOOD + BENCH)
    assert load_scenarios(path)["tiny"].decontaminate == ("mine",)
    assert load_benchmarks(path)["mine"].configs == (None,)


@pytest.mark.parametrize(
    "extra, decontaminate",
    [("    decontaminate: []\n", ()), ("    decontaminate: [mine, mine]\n", ("mine",))],
)
def test_decontaminate_lists_benchmarks(tmp_path, extra, decontaminate):
    path = tmp_path / "scenarios.yaml"
    path.write_text(GOOD + extra + BENCH)
    assert load_scenarios(path)["tiny"].decontaminate == decontaminate


@pytest.mark.parametrize(
    "text, message",
    [
        (
            GOOD + "    decontaminate: [mmlu]\n" + BENCH,
            r"scenario 'tiny'.*unknown benchmarks \['mmlu'\].*\['mine'\]",
        ),
        (
            GOOD + "    decontaminate: mine\n" + BENCH,
            "decontaminate: Input should be a valid list, got 'mine'",
        ),
        (
            GOOD + "    decontaminate:\n" + BENCH,
            r"decontaminate must be a list of benchmark names \(\[\] opts out",
        ),
        (
            GOOD + BENCH.replace("    split: test\n", ""),
            r"benchmark 'mine'.*lacks required fields \['split'\]",
        ),
        (GOOD + BENCH + "    configs: []\n", r"benchmark 'mine'.*configs: List should have at least 1 item"),
        (GOOD + BENCH + "    config: a\n    configs: [b]\n", "either `config:` or `configs:`"),
        (GOOD + BENCH + "    colour: red\n", r"benchmark 'mine'.*unknown fields \['colour'\]"),
        (GOOD + BENCH.replace("  mine:", "  ../m:"), r"benchmark '\.\./m'.*must match"),
        (GOOD + BENCH + BENCH.split("benchmarks:\n")[1], "duplicate key 'mine'"),
    ],
)
def test_malformed_benchmarks(tmp_path, text, message):
    path = tmp_path / "scenarios.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=message):
        load_scenarios(path)


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD.replace("split: test", "split: [train, test]"), "split: Input should be a valid string"),
        (GOOD.replace("dataset: gsm8k", "dataset: {id: gsm8k}"), "dataset: Input should be a valid string"),
        (GOOD + BENCH.replace("question_column: q", "question_column: [q]"), "question_column: Input should"),
    ],
)
def test_a_list_or_mapping_where_text_belongs_is_refused(tmp_path, text, message):
    """Not read as the text "['train', 'test']", which would fail later as an unknown split."""
    path = tmp_path / "scenarios.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=rf"in {re.escape(str(path))}: .*{re.escape(message)}"):
        load_scenarios(path)
