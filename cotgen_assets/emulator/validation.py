"""What the real API refuses and the emulator must refuse too: unknown models, bad enum values.

Where each refusal happens follows the real API:

* **Unknown model**: `batches.create` answers 404 NOT_FOUND, as the API does for a model it does
  not serve ("models/xyz is not found for API version v1beta, or is not supported for
  batchGenerateContent"); no job is made.
* **Bad `thinkingLevel`** (not a value of the enum, one the model does not take, or `thinkingBudget`
  sent with it, a 400): the API parses a request as proto-JSON when it reads it. Inlined requests
  are part of the create call's body, so the create answers 400 INVALID_ARGUMENT. The lines of an
  input file are only read when the job runs, so each bad line gets its own
  `{"key", "error": {"code": 400, ...}}` output line and the other lines are answered.

* **`candidateCount` > 1 on a Gemini 3 model**: 400 "Multiple candidates is not enabled for this
  model", a line's own error as above (the Developer API refuses it on 3.x models; it worked on
  2.x: googleapis/js-genai issue #1609, googleapis/python-genai issue #1723, where one user reports
  Vertex AI taking it for gemini-3.1-pro-preview). The project asks k answers as k request lines
  (`core/sample_keys`) on both backends.

Enum values are matched case-insensitively: the SDK sends its `ThinkingLevel` members upper-case
("HIGH") and the API's own REST samples send "low", which the project does too.
"""

from __future__ import annotations

import os
from typing import Any

from cotgen_assets.core.prompts import thinking_levels

from .responder import get

# The models the project's price table (cotgen_assets/prices.csv) knows, plus common current ones.
# gemini-3-pro-preview was shut down on 2026-03-09; reports disagree on whether calls fail or are
# rerouted, so it is accepted, as the price table still prices it.
KNOWN_MODELS = frozenset(
    {
        "gemini-3.1-pro-preview",
        "gemini-3-pro-preview",
        "gemini-3-flash-preview",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gemini-2.0-flash",
        "gemini-2.0-flash-lite",
        "gemini-pro-latest",
        "gemini-flash-latest",
        "gemini-flash-lite-latest",
    }
)
MODELS_ENV = "COTGEN_EMULATOR_MODELS"
ANY_MODEL = "*"
# google.genai.types.ThinkingLevel (SDK 3.6.1), the API's published enum.
THINKING_LEVELS = frozenset({"THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH", "XHIGH"})
_THINKING_LEVEL_TYPE = "type.googleapis.com/google.ai.generativelanguage.{ver}.GenerationConfig.ThinkingLevel"


def parse_models(text: str | None) -> frozenset[str]:
    """Model ids from a comma-separated list (`--models`, $COTGEN_EMULATOR_MODELS); `*` means any."""
    names = (name.strip().removeprefix("models/") for name in (text or "").split(","))
    return frozenset(name for name in names if name)


class ModelCatalog:
    """The models batches.create accepts: the built-in list plus `extra` (`*` accepts any)."""

    def __init__(self, extra: frozenset[str] | None = None):
        if extra is None:
            extra = parse_models(os.environ.get(MODELS_ENV))
        self.any = ANY_MODEL in extra
        self.names = KNOWN_MODELS | (extra - {ANY_MODEL})

    def serves(self, model_id: str) -> bool:
        return self.any or model_id in self.names

    def check(self, model: str, api_version: str) -> tuple[int, str, str] | None:
        """None if `model` (`models/<id>` or `tunedModels/<id>`) is served, else the API's 404."""
        if self.serves(model.removeprefix("models/")):
            return None
        return (
            404,
            "NOT_FOUND",
            f"{model} is not found for API version {api_version}, or is not supported for "
            "batchGenerateContent. Call ListModels to see the list of available models and their "
            "supported methods.",
        )


MULTIPLE_CANDIDATES = "Multiple candidates is not enabled for this model"


def request_problem(
    request: Any, model: str, field_prefix: str = "", api_version: str = "v1beta"
) -> str | None:
    """The API's INVALID_ARGUMENT message for a request with a bad generation config, else None.

    `model` is the batch's; a request naming its own model is checked against that one."""
    if not isinstance(request, dict):
        return None
    model = str(get(request, "model") or model)
    model = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
    candidates = get(get(request, "generationConfig") or {}, "candidateCount")
    if isinstance(candidates, int) and candidates > 1 and model.startswith("models/gemini-3"):
        return MULTIPLE_CANDIDATES
    thinking = get(get(request, "generationConfig") or {}, "thinkingConfig")
    if not isinstance(thinking, dict):
        return None
    level = get(thinking, "thinkingLevel")
    path = f"{field_prefix}generation_config.thinking_config"
    if level is not None:
        valid = (isinstance(level, str) and level.upper() in THINKING_LEVELS) or (
            isinstance(level, int) and not isinstance(level, bool) and level >= 0
        )
        if not valid:
            shown = level if isinstance(level, str) else repr(level)
            return (
                f"Invalid value at '{path}.thinking_level' "
                f'({_THINKING_LEVEL_TYPE.format(ver=api_version)}), "{shown}"'
            )
        takes = [value.upper() for value in thinking_levels(model)]
        if isinstance(level, str) and level.upper() not in (*takes, "THINKING_LEVEL_UNSPECIFIED"):
            return (
                f"{path}.thinking_level {level.upper()} is not supported by {model}; "
                f"it supports {', '.join(takes)}."
            )
        if get(thinking, "thinkingBudget") is not None:
            return f"{path}: thinking_budget and thinking_level cannot be set together."
    return None
