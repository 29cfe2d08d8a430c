"""Vertex AI batch prediction (`batchPredictionJobs`), served beside the Developer API.

Under `/{v1,v1beta1}/projects/{project}/locations/{location}/`: create, get, list, cancel and
delete, for a client that sends a bearer token. A job reads its JSONL input from `gs://` when it is
created and, once it ends, writes `<outputUriPrefix>/prediction-model-<end time>/predictions.jsonl`,
both through a GCS client (`gcsfs`) pointed at `$STORAGE_EMULATOR_HOST`; without that variable a
create is refused, so the emulator never touches a real bucket.

Jobs are records in the same store as the Developer batches (`"protocol": "vertex"`, numeric ids),
so they keep across restarts, are held and released through `/_emulator/hold`, and are dealt the
same faults: failed lines (a non-empty `status`), FAILED / EXPIRED / CANCELLED / PARTIALLY_SUCCEEDED
jobs, slow, held and lost creates. A job belongs to its project and location: another one gets 404.

An output line is its input line with `request` parsed and written again (field names in
snake_case), plus `status` ("" or why that request failed), `processed_time` and `response`; the
lines come out in another order than the input's.
"""

from __future__ import annotations

import os
import random
import re
import time
from typing import Any

import orjson

from .faults import JOB_FAULT_STATES
from .quotas import line_tokens
from .responder import get
from .store import (
    IN_FLIGHT,
    JOB_ERRORS,
    PENDING_FRACTION,
    ApiError,
    Store,
    nonzero,
    paged,
    phase,
    processed_by,
    rfc3339,
)

PATH = re.compile(
    r"^/(?P<ver>v1|v1beta1)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/(?P<rest>.+)$"
)
JOB_NAME = re.compile(r"^projects/[^/]+/locations/[^/]+/batchPredictionJobs/(?P<id>\d+)$")
JOB = re.compile(r"^batchPredictionJobs/(?P<id>[^/:]+)$")
CANCEL = re.compile(r"^batchPredictionJobs/(?P<id>[^/:]+):cancel$")
JOB_STATES = {
    name: f"JOB_STATE_{name.upper()}"
    for name in ("queued", "pending", "running", "cancelling", "succeeded", "cancelled", *JOB_FAULT_STATES)
}
MAX_INPUT_BYTES = 1024**3  # per input file
MAX_REQUESTS = 200_000  # per job
_MODEL = re.compile(r"^publishers/google/models/(?P<id>[^/]+)$")
_GS_OBJECT = re.compile(r"^gs://[^/\s]+/\S.*$")
_ANSWERED = {"succeeded": 1.0, "partially_succeeded": 0.5, "cancelled": 0.5}  # share of requests
_VERBATIM = {"response_schema", "response_json_schema", "parameters_json_schema", "labels"}


def reserialized(value: Any) -> Any:
    """A request as Vertex echoes it: parsed and written again, so its field names come back in
    snake_case; free-form maps (a JSON schema, labels) are kept as they were."""
    if isinstance(value, list):
        return [reserialized(item) for item in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
        out[name] = item if name in _VERBATIM else reserialized(item)
    return out


def shuffled(lines: list, seed: str) -> list:
    """`lines` in another order (for two or more), the same for the same seed."""
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    if len(order) > 1 and order == sorted(order):
        order = order[1:] + order[:1]
    return [lines[i] for i in order]


class Gcs:
    """`gs://` objects through gcsfs at `$STORAGE_EMULATOR_HOST`, anonymously, as a GCS client
    talks to an emulator."""

    def _fs(self):
        host = os.environ.get("STORAGE_EMULATOR_HOST")
        if not host:
            raise ApiError(
                400,
                "FAILED_PRECONDITION",
                "Vertex AI jobs read and write gs:// through a GCS stand-in, and STORAGE_EMULATOR_HOST "
                "is not set: start cotgen-emulator with STORAGE_EMULATOR_HOST=http://<host>:<port>.",
            )
        try:
            from gcsfs.core import GCSFileSystem
        except ImportError:
            raise ApiError(
                400, "FAILED_PRECONDITION", "Vertex AI jobs need gcsfs: pip install 'cotgen_assets[gcs]'."
            ) from None
        endpoint = host if "://" in host else f"http://{host}"
        return GCSFileSystem(endpoint_url=endpoint, token="anon", use_listings_cache=False)

    def _failed(self, uri: str, error: Exception) -> ApiError:
        host = os.environ.get("STORAGE_EMULATOR_HOST")
        return ApiError(503, "UNAVAILABLE", f"{uri}: the GCS stand-in at {host} failed: {error!r}")

    def read(self, uri: str) -> bytes:
        fs, path = self._fs(), uri.removeprefix("gs://")
        try:
            size = fs.size(path)
            data = fs.cat_file(path) if size <= MAX_INPUT_BYTES else None
        except FileNotFoundError:
            raise ApiError(400, "INVALID_ARGUMENT", f"The input {uri} does not exist.") from None
        except Exception as error:  # an outage, whatever gcsfs calls it: say where
            raise self._failed(uri, error) from None
        if data is None:
            raise ApiError(
                400, "INVALID_ARGUMENT", f"The input {uri} has {size} bytes; the limit is {MAX_INPUT_BYTES}."
            )
        return data

    def require_bucket(self, uri: str) -> None:
        """Refuses a destination whose bucket does not exist, before any job is made for it."""
        fs, bucket = self._fs(), uri.removeprefix("gs://").split("/", 1)[0]
        try:
            fs.info(bucket)
        except FileNotFoundError:
            raise ApiError(
                400, "INVALID_ARGUMENT", f"The bucket of {uri} ({bucket}) does not exist."
            ) from None
        except Exception as error:
            raise self._failed(uri, error) from None

    def write(self, uri: str, data: bytes) -> None:
        fs = self._fs()
        try:
            fs.pipe_file(uri.removeprefix("gs://"), data)
        except Exception as error:
            raise self._failed(uri, error) from None


def _not_found(project: str, location: str, job_id: str) -> ApiError:
    name = f"projects/{project}/locations/{location}/batchPredictionJobs/{job_id}"
    return ApiError(404, "NOT_FOUND", f"The BatchPredictionJob does not exist: {name}.")


class VertexJobs:
    """The `batchPredictionJobs` methods over the emulator's store (thread-safe through its lock)."""

    def __init__(self, store: Store, gcs: Gcs | None = None):
        self.store, self.gcs = store, gcs or Gcs()

    # ---- methods ------------------------------------------------------------------------------

    def create(self, api_version: str, project: str, location: str, body: dict) -> dict:
        """Makes a job from a BatchPredictionJob body, after reading its input; returns the job."""
        model, display_name, uris, prefix = self._checked(project, location, body)
        self.gcs.require_bucket(prefix)
        parts = [self.gcs.read(uri) for uri in uris]
        data = b"".join(part if part.endswith(b"\n") else part + b"\n" for part in parts)
        count = sum(1 for line in data.splitlines() if line.strip())
        if not count or count > MAX_REQUESTS:
            shown = ", ".join(uris)
            raise ApiError(
                400, "INVALID_ARGUMENT", f"{shown} holds {count} requests; a job takes 1 to {MAX_REQUESTS}."
            )
        store = self.store
        store.faults.stall_create()  # outside the lock: other calls go on meanwhile
        tokens = sum(map(line_tokens, data.splitlines()))
        with store.lock:
            active = store.admit(model, tokens, "vertex", display_name)
            job, rates, seed = store.faults.take_job_faults(JOB_FAULT_STATES)
            seq, unique = store.new_job()
            job_id = str(10**18 + int.from_bytes(unique[:8], "big") % (9 * 10**18))
            store.save_input(job_id, data)
            now = time.time()
            record = {
                "id": job_id,
                "protocol": "vertex",
                "name": f"projects/{project}/locations/{location}/batchPredictionJobs/{job_id}",
                "project": project,
                "location": location,
                "model": model,
                "api_version": api_version,
                "display_name": display_name,
                "input_uris": uris,
                "output_prefix": prefix,
                "inlined": False,
                "output_dir": None,
                **store.lifecycle_fields(seq, count, job, rates, seed, now),
                "input_tokens": tokens,
            }
            store.save_job(record)
        store.announce_created(record, job, f"{count} requests from {', '.join(uris)}", active)
        return self._render(record, "queued" if job.held else "pending", now)

    def get(self, project: str, location: str, job_id: str) -> dict:
        with self.store.lock:
            return self._view(self._load(project, location, job_id), time.time())

    def list(
        self, project: str, location: str, page_size: int, page_token: str | None, filter_: str | None
    ) -> dict:
        if filter_:
            raise ApiError(
                400, "INVALID_ARGUMENT", f"The emulator does not filter jobs (filter={filter_!r})."
            )
        with self.store.lock:
            records = [
                r for r in self.store.jobs("vertex") if (r["project"], r["location"]) == (project, location)
            ]
            page, token = paged(records, page_size, page_token)
            now = time.time()
            out: dict[str, Any] = {"batchPredictionJobs": [self._view(r, now) for r in page]}
        if token:
            out["nextPageToken"] = token
        return out

    def cancel(self, project: str, location: str, job_id: str) -> None:
        """Cancels a job in flight: CANCELLING while it is held, else CANCELLED at once; the answers
        it had finished are written as it ends."""
        with self.store.lock:
            record = self._load(project, location, job_id)
            now = time.time()
            state, _ = phase(record, now)
            if state in ("cancelling", "cancelled"):
                return
            if state not in IN_FLIGHT:
                self._view(record, now)
                raise ApiError(
                    400,
                    "FAILED_PRECONDITION",
                    f"{record['name']} has already ended ({JOB_STATES[state]}); only a job in flight "
                    "can be cancelled.",
                )
            record["processed_count"] = processed_by(record, now) if state == "running" else 0
            record["cancel_time"] = now
            self.store.save_job(record)
        self.store.log(f"cancelled {record['name']} ({record['processed_count']} requests done)")

    def delete(self, project: str, location: str, job_id: str) -> dict:
        """Deletes an ended job (its outputs stay in the bucket); returns the done Operation."""
        with self.store.lock:
            record = self._load(project, location, job_id)
            now = time.time()
            state, _ = phase(record, now)
            if state in IN_FLIGHT:
                raise ApiError(
                    400,
                    "FAILED_PRECONDITION",
                    f"{record['name']} is not finished ({JOB_STATES[state]}): cancel it or wait for it "
                    "to end before deleting it.",
                )
            self._view(record, now)  # its outputs are written before it goes
            self.store.delete_job(job_id)
        self.store.log(f"deleted {record['name']}")
        return {"name": f"projects/{project}/locations/{location}/operations/{job_id}", "done": True}

    # ---- checks -------------------------------------------------------------------------------

    def _checked(self, project: str, location: str, body: dict) -> tuple[str, str, list[str], str]:
        """(model, display name, input URIs, output prefix) of a create body, or what Vertex refuses."""
        model = get(body, "model")
        match = _MODEL.match(model) if isinstance(model, str) else None
        if not match:
            hint = (
                " (a models/... name is the Gemini Developer API's)"
                if str(model).startswith("models/")
                else ""
            )
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                f"Invalid model {model!r}{hint}: batch prediction takes publishers/google/models/<model id>.",
            )
        if not self.store.models.serves(match["id"]):
            raise ApiError(
                404,
                "NOT_FOUND",
                f"Publisher Model `projects/{project}/locations/{location}/{model}` was not found or your "
                "project does not have access to it.",
            )
        display_name = get(body, "displayName")
        if not isinstance(display_name, str) or not display_name.strip():
            raise ApiError(400, "INVALID_ARGUMENT", "displayName is required.")
        return model, display_name, self._source(get(body, "inputConfig")), self._destination(body)

    def _source(self, config: Any) -> list[str]:
        if not isinstance(config, dict):
            raise ApiError(400, "INVALID_ARGUMENT", "inputConfig is required.")
        if get(config, "bigquerySource") is not None or get(config, "instancesFormat") != "jsonl":
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                f"inputConfig {orjson.dumps(config).decode()}: the emulator reads only JSONL from "
                "gcsSource (instancesFormat jsonl), not bigquerySource or other formats.",
            )
        uris = get(get(config, "gcsSource") or {}, "uris")
        if not isinstance(uris, list) or not uris:
            raise ApiError(400, "INVALID_ARGUMENT", "inputConfig.gcsSource.uris is required.")
        for uri in uris:
            if not isinstance(uri, str) or not _GS_OBJECT.match(uri):
                raise ApiError(
                    400,
                    "INVALID_ARGUMENT",
                    f"inputConfig.gcsSource.uris: {uri!r} is not a gs://bucket/object URI.",
                )
        return uris

    def _destination(self, body: dict) -> str:
        config = get(body, "outputConfig")
        if not isinstance(config, dict) or not config:
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                "outputConfig is required: give outputConfig.gcsDestination.outputUriPrefix (gs://...).",
            )
        prefix = get(get(config, "gcsDestination") or {}, "outputUriPrefix")
        if get(config, "predictionsFormat") != "jsonl" or not isinstance(prefix, str):
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                f"outputConfig {orjson.dumps(config).decode()}: the emulator writes only JSONL to "
                "gcsDestination (predictionsFormat jsonl), not bigqueryDestination or other formats.",
            )
        if not re.match(r"^gs://[^/\s]+", prefix):
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                f"outputConfig.gcsDestination.outputUriPrefix {prefix!r} is not a gs:// URI.",
            )
        return prefix

    # ---- state and outputs --------------------------------------------------------------------

    def _load(self, project: str, location: str, job_id: str) -> dict:
        record = self.store.load_job(job_id) if job_id.isdigit() else None
        if (
            record is None
            or record.get("protocol") != "vertex"
            or (record["project"], record["location"]) != (project, location)
        ):
            raise _not_found(project, location, job_id)
        return record

    def _view(self, record: dict, now: float) -> dict:
        state, changed = phase(record, now)
        if state not in IN_FLIGHT and not record["finalized"]:
            self._finalize(record, state, changed)
        return self._render(record, state, changed)

    def _finalize(self, record: dict, state: str, ended: float) -> None:
        """Writes the answers the job finished (once) and its counts; a failed write is retried on
        the next look, to the same place."""
        started = time.perf_counter()
        n = record["request_count"]
        count = record["processed_count"]
        if count is None:
            count = int(n * _ANSWERED.get(state, 0.0))
        stats = {"successful": 0, "failed": 0, "incomplete": n - count}
        if count > 0:
            directory = f"{record['output_prefix'].rstrip('/')}/prediction-model-{rfc3339(ended)}"
            lines = shuffled(self._lines(record, count, stats), f"{record['seed']}:{record['name']}")
            self.gcs.write(f"{directory}/predictions.jsonl", b"".join(lines))
            record["output_dir"] = directory
        elif state in ("failed", "expired"):
            stats.update(failed=n, incomplete=0)
        record["stats"] = stats
        record["finalized"] = True
        self.store.save_job(record)
        self.store.log(
            f"finished {record['name']} {JOB_STATES[state]}: {stats['successful']} ok, {stats['failed']} "
            f"failed, {stats['incomplete']} not run, in {time.perf_counter() - started:.3f}s"
        )

    def _lines(self, record: dict, count: int, stats: dict[str, int]) -> list[bytes]:
        """The output lines of the first `count` input lines, in input order."""
        out = []
        for index, (item, problem) in enumerate(self.store.input_lines(record)):
            if index >= count:
                break
            answer = self.store.answer(record, str(index + 1), (item or {}).get("request"), problem)
            line = {key: value for key, value in (item or {}).items() if key != "request"}
            if item is not None:
                line["request"] = reserialized(item.get("request"))
            error = answer.get("error")
            line["status"] = f"{error['status']}: {error['message']}" if error else ""
            line["processed_time"] = rfc3339(time.time())
            if not error:
                line["response"] = answer["response"]
            stats["failed" if error else "successful"] += 1
            data = orjson.dumps(line)
            if answer.get("garbage"):  # a line cut short: not JSON
                data = data[: max(1, len(data) // 2)]
            out.append(data + b"\n")
        return out

    def _render(self, record: dict, state: str, changed: float) -> dict:
        """The BatchPredictionJob resource, in proto-JSON."""
        job: dict[str, Any] = {
            "name": record["name"],
            "displayName": record["display_name"],
            "model": record["model"],
            "inputConfig": {"instancesFormat": "jsonl", "gcsSource": {"uris": record["input_uris"]}},
            "outputConfig": {
                "predictionsFormat": "jsonl",
                "gcsDestination": {"outputUriPrefix": record["output_prefix"]},
            },
            "state": JOB_STATES[state],
            "createTime": rfc3339(record["create_time"]),
            "updateTime": rfc3339(changed),
        }
        if state not in ("queued", "pending"):
            job["startTime"] = rfc3339(
                min(changed, record["start_time"] + record["latency"] * PENDING_FRACTION)
            )
        if state not in IN_FLIGHT:
            stats = record["stats"]
            job["endTime"] = rfc3339(changed)
            job["completionStats"] = nonzero(
                {
                    "successfulCount": stats["successful"],
                    "failedCount": stats["failed"],
                    "incompleteCount": stats["incomplete"],
                }
            )
            if record["output_dir"]:
                job["outputInfo"] = {"gcsOutputDirectory": record["output_dir"]}
            if state in JOB_ERRORS:
                job["error"] = dict(JOB_ERRORS[state])
        return job
