"""What the two stages ask: CoT generation and CoD summarization, as neutral `Prompt`s.

A backend turns a `Prompt` into its API's request (`model_io.WireFormat`). The version strings go
into every record's lineage, so change them whenever a prompt's wording or shape changes.
"""

import orjson

from cotgen_assets.core.model_io import Prompt

GENERATION_PROMPT_VERSION = "cot-gen-v1"
SUMMARIZATION_PROMPT_VERSION = "cod-sum-v1"

GENERATION_INSTRUCTIONS = (
    "Solve the following math problem. Reason step by step, then state the final answer "
    "on its own at the end, inside \\boxed{}."
)

# Chain of Draft (Xu et al. 2025, "Chain of Draft: Thinking Faster by Writing Less"):
# the same steps, each cut to a minimal draft of at most five words.
SUMMARIZATION_INSTRUCTIONS = (
    "Rewrite the reasoning below as a Chain of Draft: keep the same steps in the same order, "
    "but cut each step to a minimal draft of at most five words (equations, numbers and "
    "symbols are fine). Add no new steps, explanations or commentary. Then give the final "
    "answer of the reasoning: only the answer itself (a number or expression), without "
    "\\boxed{} or units.\n"
    'Reply with JSON: {"draft_steps": [one string per step], "final_answer": string}.'
)

# The thinking levels each model takes (Google's thinking guide: Gemini 3 Pro low and high,
# 3.1 Pro adds medium, only Flash has minimal). Other models: any value of the API's enum.
MODEL_THINKING_LEVELS = {
    "gemini-3.1-pro-preview": ("low", "medium", "high"),
    "gemini-3-pro-preview": ("low", "high"),
    "gemini-3-flash-preview": ("minimal", "low", "medium", "high"),
}
# The SDK's ThinkingLevel values, all but "unspecified" (the model's default).
API_THINKING_LEVELS = ("minimal", "low", "medium", "high", "xhigh")

DRAFT_SCHEMA = {
    "type": "object",
    "properties": {
        "draft_steps": {
            "type": "array",
            "items": {"type": "string"},
            "description": "The reasoning's steps in order, each at most five words.",
        },
        "final_answer": {"type": "string", "description": "The final answer only."},
    },
    "required": ["draft_steps", "final_answer"],
}


def thinking_levels(model: str) -> tuple[str, ...]:
    """The thinking levels `model` (with or without `models/`) takes, lower case."""
    return MODEL_THINKING_LEVELS.get(model.removeprefix("models/"), API_THINKING_LEVELS)


def validate_thinking_level(model: str, thinking_level: str) -> None:
    """Refuse a level the model does not take: the API would fail every request of the batch with
    it, and each failure would count as a try of its problem. Any case, as the API reads it."""
    levels = thinking_levels(model)
    if thinking_level.lower() not in levels:
        raise ValueError(
            f"thinking_level {thinking_level!r} is not one that model {model!r} takes; "
            f"it takes: {', '.join(levels)}"
        )


def generation_prompt(key: str, question: str, thinking_level: str = "high", model: str = "") -> Prompt:
    """Ask for a step-by-step solution with thought summaries.

    The question is the last part on its own, so the emulator (and a reader of the
    request file) can find it without parsing the instructions.
    """
    return Prompt(
        key=key,
        texts=(GENERATION_INSTRUCTIONS, question),
        model=model,
        thinking=thinking_level,
        include_thoughts=True,
    )


def summarization_prompt(
    key: str, question: str, thought: str, answer: str, thinking_level: str = "low", model: str = ""
) -> Prompt:
    """Ask to turn one CoT sample into a Chain of Draft, as structured JSON."""
    return Prompt(
        key=key,
        texts=(
            SUMMARIZATION_INSTRUCTIONS,
            "Problem:\n" + question,
            "Reasoning:\n" + thought,
            "Answer:\n" + answer,
        ),
        model=model,
        schema=DRAFT_SCHEMA,
        thinking=thinking_level,
    )


def parse_draft(answer_text: str) -> tuple[list[str], str]:
    """The draft steps and final answer of a summarization answer.

    Raises ValueError saying what is wrong, so the caller can record why a sample failed.
    """
    text = (answer_text or "").strip()
    if text.startswith("```"):  # a fenced block, despite the JSON mime type
        text = text.strip("`").strip()
        if text.startswith("json"):
            text = text[len("json") :]
    if not text:
        raise ValueError("summarization answer is empty")
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"summarization answer is not JSON: {exc}; starts {text[:80]!r}") from None
    if not isinstance(data, dict):
        raise ValueError(f"summarization answer is a JSON {type(data).__name__}, not an object")
    steps = data.get("draft_steps")
    if not isinstance(steps, list) or not all(isinstance(s, str) for s in steps):
        raise ValueError("summarization answer has no 'draft_steps' list of strings")
    steps = [s.strip() for s in steps if s.strip()]
    if not steps:
        raise ValueError("summarization answer has no draft steps")
    final = data.get("final_answer")
    if isinstance(final, (int, float)) and not isinstance(final, bool):
        final = str(final)
    if not isinstance(final, str) or not final.strip():
        raise ValueError("summarization answer has no 'final_answer' string")
    return steps, final.strip()
