"""The pipeline on Vertex AI batch prediction, in-process: the assets and sensor ticks on a test
instance, the `gemini` resource in Vertex mode against the emulator and the GCS stand-in.

What can go wrong on Vertex AI (a partial success, an expired job, a lost create, answers in another
order, repeated or without a key, a cancel) loses nothing and pays nothing twice, as on the Developer
API; and no credential is written anywhere.
"""

import logging
import time

import dagster as dg
import orjson
import pytest

from cotgen_assets import cli
from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets.backends.vertex import OFFLINE_TOKEN
from cotgen_assets_tests.harness.dagster import wait_for
from cotgen_assets_tests.harness.gcs import BUCKET
from cotgen_assets_tests.harness.pipeline import Pipeline, finish_generation, read_jsonl, requested_ids

# The assets stage through gcsfs in this process.
pytestmark = [pytest.mark.pipeline, pytest.mark.usefixtures("gcs_env")]

LOCATION = "us-central1"
FAKE_KEY = "AIzaSyFAKE-cotgen-Pipeline-Canary-77aa01"  # a Developer API key Vertex AI must never use


@pytest.fixture
def project(request) -> str:
    """A project of its own per test: tests ask alike, and a job with these very requests in the
    project would be reused (by design: its display name holds their content hash)."""
    return "p-" + request.node.name.removeprefix("test_")[:24].replace("_", "-").rstrip(
        "-"
    )  # an id Google takes


@pytest.fixture
def staging(project) -> str:
    return f"gs://{BUCKET}/{project}"


def vertex_resource(emu, staging: str) -> GeminiBatchResource:
    return GeminiBatchResource(
        backend="vertex",
        project=staging.rpartition("/")[2],
        location=LOCATION,
        staging=staging,
        base_url=emu.base_url,
        backoff_seconds=0.05,
    )


def vertex_env(emu, project: str, staging: str) -> dict[str, str]:
    """What a user sets for Vertex AI (the emulator standing in), as `cotgen` and the code location
    read it: the settings `vertex_resource` passes in directly."""
    return {
        "COTGEN_GEMINI_BACKEND": "vertex",
        "GOOGLE_CLOUD_PROJECT": project,
        "GOOGLE_CLOUD_LOCATION": LOCATION,
        "COTGEN_VERTEX_STAGING": staging,
        "COTGEN_GEMINI_BASE_URL": emu.base_url,
    }


@pytest.fixture
def vertex(instance, emu, data_dir, staging):
    pipeline = Pipeline(instance, emu.base_url)
    pipeline.resources["gemini"] = vertex_resource(emu, staging)
    return pipeline


def outcomes(data_dir, meta: dict) -> dict[str, dict]:
    folder = data_dir / "easy" / "submissions" / f"generation-{meta['submission_id']}"
    return {o["id"]: o for o in read_jsonl(folder / "outcomes.jsonl")}


def warnings(instance, run_id: str) -> list[str]:
    return [e.user_message for e in instance.all_logs(run_id) if e.level == logging.WARNING]


def test_a_partially_succeeded_job_keeps_its_answers_and_the_next_fill_asks_for_the_rest(
    vertex, emu, sources, data_dir
):
    sources("easy")
    emu.set_faults(job_state="partially_succeeded", job_count=1, line_error_rate=0.5)
    vertex.submit_generation("easy", limit=10, ask="missing")
    first = vertex.metadata("generation_batch", "easy")
    finish_generation(vertex, "easy")
    assert vertex.metadata("generation_results", "easy")["job_state"] == "JOB_STATE_PARTIALLY_SUCCEEDED"
    ended = outcomes(data_dir, first)
    kept = sorted(k for k, o in ended.items() if o["status"] == "ok")
    failed = sorted(k for k, o in ended.items() if o["status"] == "line_error")
    unrun = sorted(k for k, o in ended.items() if o["status"] == "not_run")
    assert kept and failed and unrun, f"the faults did fire: {ended}"
    assert sorted(r["id"] for r in read_jsonl(data_dir / "cot_easy.jsonl")) == kept, "successes are kept"
    results = (
        data_dir / "easy" / "submissions" / f"generation-{first['submission_id']}" / "shard-000.results.jsonl"
    )
    statuses = {line["key"]: line["status"] for line in read_jsonl(results)}
    assert {k: ended[k]["reason"] for k in failed} == {k: statuses[k] for k in failed}, (
        "the status is the reason"
    )

    emu.set_faults(line_error_rate=0.0)
    vertex.submit_generation("easy", limit=10, ask="missing")
    second = vertex.metadata("generation_batch", "easy")
    assert sorted(requested_ids(second)) == sorted(failed + unrun), "failures retried, successes not"
    finish_generation(vertex, "easy")
    final = [r["id"] for r in read_jsonl(data_dir / "cot_easy.jsonl")]
    assert sorted(final) == sorted(requested_ids(first)) and len(final) == len(set(final))


def test_an_expired_job_loses_nothing_and_its_problems_are_asked_again(
    vertex, emu, sources, data_dir, instance
):
    sources("easy")
    emu.set_faults(job_state="expired", job_count=1)
    vertex.submit_generation("easy", limit=3, ask="missing")
    first = vertex.metadata("generation_batch", "easy")
    result = finish_generation(vertex, "easy")
    results = vertex.metadata("generation_results", "easy")
    assert results["job_state"] == "JOB_STATE_EXPIRED" and first["batch_names"][0] in results["job_errors"]
    assert read_jsonl(data_dir / "cot_easy.jsonl") == []
    assert any("ended JOB_STATE_EXPIRED" in e.user_message for e in instance.all_logs(result.run_id))

    vertex.submit_generation("easy", limit=3, ask="missing")
    second = vertex.metadata("generation_batch", "easy")
    assert second["submission_id"] == first["submission_id"] and second["batch_names"] != first["batch_names"]
    finish_generation(vertex, "easy")
    assert sorted(r["id"] for r in read_jsonl(data_dir / "cot_easy.jsonl")) == sorted(requested_ids(first))


def test_a_lost_create_response_makes_exactly_one_vertex_job(vertex, emu, sources, data_dir):
    sources("hard")
    emu.set_faults(lose_create_count=1)
    vertex.submit_generation("hard", limit=2, ask="missing")
    batch = vertex.metadata("generation_batch", "hard")
    listed = [j.name for j in vertex.resources["gemini"].list_batches()]
    assert listed == batch["batch_names"] and "answering 500" in emu.log_tail(200), "the fault did fire"
    finish_generation(vertex, "hard")
    assert len(read_jsonl(data_dir / "cot_hard.jsonl")) == 2


def test_answers_repeated_or_without_a_known_key_are_counted_and_reported_never_a_sample(
    vertex, gcs, sources, data_dir, instance
):
    """Vertex AI answers in another order; a line for a key answered before, one never asked and one
    without a key are counted and said in the run's log, and stay in the results file."""
    sources("easy")
    vertex.submit_generation("easy", limit=4, ask="missing")
    batch = vertex.metadata("generation_batch", "easy")
    [request] = [r for r in vertex.tick_until_launch() if r.job_name == "generation_results_job"]
    job = vertex.resources["gemini"].get_batch(batch["batch_names"][0])
    first_key = requested_ids(batch)[0]
    planted = [
        {
            "key": first_key,
            "status": "",
            "response": {"candidates": [], "usageMetadata": {"promptTokenCount": 9}},
        },
        {"key": "easy-999999", "status": "", "response": {}},
        {"status": "", "response": {}},
    ]
    gcs.fs().pipe_file(
        f"{job.result_file.removeprefix('gs://')}/predictions_0001.jsonl",
        b"".join(orjson.dumps(line) + b"\n" for line in planted),
    )

    result = vertex.run(request)
    cot = vertex.metadata("cot_samples", "easy")
    assert (cot["num_new"], cot["num_duplicate_keys"], cot["num_unknown_keys"]) == (4, 1, 2)
    assert cot["unused_lines_cost_usd"] > 0
    records = read_jsonl(data_dir / "cot_easy.jsonl")
    assert sorted(r["id"] for r in records) == sorted(requested_ids(batch)), "each request once, by key"
    [said] = [w for w in warnings(instance, result.run_id) if "result lines were not used" in w]
    assert "1 repeated a key answered earlier" in said and "2 had no key, or one never asked" in said
    results = (
        data_dir / "easy" / "submissions" / f"generation-{batch['submission_id']}" / "shard-000.results.jsonl"
    )
    assert b"easy-999999" in results.read_bytes(), "the unused lines stay in the downloaded results"


def test_cotgen_cancel_cancels_a_vertex_job_and_the_next_fill_asks_again(
    tmp_path, emu, gcs, sources, data_dir, project, staging, monkeypatch, capsys
):
    home = tmp_path / "dagster_home"
    home.mkdir()
    sources("easy")
    emu.set_faults(hold_count=1)
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        pipeline = Pipeline(instance, emu.base_url)
        pipeline.resources["gemini"] = vertex_resource(emu, staging)
        pipeline.submit_generation("easy", limit=3, ask="missing")
        batch = pipeline.metadata("generation_batch", "easy")
        [name] = batch["batch_names"]

        for variable, value in {"DAGSTER_HOME": str(home), **vertex_env(emu, project, staging)}.items():
            monkeypatch.setenv(variable, value)
        assert cli.main(["cancel", "easy", "generation"]) == 0
        assert f"cancelled ['{name}']" in capsys.readouterr().out
        assert pipeline.resources["gemini"].get_batch(name).state == "JOB_STATE_CANCELLING"
        emu.release()

        finish_generation(pipeline, "easy")
        assert pipeline.metadata("generation_results", "easy")["job_state"] == "JOB_STATE_CANCELLED"
        pipeline.submit_generation("easy", limit=3, ask="missing")
        again = pipeline.metadata("generation_batch", "easy")
        assert requested_ids(again) == requested_ids(batch) and again["batch_names"] != [name]


def test_no_credential_is_written_anywhere(
    tmp_path, emu, gcs, sources, data_dir, project, staging, monkeypatch, capfd, caplog
):
    """With a Developer API key in the environment and the emulator's bearer token, a whole chain to
    CoD on Vertex AI leaves neither in files, the bucket, logs, metadata or run config."""
    from cotgen_assets.backends.resource import gemini_from_env

    caplog.set_level(logging.DEBUG)
    home = tmp_path / "dagster_home"
    home.mkdir()
    keys = {"GEMINI_API_KEY": FAKE_KEY, "GOOGLE_API_KEY": FAKE_KEY}
    for variable, value in {**keys, **vertex_env(emu, project, staging)}.items():
        monkeypatch.setenv(variable, value)
    sources("easy")
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        pipeline = Pipeline(instance, emu.base_url)
        pipeline.resources["gemini"] = gemini_from_env()
        pipeline.submit_generation("easy", limit=2, ask="missing")
        deadline = time.monotonic() + 60
        while not (data_dir / "cod_easy.jsonl").exists():
            assert time.monotonic() < deadline, "the chain did not reach CoD"
            for request in pipeline.tick_until_launch():
                assert pipeline.run(request).success
        texts = [caplog.text, emu.log_tail(lines=100_000), *capfd.readouterr()]
        for run in instance.get_runs():
            texts.append(orjson.dumps(run.run_config).decode() + repr(run.tags))
            texts += [repr(event) for event in instance.all_logs(run.run_id)]
    stored = [p for p in [*data_dir.rglob("*"), *home.rglob("*")] if p.is_file()]
    bucket = [gcs.fs().cat_file(p) for p in gcs.fs().find(staging.removeprefix("gs://"))]
    assert stored and bucket and any("cotgen/submission_id" in t for t in texts), "the search means something"
    for secret in (FAKE_KEY, OFFLINE_TOKEN):
        assert not [t for t in texts if secret in t], secret
        assert not [p for p in stored if secret.encode() in p.read_bytes()], secret
        assert not [b for b in bucket if secret.encode() in b], secret


def test_trace_shows_the_vertex_job_and_where_its_requests_and_answers_are(vertex, sources, staging):
    from cotgen_assets.publish.trace import trace

    sources("easy")
    vertex.submit_generation("easy", limit=1, ask="missing")
    batch = vertex.metadata("generation_batch", "easy")
    finish_generation(vertex, "easy")
    [attempt] = [a for a in trace(requested_ids(batch)[0])["attempts"] if a["stage"] == "generation"]
    folder = f"{staging}/easy/generation-{batch['submission_id']}"
    assert attempt["backend"] == "vertex" and attempt["batch"] == batch["batch_names"][0]
    assert attempt["batch"].startswith(f"projects/{staging.rpartition('/')[2]}/locations/{LOCATION}/")
    assert attempt["job_files"]["requests"] == f"{folder}/shard-000.requests.jsonl"
    assert attempt["job_files"]["answers"].startswith(f"{folder}/shard-000.predictions/prediction-model-")


def test_a_job_larger_than_vertex_ai_takes_is_refused_before_anything_is_written(vertex, sources, data_dir):
    """Vertex AI takes up to 200,000 requests and 1 GB of input per job; the shards stay inside both."""
    from cotgen_assets.core.shards import MAX_SHARD_BYTES

    sources("easy")
    refused = vertex.submit_generation("easy", raise_on_error=False, limit=3, max_requests_per_job=200_001)
    message = refused.failure_data_for_node("generation_batch").error.message
    assert "max_requests_per_job must be at most 200000 on Vertex AI" in message
    assert not (data_dir / "easy" / "submissions").exists(), "nothing written"
    assert MAX_SHARD_BYTES <= 1_000_000_000


def test_a_missing_staging_bucket_is_one_line_naming_the_setting_before_anything_is_written(
    instance, emu, sources, data_dir, project
):
    sources("easy")
    pipeline = Pipeline(instance, emu.base_url)
    pipeline.resources["gemini"] = gemini = GeminiBatchResource(
        backend="vertex",
        project=project,
        location=LOCATION,
        staging="gs://no-such-bucket/x",
        base_url=emu.base_url,
        backoff_seconds=0.05,
    )
    refused = pipeline.submit_generation("easy", raise_on_error=False, limit=3)
    error = refused.failure_data_for_node("generation_batch").error
    assert error.cls_name == "Failure" and "\n" not in error.message.strip(), error.message
    said = "COTGEN_VERTEX_STAGING='gs://no-such-bucket/x': the bucket no-such-bucket does not exist"
    assert said in error.message
    assert sorted(p.name for p in (data_dir / "easy").iterdir()) == ["source_problems.parquet"], (
        "nothing written"
    )
    assert list(gemini.list_batches()) == [], "nothing sent"


def test_an_answer_line_whose_request_is_not_the_one_sent_under_its_key_is_a_failure_never_a_sample(
    vertex, emu, sources, data_dir
):
    """Vertex AI echoes each request in its answer line: keys swapped between two lines (a mixed-up
    or hand-edited results file) would store each question with the other's answer."""
    from cotgen_assets.defs.assets.results import generation_results
    from cotgen_assets.defs.assets.samples import cot_samples

    sources("easy")
    vertex.submit_generation("easy", limit=4, ask="missing")
    batch = vertex.metadata("generation_batch", "easy")
    gemini = vertex.resources["gemini"]
    wait_for(lambda: gemini.get_batch(batch["batch_names"][0]).done, 30)
    vertex.materialize([generation_results], "easy")
    results = (
        data_dir / "easy" / "submissions" / f"generation-{batch['submission_id']}" / "shard-000.results.jsonl"
    )
    lines = [orjson.loads(line) for line in results.read_bytes().splitlines()]
    first, second = lines[0]["key"], lines[1]["key"]
    lines[0]["key"], lines[1]["key"] = second, first
    results.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))

    vertex.materialize([cot_samples], "easy")
    ended = outcomes(data_dir, batch)
    for key in (first, second):
        assert ended[key]["status"] == "request_mismatch", ended[key]
        assert "is not the request sent under this key" in ended[key]["reason"]
    records = read_jsonl(data_dir / "cot_easy.jsonl")
    assert sorted(r["id"] for r in records) == sorted(set(ended) - {first, second}), "the others are kept"
