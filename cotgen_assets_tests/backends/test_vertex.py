"""The `gemini` resource on Vertex AI: the real google-genai client in Vertex mode against the emulator,
with the request files and answers in the local GCS stand-in (no mocks), and its settings."""

import logging
import os
import subprocess
import sys

import pytest

from cotgen_assets.backends import vertex as vertex_module
from cotgen_assets.backends.resource import GeminiBatchResource, gemini_from_env
from cotgen_assets.core.batch_output import iter_result_lines
from cotgen_assets.core.settings import SettingError
from cotgen_assets_tests.harness.dagster import ROOT, wait_for
from cotgen_assets_tests.harness.emulator import generation_request, request_line
from cotgen_assets_tests.harness.gcs import BUCKET

STAGING = f"gs://{BUCKET}/vertex"
PROJECT, LOCATION = "cotgen-test", "us-central1"
MODEL = "gemini-3.1-pro-preview"
QUESTIONS = [f"What is {n} + {n}?" for n in range(6)]
FAKE_KEY = "AIzaSyFAKE-cotgen-Vertex-Canary-51d0e7"  # a Developer API key that must never be used

pytestmark = pytest.mark.usefixtures("gcs_env")  # the resource stages through gcsfs in this process


def vertex(emu, **overrides) -> GeminiBatchResource:
    settings = dict(
        backend="vertex",
        project=PROJECT,
        location=LOCATION,
        staging=STAGING,
        base_url=emu.base_url,
        timeout_seconds=10.0,
        max_attempts=8,
        backoff_seconds=0.01,
    )
    return GeminiBatchResource(**(settings | overrides))


@pytest.fixture
def gemini(emu):
    return vertex(emu)


@pytest.fixture
def requests_file(tmp_path):
    path = tmp_path / "shard-000.requests.jsonl"
    path.write_bytes(b"".join(request_line(f"q-{i}", generation_request(q)) for i, q in enumerate(QUESTIONS)))
    return path


def ended(gemini: GeminiBatchResource, name: str):
    return wait_for(lambda: (job := gemini.get_batch(name)).done and job, timeout=30, interval=0.05)


# -------------------------------------------------------------------------------- every call


def test_a_shard_is_staged_run_and_downloaded_by_key(gemini, gcs, requests_file, tmp_path):
    job = gemini.submit_jsonl(requests_file, MODEL, "cotgen-v-every", folder="easy/generation-abc")
    staged = f"{STAGING}/easy/generation-abc/shard-000.requests.jsonl"
    assert job.name.startswith(f"projects/{PROJECT}/locations/{LOCATION}/batchPredictionJobs/")
    assert (job.source, job.dest, job.model) == (
        staged,
        f"{STAGING}/easy/generation-abc/shard-000.predictions",
        MODEL,
    )
    assert gcs.fs().cat_file(staged.removeprefix("gs://")) == requests_file.read_bytes(), "staged unchanged"

    done = ended(gemini, job.name)
    assert done.state == "JOB_STATE_SUCCEEDED" and done.succeeded
    assert (done.request_count, done.succeeded_count, done.failed_count) == (6, 6, 0)
    assert done.result_file.startswith(f"{job.dest}/prediction-model-")
    results = gemini.download_results(done.result_file, tmp_path / "results.jsonl")
    keys = [line.key for line in iter_result_lines(results, vertex_module.WIRE)]
    assert sorted(keys) == [f"q-{i}" for i in range(6)] and keys != sorted(keys), "by key, in another order"
    assert all(
        line.ok and line.usage.thinking_tokens > 0 for line in iter_result_lines(results, vertex_module.WIRE)
    )

    assert [j.name for j in gemini.list_batches(page_size=1) if j.display_name == "cotgen-v-every"] == [
        job.name
    ]
    gemini.delete_batch(job.name)
    assert gemini.find_batch("cotgen-v-every") is None


def test_every_jsonl_under_the_output_directory_is_read_and_nothing_else(
    gemini, gcs, requests_file, tmp_path
):
    done = ended(gemini, gemini.submit_jsonl(requests_file, MODEL, "cotgen-v-files").name)
    folder = done.result_file.removeprefix("gs://")
    gcs.fs().pipe_file(f"{folder}/predictions_0002.jsonl", b'{"key": "extra", "status": "late"}')
    gcs.fs().pipe_file(f"{folder}/errors.txt", b"not predictions\n")
    results = gemini.download_results(done.result_file, tmp_path / "results.jsonl")
    keys = sorted(line.key for line in iter_result_lines(results, vertex_module.WIRE))
    assert keys == sorted([f"q-{i}" for i in range(6)] + ["extra"])
    assert b"not predictions" not in results.read_bytes()


def test_a_held_job_is_in_flight_until_cancelled(gemini, emu, requests_file):
    emu.set_faults(hold_count=1)
    job = gemini.submit_jsonl(requests_file, MODEL, "cotgen-v-cancel")
    assert gemini.get_batch(job.name).state == "JOB_STATE_QUEUED" and not gemini.get_batch(job.name).done
    gemini.cancel_batch(job.name)
    assert gemini.get_batch(job.name).state == "JOB_STATE_CANCELLING", "in flight while held"
    emu.release()
    assert ended(gemini, job.name).state == "JOB_STATE_CANCELLED"


@pytest.mark.parametrize(
    "fault, state, succeeded",
    [
        ("partially_succeeded", "JOB_STATE_PARTIALLY_SUCCEEDED", True),
        ("expired", "JOB_STATE_EXPIRED", False),
        ("failed", "JOB_STATE_FAILED", False),
    ],
)
def test_every_end_state_is_terminal(gemini, emu, requests_file, fault, state, succeeded):
    """PARTIALLY_SUCCEEDED ends a job although the SDK's BatchJob.done says False."""
    emu.set_faults(job_state=fault, job_count=1)
    done = ended(gemini, gemini.submit_jsonl(requests_file, MODEL, f"cotgen-v-{fault}").name)
    assert (done.state, done.succeeded, done.failed) == (state, succeeded, not succeeded)
    assert (done.error is None) == succeeded
    # a failed or expired job is not reused: the same display name is submitted anew
    again = gemini.submit_jsonl(requests_file, MODEL, f"cotgen-v-{fault}")
    assert (again.name == done.name) == succeeded and again.reused == succeeded


def test_a_lost_create_response_does_not_pay_twice(gemini, emu, requests_file, caplog):
    caplog.set_level(logging.INFO)
    emu.set_faults(lose_create_count=1)
    job = gemini.submit_jsonl(requests_file, MODEL, "cotgen-v-lost")
    assert any("the job exists" in r.getMessage() for r in caplog.records), "the fault did fire"
    assert [j.name for j in gemini.list_batches() if j.display_name == "cotgen-v-lost"] == [job.name]
    assert gemini.submit_jsonl(requests_file, MODEL, "cotgen-v-lost").name == job.name


def test_a_create_answered_after_its_timeout_does_not_pay_twice(emu, requests_file, caplog):
    """The create's answer is lost to the client's timeout, but the job is made a moment later.

    Its stall is 1 s longer than the timeout: the rest of the grace (as long as the timeout) leaves
    room for a loaded machine's slow staging reads."""
    caplog.set_level(logging.INFO)
    gemini = vertex(emu, create_timeout_seconds=10.0)
    emu.wait_for_references()  # until then the emulator's calls are slow, not only the create
    emu.set_faults(slow_create_seconds=11.0, slow_create_count=1)
    job = gemini.submit_jsonl(requests_file, MODEL, "cotgen-v-slow-create")
    emu.wait_for_stalled_creates()
    assert [j.name for j in gemini.list_batches() if j.display_name == "cotgen-v-slow-create"] == [job.name]
    assert any("failed, but the job exists" in r.getMessage() for r in caplog.records), "it timed out"


def test_names_of_the_other_backend_or_location_are_refused_saying_why(gemini):
    with pytest.raises(ValueError, match="Gemini Developer API batch: unset COTGEN_GEMINI_BACKEND"):
        gemini.get_batch("batches/abc123")
    elsewhere = f"projects/{PROJECT}/locations/europe-west4/batchPredictionJobs/123"
    with pytest.raises(ValueError, match="set GOOGLE_CLOUD_LOCATION=europe-west4 to reach it"):
        gemini.cancel_batch(elsewhere)
    developer = GeminiBatchResource(api_key=FAKE_KEY)
    with pytest.raises(ValueError, match="a Vertex AI job: set COTGEN_GEMINI_BACKEND=vertex"):
        developer.get_batch(f"projects/{PROJECT}/locations/{LOCATION}/batchPredictionJobs/123")


def test_offline_is_said_and_no_developer_api_key_is_ever_used(emu, gcs, requests_file, monkeypatch, caplog):
    """A Developer API key in the environment is never sent, logged or written on Vertex AI."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(vertex_module, "_announced_offline", set())  # said once per process
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.setenv(name, FAKE_KEY)
    monkeypatch.setenv("COTGEN_GEMINI_BACKEND", "vertex")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    monkeypatch.setenv("GOOGLE_CLOUD_LOCATION", LOCATION)
    monkeypatch.setenv("COTGEN_VERTEX_STAGING", STAGING)
    monkeypatch.setenv("COTGEN_GEMINI_BASE_URL", emu.base_url)
    gemini = gemini_from_env()
    assert gemini.api_key is None and gemini.offline and gemini.surely_offline
    assert gemini.describe() == (
        f"offline: local Vertex AI emulator at {emu.base_url} "
        f"(project {PROJECT}, location {LOCATION}, staging {STAGING})"
    )
    done = ended(gemini, gemini.submit_jsonl(requests_file, MODEL, "cotgen-v-key", folder="k").name)
    assert done.succeeded
    assert any("OFFLINE: Vertex AI calls go to the local server" in r.getMessage() for r in caplog.records)
    log = emu.log_tail(lines=100_000)
    assert f'"GET /v1/projects/{PROJECT}/locations/{LOCATION}/batchPredictionJobs/' in log
    texts = [caplog.text, log, repr(gemini), gemini.describe(), repr(done)]
    texts += [r.getMessage() + repr(r.args) for r in caplog.records]
    texts += [gcs.fs().cat_file(path) for path in gcs.fs().find(f"{BUCKET}/vertex/k")]
    assert not [t for t in texts if FAKE_KEY in (t if isinstance(t, str) else t.decode(errors="replace"))]


# -------------------------------------------------------------------------------- settings


VERTEX_ENV = {
    "COTGEN_GEMINI_BACKEND": "vertex",
    "GOOGLE_CLOUD_PROJECT": PROJECT,
    "COTGEN_VERTEX_STAGING": STAGING,
}


def settings(monkeypatch, **env) -> GeminiBatchResource:
    for name in (*VERTEX_ENV, "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_CLOUD_LOCATION", "COTGEN_GEMINI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COTGEN_DATA_DIR", "data")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return gemini_from_env()


def test_settings_choose_the_backend_and_default_location_and_staging(monkeypatch):
    assert settings(monkeypatch).backend == "developer"
    chosen = settings(monkeypatch, **VERTEX_ENV)
    assert (chosen.backend, chosen.project, chosen.location, chosen.staging) == (
        "vertex",
        PROJECT,
        "global",
        STAGING,
    )
    assert not chosen.surely_offline and chosen.describe().startswith("Vertex AI batch prediction (")
    by_sdk_variable = settings(
        monkeypatch,
        GOOGLE_GENAI_USE_VERTEXAI="true",
        GOOGLE_CLOUD_PROJECT=PROJECT,
        COTGEN_VERTEX_STAGING=STAGING,
    )
    assert by_sdk_variable.backend == "vertex"
    explicit = settings(monkeypatch, GOOGLE_GENAI_USE_VERTEXAI="true", COTGEN_GEMINI_BACKEND="developer")
    assert explicit.backend == "developer"
    in_bucket = settings(
        monkeypatch,
        COTGEN_GEMINI_BACKEND="vertex",
        GOOGLE_CLOUD_PROJECT=PROJECT,
        GOOGLE_CLOUD_LOCATION="europe-west4",
        COTGEN_DATA_DIR="gs://my-data/cotgen/",
    )
    assert (in_bucket.location, in_bucket.staging) == ("europe-west4", "gs://my-data/cotgen")


@pytest.mark.parametrize(
    "project, location",
    [
        ("my-project-123", "us-central1"),
        ("example.com:my-project", "northamerica-northeast1"),
        ("abcdef", "eu"),
    ],
)
def test_project_ids_and_locations_in_googles_formats_are_taken(monkeypatch, project, location):
    env = {**VERTEX_ENV, "GOOGLE_CLOUD_PROJECT": project, "GOOGLE_CLOUD_LOCATION": location}
    chosen = settings(monkeypatch, **env)
    assert (chosen.project, chosen.location) == (project, location)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"COTGEN_GEMINI_BACKEND": "vertexai"}, "COTGEN_GEMINI_BACKEND='vertexai' is not valid: it takes"),
        (
            {**VERTEX_ENV, "GOOGLE_CLOUD_PROJECT": ""},
            "GOOGLE_CLOUD_PROJECT is not set: the Vertex AI backend",
        ),
        (
            {**VERTEX_ENV, "GOOGLE_CLOUD_PROJECT": "a?b#c"},
            "GOOGLE_CLOUD_PROJECT='a?b#c' is not a Google Cloud project id: it takes 6 to 30 lower-case",
        ),
        (
            {**VERTEX_ENV, "GOOGLE_CLOUD_PROJECT": "My_Project"},
            "GOOGLE_CLOUD_PROJECT='My_Project' is not a Google Cloud project id",
        ),
        (
            {**VERTEX_ENV, "GOOGLE_CLOUD_PROJECT": "my-project-"},
            "GOOGLE_CLOUD_PROJECT='my-project-' is not a Google Cloud project id",
        ),
        (
            {**VERTEX_ENV, "GOOGLE_CLOUD_LOCATION": "us central1"},
            "GOOGLE_CLOUD_LOCATION='us central1' is not a Google Cloud location: it takes a region",
        ),
        (
            {**VERTEX_ENV, "GOOGLE_CLOUD_LOCATION": "europe-west4?x"},
            "GOOGLE_CLOUD_LOCATION='europe-west4?x' is not a Google Cloud location",
        ),
        (
            {**VERTEX_ENV, "COTGEN_VERTEX_STAGING": ""},
            "COTGEN_VERTEX_STAGING is not set: the Vertex AI backend",
        ),
        (
            {**VERTEX_ENV, "COTGEN_VERTEX_STAGING": "s3://b/x"},
            "COTGEN_VERTEX_STAGING='s3://b/x' is not valid",
        ),
        (
            {**VERTEX_ENV, "COTGEN_GEMINI_BASE_URL": "http://127.0.0.1:1", "STORAGE_EMULATOR_HOST": ""},
            "COTGEN_GEMINI_BASE_URL='http://127.0.0.1:1' points Vertex AI at a local server, but "
            "STORAGE_EMULATOR_HOST is not set, so request files would go to the real gs://",
        ),
    ],
)
def test_a_missing_or_bad_setting_is_one_error_naming_the_variable(monkeypatch, env, message):
    with pytest.raises(SettingError) as raised:
        settings(monkeypatch, **env)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_the_code_location_does_not_load_without_a_project_and_writes_nothing(tmp_path):
    env = {
        **os.environ,
        **VERTEX_ENV,
        "COTGEN_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path),
    }
    env.pop("GOOGLE_CLOUD_PROJECT")
    loaded = subprocess.run(
        [sys.executable, "-c", "import cotgen_assets.definitions"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode != 0
    last = loaded.stderr.strip().splitlines()[-1]
    assert "SettingError: GOOGLE_CLOUD_PROJECT is not set: the Vertex AI backend" in last, last
    assert list(tmp_path.iterdir()) == [], "nothing written"
