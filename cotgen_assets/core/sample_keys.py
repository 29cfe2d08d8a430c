"""The key of one request line, and of one record: which problem, which of its k answers.

Sample 0 keeps the problem id as its key, so a scenario asked once per problem sends and stores
exactly what it always did; sample s > 0 is `<id>#<s>`. Problem ids are `<scenario>-<source row>`
with scenario names of `[A-Za-z0-9_-]` (`scenarios.IDENTIFIER`), so an id never holds the separator.
"""

SEPARATOR = "#"
MAX_SAMPLES_PER_PROBLEM = 64  # answers per problem: 64 is already past what datasets keep (16)


def sample_key(problem_id: str, sample: int) -> str:
    """The key of answer `sample` (0-based) of `problem_id`."""
    return problem_id if sample == 0 else f"{problem_id}{SEPARATOR}{sample}"


def is_number(text: str) -> bool:
    """ASCII digits only: `str.isdigit` also takes "²" and "٣", which `int` refuses or reads as 3."""
    return text.isascii() and text.isdigit()


def parse_key(key: str) -> tuple[str, int | None]:
    """(problem id, sample) of `<id>#<sample>`, or (problem id, None) of an `<id>` naming no sample;
    ValueError when what follows the separator is not a number."""
    problem_id, separator, sample = key.partition(SEPARATOR)
    if separator and not is_number(sample):
        raise ValueError(f"{key!r}: the sample after {SEPARATOR!r} is not a number")
    return problem_id, int(sample) if separator else None


def problem_and_sample(key: str) -> tuple[str, int]:
    """(problem id, sample) of a key made by `sample_key`."""
    problem_id, sample = parse_key(key)
    return problem_id, sample or 0


def sample_of(record: dict) -> int:
    """A record's (or a request context's) sample: records written before samples existed have no
    `sample` and are sample 0, a problem's one answer."""
    return record.get("sample", 0)


def request_key(record: dict) -> str:
    """The key a CoT/CoD record (or a request's context) was asked under."""
    return sample_key(record["id"], sample_of(record))


def validate_samples_per_problem(samples_per_problem: int) -> None:
    if not 1 <= samples_per_problem <= MAX_SAMPLES_PER_PROBLEM:
        raise ValueError(
            f"samples_per_problem must be between 1 and {MAX_SAMPLES_PER_PROBLEM}, got {samples_per_problem}"
        )
