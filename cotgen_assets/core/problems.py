"""k answers per problem: each problem's pass rate and majority answer, and a scenario's pass@1,
pass@k and maj@k.

A problem's answers are its CoT records, one per `sample`. Only graded answers count (`correct`
is True or False). The majority vote clusters the predicted answers by equivalence with the
grader (`grading.grade_many`: "1/2" and "0.5" are one answer), so it needs no reference answer
and could label a problem that has none.
"""

import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations

from cotgen_assets.core.grading import grade_many
from cotgen_assets.core.stages import GENERATION
from cotgen_assets.core.storage import samples_lines

BUCKET_ANSWERS = 200_000  # answers grouped in memory at once by `file_passes`

# (sample, predicted answer, correct) of one graded answer
Answer = tuple[int, str | None, bool]


@dataclass(frozen=True)
class ProblemFigures:
    """One problem's graded answers, in sample order, and their vote."""

    id: str
    samples: tuple[int, ...]
    predicted: tuple[str | None, ...]
    correctness: tuple[bool, ...]
    majority_answer: str | None  # as the earliest sample of the winning cluster wrote it
    majority_correct: bool

    @property
    def num_correct(self) -> int:
        return sum(self.correctness)

    @property
    def pass_rate(self) -> float:
        return self.num_correct / len(self.correctness)


def _votable(predicted: str | None) -> bool:
    return bool(predicted and predicted.strip())


def _distinct(answers: list[Answer]) -> list[str]:
    """The problem's predicted answers as written, each once, in sample order (no answer: no vote)."""
    return list(dict.fromkeys(p for _, p, _ in answers if _votable(p)))


def _clusters(distinct: list[str], same: dict[tuple[str, str], bool]) -> list[list[str]]:
    """Answers grouped by equivalence: each joins the first cluster whose first answer it matches."""
    clusters: list[list[str]] = []
    for text in distinct:
        home = next((c for c in clusters if same[(c[0], text)]), None)
        if home is None:
            clusters.append([text])
        else:
            home.append(text)
    return clusters


def _vote(answers: list[Answer], clusters: list[list[str]]) -> tuple[str | None, bool]:
    """The cluster with most answers wins; a tie goes to the cluster answered first (lowest sample).
    Its answer is the earliest sample's text, correct when that sample was graded correct."""
    if not clusters:
        return None, False
    by_text = {}
    for sample, predicted, correct in answers:  # sorted by sample: the first is the earliest
        by_text.setdefault(predicted, (sample, correct))
    votes = {p: 0 for c in clusters for p in c}
    for _, predicted, _ in answers:
        if predicted in votes:
            votes[predicted] += 1

    def weight(cluster: list[str]) -> tuple[int, int]:
        return -sum(votes[p] for p in cluster), min(by_text[p][0] for p in cluster)

    winner = min(clusters, key=weight)
    first = min(winner, key=lambda p: by_text[p][0])
    return first, bool(by_text[first][1])


def problem_figures(answers_by_id: dict[str, list[Answer]]) -> list[ProblemFigures]:
    """Every problem with a graded answer, in the given order; one grading call for all comparisons."""
    graded = {
        pid: sorted((a for a in answers if a[2] is not None), key=lambda a: a[0])
        for pid, answers in answers_by_id.items()
    }
    graded = {pid: answers for pid, answers in graded.items() if answers}
    pairs = sorted({pair for answers in graded.values() for pair in combinations(_distinct(answers), 2)})
    same = dict(zip(pairs, grade_many((p, r) for r, p in pairs)))
    figures = []
    for pid, answers in graded.items():
        majority, majority_correct = _vote(answers, _clusters(_distinct(answers), same))
        figures.append(
            ProblemFigures(
                id=pid,
                samples=tuple(a[0] for a in answers),
                predicted=tuple(a[1] for a in answers),
                correctness=tuple(bool(a[2]) for a in answers),
                majority_answer=majority,
                majority_correct=majority_correct,
            )
        )
    return figures


@dataclass
class PassFigures:
    """A scenario's figures over its problems' graded answers, summed problem by problem.

    Kept as counts of (correct, graded) outcomes, so that two scenarios' figures add up and the
    memory is a few integers whatever the number of problems.
    """

    outcomes: Counter = field(default_factory=Counter)  # (correct answers, graded answers) -> problems
    num_majority_correct: int = 0

    def add(self, problem: ProblemFigures) -> None:
        self.outcomes[problem.num_correct, len(problem.correctness)] += 1
        self.num_majority_correct += problem.majority_correct

    def merge(self, other: "PassFigures") -> None:
        self.outcomes.update(other.outcomes)
        self.num_majority_correct += other.num_majority_correct

    @property
    def num_problems(self) -> int:
        return sum(self.outcomes.values())

    @property
    def num_answers(self) -> int:
        return sum(graded * n for (_, graded), n in self.outcomes.items())

    @property
    def num_correct(self) -> int:
        return sum(correct * n for (correct, _), n in self.outcomes.items())

    @property
    def k(self) -> int:
        """The most graded answers a problem has."""
        return max((graded for _, graded in self.outcomes), default=0)

    @property
    def histogram(self) -> tuple[int, ...]:
        """Problems solved j/k, j = 0..k; a problem with fewer graded answers counts at the nearest j/k."""
        counts = [0] * (self.k + 1) if self.outcomes else []
        for (correct, graded), n in self.outcomes.items():
            counts[round(correct / graded * self.k)] += n
        return tuple(counts)

    @property
    def pass_at_1(self) -> float | None:
        """Mean accuracy over graded answers (with the same k for every problem: the mean pass rate)."""
        return self.num_correct / self.num_answers if self.num_answers else None

    @property
    def pass_at_k(self) -> float | None:
        """Share of problems with at least one correct answer."""
        solved = sum(n for (correct, _), n in self.outcomes.items() if correct)
        return solved / self.num_problems if self.num_problems else None

    @property
    def maj_at_k(self) -> float | None:
        """Share of problems whose majority answer is correct."""
        return self.num_majority_correct / self.num_problems if self.num_problems else None


def pass_figures(problems: Iterable[ProblemFigures]) -> PassFigures:
    figures = PassFigures()
    for problem in problems:
        figures.add(problem)
    return figures


def file_passes(path, bucket_answers: int = BUCKET_ANSWERS) -> PassFigures:
    """pass@1, pass@k, maj@k of a CoT samples file, streamed.

    A problem's answers may sit anywhere in the file (a retry is appended), so they are grouped in
    memory, a bucket of problem ids at a time (by a hash of the id; one pass over the file per
    bucket): memory stays bounded by about `bucket_answers` answers however large the file.
    """
    figures = PassFigures()
    if not path.exists():
        return figures
    with path.open("rb") as handle:
        num_lines = sum(1 for line in handle if line.strip())
    buckets = max(1, -(-num_lines // bucket_answers))
    for bucket in range(buckets):
        answers: dict[str, list[Answer]] = {}
        for _, record in samples_lines(GENERATION, path):
            if buckets == 1 or zlib.crc32(record["id"].encode()) % buckets == bucket:
                graded = (record["sample"], record["predicted_answer"], record["correct"])
                answers.setdefault(record["id"], []).append(graded)
        figures.merge(pass_figures(problem_figures(answers)))
    return figures
