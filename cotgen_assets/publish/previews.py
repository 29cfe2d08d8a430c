"""What a person sees of samples in the UI: excerpts of thoughts and drafts, preview rows."""

from cotgen_assets.core.records import draft_tokens, thinking_tokens
from cotgen_assets.core.sample_keys import sample_of
from cotgen_assets.core.stages import Stage
from cotgen_assets.core.text import tagged_block


def excerpt(text: str | None, head: int = 90, tail: int = 45) -> str:
    """The start and the end of a long text on one line, cut at word boundaries.

    Short enough (at most head + tail + 3 characters) for the UI's preview cells.
    """
    flat = " ".join((text or "").split())
    if len(flat) <= head + tail + 3:
        return flat
    start, end = flat[:head], flat[-tail:]
    if " " in start[head // 2 :]:
        start = start[: start.rindex(" ")]
    if " " in end[: tail // 2]:
        end = end[end.index(" ") + 1 :]
    return f"{start} … {end}"


def thought_excerpt(cot: str) -> str:
    return excerpt(tagged_block(cot or "", "thought") or cot)


def draft_excerpt(cod: str, steps: int = 4) -> str:
    """The first draft steps joined by ` | ` (a draft is a few words per line)."""
    draft = tagged_block(cod or "", "draft") or cod or ""
    lines = [line.strip() for line in draft.split("\n") if line.strip()]
    shown = " | ".join(lines[:steps])
    more = f" | … (+{len(lines) - steps} steps)" if len(lines) > steps else ""
    return excerpt(shown, head=100, tail=25) + more


def preview_rows(records: list[dict], stage: Stage) -> tuple[list[dict], list[str]]:
    """Rows and columns of a samples preview: excerpts of the thought or draft, never the whole text.

    Few, narrow columns so the UI's table stays readable; `cotgen trace ID` shows the rest.
    """
    row_of = _draft_row if stage.summarizes is not None else _thought_row
    rows = [row_of(record) | {"cost_usd": round(record[stage.name]["cost_usd"], 6)} for record in records]
    columns = list(rows[0]) if rows else ["id", "sample", "question", "predicted / reference", "correct"]
    return rows, columns


def _thought_row(record: dict) -> dict:
    return {
        "id": record["id"],
        "sample": sample_of(record),
        "question": excerpt(record["question"], 60, 25),
        "thought (excerpt)": thought_excerpt(record["cot"]),
        "thinking tokens": thinking_tokens(record),
        "predicted / reference": f"{record['predicted_answer']} / {record['answer']}",
        "correct": record["correct"],
    }


def _draft_row(record: dict) -> dict:
    return {
        "id": record["id"],
        "sample": sample_of(record),
        "question": excerpt(record["question"], 60, 25),
        "draft (excerpt)": draft_excerpt(record["cod"]),
        "tokens thought → draft": f"{thinking_tokens(record)} → {draft_tokens(record)}",
        "predicted / reference": f"{record['predicted_answer']} / {record['answer']}",
        "correct": record["correct"],
        "agrees with CoT": record.get("agrees_with_cot"),
    }
