"""The emulator's state on disk: files, resumable uploads and batch jobs.

Layout under the state directory (every JSON and result file is written to a temporary name and
renamed, so a crash or restart never leaves half a file):

    counters.json                  batch ordinal counter and this state dir's id salt
    files/<id>.json, <id>.bin      File resources and their bytes (uploads and results)
    uploads/<upload id>.json/.part resumable uploads in progress
    batches/<id>.json              batch jobs; <id>.input.jsonl is a link to (or copy of) the input
                                   (Vertex AI jobs too: `"protocol": "vertex"`, numeric ids)

A job's state is computed from timestamps when it is read: PENDING for the first 20% of its
latency, RUNNING until the latency has passed, then its terminal state. The result file is
produced once, when a finished job is first seen. A held job's clock stands still from
`held_since` until it is released; its schedule then resumes where it stopped (a job held from
creation starts at its release).

Upload ids are the emulator's own random tokens: an id is only ever looked up when it has their
shape and a session file exists for it, so no id names a path outside `uploads/`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from .faults import Faults, JobFaults, line_faults, unit_draw
from .quotas import Quotas, item_tokens, line_tokens
from .responder import Responder, get
from .validation import ModelCatalog, request_problem

PENDING_FRACTION = 0.2
MAX_FILE_BYTES = 2 * 1024**3  # the Files API's limit per file
MAX_INLINE_BYTES = 20 * 1000**2  # inlined requests of one batch stay under 20 MB
FILE_TTL_SECONDS = 48 * 3600
BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"
# A job's phase, whatever its protocol calls it (see `phase`); these four have not ended.
IN_FLIGHT = frozenset({"queued", "pending", "running", "cancelling"})
BATCH_STATES = {
    "queued": "BATCH_STATE_PENDING",  # the Developer API has no queued state
    "pending": "BATCH_STATE_PENDING",
    "running": "BATCH_STATE_RUNNING",
    "succeeded": "BATCH_STATE_SUCCEEDED",
    "failed": "BATCH_STATE_FAILED",
    "expired": "BATCH_STATE_EXPIRED",
    "cancelled": "BATCH_STATE_CANCELLED",
}
JOB_ERRORS = {
    "failed": {"code": 13, "message": "The batch failed: internal error."},
    "expired": {"code": 4, "message": "The batch expired: it was not completed before the deadline."},
    "cancelled": {"code": 1, "message": "The batch was cancelled."},
}
LINE_ERRORS = (
    (500, "INTERNAL", "Internal error encountered."),
    (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    (429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
)
_FILE_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
_UPLOAD_ID = re.compile(r"^[A-Za-z0-9_-]{32}$")  # secrets.token_urlsafe(24)
_UPLOAD_GONE = "Upload session not found or already finalized."
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


class ApiError(Exception):
    """An error the API answers as `{"error": {"code", "message", "status"}}`."""

    def __init__(self, code: int, status: str, message: str):
        super().__init__(message)
        self.code, self.status, self.message = code, status, message

    def to_json(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}


def rfc3339(timestamp: float) -> str:
    """Proto-JSON timestamp: UTC, microseconds, `Z`."""
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None


def _started(record: dict) -> float:
    """When the job's schedule began: its creation, moved on by the time it was held."""
    return record.get("start_time") or record["create_time"]


def _clock(record: dict, now: float) -> float:
    """The job's own time: `now`, or the moment it was held while it is held."""
    held_since = record.get("held_since")
    return now if held_since is None else held_since


def phase(record: dict, now: float) -> tuple[str, float]:
    """(phase, when it began): queued (held since its creation), pending, running, cancelling (a
    held job cancelled), cancelled, or how it ended: succeeded or its fault state."""
    if record["cancel_time"] is not None:
        held = record.get("held_since") is not None
        return ("cancelling" if held else "cancelled"), record["cancel_time"]
    latency, started = record["latency"], _started(record)
    elapsed = _clock(record, now) - started
    held = record.get("held_since") is not None
    if held and elapsed <= 0:  # held from its creation: still queued, whatever its latency
        return "queued", record["create_time"]
    if elapsed >= latency and not held:
        return record["fault_state"] or "succeeded", started + latency
    if elapsed >= latency * PENDING_FRACTION:
        return "running", started + latency * PENDING_FRACTION
    return "pending", record["create_time"]


def processed_by(record: dict, now: float) -> int:
    """How many requests a job running at `now` has answered: its share of the running time."""
    run_time = record["latency"] * (1 - PENDING_FRACTION)
    elapsed = _clock(record, now) - _started(record) - record["latency"] * PENDING_FRACTION
    fraction = min(1.0, max(0.0, elapsed / run_time)) if run_time > 0 else 0.0
    return int(record["request_count"] * fraction)


def paged(records: list[dict], page_size: int, page_token: str | None) -> tuple[list[dict], str | None]:
    """One page of `records` (newest first) and the token of the next, if any: the last `seq` shown."""
    if page_token:
        if not page_token.isdigit():
            raise ApiError(400, "INVALID_ARGUMENT", f"Invalid page token {page_token!r}.")
        records = [r for r in records if r["seq"] < int(page_token)]
    page, rest = records[:page_size], records[page_size:]
    return page, str(page[-1]["seq"]) if rest else None


def nonzero(counts: dict[str, int]) -> dict[str, str]:
    """int64 counts as proto-JSON strings; zeros omitted, as proto3 does."""
    return {k: str(v) for k, v in counts.items() if v}


def _check_inlined(inlined: list, model: str, api_version: str, body_size: int) -> None:
    """Inlined requests are checked at create, as the API does: their size, then each request."""
    if body_size >= MAX_INLINE_BYTES:
        raise ApiError(
            400,
            "INVALID_ARGUMENT",
            f"Inlined requests total {body_size} bytes; the limit is {MAX_INLINE_BYTES}. "
            "Use an input file instead.",
        )
    for i, item in enumerate(inlined):
        prefix = f"batch.input_config.requests.requests[{i}].request."
        problem = request_problem(get(item, "request"), model, prefix, api_version)
        if problem:
            raise ApiError(400, "INVALID_ARGUMENT", problem)


def _count_and_tokens(path: Path) -> tuple[int, int]:
    """(requests, prompt tokens) of an input file, in one pass."""
    count = tokens = 0
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                count += 1
                tokens += line_tokens(line)
    return count, tokens


def _write_input(input_path: Path, source: Path | None, inlined: list | None) -> None:
    """A job's input lines: the uploaded file (linked, else copied) or its inlined requests."""
    if source is not None:
        try:
            os.link(source, input_path)
        except OSError:
            shutil.copyfile(source, input_path)
        return
    lines = (
        orjson.dumps(
            {
                "key": get(get(item, "metadata") or {}, "key"),
                "request": get(item, "request"),
                "metadata": get(item, "metadata"),
            }
        )
        for item in inlined or []
    )
    _write_atomic(input_path, b"\n".join(lines) + b"\n")


class Store:
    """Files, uploads and batch jobs under one state directory (thread-safe)."""

    def __init__(
        self,
        state_dir: str | os.PathLike,
        *,
        latency: float,
        faults: Faults,
        responder: Responder,
        log=None,
        models: ModelCatalog | None = None,
        max_file_bytes: int = MAX_FILE_BYTES,
        quotas: Quotas | None = None,
    ):
        self.root = Path(state_dir)
        self.quotas = quotas or Quotas()
        self.latency = latency
        self.faults = faults
        self.responder = responder
        self.models = models or ModelCatalog()
        self.max_file_bytes = max_file_bytes
        self.log = log or (lambda message: None)
        self.lock = threading.RLock()
        for sub in ("files", "uploads", "batches"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        counters = _read_json(self.root / "counters.json")
        if counters is None:
            counters = {"batch_seq": 0, "salt": secrets.token_hex(8)}
            _write_atomic(self.root / "counters.json", orjson.dumps(counters))
        self._counters = counters

    # ---- files -------------------------------------------------------------------------

    def _file_paths(self, file_id: str) -> tuple[Path, Path]:
        return self.root / "files" / f"{file_id}.json", self.root / "files" / f"{file_id}.bin"

    def get_file(self, file_id: str) -> dict:
        record = _read_json(self._file_paths(file_id)[0]) if _FILE_ID.match(file_id) else None
        if record is None:
            raise ApiError(404, "NOT_FOUND", f"File files/{file_id} not found.")
        return record

    def file_bytes_path(self, file_id: str) -> Path:
        self.get_file(file_id)
        return self._file_paths(file_id)[1]

    def list_files(self, page_size: int, page_token: str | None) -> tuple[list[dict], str | None]:
        records = [r for p in (self.root / "files").glob("*.json") if (r := _read_json(p))]
        records.sort(key=lambda r: (r["create_time"], r["name"]), reverse=True)
        start = int(page_token) if page_token and page_token.isdigit() else 0
        page = records[start : start + page_size]
        more = start + page_size < len(records)
        return page, str(start + page_size) if more else None

    def delete_file(self, file_id: str) -> None:
        with self.lock:
            self.get_file(file_id)
            meta, data = self._file_paths(file_id)
            meta.unlink(missing_ok=True)
            data.unlink(missing_ok=True)

    def _save_file(
        self, file_id: str, data_path: Path, *, display_name: str | None, mime_type: str, source: str
    ) -> dict:
        digest = hashlib.sha256()
        size = 0
        with open(data_path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
        now = time.time()
        record = {
            "name": f"files/{file_id}",
            "display_name": display_name,
            "mime_type": mime_type,
            "size_bytes": size,
            # As the real API does: base64 of the hex digest.
            "sha256_hash": base64.b64encode(digest.hexdigest().encode()).decode(),
            "create_time": now,
            "source": source,
        }
        meta_path, bytes_path = self._file_paths(file_id)
        os.replace(data_path, bytes_path)
        _write_atomic(meta_path, orjson.dumps(record))
        return record

    # ---- resumable uploads ---------------------------------------------------------------

    def start_upload(self, file: dict, *, declared_size: int | None, mime_type: str | None) -> str:
        """Begins a resumable upload; returns its upload id."""
        name = get(file, "name")
        file_id = None
        if name:
            file_id = name.removeprefix("files/")
            if not _FILE_ID.match(file_id):
                raise ApiError(
                    400,
                    "INVALID_ARGUMENT",
                    f"Invalid file name {name!r}: up to 40 characters of [a-z0-9-], "
                    "not starting or ending with '-'.",
                )
            if self._file_paths(file_id)[0].exists():
                raise ApiError(409, "ALREADY_EXISTS", f"File files/{file_id} already exists.")
        size = get(file, "sizeBytes")
        if declared_size is None and str(size).isdigit():
            declared_size = int(size)
        if declared_size is not None and declared_size > self.max_file_bytes:
            raise ApiError(400, "INVALID_ARGUMENT", self._too_big(declared_size))
        mime = mime_type or get(file, "mimeType") or "application/octet-stream"
        upload_id = secrets.token_urlsafe(24)
        session = {
            "file_id": file_id,
            "display_name": get(file, "displayName"),
            "mime_type": mime,
            "declared_size": declared_size,
        }
        (self.root / "uploads" / f"{upload_id}.part").write_bytes(b"")
        _write_atomic(self.root / "uploads" / f"{upload_id}.json", orjson.dumps(session))
        return upload_id

    def _too_big(self, size: int) -> str:
        return f"File size {size} bytes exceeds the limit of {self.max_file_bytes} bytes per file."

    def _upload_paths(self, upload_id: str) -> tuple[Path, Path]:
        """(session, part) of an upload this emulator issued; 404 for any other id."""
        if not isinstance(upload_id, str) or not _UPLOAD_ID.match(upload_id):
            raise ApiError(404, "NOT_FOUND", _UPLOAD_GONE)
        uploads = self.root / "uploads"
        session, part = uploads / f"{upload_id}.json", uploads / f"{upload_id}.part"
        if not session.is_file() or not part.is_file():
            raise ApiError(404, "NOT_FOUND", _UPLOAD_GONE)
        return session, part

    def upload_received(self, upload_id: str) -> int:
        return self._upload_paths(upload_id)[1].stat().st_size

    def upload_chunk(self, upload_id: str, offset: int | None, data: bytes, finalize: bool) -> dict | None:
        """Appends one chunk; on finalize returns the new File record."""
        with self.lock:
            session_path, part = self._upload_paths(upload_id)
            session = _read_json(session_path)
            received = part.stat().st_size
            if offset is not None and offset != received:
                raise ApiError(
                    400,
                    "INVALID_ARGUMENT",
                    f"Upload offset {offset} does not match the {received} bytes received.",
                )
            if received + len(data) > self.max_file_bytes:
                raise ApiError(400, "INVALID_ARGUMENT", self._too_big(received + len(data)))
            with open(part, "ab") as handle:
                handle.write(data)
            if not finalize:
                return None
            total = received + len(data)
            declared = session.get("declared_size")
            if declared is not None and declared != total:
                raise ApiError(
                    400, "INVALID_ARGUMENT", f"Upload finalized with {total} bytes, {declared} were declared."
                )
            file_id = session["file_id"] or "".join(secrets.choice(_ALNUM) for _ in range(12))
            if self._file_paths(file_id)[0].exists():
                raise ApiError(409, "ALREADY_EXISTS", f"File files/{file_id} already exists.")
            record = self._save_file(
                file_id,
                part,
                display_name=session.get("display_name"),
                mime_type=session["mime_type"],
                source="UPLOADED",
            )
            session_path.unlink(missing_ok=True)
            return record

    # ---- batches ---------------------------------------------------------------------------

    def _batch_path(self, batch_id: str, suffix: str = ".json") -> Path:
        return self.root / "batches" / f"{batch_id}{suffix}"

    def load_job(self, job_id: str) -> dict | None:
        """The record of job `job_id` of either protocol, or None."""
        if not re.fullmatch(r"[a-z0-9-]{1,64}", job_id):
            return None
        return _read_json(self._batch_path(job_id))

    def jobs(self, protocol: str | None = None) -> list[dict]:
        """Every job record (of one protocol if given), newest first."""
        records = [r for p in (self.root / "batches").glob("*.json") if (r := _read_json(p))]
        if protocol is not None:
            records = [r for r in records if r.get("protocol", "developer") == protocol]
        return sorted(records, key=lambda r: r["seq"], reverse=True)

    def _load_batch(self, batch_id: str) -> dict:
        record = self.load_job(batch_id)
        if record is None or record.get("protocol", "developer") != "developer":
            raise ApiError(404, "NOT_FOUND", f"Batch batches/{batch_id} not found.")
        return record

    def save_job(self, record: dict) -> None:
        _write_atomic(self._batch_path(record["id"]), orjson.dumps(record))

    def new_job(self) -> tuple[int, bytes]:
        """The next job's ordinal and 16 bytes unique to it in this state dir (call under the lock)."""
        self._counters["batch_seq"] += 1
        seq = self._counters["batch_seq"]
        _write_atomic(self.root / "counters.json", orjson.dumps(self._counters))
        return seq, hashlib.blake2b(f"{self._counters['salt']}:{seq}".encode(), digest_size=16).digest()

    def input_path(self, job_id: str) -> Path:
        return self._batch_path(job_id, ".input.jsonl")

    def save_input(self, job_id: str, data: bytes) -> None:
        _write_atomic(self.input_path(job_id), data)

    def create_batch(self, model: str, batch: dict, api_version: str = "v1beta", body_size: int = 0) -> dict:
        """Creates a job from `{"inputConfig": ..., "displayName": ...}`; returns its Operation.

        An unknown model is refused (404) and so are inlined requests the API could not parse
        (400); the lines of an input file are checked when the job runs (see `validation`)."""
        model = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
        refused = self.models.check(model, api_version)
        if refused:
            raise ApiError(*refused)
        input_config = get(batch, "inputConfig") or {}
        file_name = get(input_config, "fileName")
        inlined = get(get(input_config, "requests") or {}, "requests")
        if not file_name and inlined is None:
            raise ApiError(400, "INVALID_ARGUMENT", "batch.inputConfig needs fileName or requests.requests.")
        if not file_name and isinstance(inlined, list):
            _check_inlined(inlined, model, api_version, body_size)
        self.faults.stall_create()  # outside the lock: other calls go on meanwhile
        with self.lock:
            if file_name:
                source = self.file_bytes_path(str(file_name).removeprefix("files/"))
                if self.get_file(str(file_name).removeprefix("files/"))["source"] != "UPLOADED":
                    raise ApiError(400, "INVALID_ARGUMENT", f"{file_name} is not an uploaded file.")
                count, tokens = _count_and_tokens(source)
            else:
                if not isinstance(inlined, list):
                    raise ApiError(400, "INVALID_ARGUMENT", "inputConfig.requests.requests must be a list.")
                count = len(inlined)
                tokens = sum(map(item_tokens, inlined))
            if count == 0:
                raise ApiError(400, "INVALID_ARGUMENT", "The batch has no requests.")
            active = self.admit(model, tokens, "developer", get(batch, "displayName"))
            job, rates, seed = self.faults.take_job_faults()
            seq, unique = self.new_job()
            batch_id = unique.hex()
            input_path = self.input_path(batch_id)
            _write_input(input_path, source if file_name else None, inlined)
            now = time.time()
            record = {
                "id": batch_id,
                "name": f"batches/{batch_id}",
                "model": model,
                "api_version": api_version,
                "display_name": get(batch, "displayName"),
                "file_name": f"files/{str(file_name).removeprefix('files/')}" if file_name else None,
                "inlined": not file_name,
                "results_file": None,
                "inlined_responses": None,
                **self.lifecycle_fields(seq, count, job, rates, seed, now),
                "input_tokens": tokens,
            }
            self.save_job(record)
        self.announce_created(record, job, f"{count} requests", active)
        return self._operation(record, time.time(), created=True)

    def lifecycle_fields(
        self, seq: int, count: int, job: JobFaults, rates: dict[str, float], seed: int, now: float
    ) -> dict:
        """The fields of a new job record that both protocols share: its counts, clock and faults."""
        return {
            "seq": seq,
            "request_count": count,
            "create_time": now,
            "start_time": now,
            "held_since": now if job.held else None,
            "latency": self.latency if job.latency is None else job.latency,
            "fault_state": job.end_state,
            "line_rates": rates,
            "seed": seed,
            "cancel_time": None,
            "processed_count": None,
            "finalized": False,
            "stats": None,
        }

    def admit(self, model: str, tokens: int, protocol: str, display_name: str | None) -> int:
        """How many jobs are in flight with a new one of `tokens` on `model` (call under the lock);
        429 RESOURCE_EXHAUSTED, logged, when it would pass a quota."""
        now = time.time()
        active = [r for r in self.jobs() if phase(r, now)[0] in IN_FLIGHT]
        refused = self.quotas.refusal(active, model, tokens, protocol)
        if refused:
            message, why = refused
            self.log(f'quota: refused create of "{display_name}" ({tokens} tokens): {why}')
            raise ApiError(429, "RESOURCE_EXHAUSTED", message)
        return len(active) + 1

    def announce_created(self, record: dict, job: JobFaults, what: str, active: int) -> None:
        """Logs a new job (its display name, and how many are in flight with it, so a log shows that
        no shard was made twice and no quota passed), then answers 500 for it when the lose_create
        fault took it (the job exists)."""
        self.log(
            f'created {record["name"]} "{record["display_name"]}" ({what}, '
            f"{record['input_tokens']} tokens, {active} active, latency {record['latency']}s"
            + (f", will end {job.end_state}" if job.end_state else "")
            + (", held" if job.held else "")
            + ")"
        )
        if job.lose_create:
            self.log(f"fault lose_create: {record['name']} exists, answering 500")
            raise ApiError(500, "INTERNAL", "Internal error encountered.")

    def get_batch(self, batch_id: str) -> dict:
        with self.lock:
            return self._view(self._load_batch(batch_id), time.time())

    def list_batches(self, page_size: int, page_token: str | None) -> tuple[list[dict], str | None]:
        with self.lock:
            page, token = paged(self.jobs("developer"), page_size, page_token)
            now = time.time()
            return [self._view(r, now) for r in page], token

    def cancel_batch(self, batch_id: str) -> None:
        with self.lock:
            record = self._load_batch(batch_id)
            now = time.time()
            state, _ = phase(record, now)
            if state == "cancelled":
                return
            if state not in IN_FLIGHT:
                self._view(record, now)
                raise ApiError(
                    400,
                    "FAILED_PRECONDITION",
                    f"Batch batches/{batch_id} is already finished ({BATCH_STATES[state]}).",
                )
            processed = processed_by(record, now) if state == "running" else 0
            record["cancel_time"] = now
            record["held_since"] = None
            record["processed_count"] = processed
            self._finalize(record, processed)
        self.log(f"cancelled {record['name']} ({processed} requests done)")

    def hold(self, hold: bool, batch_id: str | None = None) -> list[str]:
        """Holds (or releases) one job, or every unfinished one; returns the names held now."""
        with self.lock:
            now = time.time()
            if batch_id is not None:
                record = self.load_job(batch_id)
                if record is None:
                    raise ApiError(404, "NOT_FOUND", f"No job {batch_id} to hold or release.")
                records = [record]
            else:
                records = self.jobs()
            for record in records:
                held = record.get("held_since") is not None
                if hold and not held and phase(record, now)[0] in IN_FLIGHT:
                    record["held_since"] = now
                elif not hold and held:
                    # the clock resumes where it stopped: every second held is added to the schedule
                    record["start_time"] = _started(record) + (now - record["held_since"])
                    record["held_since"] = None
                    if record["cancel_time"] is not None:  # cancelled while held: it ends now
                        record["cancel_time"] = now
                else:
                    continue
                self.save_job(record)
                self.log(f"{'held' if hold else 'released'} {record['name']}")
            return self.held()

    def held(self) -> list[str]:
        """Names of the jobs held now, oldest first."""
        with self.lock:
            return [r["name"] for r in reversed(self.jobs()) if r.get("held_since")]

    def delete_batch(self, batch_id: str) -> None:
        with self.lock:
            self._load_batch(batch_id)
            self.delete_job(batch_id)

    def delete_job(self, job_id: str) -> None:
        """Forgets a job of either protocol (its results stay where they were written)."""
        self._batch_path(job_id).unlink()
        self.input_path(job_id).unlink(missing_ok=True)

    # ---- job state and results ------------------------------------------------------------

    def _view(self, record: dict, now: float) -> dict:
        state, _ = phase(record, now)
        if state not in IN_FLIGHT and not record["finalized"]:
            count = {"succeeded": record["request_count"], "cancelled": record["request_count"] // 2}.get(
                state, 0
            )
            self._finalize(record, count)
        return self._operation(record, now)

    def _finalize(self, record: dict, count: int) -> None:
        """Produces the results of the first `count` requests (once) and marks the job finished."""
        started = time.perf_counter()
        stats = {"successful": 0, "failed": 0}
        if count > 0:
            lines = []
            for i, (key, request, metadata, problem) in enumerate(self._requests(record)):
                if i >= count:
                    break
                line = self.answer(record, key, request, problem)
                if "error" in line:
                    stats["failed"] += 1
                else:
                    stats["successful"] += 1
                if record["inlined"]:
                    line.pop("key", None)
                    line.pop("garbage", None)
                    if metadata is not None:
                        line["metadata"] = metadata
                lines.append(line)
            if record["inlined"]:
                record["inlined_responses"] = lines
            else:
                file_id = f"batch-{record['id']}"
                tmp = self.root / "files" / f".{file_id}.{secrets.token_hex(4)}.tmp"
                with open(tmp, "wb") as handle:
                    for line in lines:
                        garbage = line.pop("garbage", False)
                        data = orjson.dumps(line)
                        if garbage:  # a line cut short: not JSON
                            data = data[: max(1, len(data) // 2)]
                        handle.write(data + b"\n")
                    handle.flush()
                    os.fsync(handle.fileno())
                self._save_file(
                    file_id,
                    tmp,
                    display_name=f"{record['name']} results",
                    mime_type="application/jsonl",
                    source="GENERATED",
                )
                record["results_file"] = f"files/{file_id}"
        elif record["fault_state"] in ("failed", "expired") and record["cancel_time"] is None:
            stats["failed"] = record["request_count"]
        record["stats"] = stats
        record["finalized"] = True
        self.save_job(record)
        self.log(
            f"finished {record['name']}: {stats['successful']} ok, {stats['failed']} failed, "
            f"{count} answered in {time.perf_counter() - started:.3f}s"
        )

    def input_lines(self, record: dict) -> Iterator[tuple[dict | None, str | None]]:
        """(line, problem) per non-blank input line, in order: the line's object (None when it is
        not one) and what the API would refuse in it (None if nothing)."""
        with open(self.input_path(record["id"]), "rb") as handle:
            index = 0
            for raw in handle:
                if not raw.strip():
                    continue
                index += 1
                try:
                    item = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    item = None
                if not isinstance(item, dict):
                    yield None, f"Line {index} of the input file is not a JSON object."
                    continue
                request = item.get("request")
                if not isinstance(request, dict) or not get(request, "contents"):
                    yield item, "The request has no contents."
                else:
                    yield (
                        item,
                        request_problem(request, record["model"], "", record.get("api_version", "v1beta")),
                    )

    def _requests(self, record: dict) -> Iterator[tuple[str | None, Any, Any, str | None]]:
        """(key, request, metadata, problem) per input line, in order."""
        for item, problem in self.input_lines(record):
            item = item or {}
            yield item.get("key"), item.get("request"), item.get("metadata"), problem

    def answer(self, record: dict, key: Any, request: Any, problem: str | None) -> dict:
        """One output line (a dict; `garbage: True` asks for it to be written cut short)."""
        line: dict[str, Any] = {} if key is None else {"key": key}
        if problem:
            line["error"] = {"code": 400, "message": problem, "status": "INVALID_ARGUMENT"}
            return line
        fault_key = str(key)
        hits = line_faults(record["seed"], f"batch#{record['seq']}", fault_key, record["line_rates"])
        if "line_error" in hits:
            draw = unit_draw(record["seed"], f"batch#{record['seq']}", fault_key, "error_kind")
            code, status, message = LINE_ERRORS[int(draw * len(LINE_ERRORS))]
            line["error"] = {"code": code, "message": message, "status": status}
            return line
        line["response"] = self.responder.response(
            request,
            model=record["model"],
            batch_name=record["name"],
            key=fault_key,
            truncated="truncate" in hits,
            no_thoughts="no_thoughts" in hits,
            wrong="wrong_answer" in hits,
        )
        if "garbage_line" in hits and not record["inlined"]:
            line["garbage"] = True
        return line

    def _operation(self, record: dict, now: float, created: bool = False) -> dict:
        state, changed = ("pending", record["create_time"]) if created else phase(record, now)
        n = record["request_count"]
        metadata: dict[str, Any] = {"@type": BATCH_TYPE, "model": record["model"]}
        if record["display_name"]:
            metadata["displayName"] = record["display_name"]
        if record["file_name"]:
            metadata["inputConfig"] = {"fileName": record["file_name"]}
        metadata["createTime"] = rfc3339(record["create_time"])
        metadata["updateTime"] = rfc3339(changed)
        operation: dict[str, Any] = {"name": record["name"]}
        if state in IN_FLIGHT:  # while running, the answered share grows as the API reports it
            done = processed_by(record, now) if state == "running" else 0
            metadata["batchStats"] = nonzero(
                {"requestCount": n, "successfulRequestCount": done, "pendingRequestCount": n - done}
            )
        else:
            stats = record["stats"] or {"successful": 0, "failed": 0}
            metadata["endTime"] = rfc3339(changed)
            metadata["batchStats"] = nonzero(
                {
                    "requestCount": n,
                    "successfulRequestCount": stats["successful"],
                    "failedRequestCount": stats["failed"],
                }
            )
            output = None
            if record["results_file"]:
                output = {"responsesFile": record["results_file"]}
            elif record["inlined_responses"] is not None:
                output = {"inlinedResponses": {"inlinedResponses": record["inlined_responses"]}}
            if output:
                metadata["output"] = output
            operation["done"] = True
            if state == "succeeded":
                operation["response"] = {"@type": OUTPUT_TYPE, **(output or {})}
            else:
                operation["error"] = dict(JOB_ERRORS[state])
        metadata["state"] = BATCH_STATES[state]
        metadata["name"] = record["name"]
        operation["metadata"] = metadata
        return operation
