"""Data the emulator made is offline whatever the key: who answers decides, not GEMINI_API_KEY.

A user who sets GEMINI_API_KEY but leaves COTGEN_GEMINI_BASE_URL at the emulator must not get
emulator samples that pass for Gemini's: the records, the metadata and the run's log say OFFLINE,
and hf_dataset refuses to push them. The key itself appears nowhere.
"""

import dagster as dg
import pytest

from cotgen_assets.backends.resource import gemini_from_env
from cotgen_assets.defs.assets.publishing import hf_dataset
from cotgen_assets.defs.resources import HubResource
from cotgen_assets_tests.harness.pipeline import Pipeline, read_jsonl

pytestmark = pytest.mark.pipeline

FAKE_KEY = "AIzaSyFAKE-cotgen-Offline-Canary-4d2a9e"
FAKE_TOKEN = "hf_FAKEtoken-offline-canary-SECRET"


@pytest.fixture
def keyed_pipeline(instance, emulator, data_dir, monkeypatch):
    """The pipeline with the resource the code location builds: a key set, the emulator's URL kept."""
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("COTGEN_GEMINI_BASE_URL", emulator.base_url)
    pipeline = Pipeline(instance, emulator.base_url)
    pipeline.resources["gemini"] = gemini_from_env()
    return pipeline


def test_a_key_set_with_the_emulators_url_still_makes_offline_data_that_is_never_pushed(
    keyed_pipeline, instance, emulator, data_dir, sources, monkeypatch
):
    sources("easy")
    submitted = keyed_pipeline.submit_generation("easy", limit=3, ask="missing")
    keyed_pipeline.drain()

    batch = keyed_pipeline.metadata("generation_batch", "easy")
    assert batch["offline"] is True
    assert batch["gemini_endpoint"] == f"offline: local Gemini emulator at {emulator.base_url}"
    for asset in ("cot_samples", "cod_samples"):
        samples = keyed_pipeline.metadata(asset, "easy")
        assert samples["offline"] is True and samples["gemini_endpoint"].startswith("OFFLINE:"), asset
    cot, cod = read_jsonl(data_dir / "cot_easy.jsonl"), read_jsonl(data_dir / "cod_easy.jsonl")
    assert len(cot) == len(cod) == 3
    assert all(r["generation"]["offline"] for r in cot)
    assert all(r["generation"]["offline"] and r["summarization"]["offline"] for r in cod)
    launched = [run for run in instance.get_runs() if "cotgen/submission_id" in run.tags]
    assert launched and all(run.tags.get("cotgen/gemini") == "offline-emulator" for run in launched)
    log = [record.message or "" for record in instance.all_logs(submitted.run_id)]
    assert any("OFFLINE" in message and emulator.base_url in message for message in log), log

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    pushed = dg.materialize(
        [hf_dataset],
        instance=instance,
        resources={"hub": HubResource(token=dg.EnvVar("HF_TOKEN"))},
        run_config={"ops": {"hf_dataset": {"config": {"hub_repo": "someone/cotgen"}}}},
        raise_on_error=False,
    )
    assert not pushed.success
    refusal = pushed.failure_data_for_node("hf_dataset").error.message
    assert "OFFLINE samples made by the local Gemini emulator" in refusal
    assert "Nothing was uploaded" in refusal

    texts = [emulator.log_tail(lines=100_000)]
    for run in instance.get_runs():
        texts += [f"{record.message} {record.dagster_event}" for record in instance.all_logs(run.run_id)]
    assert len(texts) > 1 and not [t for t in texts if FAKE_KEY in t or FAKE_TOKEN in t]
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    assert files and not [p for p in files if FAKE_KEY.encode() in p.read_bytes()]
