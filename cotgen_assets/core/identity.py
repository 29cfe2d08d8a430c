"""What names a submission: what it asks, and every byte it sends.

A submission's id hashes what is asked and how (problem ids, their try numbers, model, prompt
version, every request setting, the shard layout: the "ask") together with every request byte,
and each job's display name carries the ask and a hash of its shard's bytes (`shards`). So
re-running a crashed submission finds the same folder and the same display names (nothing is
paid twice), while a changed setting, or other questions under the same ids (another deployment
on the same API key, a changed dataset), is never answered by a batch of the old requests.
"""

import hashlib
from collections.abc import Iterable

import orjson

from cotgen_assets.core.shards import MAX_SHARD_BYTES
from cotgen_assets.core.stages import Stage


def ask_id_for(
    scenario: str,
    stage: Stage,
    model: str,
    prompt_version: str,
    settings: dict,
    keys_and_tries: Iterable[tuple[str, int]],
) -> str:
    """A stable id for "these problems, at these try numbers, asked this way" (`request_settings`).

    Not the submission's identity on its own: the same ids may hold other questions elsewhere.
    """
    asked = orjson.dumps(settings, option=orjson.OPT_SORT_KEYS).decode()
    digest = hashlib.sha256(f"{scenario}|{stage.name}|{model}|{prompt_version}|{asked}".encode())
    for key, tries in keys_and_tries:
        digest.update(f"\n{key}#{tries}".encode())
    return digest.hexdigest()[:12]


def submission_id_for(ask_id: str, request_lines: Iterable[bytes]) -> str:
    """The submission's id: its ask and every byte it sends."""
    digest = hashlib.sha256(ask_id.encode())
    for line in request_lines:
        digest.update(line)
    return digest.hexdigest()[:12]


def request_settings(empty_request: dict, max_requests_per_job: int) -> dict:
    """What changes how problems are asked: the request with empty problem texts (so its
    instructions, thinking level and every generation setting) and how requests become jobs."""
    return {
        "request": empty_request,
        "max_requests_per_job": max_requests_per_job,
        "max_shard_bytes": MAX_SHARD_BYTES,
    }
