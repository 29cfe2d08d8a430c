"""`cotgen-emulator`: a local stand-in for the Gemini Batch API, served over HTTP.

Speaks the wire protocol the `google-genai` SDK uses:
Files API resumable upload, get, list, delete and download; batch create (file or inlined
input), get, list, cancel and delete; synchronous `generateContent` on the standard and Flex tiers
(see `online`); under both `/v1/` and `/v1beta/`. The same process serves
Vertex AI batch prediction (`batchPredictionJobs` under `/{v1,v1beta1}/projects/{p}/locations/{l}/`,
see `vertex`), so one emulator and one store serve both backends. A small admin API under
`/_emulator/` reports health, changes the injected faults and the quotas (`quotas`), holds or
releases jobs at runtime and lists the API calls it answered (`GET /_emulator/calls`: method,
path without query, status).

It defends itself like a public endpoint would: a request body over `--max-body-bytes` is refused
(413) before it is read, a connection idle for `--idle-timeout` seconds is closed, so is one whose
request is not in within `--request-timeout` seconds of its first byte (a client trickling a header
line now and then would otherwise hold its slot forever), and at most `--max-connections` are
served at once (more are answered 503 and closed).

    cotgen-emulator --port 8765 --state-dir .emulator --latency 10
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import ipaddress
import json
import os
import re
import signal
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import orjson

from .faults import JOB_FAULT_STATES, FaultConfig, Faults
from .online import (
    DEFAULT_FLEX_LATENCY,
    DEFAULT_ONLINE_LATENCY,
    DEVELOPER_GENERATE,
    VERTEX_GENERATE,
    OnlineCalls,
)
from .quotas import Quotas
from .responder import Responder, get
from .store import FILE_TTL_SECONDS, MAX_FILE_BYTES, ApiError, Store, rfc3339
from .validation import MODELS_ENV, ModelCatalog, parse_models
from .vertex import CANCEL as VERTEX_CANCEL
from .vertex import JOB as VERTEX_JOB
from .vertex import JOB_NAME as VERTEX_JOB_NAME
from .vertex import PATH as VERTEX_PATH
from .vertex import VertexJobs

DEFAULT_PORT = 8765
DEFAULT_PAGE_SIZE = 50
MAX_BODY_BYTES = 64 * 1024**2  # one request; the SDK uploads in 8 MiB chunks
IDLE_TIMEOUT = 10.0  # seconds a connection may sit without sending anything
REQUEST_TIMEOUT = 30.0  # from a request's first byte to its last; under the resource's ~31 s of retries
MAX_CONNECTIONS = 128
MAX_CALLS_KEPT = 10_000  # GET /_emulator/calls lists at most this many, the newest
EMULATOR_HEADER = "X-Cotgen-Emulator"  # on every answer: what it makes is offline data, never Gemini's
_API = re.compile(r"^/(?P<download>download/)?(?P<ver>v1|v1beta)/(?P<rest>.+)$")
_UPLOAD = re.compile(r"^/upload/(?P<ver>v1|v1beta)/files$")
_FILE = re.compile(r"^files/(?P<id>[^/:]+)$")
_FILE_DOWNLOAD = re.compile(r"^files/(?P<id>[^/:]+):download$")
_CREATE = re.compile(r"^(?P<model>(?:models|tunedModels)/[^/:]+):batchGenerateContent$")
_BATCH = re.compile(r"^batches/(?P<id>[^/:]+)$")
_CANCEL = re.compile(r"^batches/(?P<id>[^/:]+):cancel$")
_KEY_IN_QUERY = re.compile(r"(?i)(\bkey=)[^&]*")


def _log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    sys.stderr.write(f"{stamp} cotgen-emulator {message}\n")
    sys.stderr.flush()


def render_file(record: dict, host: str, ver: str) -> dict:
    """A File resource in proto-JSON (camelCase, int64 as strings)."""
    file_id = record["name"].removeprefix("files/")
    created = rfc3339(record["create_time"])
    out = {"name": record["name"]}
    if record.get("display_name"):
        out["displayName"] = record["display_name"]
    out.update(
        {
            "mimeType": record["mime_type"],
            "sizeBytes": str(record["size_bytes"]),
            "createTime": created,
            "updateTime": created,
            "expirationTime": rfc3339(record["create_time"] + FILE_TTL_SECONDS),
            "sha256Hash": record["sha256_hash"],
            "uri": f"http://{host}/{ver}/files/{file_id}",
            "state": "ACTIVE",
            "source": record["source"],
        }
    )
    if record["source"] == "GENERATED":
        out["downloadUri"] = f"http://{host}/download/{ver}/files/{file_id}:download?alt=media"
    return out


class RequestClock(io.RawIOBase):
    """The connection's bytes, each read bounded by the idle timeout and by what is left of the
    request's time, which starts at its first byte."""

    def __init__(self, sock, idle_timeout: float, request_timeout: float):
        self.sock, self.idle_timeout, self.request_timeout = sock, idle_timeout, request_timeout
        self.deadline: float | None = None  # None: between requests

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        timeout = self.idle_timeout
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"request not in within {self.request_timeout:g}s")
            timeout = min(timeout, left)
        self.sock.settimeout(timeout)
        try:
            count = self.sock.recv_into(buffer)
        finally:
            self.sock.settimeout(self.idle_timeout)  # writes keep the idle timeout
        if count and self.deadline is None:
            self.deadline = time.monotonic() + self.request_timeout
        return count


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cotgen-emulator"
    server: EmulatorServer

    # ---- plumbing -------------------------------------------------------------------------

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout  # StreamRequestHandler sets it on the socket
        super().setup()
        self.rfile.close()  # the socket's plain reader: replaced by one that keeps the request's time
        self.clock = RequestClock(self.connection, self.server.idle_timeout, self.server.request_timeout)
        self.rfile = io.BufferedReader(self.clock)

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        finally:
            self.clock.deadline = None  # the next request on this connection gets its own time

    def send_response(self, code, message=None):
        """Every answer says who made it, so a client with a real key can tell it is not Gemini.
        API calls are recorded as they are answered (before the client can read the answer)."""
        path = urlsplit(self.path).path
        if not path.startswith("/_emulator/"):
            self.server.record_call(self.command, path, code)
        super().send_response(code, message)
        self.send_header(EMULATOR_HEADER, "1")

    def log_message(self, format, *args):  # the base class's name
        pass  # one line per request is written by _handle instead

    def log_error(self, format, *args):  # the base class's name
        _log(f"{self.client_address[0]} " + (format % args))

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def do_PATCH(self):
        self._handle()

    def _too_large(self, size: int) -> ApiError:
        self.close_connection = True  # the rest of the body is never read
        return ApiError(
            413,
            "INVALID_ARGUMENT",
            f"Request payload size {size} exceeds the limit of {self.server.max_body_bytes} bytes "
            "(upload large files in chunks).",
        )

    def _read_body(self) -> bytes:
        limit = self.server.max_body_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024).split(b";")[0].strip() or b"0"
                try:
                    size = int(line, 16)
                except ValueError:
                    self.close_connection = True
                    raise ApiError(400, "INVALID_ARGUMENT", "Malformed chunked body.") from None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > limit:
                    raise self._too_large(total)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        header = (self.headers.get("Content-Length") or "0").strip()
        if not header.isdigit():
            self.close_connection = True
            raise ApiError(400, "INVALID_ARGUMENT", f"Bad Content-Length {header!r}.")
        length = int(header)
        if length > limit:
            raise self._too_large(length)
        body = self.rfile.read(length) if length > 0 else b""
        if len(body) < length:  # the client hung up mid-body
            self.close_connection = True
            raise ApiError(400, "INVALID_ARGUMENT", "Request body cut short.")
        return body

    def _send(
        self,
        status: int,
        body: bytes,
        headers: dict | None = None,
        content_type: str = "application/json; charset=UTF-8",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._status, self._sent = status, len(body)

    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, orjson.dumps(obj), headers)

    def _error(self, error: ApiError, headers: dict | None = None) -> None:
        self._json(error.to_json(), error.code, headers)

    def _body_json(self, body: bytes, default=None):
        if not body.strip():
            return default if default is not None else {}
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ApiError(400, "INVALID_ARGUMENT", "Invalid JSON payload received.") from None
        if not isinstance(value, dict):
            raise ApiError(400, "INVALID_ARGUMENT", "Invalid JSON payload: expected an object.")
        return value

    def _host(self) -> str:
        host = self.headers.get("Host")
        if host:
            return host
        address, port = self.server.server_address[:2]
        return f"{address}:{port}"

    def _handle(self) -> None:
        started = time.perf_counter()
        self._status, self._sent = 0, 0
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        upload = _UPLOAD.match(url.path)
        # on errors too, or the SDK retries the chunk with back-off sleeps
        upload_headers = {"X-Goog-Upload-Status": "final"} if upload else None
        try:
            body = self._read_body()
            if url.path.startswith("/_emulator/"):
                self._admin(url.path, body)
                return
            is_chunk = bool(upload and "upload_id" in query)
            vertex = VERTEX_PATH.match(url.path)
            if vertex:
                self._check_bearer()
            elif not is_chunk and not (self.headers.get("x-goog-api-key") or query.get("key")):
                raise ApiError(
                    403,
                    "PERMISSION_DENIED",
                    "Method doesn't allow unregistered callers (callers without "
                    "established identity). Please use API Key or other form of API "
                    "consumer identity to call this API.",
                )
            code = self.server.faults.draw_http_error()
            if code == 429:
                raise ApiError(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")
            if code == 500:
                raise ApiError(500, "INTERNAL", "Internal error encountered.")
            if vertex:
                self._vertex(vertex, query, body)
                return
            if upload:
                if is_chunk:
                    self._upload_chunk(upload["ver"], query["upload_id"], body)
                else:
                    self._upload_start(upload["ver"], body)
                return
            api = _API.match(url.path)
            if not api:
                raise ApiError(404, "NOT_FOUND", f"Method not found: {self.command} {url.path}")
            self._api(api["ver"], api["rest"], bool(api["download"]), query, body)
        except ApiError as error:
            self._error(error, upload_headers)
        except TimeoutError:  # the client went quiet, or was too slow, mid-request: say so and hang up
            self.close_connection = True
            try:
                self._error(
                    ApiError(408, "DEADLINE_EXCEEDED", "Request timed out while reading the body."),
                    upload_headers,
                )
            except OSError:
                pass
        except Exception:  # a bug: say so, keep serving
            _log("internal error:\n" + traceback.format_exc())
            self._error(ApiError(500, "INTERNAL", "Internal error encountered."), upload_headers)
        finally:
            path = _KEY_IN_QUERY.sub(r"\1***", self.path)
            elapsed = (time.perf_counter() - started) * 1000
            _log(
                f'{self.client_address[0]} "{self.command} {path}" {self._status} '
                f"{self._sent}B {elapsed:.1f}ms"
            )

    def _check_bearer(self) -> None:
        """Vertex AI takes an OAuth token; any non-empty bearer token will do here."""
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(
                401,
                "UNAUTHENTICATED",
                "Request is missing required authentication credential. Expected OAuth 2 access token, "
                "login cookie or other valid authentication credential.",
            )

    # ---- admin ------------------------------------------------------------------------------

    def _admin(self, path: str, body: bytes) -> None:
        faults = self.server.faults
        if path == "/_emulator/health" and self.command == "GET":
            self._json(
                {
                    "ok": True,
                    "pid": os.getpid(),
                    "state_dir": str(self.server.store.root),
                    "latency": self.server.store.latency,
                    "stalled_creates": faults.stalled_creates,
                    "references_loaded": self.server.store.responder.references.loaded,
                }
            )
        elif path == "/_emulator/faults" and self.command == "GET":
            self._json(faults.snapshot())
        elif path == "/_emulator/faults" and self.command == "POST":
            try:
                snapshot = faults.update(self._body_json(body))
            except ValueError as error:
                raise ApiError(400, "INVALID_ARGUMENT", str(error)) from None
            _log(f"faults set: {json.dumps(snapshot)}")
            self._json(snapshot)
        elif path == "/_emulator/quotas" and self.command == "GET":
            self._json(self.server.store.quotas.snapshot())
        elif path == "/_emulator/quotas" and self.command == "POST":
            try:
                snapshot = self.server.store.quotas.update(self._body_json(body))
            except ValueError as error:
                raise ApiError(400, "INVALID_ARGUMENT", str(error)) from None
            _log(f"quotas set: {json.dumps(snapshot)}")
            self._json(snapshot)
        elif path == "/_emulator/calls" and self.command == "GET":
            self._json({"calls": self.server.calls_answered()})
        elif path == "/_emulator/hold" and self.command == "GET":
            self._json(self._hold_view())
        elif path == "/_emulator/hold" and self.command == "POST":
            self._hold(self._body_json(body))
        else:
            raise ApiError(404, "NOT_FOUND", f"No admin endpoint {self.command} {path}")

    def _hold_view(self) -> dict:
        snapshot = self.server.faults.snapshot()
        return {
            "hold": snapshot["hold"],
            "hold_count": snapshot["hold_count"],
            "held": self.server.store.held(),
        }

    def _hold(self, payload: dict) -> None:
        """`{"hold": true}` holds every unfinished job and each new one; `{"hold": false}` releases
        them all and holds no more. With `"name": "batches/<id>"` (or a Vertex AI job's name), only that
        job (faults unchanged)."""
        hold, name = payload.get("hold"), payload.get("name")
        unknown = set(payload) - {"hold", "name"}
        if not isinstance(hold, bool) or unknown:
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                'Expected {"hold": true|false} and optionally "name": "batches/<id>" or '
                '"projects/<p>/locations/<l>/batchPredictionJobs/<id>".',
            )
        store = self.server.store
        if name is None:
            self.server.faults.update({"hold": hold} if hold else {"hold": False, "hold_count": 0})
            store.hold(hold)
        else:
            match = _BATCH.match(str(name)) or VERTEX_JOB_NAME.match(str(name))
            if not match:
                raise ApiError(
                    400,
                    "INVALID_ARGUMENT",
                    "Expected a job name batches/<id> or "
                    f"projects/<p>/locations/<l>/batchPredictionJobs/<id>, got {name!r}.",
                )
            store.hold(hold, match["id"])
        view = self._hold_view()
        _log(f"hold set: {json.dumps(view)}")
        self._json(view)

    # ---- Files API upload -------------------------------------------------------------------

    def _upload_start(self, ver: str, body: bytes) -> None:
        if self.command != "POST":
            raise ApiError(404, "NOT_FOUND", f"Method not found: {self.command} upload")
        protocol = self.headers.get("X-Goog-Upload-Protocol", "").lower()
        command = self.headers.get("X-Goog-Upload-Command", "").lower()
        if protocol != "resumable" or command != "start":
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                "Only resumable uploads are supported (X-Goog-Upload-Protocol: "
                "resumable, X-Goog-Upload-Command: start).",
            )
        payload = self._body_json(body)
        file = get(payload, "file") or {}
        size = self.headers.get("X-Goog-Upload-Header-Content-Length")
        upload_id = self.server.store.start_upload(
            file,
            declared_size=int(size) if size and size.isdigit() else None,
            mime_type=self.headers.get("X-Goog-Upload-Header-Content-Type"),
        )
        url = f"http://{self._host()}/upload/{ver}/files?upload_id={upload_id}&upload_protocol=resumable"
        self._send(
            200,
            b"",
            {
                "X-Goog-Upload-URL": url,
                "X-Goog-Upload-Status": "active",
                "X-Goog-Upload-Chunk-Granularity": "262144",
                "X-GUploader-UploadID": upload_id,
            },
        )

    def _upload_chunk(self, ver: str, upload_id: str, body: bytes) -> None:
        store = self.server.store
        commands = {c.strip() for c in self.headers.get("X-Goog-Upload-Command", "").lower().split(",")}
        if commands == {"query"}:
            received = store.upload_received(upload_id)
            self._send(
                200, b"", {"X-Goog-Upload-Status": "active", "X-Goog-Upload-Size-Received": str(received)}
            )
            return
        if "upload" not in commands and "finalize" not in commands:
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                "X-Goog-Upload-Command must be 'upload', 'upload, finalize' or 'query'.",
            )
        offset = self.headers.get("X-Goog-Upload-Offset")
        if offset is not None and not offset.strip().isdigit():
            raise ApiError(400, "INVALID_ARGUMENT", f"Bad X-Goog-Upload-Offset {offset!r}.")
        record = store.upload_chunk(
            upload_id, int(offset) if offset is not None else None, body, "finalize" in commands
        )
        if record is None:
            self._send(200, b"", {"X-Goog-Upload-Status": "active"})
        else:
            _log(f"uploaded {record['name']} ({record['size_bytes']} bytes)")
            self._json(
                {"file": render_file(record, self._host(), ver)}, 200, {"X-Goog-Upload-Status": "final"}
            )

    # ---- JSON API -------------------------------------------------------------------------------

    def _api(self, ver: str, rest: str, download_prefix: bool, query: dict, body: bytes) -> None:
        store, method = self.server.store, self.command
        match = _FILE_DOWNLOAD.match(rest)
        if match and method == "GET":
            self._download(match["id"], query)
            return
        if download_prefix:
            raise ApiError(404, "NOT_FOUND", f"Method not found: {method} /download/{ver}/{rest}")
        if (match := _FILE.match(rest)) and method == "GET":
            self._json(render_file(store.get_file(match["id"]), self._host(), ver))
        elif (match := _FILE.match(rest)) and method == "DELETE":
            store.delete_file(match["id"])
            self._json({})
        elif rest == "files" and method == "GET":
            files, token = store.list_files(self._page_size(query), query.get("pageToken"))
            out = {"files": [render_file(f, self._host(), ver) for f in files]}
            if token:
                out["nextPageToken"] = token
            self._json(out)
        elif (match := _CREATE.match(rest)) and method == "POST":
            payload = self._body_json(body)
            batch = get(payload, "batch")
            self._json(
                store.create_batch(
                    match["model"], batch if isinstance(batch, dict) else payload, ver, body_size=len(body)
                )
            )
        elif (match := DEVELOPER_GENERATE.match(rest)) and method == "POST":
            self._json(self.server.online.answer(match["model"], self._body_json(body), ver))
        elif (match := _BATCH.match(rest)) and method == "GET":
            self._json(store.get_batch(match["id"]))
        elif (match := _BATCH.match(rest)) and method == "DELETE":
            store.delete_batch(match["id"])
            self._json({})
        elif (match := _CANCEL.match(rest)) and method == "POST":
            store.cancel_batch(match["id"])
            self._json({})
        elif rest == "batches" and method == "GET":
            operations, token = store.list_batches(self._page_size(query), query.get("pageToken"))
            out = {"operations": operations}
            if token:
                out["nextPageToken"] = token
            self._json(out)
        else:
            raise ApiError(404, "NOT_FOUND", f"Method not found: {method} /{ver}/{rest}")

    def _vertex(self, path: re.Match, query: dict, body: bytes) -> None:
        jobs, method, rest = self.server.vertex, self.command, path["rest"]
        where = (path["project"], path["location"])
        if rest == "batchPredictionJobs" and method == "POST":
            self._json(jobs.create(path["ver"], *where, self._body_json(body)))
        elif rest == "batchPredictionJobs" and method == "GET":
            page_size = self._page_size(query)
            self._json(jobs.list(*where, page_size, query.get("pageToken"), query.get("filter")))
        elif (match := VERTEX_JOB.match(rest)) and method == "GET":
            self._json(jobs.get(*where, match["id"]))
        elif (match := VERTEX_JOB.match(rest)) and method == "DELETE":
            self._json(jobs.delete(*where, match["id"]))
        elif (match := VERTEX_CANCEL.match(rest)) and method == "POST":
            jobs.cancel(*where, match["id"])
            self._json({})
        elif (match := VERTEX_GENERATE.match(rest)) and method == "POST":
            self._json(self.server.online.answer(match["id"], self._body_json(body), path["ver"]))
        else:
            raise ApiError(404, "NOT_FOUND", f"Method not found: {method} {urlsplit(self.path).path}")

    def _page_size(self, query: dict) -> int:
        value = query.get("pageSize", "")
        size = int(value) if value.isdigit() else 0
        return min(size, 1000) if size > 0 else DEFAULT_PAGE_SIZE

    def _download(self, file_id: str, query: dict) -> None:
        if query.get("alt") != "media":
            raise ApiError(400, "INVALID_ARGUMENT", "Downloads need the query parameter alt=media.")
        if self.server.faults.take_download_error():
            raise ApiError(503, "UNAVAILABLE", "The service is currently unavailable.")
        store = self.server.store
        record = store.get_file(file_id)
        if record["source"] != "GENERATED":
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                f"Only generated files can be downloaded; {record['name']} was uploaded.",
            )
        path = store.file_bytes_path(file_id)
        size = path.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                self.wfile.write(block)
        self._status, self._sent = 200, size


class EmulatorServer(ThreadingHTTPServer):
    """One thread per connection, at most `max_connections` at once; the rest get a 503."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address,
        store: Store,
        faults: Faults,
        *,
        online: OnlineCalls | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        idle_timeout: float = IDLE_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ):
        super().__init__(address, Handler)
        self.store, self.faults = store, faults
        self.vertex = VertexJobs(store)
        self.online = online or OnlineCalls(store.responder, faults, store.models, log=store.log)
        self._calls: list[dict] = []  # the last MAX_CALLS_KEPT API calls, for tests and people
        self._calls_lock = threading.Lock()
        self.max_body_bytes, self.idle_timeout = max_body_bytes, idle_timeout
        self.request_timeout = request_timeout
        self._slots = threading.BoundedSemaphore(max_connections)

    def record_call(self, method: str, path: str, status: int) -> None:
        with self._calls_lock:
            self._calls.append({"method": method, "path": path, "status": status})
            del self._calls[:-MAX_CALLS_KEPT]

    def calls_answered(self) -> list[dict]:
        with self._calls_lock:
            return list(self._calls)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            _log(f"{client_address[0]} refused: all connections busy")
            body = orjson.dumps(
                ApiError(503, "UNAVAILABLE", "Too many open connections; retry later.").to_json()
            )
            try:
                request.settimeout(1.0)
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"%s: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                    % (EMULATOR_HEADER.encode(), len(body), body)
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


# The help of each `--fault-*` flag; the flags themselves are FaultConfig's fields.
FAULT_HELP = {
    "line_error_rate": 'share of output lines that are {"error": ...}',
    "truncate_rate": "share of responses cut short (finishReason MAX_TOKENS, no boxed answer)",
    "no_thoughts_rate": "share of responses without thought parts",
    "garbage_line_rate": "share of output lines that are not JSON",
    "wrong_rate": "share of generation answers with a wrong final answer (drawn per request key, so per "
    "problem and sample, and batch)",
    "http_error_rate": "share of API calls answered 429 or 500 (admin endpoints exempt)",
    "job_state": "terminal state of the next --fault-job-count jobs (partially_succeeded: Vertex AI only)",
    "job_count": "how many new jobs end in --fault-job-state",
    "slow_latency": "latency of the next --fault-slow-count jobs",
    "slow_count": "how many new jobs take --fault-slow-latency",
    "lose_create_count": "the next N creates make the job but answer HTTP 500",
    "slow_create_seconds": "how long the next --fault-slow-create-count creates stall before making the job",
    "slow_create_count": "the next N creates stall --fault-slow-create-seconds, then make the job and answer",
    "hold": "hold every new job PENDING until released (POST /_emulator/hold)",
    "hold_count": "hold the next N new jobs PENDING until released",
    "download_error_count": "the next N result downloads answer HTTP 503",
    "flex_shed_rate": "share of Flex generateContent calls shed (answered --fault-flex-shed-status)",
    "online_fail_after": "after N answered generateContent calls, every further one answers 500 (0: off)",
    "flex_shed_status": "what a shed Flex call answers: 503 UNAVAILABLE (default) or 429 RESOURCE_EXHAUSTED",
}


def _add_fault_flags(group: argparse._ArgumentGroup) -> None:
    """One `--fault-<name>` flag per FaultConfig field, typed by its default."""
    for field in dataclasses.fields(FaultConfig):
        flag, help_text = f"--fault-{field.name.replace('_', '-')}", FAULT_HELP.get(field.name)
        if field.default is False:
            group.add_argument(flag, action="store_true", help=help_text)
        elif field.name == "job_state":
            group.add_argument(flag, choices=JOB_FAULT_STATES, default=None, help=help_text)
        else:
            kind = type(field.default)
            metavar = "N" if kind is int else ("R" if field.name.endswith("_rate") else "S")
            group.add_argument(flag, type=kind, default=field.default, metavar=metavar, help=help_text)


# (flag, type, default, metavar, help) of each limit and quota; their bounds are in FLAG_BOUNDS.
LIMIT_FLAGS = (
    (
        "--max-body-bytes",
        int,
        MAX_BODY_BYTES,
        "B",
        f"largest request body, refused with 413 before it is read (default {MAX_BODY_BYTES})",
    ),
    (
        "--max-file-bytes",
        int,
        MAX_FILE_BYTES,
        "B",
        f"largest uploaded file (default {MAX_FILE_BYTES}, the real 2 GB)",
    ),
    (
        "--idle-timeout",
        float,
        IDLE_TIMEOUT,
        "S",
        f"close a connection that sends nothing for S seconds (default {IDLE_TIMEOUT:g})",
    ),
    (
        "--request-timeout",
        float,
        REQUEST_TIMEOUT,
        "S",
        "close a connection whose request (line, headers, body) is not in within S seconds of "
        f"its first byte (default {REQUEST_TIMEOUT:g})",
    ),
    (
        "--max-connections",
        int,
        MAX_CONNECTIONS,
        "N",
        f"connections served at once; more are answered 503 (default {MAX_CONNECTIONS})",
    ),
)
QUOTA_FLAGS = (
    (
        "--max-active-jobs",
        int,
        None,
        "N",
        "jobs in flight at once, both protocols together; a create past it answers 429 "
        "RESOURCE_EXHAUSTED (the Developer API allows 100)",
    ),
    (
        "--max-enqueued-tokens",
        int,
        None,
        "T",
        "prompt tokens of the jobs in flight on one model; a create past it answers 429",
    ),
)
# What a numeric flag must be, as its usage error says it; an unset quota (None) is no limit.
FLAG_BOUNDS = (
    (
        "at least 1",
        lambda value: value >= 1,
        ("max_body_bytes", "max_file_bytes", "max_connections", "max_active_jobs", "max_enqueued_tokens"),
    ),
    ("a number of seconds >= 0", lambda value: value >= 0, ("online_latency", "flex_latency")),
    ("a number of seconds > 0", lambda value: value > 0, ("idle_timeout", "request_timeout")),
)


def _add_flags(group: argparse._ArgumentGroup, flags: tuple) -> None:
    for flag, kind, default, metavar, help_text in flags:
        group.add_argument(flag, type=kind, default=default, metavar=metavar, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cotgen-emulator",
        description="Local stand-in for the Gemini Batch API (Files API + batches) and Vertex AI batch "
        "prediction (gs:// through a GCS stand-in at $STORAGE_EMULATOR_HOST), for the google-genai "
        "SDK with HttpOptions(base_url=...).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks one)"
    )
    parser.add_argument("--state-dir", default=".emulator", help="where files and jobs are kept")
    parser.add_argument(
        "--latency", type=float, default=10.0, help="seconds from create to a finished job (default 10)"
    )
    parser.add_argument(
        "--online-latency",
        type=float,
        default=DEFAULT_ONLINE_LATENCY,
        metavar="S",
        help=f"seconds a standard-tier generateContent call takes (default {DEFAULT_ONLINE_LATENCY:g})",
    )
    parser.add_argument(
        "--flex-latency",
        type=float,
        default=DEFAULT_FLEX_LATENCY,
        metavar="S",
        help=f"seconds a Flex-tier generateContent call takes (default {DEFAULT_FLEX_LATENCY:g})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every fault draw (default 0)")
    parser.add_argument(
        "--datasets-dir", default=None, help="reference problems (*.parquet); default $COTGEN_DATASETS_DIR"
    )
    parser.add_argument(
        "--models",
        default=None,
        metavar="LIST",
        help="comma-separated model ids accepted besides the built-in ones ('*': any); "
        f"default ${MODELS_ENV}",
    )
    _add_flags(parser.add_argument_group("limits"), LIMIT_FLAGS)
    _add_flags(
        parser.add_argument_group("quotas (off unless set; POST /_emulator/quotas changes them)"), QUOTA_FLAGS
    )
    _add_fault_flags(parser.add_argument_group("faults"))
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, parsed and checked: a value out of its FLAG_BOUNDS is a usage error naming it."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for bound, holds, names in FLAG_BOUNDS:
        for name in names:
            value = getattr(args, name)
            if value is not None and not holds(value):
                parser.error(f"--{name.replace('_', '-')} must be {bound}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = FaultConfig(
        **{f.name: getattr(args, f"fault_{f.name}") for f in dataclasses.fields(FaultConfig)}
    )
    faults = Faults(seed=args.seed)
    try:
        faults.update(config.to_json())
    except ValueError as error:
        build_parser().error(str(error))
    quotas = Quotas(args.max_active_jobs, args.max_enqueued_tokens)
    models = ModelCatalog(parse_models(args.models) if args.models is not None else None)
    responder = Responder(args.datasets_dir)
    store = Store(
        args.state_dir,
        latency=args.latency,
        faults=faults,
        responder=responder,
        log=_log,
        models=models,
        max_file_bytes=args.max_file_bytes,
        quotas=quotas,
    )
    server = EmulatorServer(
        (args.host, args.port),
        store,
        faults,
        online=OnlineCalls(
            responder,
            faults,
            models,
            latency=args.online_latency,
            flex_latency=args.flex_latency,
            log=_log,
        ),
        max_body_bytes=args.max_body_bytes,
        idle_timeout=args.idle_timeout,
        request_timeout=args.request_timeout,
        max_connections=args.max_connections,
    )
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        _log(f"WARNING: listening on {args.host}, not loopback: anyone who can reach it can use it")

    def preload() -> None:
        started = time.perf_counter()
        count = len(responder.references)
        _log(
            f"{count} reference problems loaded from {responder.references.datasets_dir} "
            f"in {time.perf_counter() - started:.2f}s"
        )

    threading.Thread(target=preload, name="preload-references", daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    host, port = server.server_address[:2]
    _log(
        f"listening on http://{host}:{port} (state {os.path.abspath(args.state_dir)}, "
        f"latency {args.latency}s, online {args.online_latency}s, Flex {args.flex_latency}s, "
        f"seed {args.seed}, "
        f"models {'any' if models.any else ', '.join(sorted(models.names))}, "
        f"faults {json.dumps(faults.snapshot())}, quotas {json.dumps(quotas.snapshot())}, Vertex AI gs:// at "
        f"{os.environ.get('STORAGE_EMULATOR_HOST') or 'nowhere: STORAGE_EMULATOR_HOST unset'})"
    )
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        _log("stopped")


if __name__ == "__main__":
    main()
