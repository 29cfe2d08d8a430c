"""A stage (generation, summarization) is described once, in `core/stages.py`, and everything follows it:
its files, its assets, job and checks, and the names it leaves on disk and in the Dagster instance."""

import json

import dagster as dg
import pytest

from cotgen_assets.core.identity import ask_id_for, request_settings
from cotgen_assets.core.quality import gate_names
from cotgen_assets.core.stages import GENERATION, STAGES, SUMMARIZATION, stage_named
from cotgen_assets.core.storage import samples_path
from cotgen_assets.core.submissions import Submission, load_submission
from cotgen_assets.definitions import defs
from cotgen_assets_tests.harness.emulator import generation_request, summarization_request

MODEL = "gemini-3.1-pro-preview"


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_the_code_location_follows_each_stage_description(stage):
    graph = defs.resolve_asset_graph()

    def parents(asset: str) -> set[str]:
        return {key.to_user_string() for key in graph.get(dg.AssetKey(asset)).parent_keys}

    assert stage.batch_asset in parents(stage.results_asset)
    assert stage.results_asset in parents(stage.samples_asset)
    job = defs.resolve_job_def(stage.results_job)
    selected = {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    assert {stage.results_asset, stage.samples_asset} <= selected
    batch_job = defs.resolve_job_def(stage.batch_job)
    assert {key.to_user_string() for key in batch_job.asset_layer.executable_asset_keys} == {
        stage.batch_asset
    }
    spec = defs.resolve_assets_def(stage.samples_asset).specs_by_key[dg.AssetKey(stage.samples_asset)]
    assert [c.name for c in spec.metadata["dagster/column_schema"].columns] == [f.name for f in stage.fields]
    checks = {c.name for c in graph.asset_check_keys if c.asset_key.to_user_string() == stage.samples_asset}
    assert checks == set(gate_names(stage))
    results_checks = {
        c.name for c in graph.asset_check_keys if c.asset_key == dg.AssetKey(stage.results_asset)
    }
    assert results_checks == {"batch_succeeded"}


def test_the_names_a_stage_leaves_behind_are_those_of_before():
    """Folders, job display names, samples files and ids made before the Stage description still match."""
    assert [(s.name, s.batch_asset, s.results_asset, s.samples_asset, s.results_job) for s in STAGES] == [
        ("generation", "generation_batch", "generation_results", "cot_samples", "generation_results_job"),
        (
            "summarization",
            "summarization_batch",
            "summarization_results",
            "cod_samples",
            "summarization_results_job",
        ),
    ]
    assert samples_path(GENERATION, "easy").name == "cot_easy.jsonl"
    assert samples_path(SUMMARIZATION, "easy").name == "cod_easy.jsonl"
    # ids of submissions already on disk: a re-run finds the same folder and jobs, so nothing is paid
    # twice (they changed once, with the 1 GB shard limit both backends take)
    asked = ask_id_for(
        "easy",
        GENERATION,
        MODEL,
        GENERATION.prompt_version,
        request_settings(generation_request("", "high"), 10_000),
        [("easy-1", 1), ("easy-2", 2)],
    )
    assert asked == "94353ac23d69"
    assert (
        ask_id_for(
            "easy",
            SUMMARIZATION,
            MODEL,
            SUMMARIZATION.prompt_version,
            request_settings(summarization_request("", "", "", "low"), 10_000),
            [("easy-1", 1)],
        )
        == "8e710bdc1ab8"
    )
    submission = Submission("easy", GENERATION, "abc", MODEL, "v", 1, ask_id=asked)
    assert submission.job_name_prefix("shard-000") == "cotgen-easy-generation-94353ac23d69-shard-000-"
    assert submission.folder.name == "generation-abc"


def test_a_submission_keeps_its_stage_by_name_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("COTGEN_DATA_DIR", str(tmp_path))
    Submission("easy", SUMMARIZATION, "abc", MODEL, "v", 3).save()
    saved = json.loads(
        (tmp_path / "easy" / "submissions" / "summarization-abc" / "submission.json").read_text()
    )
    assert saved["stage"] == "summarization"
    assert list(saved)[:3] == ["scenario", "stage", "submission_id"]
    assert load_submission("easy", SUMMARIZATION, "abc").stage is SUMMARIZATION


def test_a_stage_is_found_by_the_name_stored_for_it():
    assert [stage_named(s.name) for s in STAGES] == list(STAGES)
    with pytest.raises(LookupError, match="unknown stage 'drafting'; stages: generation, summarization"):
        stage_named("drafting")
