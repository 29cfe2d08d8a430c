"""Statistics over a samples file and the quality gates built on them, as plain verdicts.

One pass (`SampleStats`) feeds the samples assets' metadata and checks and the dataset report.
Gates warn rather than fail where a person would want to look rather than stop the pipeline;
each stage names its gates (`stages`), and `defs/checks.py` turns the verdicts into Dagster asset
check results.
"""

from collections import Counter
from dataclasses import dataclass, field

from cotgen_assets.core.stages import Stage
from cotgen_assets.core.text import tagged_block

PREVIEW_SAMPLES = 5
MIN_ACCURACY = 0.5
MIN_AGREEMENT = 0.8
RATIO_BAND = (0.005, 0.6)  # draft tokens per thought token
MAX_DRAFT_WORDS = 5
MIN_SHORT_STEPS = 0.8  # share of draft steps with at most MAX_DRAFT_WORDS words
MAX_UNSUPPORTED = 0.1  # share of drafts with a number that is not in their thought
ERROR, WARN = "ERROR", "WARN"


class TokenCounts(Counter):
    """How many samples had each token count: exact sums, means and medians in memory bounded by
    the number of distinct counts, not by the number of samples."""

    def sum(self) -> int:
        return sum(tokens * samples for tokens, samples in self.items())

    def mean(self) -> float | None:
        return self.sum() / self.total() if self else None

    def median(self) -> float | None:
        """`statistics.median` of every sample's count: the middle one, or the mean of the middle two."""
        if not self:
            return None
        total = self.total()
        if total % 2:
            return self._at(total // 2)
        return (self._at(total // 2 - 1) + self._at(total // 2)) / 2

    def _at(self, position: int) -> int:
        """The count of the sample at `position` when every sample is sorted by its count."""
        seen = 0
        for tokens in sorted(self):
            seen += self[tokens]
            if seen > position:
                return tokens
        raise IndexError(position)


@dataclass
class SampleStats:
    """File-wide figures of one samples file, accumulated one record at a time.

    `stage` made the file (generation: a CoT file, summarization: a CoD file); tokens and cost
    are those of the stage's own block. Memory: how many CoD samples had each thought and draft
    length (for the report's picture and the card's medians) and a few preview records.
    """

    stage: Stage
    excluded: dict[str, str] = field(default_factory=dict)  # problem id -> why source_problems left it out
    num_samples: int = 0
    num_correct: int = 0
    num_malformed: int = 0
    num_contaminated: int = 0  # samples of problems now known to be benchmark problems
    num_repeats: int = 0  # samples of problems that repeat an earlier one
    input_tokens: int = 0
    thinking_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    num_agreeing: int = 0
    num_unsupported: int = 0
    draft_steps: int = 0
    short_draft_steps: int = 0
    thought_tokens: TokenCounts = field(default_factory=TokenCounts)  # of CoD samples' CoTs
    draft_tokens: TokenCounts = field(default_factory=TokenCounts)  # of CoD samples
    preview: list[dict] = field(default_factory=list)

    def __call__(self, record: dict) -> None:
        self.num_samples += 1
        self.num_correct += bool(record.get("correct"))
        why = self.excluded.get(record["id"])
        if why is not None:
            self.num_contaminated += why == "contaminated"
            self.num_repeats += why != "contaminated"
        block = record[self.stage.name]
        self.input_tokens += block["usage"]["input_tokens"]
        self.thinking_tokens += block["usage"]["thinking_tokens"]
        self.output_tokens += block["usage"]["output_tokens"]
        self.cost_usd += block["cost_usd"]
        text = tagged_block(record[self.stage.record_kind], self.stage.tag)
        self.num_malformed += text is None
        if self.stage.summarizes is not None:
            self._add_draft(record, text)
        if len(self.preview) < PREVIEW_SAMPLES:
            self.preview.append(record)

    def _add_draft(self, record: dict, draft: str | None) -> None:
        """A CoD sample's figures: its steps, its agreement with its CoT, thought vs draft length."""
        self.num_agreeing += bool(record.get("agrees_with_cot"))
        self.num_unsupported += bool(record.get("unsupported_draft_numbers"))
        steps = draft.split("\n") if draft is not None else []
        self.draft_steps += len(steps)
        self.short_draft_steps += sum(len(s.split()) <= MAX_DRAFT_WORDS for s in steps)
        self.thought_tokens[record[self.stage.summarizes.name]["usage"]["thinking_tokens"]] += 1
        self.draft_tokens[record[self.stage.name]["usage"]["output_tokens"]] += 1

    def merge(self, other: "SampleStats") -> None:
        """Add another file's figures (the report's `all` column)."""
        for name, value in vars(other).items():
            if isinstance(value, TokenCounts):
                getattr(self, name).update(value)
            elif name not in ("stage", "excluded", "preview"):
                setattr(self, name, getattr(self, name) + value)

    def share(self, count: int) -> float:
        return count / self.num_samples if self.num_samples else 0.0

    @property
    def accuracy(self) -> float:
        return self.share(self.num_correct)

    @property
    def answer_agreement(self) -> float:
        """Share of CoD samples whose answer matches their CoT sample's."""
        return self.share(self.num_agreeing)

    @property
    def draft_to_thought_token_ratio(self) -> float:
        thought = self.thought_tokens.sum()
        return self.draft_tokens.sum() / thought if thought else 0.0

    @property
    def short_step_share(self) -> float:
        return self.short_draft_steps / self.draft_steps if self.draft_steps else 0.0

    @property
    def cost_per_1000_usd(self) -> float:
        return 1000 * self.share(self.cost_usd)


@dataclass(frozen=True)
class Verdict:
    """One quality gate's outcome: `severity` ERROR stops trusting the file, WARN asks a look."""

    name: str
    passed: bool
    severity: str
    numbers: dict
    description: str | None = None


def _verdict(name: str, passed: bool, severity: str, description: str | None = None, **numbers) -> Verdict:
    return Verdict(name, bool(passed), severity, numbers, description)


def common_verdicts(stats: SampleStats) -> list[Verdict]:
    """The gates both samples files share: tag shape (an error), accuracy, no excluded problems."""
    tag = stats.stage.tag
    return [
        _verdict(
            "tags_well_formed",
            stats.num_malformed == 0,
            ERROR,
            num_malformed=stats.num_malformed,
            description=f"every sample is exactly one `<{tag}>…</{tag}>` block, then the answer",
        ),
        _verdict(
            "accuracy", stats.accuracy >= MIN_ACCURACY, WARN, accuracy=stats.accuracy, threshold=MIN_ACCURACY
        ),
        _verdict(
            "no_contaminated_samples",
            stats.num_contaminated + stats.num_repeats == 0,
            WARN,
            num_contaminated=stats.num_contaminated,
            num_repeats=stats.num_repeats,
            description="samples of problems source_problems now leaves out (benchmark matches, repeats): "
            "kept in the file, never summarized or exported",
        ),
    ]


def verdicts(stats: SampleStats) -> list[Verdict]:
    """The stage's gates over its samples file: a stage that drafts another's records adds the
    draft gates to the shared ones, as its figures add the draft figures (`SampleStats`)."""
    return common_verdicts(stats) + (draft_verdicts(stats) if stats.stage.summarizes else [])


def gate_names(stage: Stage) -> list[str]:
    """The gates' names, read off the gates themselves (the samples asset's check specs)."""
    return [verdict.name for verdict in verdicts(SampleStats(stage))]


def draft_verdicts(stats: SampleStats) -> list[Verdict]:
    low, high = RATIO_BAND
    ratio = stats.draft_to_thought_token_ratio
    unsupported = stats.share(stats.num_unsupported)
    return [
        _verdict(
            "answer_agrees_with_cot",
            stats.answer_agreement >= MIN_AGREEMENT,
            WARN,
            answer_agreement=stats.answer_agreement,
            threshold=MIN_AGREEMENT,
        ),
        _verdict(
            "token_ratio_in_band",
            low <= ratio <= high,
            WARN,
            draft_to_thought_token_ratio=ratio,
            low=low,
            high=high,
        ),
        _verdict(
            "draft_steps_short",
            stats.short_step_share >= MIN_SHORT_STEPS,
            WARN,
            short_step_share=stats.short_step_share,
            max_words=MAX_DRAFT_WORDS,
            threshold=MIN_SHORT_STEPS,
        ),
        _verdict(
            "draft_numbers_from_thought",
            unsupported <= MAX_UNSUPPORTED,
            WARN,
            unsupported_share=unsupported,
            num_unsupported=stats.num_unsupported,
            threshold=MAX_UNSUPPORTED,
            description="numbers in a draft should come from its thought (a cheap hallucination check)",
        ),
    ]
