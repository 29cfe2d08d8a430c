"""What the emulated model answers: a thinking model that knows GSM8K and MATH by heart.

Two request kinds, as the pipeline sends them (`cotgen_assets.backends.gemini_wire`):

* **generation** (no response schema): the question is the text of the last part of the last
  user content. A question found in the reference datasets (`$COTGEN_DATASETS_DIR/**/*.parquet`)
  is answered with its reference solution as the thoughts and `\\boxed{<reference answer>}`;
  any other question gets a clearly labelled synthetic answer.
* **summarization** (`responseMimeType: application/json` plus a schema): user parts
  `Problem:\\n...`, `Reasoning:\\n...`, `Answer:\\n...`; the answer is the JSON text
  `{"draft_steps": [...], "final_answer": "..."}`.

Token counts use one function, `count_tokens` (ceil(chars / 4)), for prompt, thoughts and answer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotgen_assets.core.answers import extract_boxed_answer, extract_gsm8k_answer

SYNTHETIC_LABEL = "[cotgen emulator]"
SYNTHETIC_ANSWER = "42"
_SCHEMA_KEYS = ("responseJsonSchema", "response_json_schema", "responseSchema", "response_schema")
_CALCULATOR = re.compile(r"<<[^<>]*>>")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def count_tokens(*texts: str) -> int:
    """The emulator's tokenizer: ceil(characters / 4) over all the texts together."""
    return math.ceil(sum(len(t) for t in texts) / 4)


def get(mapping: Any, camel: str, default: Any = None) -> Any:
    """`mapping[camel]`, or its snake_case spelling (proto-JSON accepts both)."""
    if not isinstance(mapping, dict):
        return default
    if camel in mapping:
        return mapping[camel]
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()
    return mapping.get(snake, default)


def _texts(content: Any) -> list[str]:
    parts = get(content, "parts") or []
    return [p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str)]


def _digest(*parts: str, size: int) -> bytes:
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=size).digest()


@dataclass(frozen=True)
class Reference:
    """A known problem: the reasoning to think aloud and the answer to box."""

    reasoning: str
    answer: str | None
    dataset: str


class ReferenceIndex:
    """Question text -> reference solution, loaded once and lazily from parquet files."""

    def __init__(self, datasets_dir: str | os.PathLike | None):
        self.datasets_dir = Path(datasets_dir) if datasets_dir else None
        self._index: dict[str, tuple[str, str]] | None = None
        self._lock = threading.Lock()

    def _load(self) -> dict[str, tuple[str, str]]:
        index: dict[str, tuple[str, str]] = {}
        if not self.datasets_dir or not self.datasets_dir.is_dir():
            return index
        import pyarrow.parquet as pq

        for path in sorted(self.datasets_dir.rglob("*.parquet")):
            names = set(pq.read_schema(path).names)
            if {"question", "answer"} <= names:
                columns, kind = ("question", "answer"), "gsm8k"
            elif {"problem", "solution"} <= names:
                columns, kind = ("problem", "solution"), "math"
            else:
                continue
            table = pq.read_table(path, columns=list(columns))
            for question, solution in zip(*(table.column(c).to_pylist() for c in columns)):
                if question and solution:
                    index.setdefault(question.strip(), (solution, kind))
        return index

    def __len__(self) -> int:
        return len(self._ensure())

    @property
    def loaded(self) -> bool:
        """Whether the index is in memory: until then, answering a job waits for it."""
        return self._index is not None

    def _ensure(self) -> dict[str, tuple[str, str]]:
        if self._index is None:
            with self._lock:
                if self._index is None:
                    self._index = self._load()
        return self._index

    def lookup(self, question: str) -> Reference | None:
        found = self._ensure().get((question or "").strip())
        if found is None:
            return None
        solution, kind = found
        if kind == "gsm8k":
            lines = [_CALCULATOR.sub("", line).rstrip() for line in solution.splitlines()]
            reasoning = "\n".join(line for line in lines if not line.lstrip().startswith("####"))
            return Reference(reasoning.strip(), extract_gsm8k_answer(solution), "gsm8k")
        return Reference(solution.strip(), extract_boxed_answer(solution), "competition_math")


def is_summarization(request: dict) -> bool:
    config = get(request, "generationConfig") or {}
    return any(key in config for key in _SCHEMA_KEYS)


def include_thoughts(request: dict) -> bool:
    thinking = get(get(request, "generationConfig") or {}, "thinkingConfig") or {}
    return bool(get(thinking, "includeThoughts", False))


def last_user_texts(request: dict) -> list[str]:
    """Text parts of the last user content."""
    for content in reversed(get(request, "contents") or []):
        if isinstance(content, dict) and content.get("role", "user") == "user":
            return _texts(content)
    return []


def prompt_tokens(request: dict) -> int:
    texts = _texts(get(request, "systemInstruction"))
    for content in get(request, "contents") or []:
        texts.extend(_texts(content))
    return count_tokens(*texts)


def draft_steps(reasoning: str) -> list[str]:
    """One draft of at most five words per sentence of the reasoning, around its `=` if any."""
    steps = []
    for line in reasoning.splitlines():
        line = line.strip()
        if not line or line.startswith("**"):
            continue
        for sentence in _SENTENCE_END.split(line):
            words = sentence.split()
            if not words:
                continue
            if "=" in words:  # "48/2 = 24": the equation and a word or two around it
                i = words.index("=")
                words = words[max(0, i - 2) : i + 2]
            else:
                i = next((j for j, word in enumerate(words) if "=" in word), None)
                if i is not None:  # "... yields $x=5$.": up to the formula
                    words = words[max(0, i - 3) : i + 1]
            step = " ".join(words[:5]).rstrip(".,;:")
            if step:
                steps.append(step)
    return steps


def truncate(text: str) -> str:
    """The text as a model would leave it at MAX_TOKENS: cut short, before any boxed answer."""
    cut = text.find("\\boxed")
    cut = len(text) if cut < 0 else cut
    return text[: min(cut, max(1, len(text) // 2))].rstrip()


@dataclass
class Reply:
    """What the model 'thought' and 'said' for one request."""

    thoughts: list[str]
    answer: str


class Responder:
    """Builds GenerateContentResponse objects (proto-JSON dicts) for requests."""

    def __init__(self, datasets_dir: str | os.PathLike | None = None):
        if datasets_dir is None:
            datasets_dir = os.environ.get("COTGEN_DATASETS_DIR") or None
        self.references = ReferenceIndex(datasets_dir)

    def reply(self, request: dict) -> Reply:
        if is_summarization(request):
            return self._summarize(request)
        texts = last_user_texts(request)
        question = texts[-1] if texts else ""
        ref = self.references.lookup(question)
        if ref is None:
            return self._synthetic(question)
        thoughts = _split_thoughts(ref.reasoning, "**Solving the problem**")
        if ref.answer is None:
            return Reply(thoughts, "The solution above does not end in a single final answer.")
        answer = (
            f"Working through the problem step by step gives ${ref.answer}$.\n\n"
            f"The final answer is \\boxed{{{ref.answer}}}."
        )
        return Reply(thoughts, answer)

    def _synthetic(self, question: str) -> Reply:
        preview = " ".join(question.split()[:12])
        reasoning = (
            f"{SYNTHETIC_LABEL} synthetic reasoning: this question is not in the emulator's "
            f"reference datasets, so this text is made up.\n"
            f"The question begins: {preview}\n"
            f"Suppose the quantity asked for = {SYNTHETIC_ANSWER}.\n"
            f"Nothing here was actually computed."
        )
        answer = (
            f"{SYNTHETIC_LABEL} synthetic answer, not a real solution.\n\n"
            f"The final answer is \\boxed{{{SYNTHETIC_ANSWER}}}."
        )
        return Reply(_split_thoughts(reasoning, "**Making up an answer**"), answer)

    def _summarize(self, request: dict) -> Reply:
        sections: dict[str, str] = {}
        for content in get(request, "contents") or []:
            if isinstance(content, dict) and content.get("role", "user") == "user":
                for text in _texts(content):
                    for label in ("Problem", "Reasoning", "Answer"):
                        prefix = f"{label}:\n"
                        if text.lstrip().startswith(prefix):
                            sections[label] = text.lstrip()[len(prefix) :]
        answer_text = sections.get("Answer", "")
        final = extract_boxed_answer(answer_text)
        if final is None:
            numbers = _NUMBER.findall(answer_text)
            final = numbers[-1].replace(",", "") if numbers else ""
        body = {"draft_steps": draft_steps(sections.get("Reasoning", "")), "final_answer": final}
        thought = (
            "**Condensing the reasoning**\n\n"
            "I will keep one draft of a few words per step and carry the final answer over unchanged."
        )
        return Reply([thought], json.dumps(body, ensure_ascii=False))

    def response(
        self,
        request: dict,
        *,
        model: str,
        batch_name: str,
        key: str,
        truncated: bool = False,
        no_thoughts: bool = False,
        wrong: bool = False,
    ) -> dict:
        """A GenerateContentResponse for `request`, as the batch output line's `response`.

        `wrong`: a generation answer ends in a wrong final answer (a model that erred), so
        tests and benchmarks can run a scenario at a known accuracy."""
        reply = self.reply(request)
        if wrong and not is_summarization(request):
            reply = Reply(reply.thoughts, wrong_answer(reply.answer))
        answer = truncate(reply.answer) if truncated else reply.answer
        parts: list[dict] = []
        if include_thoughts(request) and not no_thoughts:
            parts.extend({"text": t, "thought": True} for t in reply.thoughts)
        signature = base64.b64encode(_digest(batch_name, key, "signature", size=48)).decode()
        parts.append({"text": answer, "thoughtSignature": signature})
        prompt = prompt_tokens(request)
        candidates = count_tokens(answer)
        thoughts = count_tokens(*reply.thoughts)  # billed even when the summary is not returned
        model_version = get(request, "model") or model
        return {
            "candidates": [
                {
                    "content": {"role": "model", "parts": parts},
                    "finishReason": "MAX_TOKENS" if truncated else "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": prompt,
                "candidatesTokenCount": candidates,
                "thoughtsTokenCount": thoughts,
                "totalTokenCount": prompt + candidates + thoughts,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
            },
            "modelVersion": model_version.removeprefix("models/").removeprefix("publishers/google/models/"),
            "responseId": base64.urlsafe_b64encode(_digest(batch_name, key, "id", size=12)).decode(),
        }


def wrong_answer(answer: str) -> str:
    """The same answer text with its final answer changed: n -> n+1, anything else -> (x)+1."""
    final = extract_boxed_answer(answer)
    if final is None:
        return answer + "\n\nOn second thought, the final answer is \\boxed{-1}."
    changed = str(int(final) + 1) if re.fullmatch(r"-?\d+", final.strip()) else f"({final})+1"
    return answer.replace(f"\\boxed{{{final}}}", f"\\boxed{{{changed}}}")


def _split_thoughts(reasoning: str, heading: str) -> list[str]:
    """Thought summaries as a thinking model sends them: a headed first part, and a second one
    when the reasoning has several paragraphs (split at a blank line, so joining the parts
    with a blank line gives the reasoning back)."""
    paragraphs = reasoning.split("\n\n")
    if len(paragraphs) < 2:
        return [f"{heading}\n\n{reasoning}"]
    half = len(paragraphs) // 2
    return [f"{heading}\n\n" + "\n\n".join(paragraphs[:half]), "\n\n".join(paragraphs[half:])]
