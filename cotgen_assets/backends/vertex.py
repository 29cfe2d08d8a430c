"""Vertex AI batch prediction (`batchPredictionJobs`), with request files and answers in a gs:// prefix.

A shard's request file is copied unchanged to `<staging>/<scenario>/<stage>-<submission>/` (each
line `{"key", "request"}`: Vertex carries the extra top-level `key` into the output line, so an
answer is matched to its request by key, whatever the order), and the job writes its answers
under `…/<shard>.predictions/prediction-model-<time>/`. Every `*.jsonl` under the job's
`outputInfo.gcsOutputDirectory` is downloaded, as one results file.

Traps of google-genai in Vertex mode (see the project's reference notes): with a custom base URL,
project and location must be passed explicitly; anonymous credentials cannot be refreshed, so a
local server gets a fixed bearer token; the SDK re-prefixes a job name with the client's project,
so reads, cancels and deletes go to the job's own resource name through the SDK's transport
(which also keeps a structured `error.details`, which `types.BatchJob` cannot parse, from failing
a read); `PARTIALLY_SUCCEEDED` ends a job although `BatchJob.done` is false.
"""

import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from google import genai
from google.genai import types as genai_types

from cotgen_assets.backends import gemini_wire
from cotgen_assets.backends.base import Backend, BackendSettings, BatchInfo, count, timestamp
from cotgen_assets.backends.config import check_vertex
from cotgen_assets.backends.developer import create_options, raw_get, timeout_ms
from cotgen_assets.backends.gemini_wire import GeminiWire, job_status
from cotgen_assets.backends.online import generate_line
from cotgen_assets.backends.retries import Retrying, logger
from cotgen_assets.core.model_io import LINE_ERROR, Limits, Reply, Usage
from cotgen_assets.core.settings import SettingError
from cotgen_assets.core.storage import atomic_write

API_VERSION = "v1"
OFFLINE_TOKEN = "cotgen-offline-token"  # the bearer token sent to a local server: no Google account needed
JOB_NAME = re.compile(r"^projects/[^/]+/locations/(?P<location>[^/]+)/batchPredictionJobs/\d+$")
MODEL_PREFIX = "publishers/google/models/"
_announced_offline: set[str] = set()


def batch_info_from_vertex(job: dict) -> BatchInfo:
    """A BatchInfo from the raw BatchPredictionJob JSON (counts may be int64 strings)."""
    stats = job.get("completionStats")
    error = job.get("error")
    if error:
        error = f"{error.get('message') or 'no message'} (code {error.get('code')})"
    model = job.get("model")
    succeeded, failed = count(stats, "successfulCount"), count(stats, "failedCount")
    source = ((job.get("inputConfig") or {}).get("gcsSource") or {}).get("uris") or [None]
    return BatchInfo(
        name=job.get("name"),
        display_name=job.get("displayName"),
        **job_status(job.get("state")),
        model=model.removeprefix(MODEL_PREFIX) if model else None,
        result_file=(job.get("outputInfo") or {}).get("gcsOutputDirectory"),
        create_time=timestamp(job.get("createTime")),
        end_time=timestamp(job.get("endTime")),
        request_count=None if stats is None else succeeded + failed + count(stats, "incompleteCount"),
        succeeded_count=succeeded,
        failed_count=failed,
        error=error or None,
        source=source[0],
        dest=((job.get("outputConfig") or {}).get("gcsDestination") or {}).get("outputUriPrefix"),
    )


def batch_info_from_job(job: genai_types.BatchJob) -> BatchInfo:
    """A BatchInfo from the SDK's BatchJob, as `batches.create` returns it."""
    return BatchInfo(
        name=job.name,
        display_name=job.display_name,
        **job_status(job.state),
        model=job.model.removeprefix(MODEL_PREFIX) if job.model else None,
        result_file=job.output_info.gcs_output_directory if job.output_info else None,
        create_time=timestamp(job.create_time),
        end_time=timestamp(job.end_time),
        request_count=None,
        succeeded_count=None,
        failed_count=None,
        error=job.error.message if job.error else None,
        source=job.src.gcs_uri[0] if job.src and job.src.gcs_uri else None,
        dest=job.dest.gcs_uri if job.dest else None,
    )


def predictions_prefix(source: str) -> str:
    """Where a job writes the answers to the request file `source`: beside it."""
    return source.removesuffix(".jsonl").removesuffix(".requests") + ".predictions"


def read_line(raw: bytes) -> Reply:
    """`{"key", "request", "status", "response"}`: `status` is "" on success, else why that
    request failed (its usage still billed); `request` the request sent, re-serialized, whose
    digest ingestion compares with the one sent under the key."""
    line, refused = gemini_wire.keyed_line(raw)
    if refused is not None:
        return refused
    return gemini_wire.with_echo(line, _reply(line))


def _reply(line: dict) -> Reply:
    status, response = line.get("status"), line.get("response")
    if status:
        reason = status if isinstance(status, str) else orjson.dumps(status).decode()
        usage = gemini_wire.usage(response.get("usageMetadata")) if isinstance(response, dict) else Usage()
        return Reply(line["key"], usage=usage, failure=LINE_ERROR, reason=reason)
    if line.get("error") is not None:
        return gemini_wire.line_error(line["key"], line["error"])
    return gemini_wire.response_reply(line["key"], response)


class VertexWire(GeminiWire):
    """Vertex AI's batch files: the Developer API's input lines (Vertex carries the extra `key`
    into the output line), output lines with a `status`. Up to 200,000 requests per job and 1 GB
    per input file."""

    name = "vertex"
    label = "Vertex AI"
    limits = Limits(max_requests_per_job=200_000, max_bytes_per_file=1_000_000_000)
    read_line = staticmethod(read_line)


WIRE = VertexWire()


class VertexBatches(Backend):
    """Batch jobs of one Google Cloud project and location, staged in a gs:// prefix.

    Credentials are Application Default Credentials; with `base_url` (a local server, such as the
    emulator) a fixed bearer token instead, and the staging bucket is then the GCS stand-in at
    `$STORAGE_EMULATOR_HOST`, read anonymously.
    """

    wire = WIRE

    def __init__(
        self,
        retrying: Retrying,
        project: str,
        location: str,
        staging: str,
        base_url: str | None,
        timeout_seconds: float,
        create_timeout_seconds: float,
    ):
        super().__init__(retrying)
        self.project, self.location, self.staging = project, location, staging.rstrip("/")
        self.base_url, self.timeout_seconds = base_url, timeout_seconds
        self.create_timeout_seconds = create_timeout_seconds
        self._client: Any = None

    @property
    def offline(self) -> bool:
        """A local server: it gets a fixed token, which Google would refuse, so it is never Gemini."""
        return bool(self.base_url)

    @property
    def endpoint(self) -> str | None:
        return self.base_url

    def describe(self) -> str:
        where = f"project {self.project}, location {self.location}, staging {self.staging}"
        if self.offline:
            return f"offline: local Vertex AI emulator at {self.base_url} ({where})"
        return f"Vertex AI batch prediction ({where})"

    def client(self) -> genai.Client:
        if self._client is None:
            credentials = None  # Application Default Credentials, fetched at the first call
            if self.offline:
                import google.oauth2.credentials

                credentials = google.oauth2.credentials.Credentials(token=OFFLINE_TOKEN)
                if self.base_url not in _announced_offline:
                    _announced_offline.add(self.base_url)
                    logger.warning(
                        "OFFLINE: Vertex AI calls go to the local server at %s with a fixed token, and "
                        "request files to the GCS stand-in at STORAGE_EMULATOR_HOST (no real API calls, "
                        "no cost)",
                        self.base_url,
                    )
            # project and location explicitly: with a base URL the SDK drops the environment's
            self._client = genai.Client(
                vertexai=True,
                project=self.project,
                location=self.location,
                credentials=credentials,
                http_options=genai_types.HttpOptions(
                    api_version=API_VERSION, base_url=self.base_url, timeout=timeout_ms(self.timeout_seconds)
                ),
            )
        return self._client

    def path(self, uri: str):
        """A gs:// URI as a path through gcsfs (anonymous on the stand-in)."""
        from upath import UPath

        options = {"token": "anon"} if self.offline else {}
        return UPath(uri, use_listings_cache=False, **options)

    def check_staging(self) -> None:
        """The staging bucket exists (one call): a missing one would otherwise end the upload in a
        long FileNotFoundError that names no setting, after the submission's files were written."""
        bucket = self.staging.removeprefix("gs://").partition("/")[0]
        if not self.path(self.staging).fs.exists(bucket):
            raise SettingError(
                f"COTGEN_VERTEX_STAGING={self.staging!r}: the bucket {bucket} does not exist (or these "
                "credentials cannot see it): create it, in the jobs' location, or point "
                "COTGEN_VERTEX_STAGING at one that exists; nothing was written or sent"
            )

    # -- single calls (lifecycle.BatchJobs retries them) -----------------------------------

    def upload(self, path: Path, display_name: str, folder: str) -> str:
        uri = "/".join(part for part in (self.staging, folder.strip("/"), path.name) if part)
        with path.open("rb") as source, atomic_write(self.path(uri)) as staged:
            shutil.copyfileobj(source, staged, 1 << 20)
        return uri

    def create(self, model: str, source: str, display_name: str) -> BatchInfo:
        config = genai_types.CreateBatchJobConfig(
            dest=predictions_prefix(source),
            display_name=display_name,
            http_options=create_options(self.create_timeout_seconds),
        )
        return batch_info_from_job(self.client().batches.create(model=model, src=source, config=config))

    def check_name(self, name: str) -> None:
        match = JOB_NAME.match(name)
        if not match:
            other = " (a Gemini Developer API batch: unset COTGEN_GEMINI_BACKEND to reach it)"
            raise ValueError(
                "batch name must look like 'projects/P/locations/L/batchPredictionJobs/ID', not "
                f"{name!r}" + (other if name.startswith("batches/") else "")
            )
        if match["location"] != self.location:
            raise ValueError(
                f"batch {name} is in location {match['location']!r}, but GOOGLE_CLOUD_LOCATION is "
                f"{self.location!r}: set GOOGLE_CLOUD_LOCATION={match['location']} to reach it"
            )

    def get(self, name: str, timeout_seconds: float | None) -> BatchInfo:
        return batch_info_from_vertex(raw_get(self.client(), name, timeout_seconds))

    def page(self, page_size: int, token: str | None) -> tuple[list[BatchInfo], str | None]:
        path = f"batchPredictionJobs?pageSize={int(page_size)}"
        if token:
            path += f"&pageToken={quote(token, safe='')}"
        page = raw_get(self.client(), path)
        jobs = [batch_info_from_vertex(job) for job in page.get("batchPredictionJobs") or []]
        return jobs, page.get("nextPageToken")

    def cancel(self, name: str) -> None:
        self.client()._api_client.request("post", f"{name}:cancel", {}, None)

    def delete(self, name: str) -> None:
        self.client()._api_client.request("delete", name, {}, None)

    def generate(self, model: str, request_line: bytes, tier: str) -> bytes:
        """`generateContent` under the project and location (`backends.online`)."""
        return generate_line(self.client(), self.retrying, model, request_line, tier)

    def download(self, result_file: str, dest: Path) -> None:
        """Every `*.jsonl` under the output directory, in name order, as one file."""
        folder = self.path(result_file)
        files = sorted(p for p in folder.fs.find(folder.path) if p.endswith(".jsonl"))
        with atomic_write(dest) as out:
            for name in files:
                last = b"\n"
                with folder.fs.open(name, "rb") as part:
                    while chunk := part.read(1 << 20):
                        out.write(chunk)
                        last = chunk[-1:]
                if last != b"\n":  # the next file's first line must not join this one's last
                    out.write(b"\n")
        logger.info("read %d file(s) under %s: %s", len(files), result_file, [Path(f).name for f in files])


def from_settings(settings: BackendSettings) -> VertexBatches:
    """A bad setting is a SettingError naming the variable."""
    check_vertex(settings.project, settings.location, settings.staging, settings.base_url)
    retrying = Retrying(settings.max_attempts, settings.backoff_seconds)
    return VertexBatches(
        retrying,
        settings.project,
        settings.location,
        settings.staging,
        settings.base_url,
        settings.timeout_seconds,
        settings.create_timeout_seconds,
    )
