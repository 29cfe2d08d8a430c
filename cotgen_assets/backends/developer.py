"""The Gemini Developer API's batch mode: request files through the Files API, `batchGenerateContent`.

Without an API key it talks to the local emulator through the same client, so offline runs
exercise the same code. Reads go through the SDK's own transport as raw JSON (`raw_get`), because
the public `batches.get` drops the counts (`batchStats`) and the job's `error` on this API.
"""

from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from google import genai
from google.genai import types as genai_types

from cotgen_assets.backends.base import Backend, BackendSettings, BatchInfo, count, timestamp
from cotgen_assets.backends.gemini_wire import GeminiWire, job_status
from cotgen_assets.backends.online import generate_line
from cotgen_assets.backends.retries import Retrying, logger
from cotgen_assets.core.model_io import Limits
from cotgen_assets.core.storage import atomic_write, is_local

API_VERSION = "v1beta"
REAL_API_HOST = "generativelanguage.googleapis.com"
OFFLINE_KEY = "offline-emulator"  # any non-empty key works with the emulator
EMULATOR_HEADER = "x-cotgen-emulator"  # the emulator sends it on every answer; Gemini never does

_announced_offline: set[str] = set()


def timeout_ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))  # HttpOptions.timeout is in milliseconds


def create_options(timeout_seconds: float) -> genai_types.HttpOptions:
    """A create's own timeout, longer than other calls' (see `base.CREATE_TIMEOUT_SECONDS`)."""
    return genai_types.HttpOptions(timeout=timeout_ms(timeout_seconds))


def raw_get(client: genai.Client, path: str, timeout_seconds: float | None = None) -> dict:
    """GET through the SDK's own transport, for fields the SDK drops; `{}` for an empty body."""
    options = None if timeout_seconds is None else {"timeout": timeout_ms(timeout_seconds)}
    response = client._api_client.request("get", path, {}, options)
    return orjson.loads(response.body) if response.body else {}


def batch_info_from_operation(operation: dict) -> BatchInfo:
    """A BatchInfo from the raw Operation JSON of the Gemini API."""
    metadata = operation.get("metadata") or {}
    output = metadata.get("output") or operation.get("response") or {}
    stats = metadata.get("batchStats")
    error = operation.get("error")
    if error:
        error = f"{error.get('message') or 'no message'} (code {error.get('code')})"
    model = metadata.get("model")
    return BatchInfo(
        name=operation.get("name") or metadata.get("name"),
        display_name=metadata.get("displayName"),
        **job_status(metadata.get("state")),
        model=model.removeprefix("models/") if model else None,
        result_file=output.get("responsesFile"),
        create_time=timestamp(metadata.get("createTime")),
        end_time=timestamp(metadata.get("endTime")),
        request_count=count(stats, "requestCount"),
        succeeded_count=count(stats, "successfulRequestCount"),
        failed_count=count(stats, "failedRequestCount"),
        error=error or None,
        source=(metadata.get("inputConfig") or {}).get("fileName"),
    )


def batch_info_from_job(job: genai_types.BatchJob) -> BatchInfo:
    """A BatchInfo from the SDK's BatchJob, which carries no counts on the Gemini API."""
    return BatchInfo(
        name=job.name,
        display_name=job.display_name,
        **job_status(job.state),
        model=job.model.removeprefix("models/") if job.model else None,
        result_file=job.dest.file_name if job.dest else None,
        create_time=timestamp(job.create_time),
        end_time=timestamp(job.end_time),
        request_count=None,
        succeeded_count=None,
        failed_count=None,
        error=job.error.message if job.error else None,
    )


class DeveloperWire(GeminiWire):
    """The Developer API's batch files: `{"key", "request"}` lines in, `{"key", "response"}` or
    `{"key", "error"}` lines out. No limit on requests per job; input files up to 2 GB."""

    name = "developer"
    label = "the Gemini Developer API"
    limits = Limits(max_requests_per_job=None, max_bytes_per_file=2_000_000_000)


WIRE = DeveloperWire()


class DeveloperBatches(Backend):
    """Upload request files, run batch jobs and download their results on the Gemini Developer API.

    With no `api_key` it is offline and uses the emulator at `base_url`, else `emulator_url`; with
    a key it is offline too when the endpoint at `base_url` turns out to be the emulator.
    """

    wire = WIRE

    def __init__(
        self,
        retrying: Retrying,
        api_key: str | None,
        base_url: str | None,
        emulator_url: str,
        timeout_seconds: float,
        create_timeout_seconds: float,
    ):
        super().__init__(retrying)
        self.api_key, self.base_url, self.emulator_url = api_key, base_url, emulator_url
        self.timeout_seconds, self.create_timeout_seconds = timeout_seconds, create_timeout_seconds
        self._client: Any = None
        self._emulator_answers: bool | None = None

    # -- where we talk to -----------------------------------------------------------------

    @property
    def offline(self) -> bool:
        """Whether the local emulator answers, not Gemini. Who answers decides, not the key: with a
        key and `base_url`, the endpoint is asked once, so that emulator data never passes as Gemini's."""
        if not self.api_key:
            return True
        if not self.base_url:
            return False  # Google's own endpoint
        if self._emulator_answers is None:
            self._emulator_answers = self._ask_who_answers()
        return self._emulator_answers

    def _ask_who_answers(self) -> bool:
        client = self.client()
        response = self.retrying.call(
            f"list of batches at {self.base_url}",
            lambda: client._api_client.request("get", "batches?pageSize=1", {}, None),
        )
        emulator = EMULATOR_HEADER in {name.lower() for name in response.headers}
        if emulator:
            logger.warning(
                "OFFLINE: %s is the local Gemini emulator, although GEMINI_API_KEY is set: what it "
                "makes is recorded as offline and is never pushed (no real API calls, no cost)",
                self.base_url,
            )
        return emulator

    @property
    def endpoint(self) -> str | None:
        """The base URL in use; None means Google's own endpoint."""
        if self.base_url:
            return self.base_url
        return None if self.api_key else self.emulator_url

    def describe(self) -> str:
        """For logs and metadata: where calls go, never with the key."""
        if self.offline:
            return f"offline: local Gemini emulator at {self.endpoint}"
        if self.base_url:
            return f"Gemini API at {self.base_url}"
        return f"Gemini API ({REAL_API_HOST})"

    def client(self) -> genai.Client:
        if self._client is None:
            if not self.api_key and self.endpoint not in _announced_offline:
                _announced_offline.add(self.endpoint)
                logger.warning(
                    "GEMINI_API_KEY is not set: offline mode, using the local Gemini emulator at %s "
                    "(no real API calls, no cost)",
                    self.endpoint,
                )
            options = genai_types.HttpOptions(
                api_version=API_VERSION, base_url=self.endpoint, timeout=timeout_ms(self.timeout_seconds)
            )
            self._client = genai.Client(
                vertexai=False, api_key=self.api_key or OFFLINE_KEY, http_options=options
            )
        return self._client

    # -- single calls (lifecycle.BatchJobs retries them) -----------------------------------

    def upload(self, path: Path, display_name: str, folder: str) -> str:
        """Through the Files API; the SDK reads a bucket's object as a binary file object."""
        config = {"mime_type": "jsonl", "display_name": display_name[:512]}
        if is_local(path):
            return self.client().files.upload(file=str(path), config=config).name
        with path.open("rb") as handle:
            return self.client().files.upload(file=handle, config=config).name

    def create(self, model: str, source: str, display_name: str) -> BatchInfo:
        config = {"display_name": display_name, "http_options": create_options(self.create_timeout_seconds)}
        job = self.client().batches.create(model=model, src=source, config=config)
        return batch_info_from_job(job)

    def check_name(self, name: str) -> None:
        if not name.startswith("batches/"):
            vertex = "batchPredictionJobs/" in name
            other = " (a Vertex AI job: set COTGEN_GEMINI_BACKEND=vertex to reach it)" if vertex else ""
            raise ValueError(f"batch name must look like 'batches/ID', not {name!r}{other}")

    def get(self, name: str, timeout_seconds: float | None) -> BatchInfo:
        path = "batches/" + quote(name.removeprefix("batches/"), safe="")
        return batch_info_from_operation(raw_get(self.client(), path, timeout_seconds))

    def page(self, page_size: int, token: str | None) -> tuple[list[BatchInfo], str | None]:
        path = f"batches?pageSize={int(page_size)}"
        if token:
            path += f"&pageToken={quote(token, safe='')}"
        page = raw_get(self.client(), path)
        return [batch_info_from_operation(op) for op in page.get("operations") or []], page.get(
            "nextPageToken"
        )

    def cancel(self, name: str) -> None:
        self.client().batches.cancel(name=name)

    def delete(self, name: str) -> None:
        self.client().batches.delete(name=name)

    def download(self, result_file: str, dest: Path) -> None:
        with atomic_write(dest) as handle:
            self.client().files.download(file=result_file, destination=handle)

    def generate(self, model: str, request_line: bytes, tier: str) -> bytes:
        """`generateContent` with the very body a batch line carries (`backends.online`)."""
        return generate_line(self.client(), self.retrying, model, request_line, tier)


def from_settings(settings: BackendSettings) -> DeveloperBatches:
    retrying = Retrying(settings.max_attempts, settings.backoff_seconds, secret=settings.api_key)
    return DeveloperBatches(
        retrying,
        settings.api_key,
        settings.base_url,
        settings.emulator_url,
        settings.timeout_seconds,
        settings.create_timeout_seconds,
    )
