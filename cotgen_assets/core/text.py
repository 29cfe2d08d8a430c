"""Text helpers shared by the records and their quality figures."""

import re

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
