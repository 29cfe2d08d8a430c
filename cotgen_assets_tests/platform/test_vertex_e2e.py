"""End to end on Vertex AI batch prediction: `dagster dev` with COTGEN_GEMINI_BACKEND=vertex, the emulator
(which speaks Vertex AI too) and the local GCS stand-in, driven over GraphQL.

The test only submits `easy` and `hard`; the daemon's sensor carries both to CoD. Then the same
problems go through the Developer API, in-process, against the same emulator: records, costs and
checks must be the same, but for the job names and the summarization's submission id (Vertex AI
answers in another order, so the CoT file, and the summarization requests made from it, are in
another order: other request bytes, another id; the generation's submission id is the same).
"""

import re

import dagster as dg
import pytest

from cotgen_assets.defs.assets.batches import generation_batch
from cotgen_assets.defs.assets.sources import source_problems
from cotgen_assets_tests.harness.gcs import start_gcs
from cotgen_assets_tests.harness.pipeline import Pipeline, read_jsonl
from cotgen_assets_tests.harness.platform import latest_metadata, offline_platform

pytestmark = pytest.mark.e2e

LIMIT = 4
SCENARIOS = ("easy", "hard")
BUCKET = "cotgen-e2e"
STAGING = f"gs://{BUCKET}/staging"
CALL = re.compile(r'"(?:GET|POST|DELETE|PUT|PATCH) (/[^" ]*)')


def without_batch_names(records: list[dict]) -> list[dict]:
    """The records as both backends must make them (see the module's docstring), by id."""
    out = []
    for record in sorted(records, key=lambda r: r["id"]):
        record = dict(record, generation={k: v for k, v in record["generation"].items() if k != "batch"})
        if "summarization" in record:
            made = record["summarization"].items()
            record["summarization"] = {k: v for k, v in made if k not in ("batch", "submission")}
        out.append(record)
    return out


def outcome(instance: dg.DagsterInstance, data) -> dict:
    """Everything a user compares: the samples files, the samples' costs, every check's verdict."""
    found = {}
    for scenario in SCENARIOS:
        for asset, prefix in (("cot_samples", "cot"), ("cod_samples", "cod")):
            meta = latest_metadata(instance, asset, scenario)
            found[(asset, scenario)] = {
                "records": without_batch_names(read_jsonl(data / f"{prefix}_{scenario}.jsonl")),
                "costs": (meta["cost_usd"], meta["total_cost_usd"], meta["num_samples"], meta["accuracy"]),
            }
    for run in reversed(instance.get_runs()):  # oldest first: a later verdict replaces an earlier one
        checked = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        for record in checked.records:
            evaluation = record.event_log_entry.dagster_event.event_specific_data
            key = (
                evaluation.asset_key.to_user_string(),
                evaluation.check_name,
                run.tags.get("dagster/partition"),
            )
            found[key] = evaluation.passed
    return found


def developer_run(emulator, data, monkeypatch) -> dict:
    """The same problems through the Developer API of the same emulator, in-process."""
    monkeypatch.setenv("COTGEN_DATA_DIR", str(data))
    with dg.instance_for_test() as instance:
        pipeline = Pipeline(instance, emulator.base_url)
        for scenario in SCENARIOS:
            pipeline.materialize(
                [source_problems, generation_batch],
                scenario,
                {"ops": {"generation_batch": {"config": {"limit": LIMIT, "ask": "missing"}}}},
            )
        pipeline.drain()
        return outcome(instance, data)


def test_the_sensor_carries_easy_and_hard_to_cod_on_vertex_ai_as_on_the_developer_api(tmp_path, monkeypatch):
    gcs = start_gcs(BUCKET, tmp_path / "gcs")
    for name, value in gcs.env().items():  # this process looks into the bucket too
        monkeypatch.setenv(name, value)
    env = {
        **gcs.env(),
        "COTGEN_GEMINI_BACKEND": "vertex",
        "GOOGLE_CLOUD_PROJECT": "cotgen-e2e",
        "GOOGLE_CLOUD_LOCATION": "us-central1",
        "COTGEN_VERTEX_STAGING": STAGING,
        "COTGEN_SENSOR_INTERVAL_SECONDS": "3",
    }
    try:
        with offline_platform(
            tmp_path / "vertex", env=env, emulator_env=gcs.env(), more_logs={"gcs": gcs.log}
        ) as platform:
            instance, data = platform.instance, platform.data
            for scenario in SCENARIOS:
                platform.wait_run(
                    platform.submit_generation(scenario, with_sources=True, limit=LIMIT, ask="missing")
                )
                batch = latest_metadata(instance, "generation_batch", scenario)
                assert batch["offline"] is True and batch["gemini_endpoint"].startswith(
                    "offline: local Vertex AI emulator at "
                )
            # From here on the test only waits: the sensor launches every other run.
            for scenario in SCENARIOS:
                platform.wait_samples(instance, "cod_samples", scenario, LIMIT)
            platform.wait_sensor_runs(instance, 2 * len(SCENARIOS))  # their checks are written last
            vertex = outcome(instance, data)

            paths = CALL.findall(platform.emulator.log_path.read_text())
            api = [p for p in paths if not p.startswith("/_emulator/")]
            assert api and all(p.startswith("/v1/projects/cotgen-e2e/locations/us-central1/") for p in api), (
                "no Developer API call"
            )
            staged = {p.split(f"{BUCKET}/staging/", 1)[1] for p in gcs.fs().find(f"{BUCKET}/staging")}
            for scenario in SCENARIOS:
                for stage in ("generation", "summarization"):
                    submission = latest_metadata(instance, f"{stage}_batch", scenario)["submission_id"]
                    local = (
                        data / scenario / "submissions" / f"{stage}-{submission}" / "shard-000.requests.jsonl"
                    )
                    remote = f"{scenario}/{stage}-{submission}/shard-000.requests.jsonl"
                    assert remote in staged, f"{remote} is in the staging bucket"
                    assert gcs.fs().cat_file(f"{BUCKET}/staging/{remote}") == local.read_bytes()

            developer = developer_run(platform.emulator, tmp_path / "developer", monkeypatch)
    finally:
        gcs.stop()

    assert any(key[0] == "cod_samples" and len(key) == 3 for key in vertex), "the checks are compared"
    assert vertex.keys() == developer.keys()
    for key, value in vertex.items():
        if isinstance(value, dict):  # costs summed in another order of lines: equal to the last bits
            assert value["records"] == developer[key]["records"], key
            assert value["costs"] == pytest.approx(developer[key]["costs"], rel=1e-9), key
        else:
            assert value == developer[key], key
    for scenario in SCENARIOS:
        assert len(vertex[("cod_samples", scenario)]["records"]) == LIMIT
        assert vertex[("cot_samples", scenario)]["costs"][0] > 0
