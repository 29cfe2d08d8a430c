"""Statistics over a samples file and the quality gates built on them (asset checks).

Gates warn rather than fail where a person would want to look rather than stop the pipeline.
"""

import re
from dataclasses import dataclass, field

import dagster as dg

PREVIEW_SAMPLES = 5
MIN_ACCURACY = 0.5
MIN_AGREEMENT = 0.8
RATIO_BAND = (0.005, 0.6)  # draft tokens per thought token
MAX_DRAFT_WORDS = 5
MIN_SHORT_STEPS = 0.8  # share of draft steps with at most MAX_DRAFT_WORDS words
MAX_UNSUPPORTED = 0.1  # share of drafts with a number that is not in their thought

_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def tagged_block(text: str, tag: str) -> str | None:
    """The body of `<tag>body</tag>\nanswer` when that is exactly the text's shape, else None.

    Plain string operations: a regex with look-aheads scanned each multi-KB record several times.
    """
    opening, closing = f"<{tag}>", f"</{tag}>"
    if not text.startswith(opening) or text.count(opening) != 1 or text.count(closing) != 1:
        return None
    body, separator, answer = text[len(opening) :].partition(closing + "\n")
    return body if separator and body and answer else None


def numbers_in(text: str) -> set[str]:
    return set(_NUMBER.findall(text or ""))


@dataclass
class SampleStats:
    """Accumulates file-wide figures, one record at a time (memory stays flat)."""

    stage: str
    num_samples: int = 0
    num_correct: int = 0
    num_malformed: int = 0
    num_agreeing: int = 0
    num_unsupported: int = 0
    draft_steps: int = 0
    short_draft_steps: int = 0
    thinking_tokens: int = 0
    draft_tokens: int = 0
    preview: list[dict] = field(default_factory=list)

    def __call__(self, record: dict) -> None:
        self.num_samples += 1
        self.num_correct += bool(record.get("correct"))
        if self.stage == "generation":
            self.num_malformed += tagged_block(record["cot"], "thought") is None
        else:
            draft = tagged_block(record["cod"], "draft")
            self.num_malformed += draft is None
            self.num_agreeing += bool(record.get("agrees_with_cot"))
            self.num_unsupported += bool(record.get("unsupported_draft_numbers"))
            steps = draft.split("\n") if draft is not None else []
            self.draft_steps += len(steps)
            self.short_draft_steps += sum(len(s.split()) <= MAX_DRAFT_WORDS for s in steps)
            self.thinking_tokens += record["generation"]["usage"]["thinking_tokens"]
            self.draft_tokens += record["summarization"]["usage"]["output_tokens"]
        if len(self.preview) < PREVIEW_SAMPLES:
            self.preview.append(record)

    def share(self, count: int) -> float:
        return count / self.num_samples if self.num_samples else 0.0

    @property
    def accuracy(self) -> float:
        return self.share(self.num_correct)

    @property
    def answer_agreement(self) -> float:
        return self.share(self.num_agreeing)

    @property
    def draft_to_thought_token_ratio(self) -> float:
        return self.draft_tokens / self.thinking_tokens if self.thinking_tokens else 0.0

    @property
    def short_step_share(self) -> float:
        return self.short_draft_steps / self.draft_steps if self.draft_steps else 0.0


def common_checks(stats: SampleStats, tag: str) -> list[dg.AssetCheckResult]:
    """The gates both samples files share: their tag shape (an error) and their accuracy."""
    return [
        _check(
            "tags_well_formed",
            stats.num_malformed == 0,
            dg.AssetCheckSeverity.ERROR,
            num_malformed=stats.num_malformed,
            description=f"every sample is exactly one `<{tag}>…</{tag}>` block, then the answer",
        ),
        _check(
            "accuracy",
            stats.accuracy >= MIN_ACCURACY,
            dg.AssetCheckSeverity.WARN,
            accuracy=stats.accuracy,
            threshold=MIN_ACCURACY,
        ),
    ]


def cot_checks(stats: SampleStats) -> list[dg.AssetCheckResult]:
    return common_checks(stats, "thought")


def cod_checks(stats: SampleStats) -> list[dg.AssetCheckResult]:
    low, high = RATIO_BAND
    ratio = stats.draft_to_thought_token_ratio
    return common_checks(stats, "draft") + [
        _check(
            "answer_agrees_with_cot",
            stats.answer_agreement >= MIN_AGREEMENT,
            dg.AssetCheckSeverity.WARN,
            answer_agreement=stats.answer_agreement,
            threshold=MIN_AGREEMENT,
        ),
        _check(
            "token_ratio_in_band",
            low <= ratio <= high,
            dg.AssetCheckSeverity.WARN,
            draft_to_thought_token_ratio=ratio,
            low=low,
            high=high,
        ),
        _check(
            "draft_steps_short",
            stats.short_step_share >= MIN_SHORT_STEPS,
            dg.AssetCheckSeverity.WARN,
            short_step_share=stats.short_step_share,
            max_words=MAX_DRAFT_WORDS,
            threshold=MIN_SHORT_STEPS,
        ),
        _check(
            "draft_numbers_from_thought",
            stats.share(stats.num_unsupported) <= MAX_UNSUPPORTED,
            dg.AssetCheckSeverity.WARN,
            unsupported_share=stats.share(stats.num_unsupported),
            num_unsupported=stats.num_unsupported,
            threshold=MAX_UNSUPPORTED,
            description="numbers in a draft should come from its thought (a cheap hallucination check)",
        ),
    ]


COT_CHECK_NAMES = ["tags_well_formed", "accuracy"]
COD_CHECK_NAMES = [
    "tags_well_formed",
    "accuracy",
    "answer_agrees_with_cot",
    "token_ratio_in_band",
    "draft_steps_short",
    "draft_numbers_from_thought",
]


def _check(
    name: str, passed: bool, severity: dg.AssetCheckSeverity, description: str | None = None, **numbers
) -> dg.AssetCheckResult:
    metadata = {
        k: (dg.MetadataValue.float(float(v)) if isinstance(v, float) else dg.MetadataValue.int(v))
        for k, v in numbers.items()
    }
    return dg.AssetCheckResult(
        check_name=name, passed=bool(passed), severity=severity, metadata=metadata, description=description
    )
