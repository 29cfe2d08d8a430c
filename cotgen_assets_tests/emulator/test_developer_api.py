"""The emulator, driven by the real google-genai SDK over HTTP (no mocks)."""

import base64
import hashlib
import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from google.genai import errors, types

from cotgen_assets.core.answers import extract_boxed_answer, extract_gsm8k_answer
from cotgen_assets_tests.harness.emulator import (
    generation_request,
    request_line,
    start_emulator,
    summarization_request,
)

MODEL = "gemini-3.1-pro-preview"
DATA = Path(os.environ["COTGEN_DATASETS_DIR"])
UNKNOWN_QUESTION = "How many emulators does it take to change a light bulb, in base 7?"
KEY = "test-key-7f3a91"  # must never show up in the emulator's log


# ---- helpers ------------------------------------------------------------------------------


def write_requests(path: Path, requests: dict[str, dict]) -> Path:
    with open(path, "wb") as handle:
        for key, request in requests.items():
            handle.write(request_line(key, request))
    return path


def upload(client, path: Path, display_name: str = "requests"):
    return client.files.upload(file=str(path), config={"mime_type": "jsonl", "display_name": display_name})


def submit(client, requests: dict[str, dict], tmp_path: Path, name: str = "job"):
    path = write_requests(tmp_path / f"{name}.jsonl", requests)
    file = upload(client, path, name)
    return client.batches.create(model=MODEL, src=file.name, config={"display_name": name})


def wait_done(client, name: str, timeout: float = 20.0, seen: list | None = None):
    deadline = time.monotonic() + timeout
    while True:
        job = client.batches.get(name=name)
        if seen is not None and (not seen or seen[-1] != job.state.value):
            seen.append(job.state.value)
        if job.done:
            return job
        assert time.monotonic() < deadline, f"{name} still {job.state} after {timeout}s"
        time.sleep(0.05)


def results(client, job) -> dict[str, dict | str]:
    """Output lines by key; a line that is not JSON is kept as its raw text under its key."""
    out = {}
    for raw in client.files.download(file=job.dest.file_name).decode().splitlines():
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            out[re.search(r'"key":"([^"]+)"', raw).group(1)] = raw
        else:
            out[line["key"]] = line
    return out


def raw(
    emu, method: str, path: str, body: bytes | None = None, headers: dict | None = None, key: str | None = KEY
):
    """(status, headers, body) of a plain HTTP call."""
    headers = dict(headers or {})
    if key:
        headers["x-goog-api-key"] = key
    request = urllib.request.Request(emu.base_url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def finalize_upload(emu, upload_path: str, path) -> tuple:
    """Send the whole of `path` to a started resumable upload in one step, as the SDK does."""
    return raw(
        emu,
        "POST",
        upload_path,
        body=path.read_bytes(),
        key=None,
        headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"},
    )


def raw_batch(emu, name: str) -> dict:
    status, _, body = raw(emu, "GET", f"/v1beta/{name}")
    assert status == 200, body
    return json.loads(body)


def parts(line: dict) -> list[dict]:
    return line["response"]["candidates"][0]["content"]["parts"]


def answer_text(line: dict) -> str:
    return "".join(p["text"] for p in parts(line) if not p.get("thought"))


def thought_text(line: dict) -> str:
    return "\n".join(p["text"] for p in parts(line) if p.get("thought"))


def outcome(line) -> str:
    if isinstance(line, str):
        return "garbage"
    if "error" in line:
        return f"error {line['error']['code']}"
    candidate = line["response"]["candidates"][0]
    has_thoughts = any(p.get("thought") for p in candidate["content"]["parts"])
    return f"{candidate['finishReason']} thoughts={has_thoughts}"


def gsm8k_rows(n: int):
    table = pq.read_table(DATA / "gsm8k" / "main" / "train.parquet")
    return list(zip(table.column("question").to_pylist()[:n], table.column("answer").to_pylist()[:n]))


@pytest.fixture
def client(emulator):
    return emulator.client(api_key=KEY)


# ---- Files API and batch lifecycle ---------------------------------------------------------


def test_upload_in_several_chunks_round_trips_through_a_batch(emulator, client, tmp_path):
    padding = "x" * 16_000
    requests = {f"row-{i}": generation_request(f"{UNKNOWN_QUESTION} #{i} {padding}") for i in range(1100)}
    path = write_requests(tmp_path / "big.jsonl", requests)
    size = path.stat().st_size
    assert size > 2 * 8 * 1024 * 1024  # three 8 MiB chunks

    file = upload(client, path, "big")
    chunk_posts = re.findall(r'"POST /upload/v1beta/files\?upload_id=', emulator.log_path.read_text())
    assert len(chunk_posts) == 3
    got = client.files.get(name=file.name)
    assert got.size_bytes == size
    assert (
        got.sha256_hash == base64.b64encode(hashlib.sha256(path.read_bytes()).hexdigest().encode()).decode()
    )
    assert got.source == types.FileSource.UPLOADED and got.download_uri is None

    job = client.batches.create(model=MODEL, src=file.name, config={"display_name": "big"})
    assert wait_done(client, job.name).state == types.JobState.JOB_STATE_SUCCEEDED
    out = results(client, client.batches.get(name=job.name))
    assert set(out) == set(requests)
    # every byte arrived: each prompt was counted in full, and its number echoed back
    for key, line in out.items():
        prompt_chars = sum(len(p["text"]) for p in requests[key]["contents"][0]["parts"])
        assert line["response"]["usageMetadata"]["promptTokenCount"] == -(-prompt_chars // 4)


@pytest.mark.parametrize("api_version", ["v1beta", "v1"])
def test_batch_moves_from_pending_through_running_to_succeeded(emulator, tmp_path, api_version):
    client = emulator.client(api_version=api_version, api_key=KEY)
    emulator.set_faults(slow_latency=1.0, slow_count=1)
    requests = {f"q{i}": generation_request(question) for i, (question, _) in enumerate(gsm8k_rows(3))}
    job = submit(client, requests, tmp_path)
    assert job.state == types.JobState.JOB_STATE_PENDING
    assert job.display_name == "job" and job.model == f"models/{MODEL}"

    seen = []
    done = wait_done(client, job.name, seen=seen)
    assert seen == ["JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    assert done.dest.file_name == f"files/batch-{job.name.removeprefix('batches/')}"
    assert done.end_time >= done.create_time
    assert f'"POST /{api_version}/models/{MODEL}:batchGenerateContent"' in emulator.log_path.read_text()

    operation = raw_batch(emulator, job.name)
    assert operation["done"] is True
    assert operation["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    assert operation["metadata"]["batchStats"] == {"requestCount": "3", "successfulRequestCount": "3"}
    assert operation["response"]["responsesFile"] == done.dest.file_name
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", operation["metadata"]["createTime"])

    result_file = client.files.get(name=done.dest.file_name)
    assert result_file.source == types.FileSource.GENERATED
    assert set(results(client, done)) == set(requests)
    # the real downloadUri prefix (/download/...) serves the same bytes
    sdk_bytes = client.files.download(file=result_file)
    status, _, raw_bytes = raw(emulator, "GET", result_file.download_uri.removeprefix(emulator.base_url))
    assert status == 200 and raw_bytes == sdk_bytes
    assert result_file.download_uri.startswith(f"{emulator.base_url}/download/{api_version}/files/")


def test_upload_names_spellings_and_file_listing(emulator, client, tmp_path):
    path = write_requests(tmp_path / "r.jsonl", {"a": generation_request(UNKNOWN_QUESTION)})
    named = client.files.upload(file=str(path), config={"mime_type": "jsonl", "name": "my-input-1"})
    assert named.name == "files/my-input-1" and named.mime_type == "jsonl"
    with pytest.raises(errors.ClientError) as taken:
        client.files.upload(file=str(path), config={"mime_type": "jsonl", "name": "my-input-1"})
    assert taken.value.code == 409

    # camelCase start body, as a hand-written client would send it
    status, headers, _ = raw(
        emulator,
        "POST",
        "/upload/v1/files",
        body=b'{"file": {"displayName": "camel", "mimeType": "application/jsonl"}}',
        headers={"X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start"},
    )
    assert status == 200 and headers["X-Goog-Upload-URL"].startswith(f"{emulator.base_url}/upload/v1/files?")
    upload_path = headers["X-Goog-Upload-URL"].removeprefix(emulator.base_url)
    status, headers, body = finalize_upload(emulator, upload_path, path)
    assert status == 200 and headers["X-Goog-Upload-Status"] == "final"
    camel = client.files.get(name=json.loads(body)["file"]["name"])
    assert (camel.display_name, camel.mime_type, camel.size_bytes) == (
        "camel",
        "application/jsonl",
        path.stat().st_size,
    )

    assert {f.name for f in client.files.list()} == {named.name, camel.name}
    client.files.delete(name=named.name)
    assert [f.name for f in client.files.list()] == [camel.name]
    with pytest.raises(ValueError, match="Only generated files"):
        client.files.download(file=camel)  # the SDK refuses: uploads have no downloadUri
    status, _, _ = raw(emulator, "GET", f"/v1beta/{camel.name}:download?alt=media")
    assert status == 400  # and so does the server


def test_list_pages_newest_first(emulator, client):
    names = []
    for i in range(5):
        job = client.batches.create(
            model=MODEL,
            src=[
                {
                    "contents": [{"role": "user", "parts": [{"text": f"inline {i}"}]}],
                    "metadata": {"key": f"k{i}"},
                }
            ],
            config={"display_name": f"inline-{i}"},
        )
        names.append(job.name)
    pager = client.batches.list(config={"page_size": 2})
    assert len(pager.page) == 2
    assert [job.name for job in pager] == names[::-1]
    status, _, body = raw(emulator, "GET", "/v1beta/batches?pageSize=2")
    first = json.loads(body)
    assert status == 200 and len(first["operations"]) == 2 and first["nextPageToken"]


def test_inlined_requests_get_inlined_responses(client):
    job = client.batches.create(
        model=MODEL,
        src=[
            {
                "contents": [{"role": "user", "parts": [{"text": UNKNOWN_QUESTION}]}],
                "metadata": {"key": "only"},
            }
        ],
        config={"display_name": "inline"},
    )
    done = wait_done(client, job.name)
    (answer,) = done.dest.inlined_responses
    assert answer.metadata == {"key": "only"}
    assert "\\boxed{42}" in answer.response.text


def test_cancel_then_delete(emulator, client, tmp_path):
    emulator.set_faults(slow_latency=60.0, slow_count=1)
    job = submit(client, {"a": generation_request(UNKNOWN_QUESTION)}, tmp_path)
    assert not client.batches.get(name=job.name).done
    client.batches.cancel(name=job.name)
    cancelled = client.batches.get(name=job.name)
    assert cancelled.state == types.JobState.JOB_STATE_CANCELLED and cancelled.dest is None
    assert raw_batch(emulator, job.name)["error"]["code"] == 1

    finished = submit(client, {"b": generation_request(UNKNOWN_QUESTION)}, tmp_path, "finished")
    wait_done(client, finished.name)
    with pytest.raises(errors.ClientError) as refused:
        client.batches.cancel(name=finished.name)
    assert refused.value.code == 400

    client.batches.delete(name=job.name)
    with pytest.raises(errors.ClientError) as missing:
        client.batches.get(name=job.name)
    assert missing.value.code == 404
    assert [b.name for b in client.batches.list()] == [finished.name]


def test_errors_missing_things_and_the_api_key(emulator, client):
    with pytest.raises(errors.ClientError) as missing:
        client.files.get(name="files/nosuchfile")
    assert missing.value.code == 404 and missing.value.status == "NOT_FOUND"
    with pytest.raises(errors.ClientError) as no_input:
        client.batches.create(model=MODEL, src="files/nosuchfile")
    assert no_input.value.code == 404
    status, _, body = raw(emulator, "GET", "/v1beta/batches", key=None)
    assert status == 403 and json.loads(body)["error"]["status"] == "PERMISSION_DENIED"
    raw(emulator, "GET", f"/v1beta/batches?key={KEY}", key=None)
    assert KEY not in emulator.log_path.read_text()


# ---- what the model answers ----------------------------------------------------------------


def test_answers_known_problems_with_their_reference_and_others_synthetically(client, tmp_path):
    ((gsm_question, gsm_solution),) = gsm8k_rows(1)
    math_table = pq.read_table(DATA / "competition_math" / "train.parquet")
    math_question, math_solution = (
        math_table.column("problem")[5].as_py(),
        math_table.column("solution")[5].as_py(),
    )
    no_thoughts = generation_request(gsm_question)
    no_thoughts["generationConfig"]["thinkingConfig"]["includeThoughts"] = False
    requests = {
        "gsm": generation_request(gsm_question),
        "math": generation_request(math_question),
        "unknown": generation_request(UNKNOWN_QUESTION),
        "quiet": no_thoughts,
    }
    out = results(client, wait_done(client, submit(client, requests, tmp_path).name))

    gsm = out["gsm"]
    response = types.GenerateContentResponse.model_validate(gsm["response"])
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert [bool(p.thought) for p in response.candidates[0].content.parts] == [True, False]
    assert response.candidates[0].content.parts[-1].thought_signature
    assert extract_boxed_answer(response.text) == extract_gsm8k_answer(gsm_solution) == "72"
    assert (
        "48/2 = 24" in thought_text(gsm) and "<<" not in thought_text(gsm) and "####" not in thought_text(gsm)
    )
    usage = gsm["response"]["usageMetadata"]
    assert usage["candidatesTokenCount"] == -(-len(answer_text(gsm)) // 4)
    thought_chars = sum(len(p["text"]) for p in parts(gsm) if p.get("thought"))
    assert usage["thoughtsTokenCount"] == -(-thought_chars // 4)
    assert (
        usage["totalTokenCount"]
        == usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]
    )
    assert gsm["response"]["modelVersion"] == MODEL and gsm["response"]["responseId"]

    assert extract_boxed_answer(answer_text(out["math"])) == extract_boxed_answer(math_solution)
    assert "[cotgen emulator]" in thought_text(out["unknown"]) and "[cotgen emulator]" in answer_text(
        out["unknown"]
    )
    assert extract_boxed_answer(answer_text(out["unknown"])) == "42"
    assert not any(p.get("thought") for p in parts(out["quiet"]))
    assert out["quiet"]["response"]["usageMetadata"]["thoughtsTokenCount"] > 0  # thought, but not shown

    # the CoT just made, summarized into a Chain of Draft
    summary = summarization_request(gsm_question, thought_text(gsm), answer_text(gsm))
    drafted = results(client, wait_done(client, submit(client, {"gsm": summary}, tmp_path, "cod").name))[
        "gsm"
    ]
    draft = json.loads(answer_text(drafted))
    assert set(draft) == {"draft_steps", "final_answer"}
    assert draft["final_answer"] == "72"
    assert draft["draft_steps"] and all(1 <= len(step.split()) <= 5 for step in draft["draft_steps"])
    assert "48/2 = 24" in draft["draft_steps"][0]


# ---- faults ------------------------------------------------------------------------------------

LINE_FAULTS = {
    "line_error_rate": 0.2,
    "truncate_rate": 0.2,
    "no_thoughts_rate": 0.2,
    "garbage_line_rate": 0.1,
}


def test_per_line_faults(emulator, client, tmp_path):
    emulator.set_faults(**LINE_FAULTS)
    rows = gsm8k_rows(200)
    requests = {f"q{i}": generation_request(question) for i, (question, _) in enumerate(rows)}
    job = wait_done(client, submit(client, requests, tmp_path).name)
    out = results(client, job)
    assert set(out) == set(requests)
    kinds = {key: outcome(line) for key, line in out.items()}
    counts = {
        kind: sum(1 for k in kinds.values() if k.startswith(kind))
        for kind in ("garbage", "error", "MAX_TOKENS", "STOP thoughts=False", "STOP thoughts=True")
    }
    assert all(10 <= n <= 120 for n in counts.values()), counts

    for key, line in out.items():
        if kinds[key] == "garbage":
            assert line.startswith("{")  # a line cut short
        elif kinds[key].startswith("error"):
            assert set(line["error"]) == {"code", "message", "status"}
            assert line["error"]["code"] in (429, 500, 503)
        elif kinds[key].startswith("MAX_TOKENS"):
            assert extract_boxed_answer(answer_text(line)) is None
        else:
            assert extract_boxed_answer(answer_text(line)) == extract_gsm8k_answer(rows[int(key[1:])][1])
    stats = raw_batch(emulator, job.name)["metadata"]["batchStats"]
    assert stats["failedRequestCount"] == str(counts["error"])
    assert stats["successfulRequestCount"] == str(len(requests) - counts["error"])

    # a retry of the same keys in a new batch gets fresh draws: most failed keys now succeed
    failed = [key for key, kind in kinds.items() if kind == "garbage" or kind.startswith("error")]
    retry = wait_done(client, submit(client, {k: requests[k] for k in failed}, tmp_path, "retry").name)
    again = {key: outcome(line) for key, line in results(client, retry).items()}
    assert sum(1 for kind in again.values() if kind.startswith(("STOP", "MAX"))) > len(failed) / 2


def test_same_seed_same_outcomes_and_fault_flags(emulator, client, tmp_path):
    emulator.set_faults(**LINE_FAULTS)
    requests = {f"q{i}": generation_request(question) for i, (question, _) in enumerate(gsm8k_rows(60))}
    first = {
        k: outcome(v)
        for k, v in results(client, wait_done(client, submit(client, requests, tmp_path).name)).items()
    }

    flags = [
        "--fault-line-error-rate",
        "0.2",
        "--fault-truncate-rate",
        "0.2",
        "--fault-no-thoughts-rate",
        "0.2",
        "--fault-garbage-line-rate",
        "0.1",
    ]
    for seed, same in ((0, True), (1, False)):
        with start_emulator(tmp_path / f"seed{seed}", extra_args=[*flags, "--seed", str(seed)]) as other:
            assert {k: other.get_faults()[k] for k in LINE_FAULTS} == LINE_FAULTS
            other_client = other.client(api_key=KEY)
            job = wait_done(other_client, submit(other_client, requests, tmp_path, f"seed{seed}").name)
            outcomes = {k: outcome(v) for k, v in results(other_client, job).items()}
            assert (outcomes == first) is same


def test_job_state_and_slow_faults_from_flags(tmp_path):
    args = [
        "--fault-job-state",
        "expired",
        "--fault-job-count",
        "1",
        "--fault-slow-latency",
        "1.0",
        "--fault-slow-count",
        "1",
    ]
    with start_emulator(tmp_path / "emu", extra_args=args) as emu:
        client = emu.client(api_key=KEY)
        job = submit(client, {"a": generation_request(UNKNOWN_QUESTION)}, tmp_path)
        assert not client.batches.get(name=job.name).done  # slow: 1 s instead of 0
        assert emu.get_faults()["job_count"] == 0 and emu.get_faults()["slow_count"] == 0
        expired = wait_done(client, job.name)
        assert expired.state == types.JobState.JOB_STATE_EXPIRED and expired.dest is None
        assert raw_batch(emu, job.name)["error"]["code"] == 4
        nxt = submit(client, {"a": generation_request(UNKNOWN_QUESTION)}, tmp_path, "next")
        assert client.batches.get(name=nxt.name).state == types.JobState.JOB_STATE_SUCCEEDED


@pytest.mark.parametrize("state", ["failed", "cancelled"])
def test_job_state_faults(emulator, client, tmp_path, state):
    emulator.set_faults(job_state=state, job_count=1)
    requests = {f"k{i}": generation_request(f"{UNKNOWN_QUESTION} {i}") for i in range(10)}
    job = wait_done(client, submit(client, requests, tmp_path).name)
    assert job.state.value == f"JOB_STATE_{state.upper()}"
    if state == "failed":
        assert job.dest is None
    else:  # a cancelled job keeps what it finished before the cancel: half here
        assert len(results(client, job)) == 5
    nxt = wait_done(client, submit(client, requests, tmp_path, "next").name)
    assert nxt.state == types.JobState.JOB_STATE_SUCCEEDED


def test_lost_create_response(emulator, client, tmp_path):
    emulator.set_faults(lose_create_count=1)
    with pytest.raises(errors.ServerError) as lost:
        submit(client, {"a": generation_request(UNKNOWN_QUESTION)}, tmp_path, "lost")
    assert lost.value.code == 500
    (job,) = list(client.batches.list())  # the job was made anyway
    assert job.display_name == "lost"
    assert wait_done(client, job.name).state == types.JobState.JOB_STATE_SUCCEEDED
    assert emulator.get_faults()["lose_create_count"] == 0


def test_transient_http_errors(emulator, client, tmp_path):
    path = write_requests(tmp_path / "r.jsonl", {"a": generation_request(UNKNOWN_QUESTION)})
    status, headers, _ = raw(
        emulator,
        "POST",
        "/upload/v1beta/files",
        body=b'{"file": {"display_name": "r"}}',
        headers={
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": str(path.stat().st_size),
        },
    )
    assert status == 200
    upload_path = headers["X-Goog-Upload-URL"].removeprefix(emulator.base_url)

    emulator.set_faults(http_error_rate=1.0)
    assert emulator.admin("GET", "health")["ok"]  # admin endpoints are exempt
    status, headers, body = finalize_upload(emulator, upload_path, path)
    assert status in (429, 500) and headers["X-Goog-Upload-Status"]
    assert json.loads(body)["error"]["code"] == status
    codes = set()
    for _ in range(12):
        with pytest.raises(errors.APIError) as failed:
            client.batches.list(config={"page_size": 1})
        codes.add(failed.value.code)
    assert codes == {429, 500}
    started = time.monotonic()
    with pytest.raises(errors.APIError):
        upload(client, path)
    assert time.monotonic() - started < 2  # no SDK back-off sleeps: the status header is set

    emulator.set_faults(http_error_rate=0.0)  # the upload interrupted above resumes where it was
    status, headers, body = finalize_upload(emulator, upload_path, path)
    assert status == 200 and headers["X-Goog-Upload-Status"] == "final"
    assert client.files.get(name=json.loads(body)["file"]["name"]).size_bytes == path.stat().st_size


def test_admin_faults_api(emulator):
    defaults = emulator.get_faults()
    assert defaults["line_error_rate"] == 0 and defaults["job_state"] is None and defaults["seed"] == 0
    updated = emulator.set_faults(truncate_rate=0.5, job_state="failed", job_count=2)
    assert updated == {**defaults, "truncate_rate": 0.5, "job_state": "failed", "job_count": 2}
    for bad in ({"truncate_rate": 2}, {"no_such_fault": 1}, {"job_state": "exploded"}, {"job_count": -1}):
        status, _, body = raw(emulator, "POST", "/_emulator/faults", body=json.dumps(bad).encode(), key=None)
        assert status == 400, bad
        assert json.loads(body)["error"]["message"]
    assert emulator.get_faults() == updated
    assert emulator.set_faults(reset=True) == defaults


def test_restart_in_the_middle_of_a_job_loses_nothing(emulator, client, tmp_path):
    emulator.set_faults(hold_count=1)  # in flight until released, however long the restart takes
    requests = {f"q{i}": generation_request(question) for i, (question, _) in enumerate(gsm8k_rows(300))}
    job = submit(client, requests, tmp_path)
    assert not client.batches.get(name=job.name).done
    pid = emulator.proc.pid
    emulator.restart()
    assert emulator.proc.pid != pid  # the same client goes on working
    assert not client.batches.get(name=job.name).done
    emulator.release()
    done = wait_done(client, job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED
    assert set(results(client, done)) == set(requests)
    assert (
        client.files.get(name=raw_batch(emulator, job.name)["metadata"]["inputConfig"]["fileName"]).size_bytes
        > 0
    )


def test_wrong_rate_makes_that_share_of_answers_wrong_anew_in_each_batch(emulator, client, tmp_path):
    """`wrong_rate` runs a scenario at a known accuracy; a retry (a later batch) draws again."""
    rows = gsm8k_rows(200)
    requests = {f"q{i}": generation_request(question) for i, (question, _) in enumerate(rows)}
    reference = {f"q{i}": extract_gsm8k_answer(solution) for i, (_, solution) in enumerate(rows)}
    emulator.set_faults(wrong_rate=0.3)

    def wrong_keys(name: str) -> set[str]:
        lines = results(client, wait_done(client, submit(client, requests, tmp_path, name).name))
        return {k for k, line in lines.items() if extract_boxed_answer(answer_text(line)) != reference[k]}

    first, second = wrong_keys("first"), wrong_keys("second")
    assert 0.2 < len(first) / len(rows) < 0.4 and 0.2 < len(second) / len(rows) < 0.4
    assert first != second  # a problem answered wrongly once can be answered right on its next try
    emulator.set_faults(wrong_rate=0.0)
    assert wrong_keys("none") == set()


def test_a_running_job_reports_its_answered_requests_growing_to_the_total(emulator, client, tmp_path):
    """batchStats while running: what a progress display reads (requests done / total)."""
    emulator.set_faults(slow_latency=6.0, slow_count=1)
    requests = {f"q{i}": generation_request(question) for i, (question, _) in enumerate(gsm8k_rows(40))}
    job = submit(client, requests, tmp_path)
    seen = []
    while not seen or seen[-1][0] != "BATCH_STATE_SUCCEEDED":
        metadata = raw_batch(emulator, job.name)["metadata"]
        stats = metadata["batchStats"]
        seen.append(
            (metadata["state"], int(stats.get("successfulRequestCount", 0)), int(stats["requestCount"]))
        )
    done = [count for _, count, _ in seen]
    assert done == sorted(done) and done[0] == 0 and done[-1] == 40
    assert all(total == 40 for _, _, total in seen)
    assert any(state == "BATCH_STATE_RUNNING" and 0 < count < 40 for state, count, _ in seen)
