"""Synchronous `generateContent`, answered like a batch line, on the standard and Flex tiers.

Served on both backends' paths (see `server`): the Developer API's
`/{v1,v1beta}/models/{model}:generateContent` and Vertex AI's
`/{v1,v1beta1}/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent`.

* `serviceTier` (top level of the body, as google-genai 3.x sends it): absent, `unspecified` or
  `standard` is the standard tier; `flex` the Flex tier; `priority` is answered as standard (the
  emulator has no queue to jump); anything else is refused (400), as proto-JSON refuses an unknown
  enum value. Case does not matter (`FLEX` and `flex` are both sent in Google's samples).
* The answer is the batch responder's (`Responder.response`): same thoughts, answers and usage; the
  per-line faults (`wrong_rate`, `truncate_rate`, `no_thoughts_rate`) are drawn from the request's
  bytes and how many times the same request was asked before, so a run is reproducible whatever the
  order of concurrent calls, and asking again gets a fresh draw, as a model would give.
* `online_fail_after` N: once N calls were answered, every further call answers 500 INTERNAL until
  the fault is changed (a run killed half-way, for tests of what a rerun asks again).
* Latency: `--online-latency` seconds on the standard tier, `--flex-latency` on Flex.
* Shedding: on Flex, `flex_shed_rate` of calls are answered `flex_shed_status` (503 UNAVAILABLE
  "The model is overloaded", the status Gemini gives when capacity, not the caller's quota, runs
  out; 429 RESOURCE_EXHAUSTED on request, so a client's handling of both can be tested), drawn like
  the answer faults. Line errors and garbage lines have no synchronous form and are not drawn here.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import Counter
from collections.abc import Callable

import orjson

from .faults import Faults, line_faults, unit_draw
from .responder import Responder, get
from .store import ApiError
from .validation import ModelCatalog, request_problem

DEFAULT_ONLINE_LATENCY = 0.5  # seconds, standard tier: the real one answers in seconds
DEFAULT_FLEX_LATENCY = 2.0  # seconds, Flex: the real one targets 1-15 minutes
DEVELOPER_GENERATE = re.compile(r"^(?P<model>(?:models|tunedModels)/[^/:]+):generateContent$")
VERTEX_GENERATE = re.compile(r"^publishers/google/models/(?P<id>[^/:]+):generateContent$")
_TIERS = {
    "": "standard",
    "unspecified": "standard",
    "standard": "standard",
    "flex": "flex",
    "priority": "standard",
}
SHED_ERRORS = {
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
}


def service_tier(body: dict) -> str:
    """The tier a body asks for ("standard" or "flex"), or the API's 400 for an unknown value."""
    value = get(body, "serviceTier") or ""
    name = str(value).lower().removeprefix("service_tier_")
    if not isinstance(value, str) or name not in _TIERS:
        raise ApiError(
            400,
            "INVALID_ARGUMENT",
            "Invalid value at 'service_tier' "
            f'(type.googleapis.com/google.ai.generativelanguage.ServiceTier), "{value}"',
        )
    return _TIERS[name]


def request_digest(model: str, body: dict) -> str:
    """What identifies a request for the fault draws: its model and its bytes, tier left out."""
    request = {k: v for k, v in body.items() if k not in ("serviceTier", "service_tier")}
    data = model.encode() + b"\x1f" + orjson.dumps(request, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(data, digest_size=12).hexdigest()


class OnlineCalls:
    """Answers generateContent calls; counts how often each request was asked (thread-safe)."""

    def __init__(
        self,
        responder: Responder,
        faults: Faults,
        models: ModelCatalog,
        *,
        latency: float = DEFAULT_ONLINE_LATENCY,
        flex_latency: float = DEFAULT_FLEX_LATENCY,
        log: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.responder, self.faults, self.models = responder, faults, models
        self.latency = {"standard": latency, "flex": flex_latency}
        self.log = log or (lambda message: None)
        self.sleep = sleep
        self._asked: Counter[str] = Counter()
        self._answered = 0
        self._lock = threading.Lock()

    def answer(self, model: str, body: dict, api_version: str) -> dict:
        """The GenerateContentResponse for one call, after the tier's latency; or an ApiError."""
        model = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
        if not self.models.serves(model.removeprefix("models/")):
            raise ApiError(
                404,
                "NOT_FOUND",
                f"{model} is not found for API version {api_version}, or is not supported for "
                "generateContent. Call ListModels to see the list of available models and their "
                "supported methods.",
            )
        tier = service_tier(body)
        if not get(body, "contents"):
            raise ApiError(
                400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified"
            )
        problem = request_problem(body, model, "", api_version)
        if problem:
            raise ApiError(400, "INVALID_ARGUMENT", problem)
        digest = request_digest(model, body)
        with self._lock:
            attempt = self._asked[digest]
            self._asked[digest] += 1
        config = self.faults.snapshot()
        seed = config["seed"]
        self.sleep(self.latency[tier])
        with self._lock:
            if 0 < config["online_fail_after"] <= self._answered:
                self.log(f"generateContent {model}: fault online_fail_after, answering 500")
                raise ApiError(500, "INTERNAL", "Internal error encountered.")
            self._answered += 1
        draw = f"online#{attempt}"
        if tier == "flex" and unit_draw(seed, draw, digest, "shed") < config["flex_shed_rate"]:
            status = config["flex_shed_status"]
            self.log(f"generateContent {model} tier flex: shed ({status})")
            raise ApiError(status, *SHED_ERRORS[status])
        rates = {
            "truncate": config["truncate_rate"],
            "no_thoughts": config["no_thoughts_rate"],
            "wrong_answer": config["wrong_rate"],
        }
        hits = line_faults(seed, draw, digest, rates)
        self.log(
            f"generateContent {model} tier {tier}: answered"
            + (f" ({', '.join(sorted(hits))})" if hits else "")
        )
        return self.responder.response(
            body,
            model=model,
            batch_name=draw,
            key=digest,
            truncated="truncate" in hits,
            no_thoughts="no_thoughts" in hits,
            wrong="wrong_answer" in hits,
        )
