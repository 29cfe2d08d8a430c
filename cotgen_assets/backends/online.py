"""The single synchronous call of the Gemini backends (`Backend.generate`): one request line of the
Gemini wire (`{"key", "request"}`) sent as `generateContent` at a service tier, answered as the
output line a batch job would write (`{"key", "response"}`), so an online answer is read, priced
and ingested as a batch line is. And what an online round's "job" looks like to the lifecycle.

One attempt per call: 429 and 503 raise `OnlineRefused`, an answer lost in transit `OnlineLost`
(`core.online` retries and counts them); any other failure a `GeminiError`, the key scrubbed.
"""

import orjson
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from cotgen_assets.backends.base import BatchInfo
from cotgen_assets.backends.retries import Retrying, is_transient
from cotgen_assets.core.model_io import SUCCEEDED
from cotgen_assets.core.online import FLEX, STANDARD, OnlineLost, OnlineRefused

# How long one call may take: Flex targets 1-15 minutes, the standard tier seconds.
TIMEOUT_SECONDS = {STANDARD: 600.0, FLEX: 1200.0}
_REFUSALS = frozenset({429, 503})  # the API declined to answer now; nothing was billed


def generate_line(client, retrying: Retrying, model: str, request_line: bytes, tier: str) -> bytes:
    """`generateContent` of `model` for one request line at `tier`; its answer as an output line."""
    item = orjson.loads(request_line)
    request = item["request"]
    config = genai_types.GenerateContentConfig.model_validate(
        {
            **request.get("generationConfig", {}),
            **{k: v for k, v in request.items() if k == "systemInstruction"},
            "serviceTier": tier,
            "httpOptions": {"timeout": int(TIMEOUT_SECONDS[tier] * 1000), "retryOptions": {"attempts": 1}},
        }
    )
    failure: BaseException | None = None
    try:
        response = client.models.generate_content(
            model=model.removeprefix("models/"), contents=request["contents"], config=config
        )
    except Exception as exc:  # mapped below, outside this block: the SDK's error holds the key
        failure = _failure(retrying, model, exc)
    if failure is not None:
        raise failure
    body = response.model_dump(mode="json", by_alias=True, exclude_none=True)
    body.pop("sdkHttpResponse", None)
    return orjson.dumps({"key": item["key"], "response": body})


def _failure(retrying: Retrying, model: str, exc: BaseException) -> BaseException:
    what = f"generateContent of {model}"
    if isinstance(exc, genai_errors.APIError) and exc.code in _REFUSALS:
        return OnlineRefused(exc.code, f"{what}: {retrying.explain(exc)}")
    if is_transient(exc) and not isinstance(exc, genai_errors.APIError):
        return OnlineLost(f"{what}: {retrying.explain(exc)}")
    return retrying.final_error(what, exc, 1)


def online_batch_info(name: str) -> BatchInfo:
    """An online round's shard (`core.online_round`): answered by synchronous calls, so ended."""
    return BatchInfo(
        name, None, "JOB_STATE_SUCCEEDED", None, None, None, None, None, None, None, None, end=SUCCEEDED
    )
