"""Decontamination on the real data in $COTGEN_DATASETS_DIR: benchmark matches and repeats left out."""

import csv
import dataclasses
import html
import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pytest

from cotgen_assets.core.decontamination import (
    NGRAM,
    SHORT_MIN,
    BenchmarkIndex,
    Decontaminator,
    benchmark_index,
    normalize,
    words,
)
from cotgen_assets.core.scenarios import ScenarioError, load_scenarios_and_benchmarks
from cotgen_assets.core.sources import load_benchmark_questions
from cotgen_assets_tests.harness.decontamination import EDITS, escaped
from cotgen_assets_tests.harness.sources import decontaminate, load_source_problems

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
    """competition_math row -> (original MATH split, original file), the docs' independent oracle."""
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


def test_containment_leaves_out_no_shipped_training_problem(results):
    """A benchmark problem inside a longer one counts only as whole sentences, so the shipped training
    problems keep their numbers (each one it left out would be a benchmark problem plus a sentence)."""
    kept = {name: clean.num_rows for name, (_, clean, _) in results.items()}
    assert kept == {"easy": 7469, "medium": 1712, "hard": 2267}
    assert {name: report.by_match["contained"] for name, (_, _, report) in results.items()} == dict.fromkeys(
        kept, 0
    )


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
    with Decontaminator(scenarios["hard"], benchmarks) as check:
        assert check.overlapping(clean.to_batches()) == []
        assert sorted(check.overlapping(problems.to_batches())) == sorted(report.contaminated_ids)


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


def _in_long_words(mark: str):
    """Put an invisible character inside every word of 6+ letters, as hyphenation or a copy-paste does."""
    return lambda text: re.sub(r"[A-Za-z]{6,}", lambda m: m[0][:3] + mark + m[0][3:], text)


def _frac_unbraced(text: str) -> str:
    """`\frac{1}{2}` written `\frac12` (and `\frac{a}{b}` as `\frac ab`): what LaTeX accepts."""

    def short(m: re.Match) -> str:
        return "\\" + m[1] + (" " if m[2].isalpha() else "") + m[2] + m[3]

    return re.sub(r"\\([dt]?frac)\{(\w)\}\{(\w)\}", short, text)


def _dollars_to_parens(text: str) -> str:
    text = re.sub(r"\$\$(.+?)\$\$", r"\\[\1\\]", text, flags=re.DOTALL)
    return re.sub(r"\$(.+?)\$", r"\\(\1\\)", text, flags=re.DOTALL)


# One trivial change each, as a careless copy or a hostile tester makes them: none may
# turn a benchmark problem into a clean one.
VARIANTS = {
    "soft hyphen": _in_long_words("\u00ad"),
    "zero-width space": _in_long_words("\u200b"),
    "zero-width joiner": _in_long_words("\u200d"),
    "byte-order mark": lambda text: "\ufeff" + _in_long_words("\ufeff")(text),
    "non-breaking space": lambda text: text.replace(" ", "\u00a0"),
    "thin space": lambda text: text.replace(" ", "\u2009"),
    "Unicode minus": lambda text: text.replace("-", "\u2212"),
    "en dash": lambda text: text.replace("-", "\u2013"),
    "full-width digits": lambda text: text.translate({ord("0") + i: 0xFF10 + i for i in range(10)}),
    "\\frac12": _frac_unbraced,
    "thousands separators": lambda text: re.sub(
        r"(?<![\d.,{])[1-9]\d{3,}(?![\d.])", lambda m: f"{int(m[0]):,}", text
    ),
    "no thousands separators": lambda text: re.sub(r"(?<=\d)(?:,\\!|\{,\}|,)(?=\d{3}(?!\d))", "", text),
    "√ for \\sqrt": lambda text: text.replace("\\sqrt", "√"),
    "* for \\cdot": lambda text: re.sub(r"\\cdot(?![a-z])", "*", text),
    "\\cdot for \\times": lambda text: text.replace("\\times", "\\cdot"),
    "\\( \\) for $": _dollars_to_parens,
    "\\leq for \\le": lambda text: re.sub(r"\\([lg]e|ne)(?![a-z])", r"\\\1q", text),
    "π for \\pi": lambda text: re.sub(r"\\pi(?![a-z])\s*", "π", text),
    "° for ^\\circ": lambda text: re.sub(r"\^\s*\{?\\circ\}?", "°", text),
}


def test_formatting_variants_of_math500_problems_are_caught(defaults):
    """The probe: for each kind of change, the first MATH-500 problem it alters is still left out."""
    _, benchmarks = defaults
    index = benchmark_index(benchmarks.values())
    math500 = load_benchmark_questions(benchmarks["math500"])
    escaped = {}
    for kind, change in VARIANTS.items():
        original = next(q for q in math500 if change(q) != q)
        if index.match(change(original)) is None:
            escaped[kind] = change(original)
    assert escaped == {}


def test_formatting_variants_of_every_benchmark_problem_are_caught(defaults):
    """Each kind of change applied to every benchmark problem it alters: none escapes."""
    _, benchmarks = defaults
    index = benchmark_index(benchmarks.values())
    everything = [q for b in benchmarks.values() for q in load_benchmark_questions(b)]
    counts = {kind: escaped(index, everything, change) for kind, change in VARIANTS.items()}
    assert all(changed > 0 for changed, _ in counts.values()), counts
    assert {kind: len(escaped) for kind, (_, escaped) in counts.items() if escaped} == {}


def test_normalize_folds_formatting_but_not_meaning():
    same = [
        ("$\\frac12 + \\frac ab$", "$\\frac{1}{2} + \\frac{a}{b}$"),
        ("6,432 and 1{,}000 and 24,\\!000", "6432 and 1000 and 24000"),
        ("\u221a2 \u00b7 x \u2212 1 \u2264 \u03c0", "\\sqrt{2} \\cdot x - 1 \\le \\pi"),
        ("2 * 3 \\times 4", "2 \\cdot 3 \\cdot 4"),
        ("\\(x\\) and \\[y\\]", "$x$ and $$y$$"),
        ("x \\leq y \\geq z \\neq w", "x \\le y \\ge z \\ne w"),
        ("90\u00b0", "90^\\circ"),
        ("x\u00b2 + \u00bd + \u03b8", "x^2 + \\frac{1}{2} + \\theta"),
        ("pro\u00adblem\u200b \ufeffsolve\u2060d", "problem solved"),
        ("Lenny&#39;s &amp; Larry&#x27;s: $0 &lt; x &gt; y$", "Lenny's & Larry's: $0 < x > y$"),
        ("\u041d\u043ew m\u0430ny \u0440\u043eints? \u0391\u0392\u039f", "How many points? ABO"),
    ]
    for variant, original in same:
        assert normalize(variant) == normalize(original), variant
    different = [("(1,2)", "(12)"), ("1,2345", "12345"), ("x+1", "x-1"), ("\\frac{12}{5}", "\\frac{1}{25}")]
    for one, other in different:
        assert normalize(one) != normalize(other), one


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


STOCK_OPENING = "Let $a$ and $b$ be positive real numbers.  Find the minimum value of"
POLAR = (
    "in rectangular coordinates to polar coordinates.  Enter your answer in the form $(r,\\theta),$ "
    "where $r > 0$ and $0 \\le \\theta < 2 \\pi.$"
)
ANDREW = (
    "Andrew's grandfather's age is {} times Andrew's age. If Andrew's grandfather was {} years old "
    "when Andrew was born, how many years old is Andrew now?"
)


def test_boilerplate_is_no_evidence_but_other_numbers_are_no_disguise():
    """Phrasing several benchmark problems share proves nothing; a benchmark problem with other
    numbers, or with a sentence added, is still that problem."""
    index = BenchmarkIndex(
        {
            "bench": [
                STOCK_OPENING + " \\[a^2 + \\frac{1}{b}.\\]",
                STOCK_OPENING + " \\[\\frac{a}{b} + \\frac{5b}{a}.\\]",
                "Convert the point $(0,3)$ " + POLAR,
                "Convert the point $(1,-1)$ " + POLAR,
                ANDREW.format("eight", 56),
            ]
        }
    )
    different = [
        STOCK_OPENING + " \\[\\frac{1}{a} + \\frac{1}{b} + (a + b)^2.\\]",
        "In polar coordinates, the point $\\left( -2, \\frac{3 \\pi}{8} \\right)$ is equivalent to what "
        "other point, in the standard polar coordinate representation?  Enter your answer in the form "
        "$(r,\\theta),$ where $r > 0$ and $0 \\le \\theta < 2 \\pi.$",
    ]
    assert [index.match(q) for q in different] == [None, None]
    same = {
        "other numbers": "Convert the point $(2,-2)$ " + POLAR,
        "other numbers, a word changed": ANDREW.format("twelve", 55),
        "a sentence added": "A warm-up first. " + ANDREW.format("eight", 56),
    }
    assert {kind: index.match(q) is not None for kind, q in same.items()} == dict.fromkeys(same, True)


# Training problems the plain 13-word rule leaves out, by what they share with a benchmark problem.
SHARED_BOILERPLATE_ONLY = {
    "hard-3811": "Let $a$ and $b$ be positive real numbers.  Find the minimum value of …",
    "medium-7263": "Enter your answer in the form $(r,\\theta),$ where $r > 0$ and …",
    "hard-7198": "Enter your answer in the form \\[Ax + By + Cz + D = 0,\\]where $A,$ $B,$ …",
    "medium-6883": "(A) Line (B) Circle (C) Parabola (D) Ellipse (E) Hyperbola  Enter the letter …",
}
SAME_PROBLEM_OTHER_NUMBERS = {
    "medium-568": "Andrew's grandfather's age is twelve (eight) times … 55 (56) years old …",
    "medium-604": "The points (9,-5) and (-3,-1) (or (7,-6) and (-3,-4)) are the endpoints …",
    "medium-6825": "Convert the point $(1,-\\sqrt{3})$ (or $(0,3)$) in rectangular coordinates …",
    "hard-151": "Find the domain of … $\\sqrt{-10x^2-11x+6}$ (or $\\sqrt{-6x^2+11x-4}$) …",
    "hard-355": "If the sum of the squares of nonnegative real numbers … is $39$ (or $13$) …",
}


def test_boilerplate_only_matches_are_kept_and_templated_ones_left_out(results):
    kept = set().union(*(set(clean["problem_id"].to_pylist()) for _, clean, _ in results.values()))
    assert set(SHARED_BOILERPLATE_ONLY) <= kept
    assert not set(SAME_PROBLEM_OTHER_NUMBERS) & kept


def test_how_many_problems_the_boilerplate_rule_gives_back(defaults, results):
    """The docs' figures: problems the plain 13-word rule would leave out that are kept now."""
    _, benchmarks = defaults
    plain = BenchmarkIndex(
        {b.name: load_benchmark_questions(b) for b in benchmarks.values()}, ignore_boilerplate=False
    )
    back = {}
    for name, (_, clean, _) in results.items():
        back[name] = sum(plain.match(q) is not None for q in clean["question"].to_pylist())
    assert back == {"easy": 0, "medium": 31, "hard": 35}


def test_short_benchmark_problems(defaults):
    _, benchmarks = defaults
    index = benchmark_index(benchmarks.values())
    math_test = load_benchmark_questions(benchmarks["math_test"])
    medium_length = next(q for q in math_test if 9 <= len(words(q)) < NGRAM)
    caught = index.match("First, a warm-up. " + medium_length + " Then explain your steps.")
    assert caught is not None and caught.match == "ngram"
    tiny = next(q for q in math_test if len(words(q)) < 5 and q.endswith("$."))
    assert index.match(tiny).match == "exact"
    # As whole sentences of a longer text it is that problem; inside a longer formula or sentence not.
    caught = index.match("First, a warm-up. " + tiny + " Then explain your steps.")
    assert caught is not None and caught.match == "contained" and caught.benchmark_question == tiny
    formula_end = tiny.rindex("$")
    longer = [
        tiny[:formula_end] + " + 1" + tiny[formula_end:],
        tiny[:-1] + " and $x + 1$.",
        tiny[:-1] + " and explain your steps.",
    ]
    assert [index.match(text) for text in longer] == [None, None, None]


def _sample(benchmarks) -> list[str]:
    """The benchmark problems once each: every one under 20 words (few or no 13-grams, so an edit
    can slip between them) and every 10th longer one, to keep the quick loop quick."""
    distinct = dict.fromkeys(q for b in benchmarks.values() for q in load_benchmark_questions(b))
    return [q for i, q in enumerate(distinct) if len(words(q)) < 20 or i % 10 == 0]


def _ends_in_a_bare_formula(problem: str) -> bool:
    return len(words(problem)) < SHORT_MIN and problem.endswith("$")


def test_benchmark_problems_edited_as_scraped_data_are_caught(defaults):
    """An instruction added, HTML entities, look-alike letters: no edited benchmark problem escapes,
    but a problem of a few words ending in a formula with no full stop, text added with no break
    ("Expand $(x+5)^2$ Show your work."): that reads as one longer sentence (bench/decontaminate.py
    --edits measures all problems)."""
    _, benchmarks = defaults
    index = benchmark_index(benchmarks.values())
    sample = _sample(benchmarks)
    counts = {kind: escaped(index, sample, edit) for kind, edit in EDITS.items()}
    assert all(changed > 100 for changed, _ in counts.values()), counts
    slipped = {kind: texts for kind, (_, texts) in counts.items() if texts}
    assert list(slipped) == ["appended ' Show your work.'"], slipped
    originals = [text.removesuffix(" Show your work.") for text in slipped["appended ' Show your work.'"]]
    assert len(originals) == 7 and all(_ends_in_a_bare_formula(q) for q in originals), originals


def test_a_stock_problem_with_an_instruction_and_an_escaped_apostrophe(defaults):
    """Named examples: a problem made only of phrasing other benchmark problems share (no telling
    13-gram) with an answer cue added, and a GSM8K problem whose quotes became entities."""
    _, benchmarks = defaults
    index = benchmark_index(benchmarks.values())
    club = load_benchmark_questions(benchmarks["math_test"])[4360]
    assert club.startswith("My club has 15 members.  In how many ways can we choose a president")
    assert index.match(club + "\n\nAnswer:").benchmark_question == club
    carols = load_benchmark_questions(benchmarks["gsm8k_test"])[797]
    assert carols.startswith('Carrie is planning the caroling schedule. The choir plans to sing "Deck')
    assert index.match(html.escape(carols)).benchmark_question == carols


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


def test_a_partial_list_says_what_it_did_not_check(defaults):
    """`decontaminate: [gsm8k_test]` on MATH problems is no decontamination: it says what it skipped."""
    _, benchmarks = defaults
    math500 = load_benchmark_questions(benchmarks["math500"])
    table = _table([math500[0], math500[1], "What is $1 + 1$? Answer with a prime."])
    kept, report = decontaminate(table, _probe(defaults, decontaminate=("gsm8k_test",)), benchmarks)
    assert kept.num_rows == 3  # nothing of MATH was looked for
    assert not report.decontaminated and report.skipped == ("math_test", "math500")
    assert report.skipped_overlap == {"math_test": 2, "math500": 2}
    assert report.note().startswith("PARTLY decontaminated: checked against gsm8k_test only; NOT checked")
    assert "math_test, math500" in report.note() and "2 kept problems match them" in report.note()
    metadata = report.metadata()
    assert metadata["decontaminated"] is False and metadata["benchmarks"] == ["gsm8k_test"]
    assert metadata["benchmarks_skipped"] == ["math_test", "math500"]
    assert metadata["num_overlapping_skipped"] == {"math_test": 2, "math500": 2}


def test_repeats_keep_the_first_id(defaults):
    _, benchmarks = defaults
    kept, report = decontaminate(_table(["A  b?", "c", "a B", "c.", "d"]), _probe(defaults), benchmarks)
    assert kept["problem_id"].to_pylist() == ["probe-0", "probe-1", "probe-4"]
    assert report.duplicate_ids == {"probe-2": "probe-0", "probe-3": "probe-1"}


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
