"""Edits that turn a benchmark problem into "another" one as scraped or re-hosted data does, for the
decontamination tests and bench/decontaminate.py: an instruction added, HTML entities, look-alike letters."""

import html
import re

# Cyrillic letters that look like these Latin ones (what a homoglyph tool or a mixed keyboard types).
_CYRILLIC = str.maketrans("aeopcxyAEOPCXHKMT", "аеорсхуАЕОРСХНКМТ")
# Lowercase Greek letters drawn like these Latin ones, put inside words ("Whαt ιs"): α, ι, ο, ρ, υ.
_GREEK_LOWER = str.maketrans("aiopu", "αιορυ")
_INSIDE_A_WORD = re.compile(r"(?<=[A-Za-z])[aiopu]|[aiopu](?=[A-Za-z])")


def _numeric_entities(text: str) -> str:
    """`'` as `&#39;` and `"` as `&#34;`, as many HTML writers other than Python's do, and < > &."""
    return html.escape(text, quote=False).replace("'", "&#39;").replace('"', "&#34;")


EDITS = {
    "appended ' Show your work.'": lambda text: text + " Show your work.",
    "appended '\\n\\nAnswer:'": lambda text: text + "\n\nAnswer:",
    "appended 'Please reason step by step…'": lambda text: (
        text + "\nPlease reason step by step, and put your final answer within \\boxed{}."
    ),
    "prepended 'Problem: '": lambda text: "Problem: " + text,
    "html.escape": html.escape,
    "numeric HTML entities": _numeric_entities,
    "Cyrillic look-alike letters": lambda text: text.translate(_CYRILLIC),
    "lowercase Greek look-alikes inside words": lambda text: _INSIDE_A_WORD.sub(
        lambda m: m[0].translate(_GREEK_LOWER), text
    ),
}


def escaped(index, questions: list[str], edit) -> tuple[int, list[str]]:
    """How many of the questions the edit alters, and the altered ones no benchmark matches."""
    changed = [variant for question in questions if (variant := edit(question)) != question]
    return len(changed), [variant for variant in changed if index.match(variant) is None]
