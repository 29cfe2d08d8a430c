"""Decontamination: keep benchmark problems (GSM8K test, MATH test, MATH-500) out of the training data.

A problem is contaminated when, after `normalize`, it equals a benchmark problem, or when it shares
a run of `NGRAM` = 13 consecutive words with one (`words`): the GPT-3 paper's 13-gram test, which
open-r1 also uses for math. 13 words is long enough that shared phrases ("Express your answer as a
common fraction." is 7 words) do not count, and short enough that a benchmark problem with a sentence
added or a number reworded still matches. Words are letter/digit runs with LaTeX commands and
Asymptote figure code left out, so formula spacing and figure boilerplate do not make matches.
Both are taken after `_fold`, so that a benchmark problem retyped with other characters (a soft
hyphen inside a word, a Unicode minus, full-width digits, `\\frac12`, `6,432`, `√`, HTML entities
such as `&lt;` and `&#39;` from a scraped page, Cyrillic or Greek letters drawn like Latin ones) is
still itself.
A shared 13-gram counts only when it is telling: boilerplate, a run made only of phrasing that
several benchmark problems share (an instruction such as "Enter your answer in the form
$(r,\\theta),$ where …"), does not show that two problems are the same, unless they also have the
same words apart from their numbers (the benchmark problem with other numbers); see `BenchmarkIndex`.
A benchmark problem shorter than 13 words has no 13-gram: it counts as one n-gram of its own length
if it has at least `SHORT_MIN` = 8 words (a problem containing all of it matches).
And a problem that holds a whole benchmark problem as whole sentences matches it, whatever the
benchmark problem's length or phrasing ("contained"): the benchmark problem with an instruction
("Show your work.", "Answer:") or a preamble ("Problem:") added. Whole sentences only, so that a short
benchmark problem ("Compute $\\dbinom{8}{4}$.") inside a longer formula or sentence ("Compute
$\\dbinom{8}{4} + \\dbinom{8}{5}$.") is no match: that is another problem.

Plain logic (no dagster): the source_problems asset calls `decontaminate`, its check calls
`verify_no_overlap`. Benchmarks are read once per process (`benchmark_index` is cached).
"""

import html
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import pyarrow as pa

from cotgen_assets.core.scenarios import Benchmark, Scenario, ScenarioError
from cotgen_assets.core.sources import benchmark_location, load_benchmark_questions
from cotgen_assets.core.storage import atomic_write, scenario_dir

NGRAM = 13
SHORT_MIN = 8
STOCK = 8  # words in a stock phrase
STOCK_PROBLEMS = 2  # different benchmark problems that contain it, at least
EXAMPLES = 5
RULE = (
    f"contaminated = same normalised text (formatting, HTML entities, look-alike letters, case, "
    f"whitespace, punctuation folded) as a benchmark problem, or a shared run of {NGRAM} words, unless "
    f"every word of the run lies in a {STOCK}-word phrase that {STOCK_PROBLEMS} or more benchmark problems "
    f"contain (boilerplate) and the two problems differ in more than their numbers (benchmark problems "
    f"of {SHORT_MIN}-{NGRAM - 1} words: all of it), or a run of whole sentences that is a benchmark "
    f"problem (an instruction or preamble added)"
)

# Characters that show nothing (soft hyphen, zero-width space and joiners, direction marks, word
# joiner, invisible operators, byte-order mark): inside a word they would split it in two.
_INVISIBLE = re.compile("[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
_SUPERSCRIPTS = str.maketrans(  # x² is x^2 (NFKC would make it x2)
    {c: f"^{d}" for d, c in enumerate("\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")}
)
_GREEK = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma "
    "sigma tau upsilon phi chi psi omega"
).split()  # α (U+03B1) to ω (U+03C9), final sigma included
# Symbols typed as characters (looked up after NFKC and lowercasing): dashes and the minus sign
# are "-", × and the dots are "*", and ÷ ≤ ≥ ≠ ∞ ° and Greek letters are their LaTeX commands.
_SYMBOLS = str.maketrans(
    {
        **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2796\ufe58", "-"),
        **dict.fromkeys("\u00d7\u00b7\u22c5\u2217", " * "),
        "\u00f7": r" \div ",
        "\u2264": r" \le ",
        "\u2265": r" \ge ",
        "\u2260": r" \ne ",
        "\u221e": r" \infty ",
        "\u00b0": r"^\circ ",
        **{chr(0x3B1 + i): f" \\{name} " for i, name in enumerate(_GREEK)},
    }
)
# Cyrillic and Greek letters drawn like Latin ones (Unicode's confusables, letters only): "раst" with
# Cyrillic р and а is "past". Greek capitals only: lowercase α, ν, ρ... are math letters (\alpha...).
_LOOKALIKES = str.maketrans(
    "аеорсхуіјѕԁһӏԛԝАВЕКМНОРСТХУІЈЅΑΒΕΖΗΙΚΜΝΟΡΤΥΧο",
    "aeopcxyijsdhlqwABEKMHOPCTXYIJSABEZHIKMNOPTYXo",
)
_ROOT = re.compile(r"\u221a\s*(\d+(?:\.\d+)?)?")  # √23 is \sqrt{23}; √x is \sqrt x
_VULGAR = re.compile(r"(\d+)\u2044(\d+)")  # NFKC turns ½ into 1⁄2
# A comma (or `{,}`, `,\!`, `\,`) between a digit and exactly three digits separates thousands:
# 6,432 is 6432. A list such as (1,2) or 1,2345 keeps its comma.
_THOUSANDS = re.compile(r"(?<=\d)(?:,\\!|\{,\}|,|\\,)(?=\d{3}(?!\d))")
# Commands that mean the same as another, or only choose a font (matched after lowercasing).
_SAME_AS = {
    **dict.fromkeys(("dfrac", "tfrac"), r"\frac"),
    **dict.fromkeys(("leq", "leqslant"), r"\le"),
    **dict.fromkeys(("geq", "geqslant"), r"\ge"),
    "neq": r"\ne",
    **dict.fromkeys(("cdot", "times", "ast"), " * "),
    **{f"var{name}": f"\\{name}" for name in ("epsilon", "theta", "phi", "pi", "rho", "sigma")},
    **dict.fromkeys(("text", "textrm", "mathrm", "mbox"), " "),
}
_ANY_COMMAND = re.compile(r"\\([a-z]+)")
# Arguments LaTeX takes without braces: \frac12, \frac ab, \frac1{2}, \frac{1}2, \sqrt2.
_BARE_ARGUMENTS = (
    (re.compile(r"\\frac\s*(\w)\s*(\w)"), r"\\frac{\1}{\2}"),
    (re.compile(r"\\frac\s*(\w)"), r"\\frac{\1}"),
    (re.compile(r"\\frac\s*(\{[^{}]*\})\s*(\w)"), r"\\frac\1{\2}"),
    (re.compile(r"\\sqrt\s*(\w)"), r"\\sqrt{\1}"),
)
# LaTeX that changes spacing or size only.
_LATEX_SPACING = re.compile(r"\\(?:[,;:! ]|(?:q?quad|left|right|displaystyle|bigg?[lr]?)(?![a-z]))")
# Words, numbers and the operators that change a formula's meaning (x+1 is not x-1).
_TOKEN = re.compile(r"[^\W_]+|[+\-*/=<>^|!]")
_ASY = re.compile(r"\[asy\].*?\[/asy\]", re.DOTALL)
_COMMAND = re.compile(r"\\[a-z]+")
_WORD = re.compile(r"[^\W_]+")
_DIGITS = re.compile(r"\d+")
# Where a sentence ends: a line break, or a space after . ? ! or : (closing $, brackets or quotes may
# come between) or after a displayed formula or figure ($$, \], [/asy]).
_SENTENCE_END = re.compile(r"(?:(?<=[.?!:])[$\\\])}'\"]*|(?<=\$\$)|(?<=\\\])|(?<=\[/asy\]))\s+|\n")


def _fold(text: str) -> str:
    """One spelling for text that reads the same: HTML entities decoded, invisible characters
    dropped, Unicode forms, look-alike letters, symbols, thousands separators, synonymous commands,
    unbraced arguments and spacing folded."""
    text = text or ""
    if "&" in text:  # scraped pages: &lt; is <, &#39; is '
        text = html.unescape(text)
    text = _INVISIBLE.sub("", text).translate(_SUPERSCRIPTS)
    text = unicodedata.normalize("NFKC", text).translate(_LOOKALIKES).lower().translate(_SYMBOLS)
    text = _ROOT.sub(lambda m: rf"\sqrt{{{m[1]}}}" if m[1] else r"\sqrt ", text)
    text = _THOUSANDS.sub("", _VULGAR.sub(r"\\frac{\1}{\2}", text))
    text = _ANY_COMMAND.sub(lambda m: _SAME_AS.get(m[1], m[0]), text)
    for pattern, braced in _BARE_ARGUMENTS:
        text = pattern.sub(braced, text)
    return _LATEX_SPACING.sub(" ", text)


def normalize(text: str) -> str:
    """The text compared for exact matches and duplicates: formatting (`_fold`), case, whitespace and
    punctuation folded; words, numbers and operators kept in order."""
    return _key(_fold(text))


def words(text: str) -> list[str]:
    """The words n-grams are made of: letter/digit runs, without LaTeX commands or [asy] figure code."""
    return _words(_fold(text))


def _key(folded: str) -> str:
    return " ".join(_TOKEN.findall(folded))


def _words(folded: str) -> list[str]:
    return _WORD.findall(_COMMAND.sub(" ", _ASY.sub(" ", folded)))


def ngrams(tokens: Sequence[str], n: int = NGRAM) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


@dataclass(frozen=True)
class Match:
    """Why one problem is contaminated: the first benchmark that matches, and every one that does."""

    benchmark: str
    match: str  # "exact", "ngram" or "contained"
    benchmark_question: str
    benchmarks: tuple[str, ...]
    shared: str  # the shared words (n-gram matches), else ""


class BenchmarkIndex:
    """Hash tables over the benchmarks' problems: exact keys, telling n-grams, short problems, the
    problems' words with numbers masked, and their sentences (with every beginning of them).

    A 13-gram made only of stock phrasing is boilerplate and proves nothing: every word of it lies in
    some `STOCK`-word run that at least `STOCK_PROBLEMS` different benchmark problems contain (an
    instruction such as "Enter your answer in the form $(r,\\theta),$ where …", or an opening such as
    "Let $a$ and $b$ be positive real numbers. Find the minimum value of"). GPT-3 likewise ignored
    frequent 13-grams. A problem sharing only boilerplate with a benchmark problem still matches it
    when both have the same words apart from their numbers: that is the benchmark problem with other
    numbers. `ignore_boilerplate=False` gives the plain 13-word rule, to measure what this gives back.
    """

    def __init__(
        self,
        questions: dict[str, list[str]],
        n: int = NGRAM,
        short_min: int = SHORT_MIN,
        ignore_boilerplate: bool = True,
    ):
        self.n = n
        self.questions = questions
        self.exact: dict[str, dict[str, int]] = {name: {} for name in questions}
        tokens: dict[str, list[list[str]]] = {name: [] for name in questions}
        distinct: dict[str, list[str]] = {}  # MATH-500 repeats MATH test: count each problem once
        self.sentences: dict[tuple[str, ...], dict[str, int]] = {}  # sentences -> benchmark -> row
        for name, texts in questions.items():
            for row, text in enumerate(texts):
                folded = _fold(text)
                sentences = _sentence_keys(folded)
                key = " ".join(sentences)
                self.exact[name].setdefault(key, row)
                tokens[name].append(distinct.setdefault(key, _words(folded)))
                self._add_sentences(sentences, name, row)
        stock = _stock_phrases(distinct.values()) if ignore_boilerplate else set()
        self.grams: dict[int, dict[str, int]] = {}  # n-gram or short problem -> benchmark -> first row
        self.templates: dict[str, dict[str, int]] = {}  # words, numbers masked -> benchmark -> row
        lengths = set()
        for name, problems in tokens.items():
            for row, problem in enumerate(problems):
                if len(problem) >= n:
                    for gram, telling in zip(ngrams(problem, n), _telling(problem, stock, n)):
                        if telling:
                            self.grams.setdefault(hash(gram), {}).setdefault(name, row)
                    self.templates.setdefault(_masked(problem), {}).setdefault(name, row)
                elif len(problem) >= short_min:
                    self.grams.setdefault(hash(tuple(problem)), {}).setdefault(name, row)
                    lengths.add(len(problem))
        self.lengths = (n, *sorted(lengths))

    def _add_sentences(self, sentences: tuple[str, ...], name: str, row: int) -> None:
        """The problem's sentences, and each beginning of them (so that a search knows to read on)."""
        for end in range(1, len(sentences)):
            self.sentences.setdefault(sentences[:end], {})
        self.sentences.setdefault(sentences, {}).setdefault(name, row)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.questions)

    def match(self, question: str) -> Match | None:
        folded = _fold(question)
        sentences = _sentence_keys(folded)
        key, tokens = " ".join(sentences), _words(folded)
        found: dict[str, tuple[str, int, str]] = {}  # benchmark -> (kind, row, shared words)
        for name, exact in self.exact.items():
            row = exact.get(key)
            if row is not None:
                found[name] = ("exact", row, "")
        if len(found) < len(self.names):
            self._match_ngrams(tokens, found)
        if len(found) < len(self.names):
            self._match_sentences(sentences, found)
        if not found:
            return None
        names = [name for name in self.names if name in found]
        first = min(names, key=lambda name: found[name][0] != "exact")  # exact explains best; else file order
        kind, row, shared = found[first]
        return Match(first, kind, self.questions[first][row], tuple(names), shared)

    def _match_ngrams(self, tokens: list[str], found: dict[str, tuple[str, int, str]]) -> None:
        """Add the benchmarks not found yet that share a telling n-gram, or boilerplate and the same
        words apart from numbers."""
        table = self.grams
        for length in self.lengths:  # 13-grams first, then whole short problems
            for gram in ngrams(tokens, length):
                hits = table.get(hash(gram))
                if hits:
                    for name, row in hits.items():
                        found.setdefault(name, ("ngram", row, " ".join(gram)))
        if len(found) == len(self.names):
            return
        for name, row in self.templates.get(_masked(tokens), {}).items():
            if name not in found:
                shared = _first_shared(tokens, words(self.questions[name][row]), self.n)
                if shared:
                    found[name] = ("ngram", row, shared)

    def _match_sentences(self, sentences: tuple[str, ...], found: dict[str, tuple[str, int, str]]) -> None:
        """Add the benchmarks not found yet with a problem that is a run of this one's sentences: the
        benchmark problem with an instruction or a preamble added, whatever its length or phrasing."""
        for start in range(len(sentences)):
            for end in range(start + 1, len(sentences) + 1):
                hits = self.sentences.get(sentences[start:end])
                if hits is None:  # no benchmark problem begins with these sentences
                    break
                for name, row in hits.items():
                    found.setdefault(name, ("contained", row, " ".join(sentences[start:end])))


def _sentence_keys(folded: str) -> tuple[str, ...]:
    """The text's sentences, each as `_key`: joined, they are the text's key."""
    return tuple(key for part in _SENTENCE_END.split(folded) if (key := _key(part)))


def _stock_phrases(problems: Iterable[list[str]]) -> set[int]:
    """Hashes of the `STOCK`-word runs that at least `STOCK_PROBLEMS` of the problems contain."""
    counts = Counter(h for problem in problems for h in {hash(g) for g in ngrams(problem, STOCK)})
    return {h for h, count in counts.items() if count >= STOCK_PROBLEMS}


def _telling(problem: list[str], stock: set[int], n: int) -> list[bool]:
    """For each n-gram of the problem: does it hold a word outside every stock phrase?"""
    in_stock = [False] * len(problem)
    for i, gram in enumerate(ngrams(problem, STOCK)):
        if hash(gram) in stock:
            in_stock[i : i + STOCK] = [True] * STOCK
    return [not all(in_stock[i : i + n]) for i in range(len(problem) - n + 1)]


def _masked(tokens: list[str]) -> str:
    return _DIGITS.sub("0", " ".join(tokens))


def _first_shared(tokens: list[str], other: list[str], n: int) -> str:
    theirs = set(ngrams(other, n))
    return next((" ".join(gram) for gram in ngrams(tokens, n) if gram in theirs), "")


@lru_cache(maxsize=8)
def _cached_index(benchmarks: tuple[Benchmark, ...], locations: tuple, n: int) -> BenchmarkIndex:
    del locations  # part of the cache key only: another COTGEN_DATASETS_DIR means other files
    return BenchmarkIndex({b.name: load_benchmark_questions(b) for b in benchmarks}, n)


def benchmark_index(benchmarks: Iterable[Benchmark], n: int = NGRAM) -> BenchmarkIndex:
    """The index of these benchmarks, loaded once per process (every materialization needs it)."""
    benchmarks = tuple(benchmarks)
    return _cached_index(benchmarks, tuple(benchmark_location(b) for b in benchmarks), n)


def find_contamination(questions: Iterable[str], index: BenchmarkIndex) -> list[Match | None]:
    """For each question, its match with a benchmark, or None when it is clean."""
    return [index.match(q) for q in questions]


def deduplicate(questions: Sequence[str]) -> dict[int, int]:
    """Rows whose normalised text repeats an earlier row: {later row: first row}."""
    first: dict[str, int] = {}
    repeats = {}
    for row, question in enumerate(questions):
        earlier = first.setdefault(normalize(question), row)
        if earlier != row:
            repeats[row] = earlier
    return repeats


@dataclass
class Decontamination:
    """What `decontaminate` left out and why, for the asset's metadata."""

    benchmarks: tuple[str, ...]  # those checked; () = the scenario opted out
    num_input: int
    num_kept: int
    num_contaminated: int = 0
    by_benchmark: dict[str, int] = field(default_factory=dict)  # a problem counts for each it matches
    by_match: dict[str, int] = field(default_factory=dict)  # "exact" / "ngram" / "contained" (first)
    contaminated_ids: list[str] = field(default_factory=list)
    num_duplicates: int = 0
    duplicate_ids: dict[str, str] = field(default_factory=dict)  # left-out id -> id kept
    examples: list[dict] = field(default_factory=list)
    n: int = NGRAM
    rule: str = RULE
    skipped: tuple[str, ...] = ()  # benchmarks of the scenarios file this scenario does not check
    skipped_overlap: dict[str, int] = field(default_factory=dict)  # skipped one -> kept problems matching
    skipped_overlap_ids: list[str] = field(default_factory=list)  # kept problems matching a skipped one
    skipped_error: str = ""  # why the kept problems could not be compared with the skipped benchmarks

    @property
    def decontaminated(self) -> bool:
        """Checked against every benchmark of the scenarios file, not only some."""
        return bool(self.benchmarks) and not self.skipped

    @property
    def excluded_ids(self) -> list[str]:
        return self.contaminated_ids + list(self.duplicate_ids)

    def note(self) -> str:
        """A few sentences for the asset's metadata and logs."""
        left_out = f"{self.num_contaminated} problems left out as benchmark matches"
        left_out += f", {self.num_duplicates} as repeats"
        if not self.benchmarks:
            return "NOT decontaminated: the scenario opts out (`decontaminate: []`)." + self._skipped_note()
        if self.skipped:
            return (
                f"PARTLY decontaminated: checked against {', '.join(self.benchmarks)} only; NOT checked "
                f"against {', '.join(self.skipped)} (`decontaminate:` names only some benchmarks). "
                f"{left_out}.{self._skipped_note()}"
            )
        return f"Decontaminated against {', '.join(self.benchmarks)}: {left_out}."

    def _skipped_note(self) -> str:
        if self.skipped_error:
            return f" The kept problems could not be compared with them: {self.skipped_error}"
        return f" {len(self.skipped_overlap_ids)} kept problems match them." if self.skipped else ""

    def metadata(self) -> dict:
        """Plain values under the suggested metadata keys (the asset wraps them in MetadataValues)."""
        return {
            "decontaminated": self.decontaminated,
            "decontamination": self.note(),
            "benchmarks": list(self.benchmarks),
            "num_contaminated": self.num_contaminated,
            "num_contaminated_by_benchmark": dict(self.by_benchmark),
            "num_contaminated_by_match": dict(self.by_match),
            "contaminated_ids": list(self.contaminated_ids),
            "num_duplicates": self.num_duplicates,
            "duplicate_ids": dict(self.duplicate_ids),
            "contamination_rule": self.rule,
            "contamination_ngram": self.n,
            "contamination_examples": list(self.examples),
            "benchmarks_skipped": list(self.skipped),
            "num_overlapping_skipped": dict(self.skipped_overlap),
            "overlapping_skipped_ids": list(self.skipped_overlap_ids),
            "skipped_not_compared": self.skipped_error,
        }


def _select(scenario: Scenario, benchmarks: dict[str, Benchmark]) -> tuple[Benchmark, ...]:
    missing = [b for b in scenario.decontaminate if b not in benchmarks]
    if missing:
        raise ScenarioError(
            f"scenario {scenario.name!r}: decontaminate names unknown benchmarks {missing}; "
            f"benchmarks: {sorted(benchmarks)}"
        )
    return tuple(benchmarks[b] for b in scenario.decontaminate)


def decontaminate(
    problems: pa.Table, scenario: Scenario, benchmarks: dict[str, Benchmark]
) -> tuple[pa.Table, Decontamination]:
    """Leave out the problems that match one of the scenario's benchmarks, then repeats (first id kept).

    `problems` is sources.build_source_problems' table; rows are only dropped, so every other
    problem keeps its id (`<scenario>-<source row>`) and a dropped id is never given to another.
    """
    chosen = _select(scenario, benchmarks)
    skipped = tuple(name for name in benchmarks if name not in scenario.decontaminate)
    ids = problems["problem_id"].to_pylist()
    questions = problems["question"].to_pylist()
    outcome = Decontamination(tuple(b.name for b in chosen), problems.num_rows, 0, skipped=skipped)
    keep = [True] * len(ids)
    if chosen:
        outcome.by_benchmark = {b.name: 0 for b in chosen}
        outcome.by_match = {"exact": 0, "ngram": 0, "contained": 0}
        for row, match in enumerate(find_contamination(questions, benchmark_index(chosen))):
            if match is None:
                continue
            keep[row] = False
            outcome.contaminated_ids.append(ids[row])
            outcome.by_match[match.match] += 1
            for name in match.benchmarks:
                outcome.by_benchmark[name] += 1
            if len(outcome.examples) < EXAMPLES:
                outcome.examples.append(
                    {
                        "problem_id": ids[row],
                        "question": questions[row],
                        "benchmark": match.benchmark,
                        "benchmark_question": match.benchmark_question,
                        "match": match.match,
                        "shared": match.shared,
                    }
                )
        outcome.num_contaminated = len(outcome.contaminated_ids)
    clean_rows = [row for row in range(len(ids)) if keep[row]]
    repeats = deduplicate([questions[row] for row in clean_rows])
    for position, first in repeats.items():
        keep[clean_rows[position]] = False
        outcome.duplicate_ids[ids[clean_rows[position]]] = ids[clean_rows[first]]
    outcome.num_duplicates = len(repeats)
    clean = problems.filter(pa.array(keep, type=pa.bool_()))
    outcome.num_kept = clean.num_rows
    if skipped:
        _compare_with_skipped(clean, tuple(benchmarks[name] for name in skipped), outcome)
    return clean, outcome


def _compare_with_skipped(clean: pa.Table, skipped: tuple[Benchmark, ...], outcome: Decontamination):
    """Count the kept problems that the benchmarks the scenario skips would have left out: skipping a
    benchmark that shares problems with the scenario's dataset (its own family) leaves them in."""
    try:
        index = benchmark_index(skipped)
    except ScenarioError as error:  # e.g. a benchmark skipped because it cannot be loaded here
        outcome.skipped_error = str(error)
        return
    outcome.skipped_overlap = {b.name: 0 for b in skipped}
    matches = find_contamination(clean["question"].to_pylist(), index)
    for problem_id, match in zip(clean["problem_id"].to_pylist(), matches):
        if match is not None:
            outcome.skipped_overlap_ids.append(problem_id)
            for name in match.benchmarks:
                outcome.skipped_overlap[name] += 1


def verify_no_overlap(table: pa.Table, benchmarks: Iterable[Benchmark]) -> list[str]:
    """Ids of the written table's problems that still match a benchmark (the asset check's test)."""
    matches = find_contamination(table["question"].to_pylist(), benchmark_index(benchmarks))
    return [pid for pid, match in zip(table["problem_id"].to_pylist(), matches) if match is not None]


def decontamination_path(scenario: str):
    """Where source_problems keeps what it left out, for the samples assets, the export and trace."""
    return scenario_dir(scenario) / "decontamination.json"


def save_decontamination(scenario: str, outcome: Decontamination) -> None:
    with atomic_write(decontamination_path(scenario), "w") as handle:
        json.dump(outcome.metadata(), handle)


def excluded_problems(scenario: str) -> dict[str, str]:
    """Problem ids source_problems left out -> why ("contaminated" or "repeat of <id>").

    Samples made for them before (e.g. from an older, undecontaminated problem table) stay in
    their files, paid for, but are never summarized or exported.
    """
    path = decontamination_path(scenario)
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    excluded = dict.fromkeys(saved.get("contaminated_ids", []), "contaminated")
    excluded |= {problem: f"repeat of {first}" for problem, first in saved.get("duplicate_ids", {}).items()}
    return excluded
