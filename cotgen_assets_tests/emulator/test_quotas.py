"""The emulator refuses a create past the batch quotas as the API does (429 RESOURCE_EXHAUSTED),
on both protocols, counting the jobs in flight of both together. Real processes, the real
google-genai client; the GCS stand-in for Vertex AI."""

import urllib.error
from pathlib import Path

import pytest
from google.genai import errors, types

from cotgen_assets.emulator.quotas import DEVELOPER_MESSAGE
from cotgen_assets.emulator.responder import prompt_tokens
from cotgen_assets_tests.harness.emulator import generation_request, request_line, start_emulator
from cotgen_assets_tests.harness.gcs import BUCKET

MODEL = "gemini-3.1-pro-preview"
QUESTION = "How many quotas does it take to change a light bulb?"


@pytest.fixture
def emu(gcs, tmp_path):
    """Jobs held in flight until released, so the count of active jobs is the test's to decide."""
    extra_args = ["--max-active-jobs", "2", "--fault-hold"]
    with start_emulator(
        tmp_path / "emulator", extra_args=extra_args, env={"STORAGE_EMULATOR_HOST": gcs.url}
    ) as emulator:
        yield emulator


def upload(client, tmp_path: Path, name: str, questions: list[str]) -> str:
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(b"".join(request_line(f"k{i}", generation_request(q)) for i, q in enumerate(questions)))
    return client.files.upload(file=str(path), config={"mime_type": "jsonl"}).name


def create(client, source: str, name: str):
    return client.batches.create(model=MODEL, src=source, config={"display_name": name})


def create_vertex(client, gcs, name: str):
    gcs.fs().pipe_file(f"{BUCKET}/{name}/in.jsonl", request_line("k0", generation_request(QUESTION)))
    config = types.CreateBatchJobConfig(dest=f"gs://{BUCKET}/{name}/out", display_name=name)
    return client.batches.create(model=MODEL, src=f"gs://{BUCKET}/{name}/in.jsonl", config=config)


def test_a_third_concurrent_job_is_refused_with_the_apis_429_until_one_ends(emu, tmp_path):
    client = emu.client()
    source = upload(client, tmp_path, "in", [QUESTION])
    first, _ = create(client, source, "one"), create(client, source, "two")

    with pytest.raises(errors.ClientError) as refused:
        create(client, source, "three")
    assert (refused.value.code, refused.value.status) == (429, "RESOURCE_EXHAUSTED")
    assert refused.value.message == DEVELOPER_MESSAGE
    assert [j.display_name for j in client.batches.list(config={"page_size": 10})] == ["two", "one"]

    client.batches.cancel(name=first.name)  # one ends: room for one more, not two
    create(client, source, "three")
    with pytest.raises(errors.ClientError):
        create(client, source, "four")
    created = emu.created_jobs()
    assert [j["display_name"] for j in created] == ["one", "two", "three"]
    assert max(j["active"] for j in created) == 2
    assert 'quota: refused create of "four"' in emu.log_path.read_text()


def test_the_limit_counts_vertex_and_developer_jobs_together(emu, gcs, tmp_path):
    developer, vertex = emu.client(), emu.vertex_client()
    create(developer, upload(developer, tmp_path, "in", [QUESTION]), "dev")
    create_vertex(vertex, gcs, "vertex-one")

    with pytest.raises(errors.ClientError) as refused:
        create_vertex(vertex, gcs, "vertex-two")
    assert (refused.value.code, refused.value.status) == (429, "RESOURCE_EXHAUSTED")
    assert "2 of 2 jobs active" in refused.value.message


def test_enqueued_tokens_count_per_model_while_jobs_are_in_flight_and_change_at_runtime(emu, tmp_path):
    client = emu.client()
    question_tokens = prompt_tokens(generation_request(QUESTION))
    source = upload(client, tmp_path, "in", [QUESTION] * 3)  # 3 requests of question_tokens each
    assert emu.set_quotas(max_active_jobs=None, max_enqueued_tokens=5 * question_tokens) == {
        "max_active_jobs": None,
        "max_enqueued_tokens": 5 * question_tokens,
    }
    first = create(client, source, "three-requests")
    with pytest.raises(errors.ClientError) as refused:  # 3 + 3 > 5
        create(client, source, "three-more")
    assert refused.value.status == "RESOURCE_EXHAUSTED"

    emu.release(first.name)  # it runs to its end (latency 0): its tokens are no longer enqueued
    create(client, source, "three-more")
    assert [j["display_name"] for j in emu.created_jobs()] == ["three-requests", "three-more"]


def test_a_bad_quota_is_one_clear_error(emu):
    with pytest.raises(urllib.error.HTTPError) as refused:
        emu.set_quotas(max_active_jobs=0)
    assert refused.value.code == 400
    assert "max_active_jobs must be a whole number >= 1" in refused.value.read().decode()
    assert emu.admin("GET", "quotas") == {"max_active_jobs": 2, "max_enqueued_tokens": None}


def test_inlined_requests_and_a_vertex_ai_file_count_their_prompt_tokens(emu, gcs):
    developer, vertex = emu.client(), emu.vertex_client()
    inlined = types.InlinedRequest(contents=[types.Content(role="user", parts=[types.Part(text=QUESTION)])])
    inlined_tokens = prompt_tokens({"contents": [{"parts": [{"text": QUESTION}]}]})
    vertex_tokens = prompt_tokens(generation_request(QUESTION))
    emu.set_quotas(max_active_jobs=None, max_enqueued_tokens=2 * inlined_tokens + vertex_tokens - 1)
    developer.batches.create(model=MODEL, src=[inlined, inlined], config={"display_name": "inlined"})

    with pytest.raises(errors.ClientError) as refused:
        create_vertex(vertex, gcs, "vertex")
    assert f"{2 * inlined_tokens} + {vertex_tokens} enqueued tokens on" in refused.value.message
