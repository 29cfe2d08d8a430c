"""The emulator refuses what the real API refuses, defends itself like a public endpoint, and holds
jobs in flight on request. Real processes, real sockets, the real google-genai client."""

import csv
import json
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from importlib import resources
from pathlib import Path

import pytest
from google.genai import errors, types

from cotgen_assets_tests.harness.emulator import generation_request, request_line, start_emulator

MODEL = "gemini-3.1-pro-preview"
QUESTION = "How many emulators does it take to change a light bulb, in base 7?"
KEY = "test-key-refusals"


# ---- helpers ------------------------------------------------------------------------------


@pytest.fixture
def client(emulator):
    return emulator.client(api_key=KEY)


def submit_file(client, tmp_path: Path, requests: dict[str, dict], model: str = MODEL, name: str = "job"):
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(b"".join(request_line(key, request) for key, request in requests.items()))
    file = client.files.upload(file=str(path), config={"mime_type": "jsonl", "display_name": name})
    return client.batches.create(model=model, src=file.name, config={"display_name": name})


def wait_done(client, name: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (job := client.batches.get(name=name)).done:
        assert time.monotonic() < deadline, f"{name} still {job.state} after {timeout}s"
        time.sleep(0.05)
    return job


def output_lines(client, job) -> dict[str, dict]:
    lines = client.files.download(file=job.dest.file_name).decode().splitlines()
    return {line["key"]: line for line in map(json.loads, lines)}


def connect(emu, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection((emu.host, emu.port), timeout=timeout)
    return sock


def http(emu, method: str, path: str, body: bytes = b"", headers: dict | None = None, key: str | None = KEY):
    """(status, headers, body) of one request on its own connection, over a raw socket."""
    head = {"Host": f"{emu.host}:{emu.port}", "Content-Length": str(len(body)), **(headers or {})}
    if key:
        head["x-goog-api-key"] = key
    with connect(emu) as sock:
        lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items()), "", ""]
        sock.sendall("\r\n".join(lines).encode() + body)
        return read_response(sock)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    length = int(headers.get("content-length", 0))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    return int(status_line.split()[1]), headers, rest


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (the socket's timeout bounds it)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def start_upload(emu, size: int, display_name: str = "r") -> str:
    """Begins a resumable upload; returns the path and query of its upload URL."""
    status, headers, body = http(
        emu,
        "POST",
        "/upload/v1beta/files",
        json.dumps({"file": {"display_name": display_name}}).encode(),
        {
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": str(size),
            "Content-Type": "application/json",
        },
    )
    assert status == 200, body
    return headers["x-goog-upload-url"].removeprefix(emu.base_url)


# ---- unknown models and enum values -----------------------------------------------------------


@pytest.mark.parametrize("api_version", ["v1beta", "v1"])
def test_an_unknown_model_is_refused_at_create_with_the_apis_404(emulator, tmp_path, api_version):
    client = emulator.client(api_version=api_version, api_key=KEY)
    with pytest.raises(errors.ClientError) as refused:
        submit_file(client, tmp_path, {"a": generation_request(QUESTION)}, model="gemini-9-ultra")
    assert refused.value.code == 404 and refused.value.status == "NOT_FOUND"
    assert (
        f"models/gemini-9-ultra is not found for API version {api_version}, or is not supported for "
        "batchGenerateContent" in refused.value.message
    )
    with pytest.raises(errors.ClientError) as tuned:
        client.batches.create(model="tunedModels/nobody-tuned-this", src=[{"contents": "hi"}])
    assert tuned.value.code == 404
    assert list(client.batches.list()) == [], "a refused create makes no job"

    job = submit_file(client, tmp_path, {"a": generation_request(QUESTION)}, name="ok")
    assert wait_done(client, job.name).state == types.JobState.JOB_STATE_SUCCEEDED, "the default model works"


def test_every_model_of_the_price_table_is_served(client, tmp_path):
    table = resources.files("cotgen_assets").joinpath("prices.csv").read_text()
    models = [row["model"] for row in csv.DictReader(table.splitlines())]
    assert MODEL in models
    for model in models:
        job = client.batches.create(
            model=model, src=[{"contents": [{"role": "user", "parts": [{"text": QUESTION}]}]}]
        )
        assert job.model == f"models/{model}"


def test_models_flag_and_environment_add_models(tmp_path):
    inline = [{"contents": [{"role": "user", "parts": [{"text": QUESTION}]}]}]
    with start_emulator(
        tmp_path / "flag", extra_args=["--models", "gemini-9-ultra, models/gemini-9-nano,tunedModels/mine"]
    ) as emu:
        client = emu.client(api_key=KEY)
        for model in ("gemini-9-ultra", "gemini-9-nano", MODEL):
            assert client.batches.create(model=model, src=inline).model == f"models/{model}"
        assert client.batches.create(model="tunedModels/mine", src=inline).model == "tunedModels/mine"
        with pytest.raises(errors.ClientError) as refused:
            client.batches.create(model="gemini-9-mega", src=inline)
        assert refused.value.code == 404
    with start_emulator(tmp_path / "env", env={"COTGEN_EMULATOR_MODELS": "*"}) as emu:
        client = emu.client(api_key=KEY)
        assert client.batches.create(model="anything-at-all", src=inline).model == "models/anything-at-all"


def test_a_bad_thinking_level_in_an_input_file_fails_that_line_only(client, tmp_path):
    requests = {level: generation_request(QUESTION, level) for level in ("LOW", "MEDIUM", "HIGH")}
    requests["unset"] = generation_request(QUESTION, "THINKING_LEVEL_UNSPECIFIED")  # the model's default
    requests["lower"] = generation_request(QUESTION, "low")  # what the project and the docs send
    requests["banana"] = generation_request(QUESTION, "banana")
    both = generation_request(QUESTION, "high")
    both["generationConfig"]["thinkingConfig"]["thinkingBudget"] = 1024
    requests["budget-and-level"] = both
    job = wait_done(client, submit_file(client, tmp_path, requests).name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED

    lines = output_lines(client, job)
    failed = {key: line["error"] for key, line in lines.items() if "error" in line}
    assert set(failed) == {"banana", "budget-and-level"}
    assert all(e["code"] == 400 and e["status"] == "INVALID_ARGUMENT" for e in failed.values())
    assert (
        "Invalid value at 'generation_config.thinking_config.thinking_level'" in failed["banana"]["message"]
    )
    assert '"banana"' in failed["banana"]["message"]
    assert all("response" in lines[key] for key in set(requests) - set(failed))
    stats = json.loads(client._api_client.request("get", job.name, {}).body)["metadata"]["batchStats"]
    assert stats["failedRequestCount"] == "2" and stats["successfulRequestCount"] == str(len(requests) - 2)


def test_several_candidates_are_refused_by_gemini_3_models_line_by_line(client, tmp_path):
    """As the API does since Gemini 3 (js-genai #1609, python-genai #1723): k answers must be k
    lines, which the emulator answers each on its own."""
    two = generation_request(QUESTION, "high")
    two["generationConfig"]["candidateCount"] = 2
    one = generation_request(QUESTION, "high")
    one["generationConfig"]["candidateCount"] = 1
    job = wait_done(client, submit_file(client, tmp_path, {"two": two, "one": one, "plain": one}).name)
    lines = output_lines(client, job)
    assert lines["two"]["error"] == {
        "code": 400,
        "message": "Multiple candidates is not enabled for this model",
        "status": "INVALID_ARGUMENT",
    }
    assert "response" in lines["one"] and "response" in lines["plain"]


@pytest.mark.parametrize(
    "model, takes",
    [
        ("gemini-3.1-pro-preview", {"LOW", "MEDIUM", "HIGH"}),
        ("gemini-3-pro-preview", {"LOW", "HIGH"}),
        ("gemini-3-flash-preview", {"MINIMAL", "LOW", "MEDIUM", "HIGH"}),
    ],
)
def test_each_model_takes_only_its_own_thinking_levels(client, tmp_path, model, takes):
    """Every value of the SDK's enum is well formed; a model still refuses those it has no use for."""
    levels = {level.value for level in types.ThinkingLevel} - {"THINKING_LEVEL_UNSPECIFIED"}
    requests = {level: generation_request(QUESTION, level.lower()) for level in levels}
    job = wait_done(client, submit_file(client, tmp_path, requests, model=model).name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED

    lines = output_lines(client, job)
    assert {key for key, line in lines.items() if "response" in line} == takes
    for level in levels - takes:
        error = lines[level]["error"]
        assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"
        assert f"thinking_level {level} is not supported by models/{model}" in error["message"]


def test_a_bad_thinking_level_in_inlined_requests_refuses_the_create(client):
    def inline(level: str) -> list:
        return [
            {"contents": [{"role": "user", "parts": [{"text": QUESTION}]}], "metadata": {"key": "good"}},
            {
                "contents": [{"role": "user", "parts": [{"text": QUESTION}]}],
                "config": {"thinking_config": {"thinking_level": level, "include_thoughts": True}},
                "metadata": {"key": "maybe"},
            },
        ]

    with pytest.warns(UserWarning, match="banana"):  # the SDK passes an unknown value on, with a warning
        with pytest.raises(errors.ClientError) as refused:
            client.batches.create(model=MODEL, src=inline("banana"))
    assert refused.value.code == 400 and refused.value.status == "INVALID_ARGUMENT"
    assert (
        "batch.input_config.requests.requests[1].request.generation_config.thinking_config.thinking_level"
        in refused.value.message
    )
    assert list(client.batches.list()) == []
    job = wait_done(client, client.batches.create(model=MODEL, src=inline("high")).name)
    assert [r.metadata["key"] for r in job.dest.inlined_responses] == ["good", "maybe"]


# ---- upload ids, body and file limits, idle connections ---------------------------------------


def test_an_upload_id_it_did_not_issue_names_no_file(emulator, client, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    session = json.dumps({"file_id": None, "display_name": None, "mime_type": "x", "declared_size": None})
    (outside / "victim.json").write_text(session)
    (outside / "victim.part").write_bytes(b"secret bytes")
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    uploads = emulator.state_dir / "uploads"
    ids = [
        "../../outside/victim",
        str(outside / "victim"),
        urllib.parse.quote("../../outside/victim", safe=""),
        f"{'x' * 30}..",
        "A" * 32,  # the right shape, never issued
    ]
    for upload_id in ids:
        quoted = urllib.parse.quote(upload_id, safe="")
        path = f"/upload/v1beta/files?upload_id={quoted}&upload_protocol=resumable"
        status, headers, body = http(
            emulator, "POST", path, headers={"X-Goog-Upload-Command": "query"}, key=None
        )
        assert status == 404, (upload_id, body)
        assert "x-goog-upload-size-received" not in headers
        status, headers, body = http(
            emulator,
            "POST",
            path,
            b"more",
            {"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "12"},
            key=None,
        )
        assert status == 404 and headers["x-goog-upload-status"], (upload_id, body)
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before, "the outside files are untouched"
    assert list(client.files.list()) == [] and list(uploads.iterdir()) == []


def test_a_huge_content_length_is_refused_before_the_body_is_read(emulator, client):
    upload_path = start_upload(emulator, 400_000_000)
    with connect(emulator) as sock:
        sock.sendall(
            f"POST {upload_path} HTTP/1.1\r\nHost: {emulator.host}\r\nContent-Length: 400000000\r\n"
            "X-Goog-Upload-Command: upload\r\nX-Goog-Upload-Offset: 0\r\n\r\n".encode()
        )
        # not one byte of the body is sent: the answer comes anyway
        status, headers, body = read_response(sock)
        assert status == 413 and headers["x-goog-upload-status"] == "final"
        assert "exceeds the limit of 67108864 bytes" in json.loads(body)["error"]["message"]
        assert headers["connection"] == "close"
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b"", "the server hangs up instead of reading 400 MB"
    status, headers, _ = http(
        emulator, "POST", upload_path, headers={"X-Goog-Upload-Command": "query"}, key=None
    )
    assert status == 200 and headers["x-goog-upload-size-received"] == "0"
    status, _, _ = http(
        emulator, "POST", "/v1beta/models/x:batchGenerateContent", headers={"Content-Length": "99999999999"}
    )
    assert status == 413


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--max-body-bytes", "0", "--max-body-bytes must be at least 1"),
        ("--max-file-bytes", "-5", "--max-file-bytes must be at least 1"),
        ("--max-connections", "0", "--max-connections must be at least 1"),
        ("--online-latency", "-1", "--online-latency must be a number of seconds >= 0"),
        ("--flex-latency", "-0.5", "--flex-latency must be a number of seconds >= 0"),
        ("--idle-timeout", "0", "--idle-timeout must be a number of seconds > 0"),
        ("--request-timeout", "-1", "--request-timeout must be a number of seconds > 0"),
        ("--max-active-jobs", "0", "--max-active-jobs must be at least 1"),
        ("--max-enqueued-tokens", "-3", "--max-enqueued-tokens must be at least 1"),
    ],
)
def test_a_limit_or_quota_flag_out_of_range_is_a_usage_error_naming_it(tmp_path, flag, value, said):
    done = subprocess.run(
        [sys.executable, "-m", "cotgen_assets.emulator.server", "--port", "0"]
        + ["--state-dir", str(tmp_path / "emu"), f"{flag}={value}"],
        capture_output=True,
        text=True,
        timeout=120,  # a value let through would start the server: end the test instead of hanging
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"cotgen-emulator: error: {said}"), done.stderr


def test_body_and_file_limits_from_flags(tmp_path):
    args = ["--max-body-bytes", "1000", "--max-file-bytes", "2500"]
    with start_emulator(tmp_path / "emu", extra_args=args) as emu:
        big = json.dumps({"batch": {"displayName": "x" * 2000}}).encode()
        status, _, body = http(emu, "POST", f"/v1beta/models/{MODEL}:batchGenerateContent", big)
        assert status == 413 and json.loads(body)["error"]["code"] == 413

        status, headers, body = http(
            emu,
            "POST",
            "/upload/v1beta/files",
            b"{}",
            {
                "X-Goog-Upload-Protocol": "resumable",
                "X-Goog-Upload-Command": "start",
                "X-Goog-Upload-Header-Content-Length": "2501",
            },
        )
        assert status == 400 and "exceeds the limit of 2500 bytes" in json.loads(body)["error"]["message"]

        upload_path = start_upload(emu, 2400)
        for offset in (0, 900, 1800):
            status, headers, body = http(
                emu,
                "POST",
                upload_path,
                b"y" * 900,
                {"X-Goog-Upload-Command": "upload", "X-Goog-Upload-Offset": str(offset)},
                key=None,
            )
            assert status == (200 if offset < 1800 else 400), body
        assert "exceeds the limit of 2500 bytes" in json.loads(body)["error"]["message"]
        status, headers, _ = http(
            emu, "POST", upload_path, headers={"X-Goog-Upload-Command": "query"}, key=None
        )
        assert headers["x-goog-upload-size-received"] == "1800", "the chunk over the limit was not kept"


def test_idle_connections_are_closed_and_extra_ones_refused(tmp_path):
    timeout = 0.5
    args = ["--idle-timeout", str(timeout), "--max-connections", "8"]
    with start_emulator(tmp_path / "emu", extra_args=args) as emu:
        started = time.monotonic()
        half = connect(emu)  # headers and part of a body, then silence
        half.sendall(b"POST /v1beta/batches HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"z" * 10)
        idle = [connect(emu) for _ in range(20)]  # nothing sent at all
        try:
            half_answer = read_to_eof(half)
            answers = [read_to_eof(sock) for sock in idle]
        finally:
            for sock in [half, *idle]:
                sock.close()
        elapsed = time.monotonic() - started
        assert half_answer.startswith(b"HTTP/1.1 408"), half_answer
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
        assert len(refused) == 13, "8 connections served (the half request and 7 idle), the rest refused"
        assert [a for a in answers if a not in refused] == [b""] * 7, "idle ones closed without a word"
        assert elapsed < timeout + 4, f"idle connections lived {elapsed:.1f}s"
        # every slot is free again
        status, _, body = http(emu, "GET", "/_emulator/health", key=None)
        assert status == 200 and json.loads(body)["ok"]
        client = emu.client(api_key=KEY)
        job = client.batches.create(
            model=MODEL, src=[{"contents": [{"role": "user", "parts": [{"text": QUESTION}]}]}]
        )
        assert wait_done(client, job.name).state == types.JobState.JOB_STATE_SUCCEEDED


def test_clients_trickling_headers_are_cut_off_and_others_keep_being_answered(tmp_path):
    """Each read is bounded by the idle timeout, and the whole request by --request-timeout: clients
    that send a header line now and then, more of them than there are slots, cannot lock others out."""
    args = ["--idle-timeout", "5", "--request-timeout", "1", "--max-connections", "4"]
    script_seconds = 20.0  # how long each trickler would go on if nobody cut it off
    with start_emulator(tmp_path / "emu", extra_args=args) as emu:
        endings: list[bytes | str] = []

        def trickle() -> None:
            with connect(emu, timeout=script_seconds + 5) as sock:
                sock.sendall(b"GET /_emulator/health HTTP/1.1\r\nHost: x\r\n")
                deadline = time.monotonic() + script_seconds
                while time.monotonic() < deadline:
                    if select.select([sock], [], [], 0.2)[0]:  # a header line every 0.2 s ...
                        try:
                            endings.append(read_to_eof(sock))  # ... until the server hangs up
                        except ConnectionResetError:
                            endings.append(b"")
                        return
                    try:
                        sock.sendall(b"X-Slow: 1\r\n")
                    except OSError:
                        endings.append(b"")
                        return
                endings.append("never cut off")

        scripts_end = time.monotonic() + script_seconds  # before any trickler's own end
        tricklers = [threading.Thread(target=trickle) for _ in range(6)]
        for thread in tricklers:
            thread.start()
        statuses = []
        while 200 not in statuses and time.monotonic() < scripts_end:
            statuses.append(http(emu, "GET", "/_emulator/health", key=None)[0])
            time.sleep(0.05)  # a 503 while every slot is taken: ask again shortly
        for thread in tricklers:
            thread.join()
        assert 200 in statuses, f"while the tricklers went on, others were only answered {set(statuses)}"
        assert "never cut off" not in endings and len(endings) == 6
        assert all(e == b"" or e.startswith((b"HTTP/1.1 408", b"HTTP/1.1 503")) for e in endings), endings
        client = emu.client(api_key=KEY)
        assert list(client.batches.list()) == []


# ---- holding jobs in flight ------------------------------------------------------------------


def test_hold_count_keeps_the_next_job_pending_until_released(emulator, client, tmp_path):
    assert emulator.set_faults(hold_count=1)["hold_count"] == 1
    held = submit_file(client, tmp_path, {"a": generation_request(QUESTION)}, name="held")
    free = submit_file(client, tmp_path, {"b": generation_request(QUESTION)}, name="free")
    assert wait_done(client, free.name).state == types.JobState.JOB_STATE_SUCCEEDED
    assert emulator.get_faults()["hold_count"] == 0
    for _ in range(5):  # latency 0, yet it does not move
        assert client.batches.get(name=held.name).state == types.JobState.JOB_STATE_PENDING
    assert emulator.admin("GET", "hold") == {"hold": False, "hold_count": 0, "held": [held.name]}

    emulator.restart()
    assert client.batches.get(name=held.name).state == types.JobState.JOB_STATE_PENDING, "held over a restart"
    assert emulator.release(held.name)["held"] == []
    done = wait_done(client, held.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED and set(output_lines(client, done)) == {"a"}


def test_hold_all_freezes_jobs_in_flight_and_new_ones(emulator, client, tmp_path):
    emulator.set_faults(slow_latency=600.0, slow_count=1)
    slow = submit_file(client, tmp_path, {"a": generation_request(QUESTION)}, name="slow")
    done = wait_done(
        client, submit_file(client, tmp_path, {"b": generation_request(QUESTION)}, name="done").name
    )
    state = emulator.hold()
    assert state["hold"] is True and state["held"] == [slow.name], "a finished job is not held"
    new = submit_file(client, tmp_path, {"c": generation_request(QUESTION)}, name="new")
    assert emulator.admin("GET", "hold")["held"] == [slow.name, new.name]
    assert client.batches.get(name=new.name).state == types.JobState.JOB_STATE_PENDING
    client.batches.cancel(name=slow.name)  # a held job can still be cancelled
    assert client.batches.get(name=slow.name).state == types.JobState.JOB_STATE_CANCELLED

    state = emulator.release()
    assert state == {"hold": False, "hold_count": 0, "held": []}
    assert wait_done(client, new.name).state == types.JobState.JOB_STATE_SUCCEEDED
    assert client.batches.get(name=done.name).state == types.JobState.JOB_STATE_SUCCEEDED


def test_hold_flags_and_bad_hold_requests(tmp_path):
    with start_emulator(tmp_path / "emu", extra_args=["--fault-hold"]) as emu:
        client = emu.client(api_key=KEY)
        assert emu.get_faults()["hold"] is True
        inline = [{"contents": [{"role": "user", "parts": [{"text": QUESTION}]}]}]
        jobs = [client.batches.create(model=MODEL, src=inline) for _ in range(2)]
        assert emu.admin("GET", "hold")["held"] == [j.name for j in jobs]
        for body in ({"hold": "yes"}, {"hold": True, "name": "files/x"}, {"hold": False, "extra": 1}, {}):
            status, _, reply = http(emu, "POST", "/_emulator/hold", json.dumps(body).encode(), key=None)
            assert status == 400 and json.loads(reply)["error"]["message"], body
        status, _, _ = http(
            emu, "POST", "/_emulator/hold", b'{"hold": false, "name": "batches/nope"}', key=None
        )
        assert status == 404
        status, _, _ = http(emu, "POST", "/_emulator/faults", b'{"hold": 1}', key=None)
        assert status == 400
        emu.release()
        assert all(wait_done(client, j.name).state == types.JobState.JOB_STATE_SUCCEEDED for j in jobs)
    with start_emulator(tmp_path / "emu2", extra_args=["--fault-hold-count", "2"]) as emu:
        assert emu.get_faults()["hold_count"] == 2 and emu.get_faults()["hold"] is False
