"""The emulator's Vertex AI batch prediction endpoints, driven by the real google-genai client in
Vertex mode, with the JSONL in and out of the local GCS stand-in (no mocks)."""

import collections
import datetime as dt
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.genai import errors, types

from cotgen_assets.core.answers import extract_boxed_answer, extract_gsm8k_answer
from cotgen_assets_tests.harness.dagster import wait_for
from cotgen_assets_tests.harness.emulator import generation_request, request_line, start_emulator
from cotgen_assets_tests.harness.gcs import BUCKET

PROJECT, LOCATION = "test-proj", "us-central1"
MODEL = "gemini-3.1-pro-preview"
TOKEN = "vertex-token-5c1e77"  # must never show up in the emulator's log
UNKNOWN_QUESTION = "How many emulators does it take to change a light bulb, in base 7?"
S = types.JobState
TERMINAL = {
    S.JOB_STATE_SUCCEEDED,
    S.JOB_STATE_PARTIALLY_SUCCEEDED,
    S.JOB_STATE_FAILED,
    S.JOB_STATE_CANCELLED,
    S.JOB_STATE_EXPIRED,
}


@pytest.fixture
def client(emu):
    return emu.vertex_client(PROJECT, LOCATION, token=TOKEN)


@pytest.fixture
def bucket(gcs):
    """The stand-in's bucket through google-cloud-storage: another client than the emulator's."""
    gcs_client = storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=gcs.url)
    )
    return gcs_client.bucket(BUCKET)


# ---- helpers ------------------------------------------------------------------------------


def put_input(bucket, path: str, requests: dict[str, dict]) -> str:
    bucket.blob(path).upload_from_string(b"".join(request_line(k, r) for k, r in requests.items()))
    return f"gs://{BUCKET}/{path}"


def submit(client, bucket, name: str, requests: dict[str, dict]):
    src = put_input(bucket, f"{name}/in.jsonl", requests)
    config = types.CreateBatchJobConfig(dest=f"gs://{BUCKET}/{name}/out", display_name=name)
    return client.batches.create(model=MODEL, src=src, config=config)


def wait_terminal(client, name: str, seen: list | None = None):
    def ended():
        job = client.batches.get(name=name)
        if seen is not None and (not seen or seen[-1] != job.state):
            seen.append(job.state)
        return job if job.state in TERMINAL else None

    return wait_for(ended, timeout=60, interval=0.05, message=f"{name} to end")


def raw_lines(bucket, directory: str) -> list[bytes]:
    """Every line of every JSONL file under the job's output directory, in file order."""
    bucket_name, _, prefix = directory.removeprefix("gs://").partition("/")
    lines = []
    for blob in bucket.client.list_blobs(bucket_name, prefix=prefix.rstrip("/") + "/"):
        if blob.name.endswith(".jsonl"):
            lines.extend(raw for raw in blob.download_as_bytes().splitlines() if raw.strip())
    return lines


def output_lines(bucket, directory: str) -> list[dict]:
    return [json.loads(raw) for raw in raw_lines(bucket, directory)]


def answer_text(line: dict) -> str:
    parts = line["response"]["candidates"][0]["content"]["parts"]
    return "".join(p["text"] for p in parts if not p.get("thought"))


def gsm8k_rows(n: int) -> list[tuple[str, str]]:
    table = pq.read_table(Path(os.environ["COTGEN_DATASETS_DIR"]) / "gsm8k/main/train.parquet")
    return list(zip(table.column("question").to_pylist()[:n], table.column("answer").to_pylist()[:n]))


def synthetic(n: int, tag: str) -> dict[str, dict]:
    return {f"{tag}-{i}": generation_request(f"{UNKNOWN_QUESTION} #{i}") for i in range(n)}


def raw(emu, method: str, path: str, body: dict | None = None, token: str | None = TOKEN):
    """(status, parsed body) of a plain HTTP call."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(emu.base_url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def names_listed(client) -> list[str]:
    return [job.name for job in client.batches.list(config={"page_size": 2})]


# ---- the round trip -------------------------------------------------------------------------


def test_every_request_is_answered_once_by_key_in_another_order(emu, client, bucket):
    rows = gsm8k_rows(12)
    requests = {f"q{i}": generation_request(question) for i, (question, _) in enumerate(rows)}
    job = submit(client, bucket, "roundtrip", requests)
    assert re.fullmatch(rf"projects/{PROJECT}/locations/{LOCATION}/batchPredictionJobs/\d+", job.name)
    assert job.state == S.JOB_STATE_PENDING and job.display_name == "roundtrip"
    assert job.model == f"publishers/google/models/{MODEL}"
    assert job.src.gcs_uri == [f"gs://{BUCKET}/roundtrip/in.jsonl"]
    assert job.dest.gcs_uri == f"gs://{BUCKET}/roundtrip/out"

    done = wait_terminal(client, job.name)
    assert done.state == S.JOB_STATE_SUCCEEDED and done.done
    assert done.completion_stats.successful_count == 12 and not done.completion_stats.failed_count
    assert done.end_time >= done.create_time
    directory = done.output_info.gcs_output_directory
    assert re.fullmatch(rf"gs://{BUCKET}/roundtrip/out/prediction-model-[0-9TZ:.-]+", directory)

    lines = output_lines(bucket, directory)
    keys = [line["key"] for line in lines]
    assert sorted(keys) == sorted(requests), "each request answered exactly once"
    assert keys != list(requests), "in another order than the input"
    references = {f"q{i}": extract_gsm8k_answer(answer) for i, (_, answer) in enumerate(rows)}
    for line in lines:
        assert line["status"] == ""
        assert extract_boxed_answer(answer_text(line)) == references[line["key"]]
        usage = line["response"]["usageMetadata"]
        assert usage["totalTokenCount"] == (
            usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]
        )
        echoed, sent = line["request"], requests[line["key"]]
        assert echoed != sent, "the request comes back re-serialized, not copied"
        assert echoed["contents"] == sent["contents"]
        assert echoed["generation_config"]["thinking_config"]["include_thoughts"] is True
        assert dt.datetime.fromisoformat(line["processed_time"]) >= done.create_time

    log = emu.log_path.read_text()
    assert f'"POST /v1beta1/projects/{PROJECT}/locations/{LOCATION}/batchPredictionJobs"' in log
    assert TOKEN not in log


@pytest.mark.parametrize("api_version, location", [("v1", "global"), ("v1beta1", "europe-west4")])
def test_any_api_version_and_location_and_a_job_belongs_to_its_project(emu, bucket, api_version, location):
    client = emu.vertex_client(PROJECT, location, api_version=api_version, token=TOKEN)
    job = submit(client, bucket, f"where-{location}", synthetic(2, "w"))
    assert job.name.startswith(f"projects/{PROJECT}/locations/{location}/batchPredictionJobs/")
    assert wait_terminal(client, job.name).state == S.JOB_STATE_SUCCEEDED
    assert f'"GET /{api_version}/projects/{PROJECT}/locations/{location}/batchPredictionJobs/' in (
        emu.log_path.read_text()
    )

    # the SDK re-prefixes a name with the client's project: another project does not see the job
    other = emu.vertex_client("other-proj", location, api_version=api_version, token=TOKEN)
    with pytest.raises(errors.ClientError) as missing:
        other.batches.get(name=job.name)
    assert missing.value.code == 404 and job.name.rsplit("/", 1)[1] in missing.value.message
    assert job.name.rsplit("/", 1)[1] not in " ".join(names_listed(other))


# ---- states, list, cancel, delete -----------------------------------------------------------


def test_a_job_is_queued_while_held_then_pending_running_and_cancelling_until_cancelled(emu, client, bucket):
    emu.set_faults(hold_count=1, slow_latency=20.0, slow_count=1)
    job = submit(client, bucket, "states", synthetic(4, "s"))
    assert client.batches.get(name=job.name).state == S.JOB_STATE_QUEUED
    assert emu.admin("GET", "hold")["held"] == [job.name]

    emu.release(job.name)
    assert client.batches.get(name=job.name).state == S.JOB_STATE_PENDING
    wait_for(
        lambda: client.batches.get(name=job.name).state == S.JOB_STATE_RUNNING,
        timeout=60,
        interval=0.1,
        message="the job running",
    )
    emu.hold(job.name)
    assert client.batches.cancel(name=job.name) is None
    cancelling = client.batches.get(name=job.name)
    assert cancelling.state == S.JOB_STATE_CANCELLING and not cancelling.done

    emu.release(job.name)
    done = wait_terminal(client, job.name)
    assert done.state == S.JOB_STATE_CANCELLED and done.done
    assert done.error.message


def test_list_pages_newest_first_and_only_a_finished_job_is_deleted(emu, client, bucket):
    emu.set_faults(hold_count=1)
    held = submit(client, bucket, "list-held", synthetic(1, "h"))
    finished = submit(client, bucket, "list-done", synthetic(3, "d"))
    names = names_listed(client)
    assert len(names) >= 2 and len(set(names)) == len(names)
    assert names.index(finished.name) < names.index(held.name)
    assert re.search(r"batchPredictionJobs\?pageSize=2&pageToken=\d+", emu.log_path.read_text())
    states = {job.name: job.state for job in client.batches.list(config={"page_size": 50})}
    assert states[held.name] == S.JOB_STATE_QUEUED

    with pytest.raises(errors.ClientError) as busy:
        client.batches.delete(name=held.name)
    assert busy.value.code == 400 and "not finished" in busy.value.message

    done = wait_terminal(client, finished.name)
    deleted = client.batches.delete(name=finished.name)
    assert deleted.done and deleted.name.startswith(f"projects/{PROJECT}/locations/{LOCATION}/operations/")
    with pytest.raises(errors.ClientError) as gone:
        client.batches.get(name=finished.name)
    assert gone.value.code == 404
    assert finished.name not in names_listed(client)
    assert len(output_lines(bucket, done.output_info.gcs_output_directory)) == 3, "outputs are kept"


def test_cancelling_a_finished_job_is_refused_and_a_second_cancel_is_harmless(emu, client, bucket):
    emu.set_faults(hold_count=1)
    job = submit(client, bucket, "cancel-twice", synthetic(2, "c"))
    client.batches.cancel(name=job.name)
    client.batches.cancel(name=job.name)
    emu.release(job.name)
    assert wait_terminal(client, job.name).state == S.JOB_STATE_CANCELLED

    finished = submit(client, bucket, "cancel-late", synthetic(2, "l"))
    wait_terminal(client, finished.name)
    with pytest.raises(errors.ClientError) as late:
        client.batches.cancel(name=finished.name)
    assert late.value.code == 400 and "JOB_STATE_SUCCEEDED" in late.value.message


def test_jobs_and_their_holds_survive_a_restart(emu, client, bucket):
    emu.set_faults(hold_count=1)
    job = submit(client, bucket, "restart", synthetic(3, "r"))
    emu.restart()
    assert client.batches.get(name=job.name).state == S.JOB_STATE_QUEUED
    emu.release()
    done = wait_terminal(client, job.name)
    assert done.state == S.JOB_STATE_SUCCEEDED
    assert sorted(line["key"] for line in output_lines(bucket, done.output_info.gcs_output_directory)) == [
        "r-0",
        "r-1",
        "r-2",
    ]


# ---- faults ---------------------------------------------------------------------------------


def test_failed_lines_say_why_in_status_and_every_other_request_is_answered(emu, client, bucket):
    emu.set_faults(line_error_rate=0.5)
    requests = synthetic(20, "f")
    done = wait_terminal(client, submit(client, bucket, "line-errors", requests).name)
    assert done.state == S.JOB_STATE_SUCCEEDED
    lines = output_lines(bucket, done.output_info.gcs_output_directory)
    assert sorted(line["key"] for line in lines) == sorted(requests)
    failed = [line for line in lines if line["status"]]
    assert 0 < len(failed) < 20
    assert all("response" not in line for line in failed)
    assert all(line["response"]["candidates"] for line in lines if not line["status"])
    stats = done.completion_stats
    assert (stats.successful_count, stats.failed_count) == (20 - len(failed), len(failed))


def test_bad_input_lines_fail_alone_naming_the_problem(emu, client, bucket):
    good = synthetic(2, "ok")
    bad_level = generation_request(UNKNOWN_QUESTION, thinking_level="loud")
    lines = [request_line(k, r) for k, r in good.items()]
    lines += [b"not json\n", request_line("no-contents", {"contents": []}), request_line("bad", bad_level)]
    bucket.blob("bad-lines/in.jsonl").upload_from_string(b"".join(lines))
    job = client.batches.create(
        model=MODEL,
        src=f"gs://{BUCKET}/bad-lines/in.jsonl",
        config=types.CreateBatchJobConfig(dest=f"gs://{BUCKET}/bad-lines/out"),
    )
    done = wait_terminal(client, job.name)
    assert done.state == S.JOB_STATE_SUCCEEDED
    out = output_lines(bucket, done.output_info.gcs_output_directory)
    by_key = {line.get("key"): line for line in out}
    assert len(out) == 5
    assert by_key["ok-0"]["status"] == "" and by_key["ok-1"]["status"] == ""
    assert "no contents" in by_key["no-contents"]["status"]
    assert "thinking_level" in by_key["bad"]["status"] and "loud" in by_key["bad"]["status"]
    assert "Line 3" in by_key[None]["status"] and "not a JSON object" in by_key[None]["status"]
    assert (done.completion_stats.successful_count, done.completion_stats.failed_count) == (2, 3)


@pytest.mark.parametrize("fault", ["failed", "expired"])
def test_a_failed_or_expired_job_says_so_and_writes_nothing(emu, client, bucket, fault):
    emu.set_faults(job_state=fault, job_count=1)
    done = wait_terminal(client, submit(client, bucket, f"job-{fault}", synthetic(4, fault)).name)
    assert done.state == {"failed": S.JOB_STATE_FAILED, "expired": S.JOB_STATE_EXPIRED}[fault]
    assert done.done and done.error.message and done.error.code
    assert done.output_info is None and done.completion_stats.failed_count == 4
    assert list(bucket.client.list_blobs(BUCKET, prefix=f"job-{fault}/out")) == []
    nxt = wait_terminal(client, submit(client, bucket, f"after-{fault}", synthetic(1, "n")).name)
    assert nxt.state == S.JOB_STATE_SUCCEEDED, "the fault was for one job"


def test_a_partially_succeeded_job_is_terminal_though_not_done_and_lacks_some_answers(emu, client, bucket):
    emu.set_faults(job_state="partially_succeeded", job_count=1)
    requests = synthetic(10, "p")
    done = wait_terminal(client, submit(client, bucket, "partial", requests).name)
    assert done.state == S.JOB_STATE_PARTIALLY_SUCCEEDED
    assert not done.done, "the SDK's done is false for this terminal state"
    lines = output_lines(bucket, done.output_info.gcs_output_directory)
    keys = collections.Counter(line["key"] for line in lines)
    assert len(keys) == 5 and set(keys.values()) == {1} and set(keys) < set(requests)
    assert all(line["status"] == "" for line in lines)
    stats = done.completion_stats
    assert (stats.successful_count, stats.incomplete_count) == (5, 5)


def test_a_cancelled_fault_keeps_the_answers_finished_before_it(emu, client, bucket):
    emu.set_faults(job_state="cancelled", job_count=1)
    requests = synthetic(6, "k")
    done = wait_terminal(client, submit(client, bucket, "cancelled-fault", requests).name)
    assert done.state == S.JOB_STATE_CANCELLED
    lines = output_lines(bucket, done.output_info.gcs_output_directory)
    assert len(lines) == 3 and {line["key"] for line in lines} < set(requests)


def test_partially_succeeded_waits_for_a_vertex_job_and_leaves_developer_jobs_alone(
    emu, client, bucket, tmp_path
):
    emu.set_faults(job_state="partially_succeeded", job_count=1)
    developer = emu.client(api_key="dev-key")
    path = tmp_path / "dev.jsonl"
    path.write_bytes(request_line("dev-0", generation_request(UNKNOWN_QUESTION)))
    file = developer.files.upload(file=str(path), config={"mime_type": "jsonl"})
    dev_job = developer.batches.create(model=MODEL, src=file.name)
    dev_done = wait_for(lambda: (j := developer.batches.get(name=dev_job.name)).done and j, timeout=60)
    assert dev_done.state == S.JOB_STATE_SUCCEEDED
    assert emu.get_faults()["job_count"] == 1

    done = wait_terminal(client, submit(client, bucket, "partial-after-dev", synthetic(2, "v")).name)
    assert done.state == S.JOB_STATE_PARTIALLY_SUCCEEDED


@pytest.mark.parametrize("fault", ["truncate_rate", "no_thoughts_rate", "garbage_line_rate"])
def test_response_faults_reach_vertex_lines_too(emu, client, bucket, fault):
    emu.set_faults(**{fault: 1.0})
    done = wait_terminal(client, submit(client, bucket, f"response-{fault}", synthetic(3, "t")).name)
    lines = raw_lines(bucket, done.output_info.gcs_output_directory)
    assert len(lines) == 3
    if fault == "garbage_line_rate":
        for raw in lines:
            with pytest.raises(json.JSONDecodeError):
                json.loads(raw)
        return
    for line in map(json.loads, lines):
        candidate = line["response"]["candidates"][0]
        if fault == "truncate_rate":
            assert candidate["finishReason"] == "MAX_TOKENS" and "boxed" not in answer_text(line)
        else:
            assert not any(part.get("thought") for part in candidate["content"]["parts"])


def test_a_lost_create_still_makes_exactly_one_job(emu, client, bucket):
    emu.set_faults(lose_create_count=1)
    with pytest.raises(errors.ServerError) as lost:
        submit(client, bucket, "lost-create", synthetic(2, "x"))
    assert lost.value.code == 500
    made = [job for job in client.batches.list(config={"page_size": 50}) if job.display_name == "lost-create"]
    assert len(made) == 1
    assert wait_terminal(client, made[0].name).state == S.JOB_STATE_SUCCEEDED


def test_http_errors_are_injected_on_vertex_calls_too(emu, client, bucket):
    job = submit(client, bucket, "http-errors", synthetic(1, "e"))
    emu.set_faults(http_error_rate=1.0)
    with pytest.raises(errors.APIError) as failed:
        client.batches.get(name=job.name)
    assert failed.value.code in (429, 500)


def test_an_output_write_that_fails_is_retried_to_the_same_place_once_storage_is_back(emu, client, bucket):
    out = bucket.client.create_bucket("vertex-out")
    emu.set_faults(hold_count=1)
    src = put_input(bucket, "outage/in.jsonl", synthetic(3, "o"))
    config = types.CreateBatchJobConfig(dest="gs://vertex-out/outage", display_name="outage")
    job = client.batches.create(model=MODEL, src=src, config=config)
    out.delete(force=True)
    emu.release(job.name)
    with pytest.raises(errors.ServerError) as down:
        client.batches.get(name=job.name)
    assert down.value.code == 503 and "gs://vertex-out/outage/" in down.value.message

    bucket.client.create_bucket("vertex-out")
    done = wait_terminal(client, job.name)
    assert done.state == S.JOB_STATE_SUCCEEDED
    written = [blob.name for blob in bucket.client.list_blobs("vertex-out")]
    assert written == [
        done.output_info.gcs_output_directory.removeprefix("gs://vertex-out/") + "/predictions.jsonl"
    ]
    assert sorted(line["key"] for line in output_lines(bucket, done.output_info.gcs_output_directory)) == [
        "o-0",
        "o-1",
        "o-2",
    ]


# ---- refusals -------------------------------------------------------------------------------


def refused(
    client, src, model: str = MODEL, dest: str | dict | None = f"gs://{BUCKET}/o"
) -> errors.ClientError:
    """The error creating a job of `model` from `src` into `dest` (None: no output config) raises;
    no job was made by it."""
    before = len(names_listed(client))
    with pytest.raises(errors.ClientError) as error:
        client.batches.create(model=model, src=src, config=None if dest is None else {"dest": dest})
    assert len(names_listed(client)) == before
    return error.value


def test_a_developer_api_model_name_is_refused(emu, client, bucket):
    src = put_input(bucket, "refuse-model/in.jsonl", synthetic(1, "m"))
    error = refused(client, src, model=f"models/{MODEL}")
    assert error.code == 400 and f"models/{MODEL}" in error.message
    assert "publishers/google/models/" in error.message


def test_an_unknown_model_is_not_found(emu, client, bucket):
    src = put_input(bucket, "refuse-unknown/in.jsonl", synthetic(1, "u"))
    error = refused(client, src, model="gemini-0-nonesuch")
    assert error.code == 404 and "gemini-0-nonesuch" in error.message


def test_a_missing_output_config_is_refused(emu, client, bucket):
    # the SDK fills dest in only for a source ending in .jsonl: this one reaches the API without
    src = put_input(bucket, "refuse-dest/requests", synthetic(1, "o"))
    error = refused(client, src, dest=None)
    assert error.code == 400 and "outputConfig" in error.message


@pytest.mark.parametrize(
    "src, said",
    [
        ({"format": "jsonl", "gcs_uri": ["s3://elsewhere/in.jsonl"]}, "s3://elsewhere/in.jsonl"),
        ("bq://proj.dataset.table", "bigquery"),
        (f"gs://{BUCKET}/refuse-source/none.jsonl", f"gs://{BUCKET}/refuse-source/none.jsonl"),
    ],
)
def test_a_source_outside_gs_or_missing_is_refused_naming_it(emu, client, src, said):
    error = refused(client, src)
    assert error.code == 400 and said in error.message


def test_a_destination_outside_gs_is_refused(emu, client, bucket):
    src = put_input(bucket, "refuse-out/in.jsonl", synthetic(1, "d"))
    error = refused(client, src, dest={"format": "jsonl", "gcs_uri": "/tmp/out"})
    assert error.code == 400 and "/tmp/out" in error.message


def test_an_output_bucket_that_does_not_exist_is_refused_naming_it(emu, client, bucket):
    src = put_input(bucket, "refuse-bucket/in.jsonl", synthetic(1, "b"))
    error = refused(client, src, dest="gs://no-such-bucket/out")
    assert error.code == 400 and "no-such-bucket" in error.message


def test_a_call_without_a_bearer_token_is_unauthenticated(emu):
    status, body = raw(
        emu, "GET", f"/v1beta1/projects/{PROJECT}/locations/{LOCATION}/batchPredictionJobs", token=None
    )
    assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED"


def test_without_a_gcs_stand_in_a_create_says_what_is_missing(bucket, tmp_path):
    """An emulator started without STORAGE_EMULATOR_HOST never reaches for the real GCS."""
    with start_emulator(tmp_path / "bare", env={"STORAGE_EMULATOR_HOST": ""}) as bare:
        client = bare.vertex_client(PROJECT, LOCATION, token=TOKEN)
        src = put_input(bucket, "no-stand-in/in.jsonl", synthetic(1, "g"))
        with pytest.raises(errors.ClientError) as error:
            client.batches.create(model=MODEL, src=src, config={"dest": f"gs://{BUCKET}/o"})
    assert error.value.code == 400 and "STORAGE_EMULATOR_HOST" in error.value.message
