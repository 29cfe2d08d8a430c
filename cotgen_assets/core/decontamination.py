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

Plain logic (no dagster): the source_problems asset writes its table through a `Decontaminator`
(`source_writer`), and its check re-matches the written table with `Decontaminator.overlapping`.
Benchmarks are read once per process (`benchmark_index` is cached).
"""

import hashlib
import html
import itertools
import json
import multiprocessing
import re
import signal
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc

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
# Cyrillic р and а is "past". Greek capitals always; lowercase α, ι, κ, ν, ρ, υ, χ are math letters
# (\alpha...) unless a Latin letter or a backslash sits beside them or two come together (no formula
# writes a product of them so): "Whαt ιs υρ" is "What is up", "\ρι" is \pi, "2α" stays 2\alpha.
_LOOKALIKES = str.maketrans(
    "аеорсхуіјѕԁһӏԛԝАВЕКМНОРСТХУІЈЅΑΒΕΖΗΙΚΜΝΟΡΤΥΧο",
    "aeopcxyijsdhlqwABEKMHOPCTXYIJSABEZHIKMNOPTYXo",
)
_GREEK_IN_A_WORD = re.compile(r"(?<=[A-Za-z\\])[αικνρυχ]+|[αικνρυχ]+(?=[A-Za-z])|[αικνρυχ]{2,}")
_GREEK_AS_LATIN = str.maketrans("αικνρυχ", "aikvpux")
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
# come between) or after a displayed formula or figure ($$, \], [/asy]). Every such run begins with
# a space or a closing character: the look-ahead says so first, which makes the split twice as fast.
_SENTENCE_END = re.compile(
    r"(?=[\s$\\\])}'\"])(?:(?:(?<=[.?!:])[$\\\])}'\"]*|(?<=\$\$)|(?<=\\\])|(?<=\[/asy\]))\s+|\n)"
)


def _fold(text: str) -> str:
    """One spelling for text that reads the same: HTML entities decoded, invisible characters
    dropped, Unicode forms, look-alike letters, symbols, thousands separators, synonymous commands,
    unbraced arguments and spacing folded."""
    text = text or ""
    if text.isascii() and "\\" not in text and "&" not in text:
        # Every other step of `_fold_all` needs a non-ASCII character, a LaTeX command or an entity
        # (most problems have none): the same result without eleven passes over the text.
        text = text.lower()
        return _THOUSANDS.sub("", text) if "," in text else text
    return _fold_all(text)


def _fold_all(text: str) -> str:
    if "&" in text:  # scraped pages: &lt; is <, &#39; is '
        text = html.unescape(text)
    text = _INVISIBLE.sub("", text).translate(_SUPERSCRIPTS)
    text = unicodedata.normalize("NFKC", text).translate(_LOOKALIKES)
    text = _GREEK_IN_A_WORD.sub(lambda m: m[0].translate(_GREEK_AS_LATIN), text)
    text = text.lower().translate(_SYMBOLS)
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
    if "[asy]" in folded:
        folded = _ASY.sub(" ", folded)
    return _WORD.findall(_COMMAND.sub(" ", folded) if "\\" in folded else folded)


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


@dataclass(frozen=True)
class Read:
    """A question folded once, as every index reads it: its sentences, its key (`normalize`: the
    sentences joined, which is what repeats are found by) and its words."""

    sentences: tuple[str, ...]
    key: str
    tokens: list[str]

    @classmethod
    def of(cls, question: str) -> "Read":
        folded = _fold(question)
        sentences = _sentence_keys(folded)
        return cls(sentences, " ".join(sentences), _words(folded))


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
        # Adjacent word pairs of the indexed problems: a run of words can only be an indexed n-gram
        # if each of its pairs is one of these, which rules out nearly every window of a problem.
        self.pairs: set[tuple[str, str]] = set()
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
                else:
                    continue
                self.pairs.update(zip(problem, problem[1:]))
        self.lengths = (n, *sorted(lengths))
        self._pair_runs = re.compile(b"\x01{%d,}" % (min(self.lengths) - 1))

    def _add_sentences(self, sentences: tuple[str, ...], name: str, row: int) -> None:
        """The problem's sentences, and each beginning of them (so that a search knows to read on)."""
        for end in range(1, len(sentences)):
            self.sentences.setdefault(sentences[:end], {})
        self.sentences.setdefault(sentences, {}).setdefault(name, row)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.questions)

    def match(self, question: str) -> Match | None:
        return self.match_read(Read.of(question))

    def match_read(self, read: Read) -> Match | None:
        """The match of a question read once (`Read`): several indexes share one folding of it."""
        sentences, tokens = read.sentences, read.tokens
        found: dict[str, tuple[str, int, str]] = {}  # benchmark -> (kind, row, shared words)
        for name, exact in self.exact.items():
            row = exact.get(read.key)
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
        table, runs = self.grams, self._runs(tokens)
        for length in self.lengths:  # 13-grams first, then whole short problems
            for run_start, run_end in runs:
                for start in range(run_start, run_end - length + 1):
                    gram = tuple(tokens[start : start + length])
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

    def _runs(self, tokens: list[str]) -> list[tuple[int, int]]:
        """The spans of at least `min(self.lengths)` words whose adjacent pairs are all indexed pairs:
        only there can an indexed n-gram or short problem lie."""
        indexed = bytes([pair in self.pairs for pair in zip(tokens, tokens[1:])])
        return [(run.start(), run.end() + 1) for run in self._pair_runs.finditer(indexed)]

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


@dataclass
class Decontamination:
    """What a `Decontaminator` left out and why, for the asset's metadata."""

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


def _digest(key: str) -> int:
    """8 bytes standing for a normalised text: what repeats are found by, a million rows in ~100 MB."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


Indexes = tuple[BenchmarkIndex | None, BenchmarkIndex | None]  # (chosen, skipped)
Found = tuple[Match | None, int, Match | None]  # (match with the chosen, digest, match with the skipped)
CHUNK_ROWS = 5_000  # questions sent to a worker at a time, at most
CHUNK_BYTES = 4 << 20  # and at most this much question text, unless one question alone is longer


class WorkersLost(RuntimeError):
    """A worker process died part way (killed by the system, e.g. the out-of-memory killer)."""


def _examine(indexes: Indexes, questions: list[str], with_skipped: bool) -> list[Found]:
    """For each question, read once: its match with the chosen benchmarks, its digest, and (when
    clean and `with_skipped`) its match with the skipped ones."""
    chosen, skipped = indexes
    out = []
    for question in questions:
        read = Read.of(question)
        match = chosen.match_read(read) if chosen else None
        other = skipped.match_read(read) if with_skipped and skipped and match is None else None
        out.append((match, _digest(read.key), other))
    return out


# A worker process's own indexes, built by `_start_worker` as it starts (never set in the run's process).
_WORKER_INDEXES: Indexes = (None, None)


def _start_worker(chosen: dict[str, list[str]] | None, skipped: dict[str, list[str]] | None) -> None:
    """A worker: SIGTERM ends it (the executor sends it to the other workers when one dies; a
    handler that only noted it would keep them alive). It builds its own indexes, from the benchmark
    questions the parent loaded (not loading them again saves each worker importing `datasets`,
    seconds of CPU): they hold Python's `hash`, which differs from one interpreter to the next."""
    global _WORKER_INDEXES
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt stops
    _WORKER_INDEXES = (
        BenchmarkIndex(chosen) if chosen else None,
        BenchmarkIndex(skipped) if skipped else None,
    )


def _examine_in_worker(questions: list[str], with_skipped: bool) -> list[Found]:
    return _examine(_WORKER_INDEXES, questions, with_skipped)


def worker_chunks(questions: pa.Array) -> Iterator[list[str]]:
    """The questions in runs of at most `CHUNK_ROWS` and `CHUNK_BYTES` (UTF-8), in order: a source of
    very long rows sends no worker a huge chunk, nor holds one in the pipe."""
    sizes = pc.binary_length(questions).fill_null(0).to_pylist()
    start = size = 0
    for row, length in enumerate(sizes):
        if row > start and (row - start == CHUNK_ROWS or size + length > CHUNK_BYTES):
            yield questions.slice(start, row - start).to_pylist()
            start, size = row, 0
        size += length
    if start < len(sizes):
        yield questions.slice(start).to_pylist()


class _Matching:
    """The (chosen, skipped) indexes and, for `workers` > 1, the worker processes matching against
    them: one set of workers for a materialization's decontamination and its check.

    Workers are forked from a fresh single-threaded server ("forkserver"), never from the run itself:
    a fork of a process with threads (Dagster's, a test runner's) can inherit a lock held mid-fork.
    A `ProcessPoolExecutor`, not a `multiprocessing.Pool`: a worker killed part way breaks the
    executor (`BrokenProcessPool`), where the pool replaced it and waited forever for its work."""

    def __init__(self, indexes: Indexes, workers: int):
        self.indexes = indexes
        self._executor = None
        if workers > 1:
            questions = tuple(index.questions if index else None for index in indexes)
            self._executor = ProcessPoolExecutor(
                workers, multiprocessing.get_context("forkserver"), _start_worker, questions
            )

    def examine(self, questions: pa.Array, with_skipped: bool = True) -> list[Found]:
        if self._executor is None:
            return _examine(self.indexes, questions.to_pylist(), with_skipped)
        chunks = worker_chunks(questions)
        try:
            done = self._executor.map(_examine_in_worker, chunks, itertools.repeat(with_skipped))
            return [found for chunk in done for found in chunk]
        except BrokenProcessPool:
            raise WorkersLost(
                "a decontamination worker process died part way (killed by the system, e.g. the "
                "out-of-memory killer or a kill -9, or crashed)"
            ) from None

    def close(self, failed: bool) -> None:
        """Let the workers finish and exit (work not started yet dropped when the work failed)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=failed)


class Decontaminator:
    """Leave out the problems that match one of the scenario's benchmarks, then repeats (first id
    kept), one batch at a time, holding only the benchmark indexes, an 8-byte digest and the id of
    each kept problem (Arrow arrays) and the ids it reports: a million rows stay small in memory.
    Rows are only dropped, so every other problem keeps its id (`<scenario>-<source row>`) and a
    dropped id is never given to another.

    With `workers` > 1 the batches are matched in that many worker processes, in order; `overlapping`
    (the asset check) reuses them.
    """

    def __init__(self, scenario: Scenario, benchmarks: dict[str, Benchmark], workers: int = 1):
        chosen = _select(scenario, benchmarks)
        skipped = tuple(name for name in benchmarks if name not in scenario.decontaminate)
        self.outcome = Decontamination(tuple(b.name for b in chosen), 0, 0, skipped=skipped)
        if chosen:
            self.outcome.by_benchmark = {b.name: 0 for b in chosen}
            self.outcome.by_match = {"exact": 0, "ngram": 0, "contained": 0}
        skipped_index = None
        if skipped:
            try:
                skipped_index = benchmark_index(benchmarks[name] for name in skipped)
                self.outcome.skipped_overlap = {name: 0 for name in skipped}
            except ScenarioError as error:  # e.g. a benchmark skipped because it cannot be loaded here
                self.outcome.skipped_error = str(error)
        self._matching = _Matching((benchmark_index(chosen) if chosen else None, skipped_index), workers)
        # The kept problems' digests and ids as Arrow arrays (16-24 bytes a problem), for repeats.
        self._kept_digests, self._kept_ids = pa.array([], pa.uint64()), pa.array([], pa.string())

    def __enter__(self) -> "Decontaminator":
        return self

    def __exit__(self, *exc) -> None:
        self._matching.close(failed=exc[0] is not None)

    def filter(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch's problems that are kept, in order."""
        ids = batch.column("problem_id").to_pylist()
        questions = batch.column("question")
        found = self._matching.examine(questions)
        earlier = self._kept_before([digest for _, digest, _ in found])
        firsts: dict[int, str] = {}  # this batch's kept problems: digest -> id
        keep = []
        for row, ((match, digest, other), first) in enumerate(zip(found, earlier)):
            if match is None and first is None:
                first = firsts.setdefault(digest, ids[row])
            keep.append(self._decide(ids, questions, row, match, first, other))
        self.outcome.num_input += len(ids)
        self._kept_digests = pa.concat_arrays([self._kept_digests, pa.array(list(firsts), pa.uint64())])
        self._kept_ids = pa.concat_arrays([self._kept_ids, pa.array(list(firsts.values()), pa.string())])
        return batch.filter(pa.array(keep, type=pa.bool_()))

    def overlapping(self, batches: Iterable[pa.RecordBatch]) -> list[str]:
        """Ids of these problems that still match a chosen benchmark: the asset check's test of the
        written table, read a batch at a time."""
        overlapping = []
        for batch in batches:
            found = self._matching.examine(batch.column("question"), with_skipped=False)
            ids = batch.column("problem_id").to_pylist()
            overlapping.extend(pid for pid, (match, _, _) in zip(ids, found) if match is not None)
        return overlapping

    def _kept_before(self, digests: list[int]) -> list[str | None]:
        """For each digest, the id of the problem kept in an earlier batch with it, else None."""
        if not len(self._kept_digests):
            return [None] * len(digests)
        positions = pc.index_in(pa.array(digests, pa.uint64()), value_set=self._kept_digests)
        return self._kept_ids.take(positions).to_pylist()

    def finish(self) -> Decontamination:
        outcome = self.outcome
        outcome.num_contaminated = len(outcome.contaminated_ids)
        outcome.num_duplicates = len(outcome.duplicate_ids)
        outcome.num_kept = outcome.num_input - outcome.num_contaminated - outcome.num_duplicates
        return outcome

    def _decide(self, ids, questions, row: int, match: Match | None, first: str, other: Match | None) -> bool:
        """Is the row kept? Not when it matches a benchmark, or repeats the problem `first`."""
        outcome = self.outcome
        if match is not None:
            outcome.contaminated_ids.append(ids[row])
            outcome.by_match[match.match] += 1
            for name in match.benchmarks:
                outcome.by_benchmark[name] += 1
            if len(outcome.examples) < EXAMPLES:
                outcome.examples.append(
                    {
                        "problem_id": ids[row],
                        "question": questions[row].as_py(),
                        "benchmark": match.benchmark,
                        "benchmark_question": match.benchmark_question,
                        "match": match.match,
                        "shared": match.shared,
                    }
                )
            return False
        if first != ids[row]:
            outcome.duplicate_ids[ids[row]] = first
            return False
        if other is not None:  # kept, but a benchmark the scenario skips would have left it out
            outcome.skipped_overlap_ids.append(ids[row])
            for name in other.benchmarks:
                outcome.skipped_overlap[name] += 1
        return True


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
