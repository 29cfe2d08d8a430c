"""Reference and predicted final answers: GSM8K's `#### n` and MATH's last `\\boxed{...}`."""

import re

_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)
_BOX_COMMANDS = ("\\boxed", "\\fbox")


def extract_gsm8k_answer(solution: str) -> str | None:
    """The number after GSM8K's `####`, thousands separators removed."""
    match = _GSM8K_ANSWER.search(solution or "")
    if not match:
        return None
    return match.group(1).strip().replace(",", "") or None


def extract_boxed_answer(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced.

    Also understands the brace-less form `\\boxed 5` that some MATH solutions use.
    """
    text = text or ""
    start = max(text.rfind(command) for command in _BOX_COMMANDS)
    if start < 0:
        return None
    command = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
    i = start + len(command)
    if text.startswith(" ", i):  # "\boxed 5": the argument runs to the next "$" or space
        match = re.match(r"\s+([^\s$]+)", text[i:])
        return match.group(1) if match else None
    if not text.startswith("{", i):
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip() or None
    return None  # unbalanced braces: no answer rather than a wrong one


def extract_reference_answer(solution: str, answer_format: str) -> str | None:
    """The reference answer of a source row; `answer_format` is `gsm8k` or `boxed`."""
    if answer_format == "gsm8k":
        return extract_gsm8k_answer(solution)
    if answer_format == "boxed":
        return extract_boxed_answer(solution)
    raise ValueError(f"unknown answer_format {answer_format!r}: expected 'gsm8k' or 'boxed'")
