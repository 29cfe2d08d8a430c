"""A submission's file is not trusted blindly: a job is downloaded only if it is the one this
submission made (its display name, which carries the shard's content hash)."""

import json

import orjson
import pytest

from cotgen_assets.core.prompts import generation_request, request_line
from cotgen_assets.defs.assets.results import generation_results
from cotgen_assets.defs.assets.samples import cot_samples
from cotgen_assets_tests.harness.dagster import wait_for

pytestmark = pytest.mark.pipeline

MODEL = "gemini-3.1-pro-preview"


def test_a_hand_edited_batch_name_naming_another_job_is_refused_before_downloading(
    pipeline, sources, data_dir, tmp_path
):
    sources("easy")
    pipeline.submit_generation("easy", limit=3, ask="missing")
    ours = pipeline.metadata("generation_batch", "easy")
    folder = data_dir / "easy" / "submissions" / f"generation-{ours['submission_id']}"
    keys = [orjson.loads(line)["key"] for line in (folder / "shard-000.requests.jsonl").open("rb")]

    # Another deployment's job: the same keys, other questions.
    gemini = pipeline.resources["gemini"]
    theirs = tmp_path / "theirs.requests.jsonl"
    theirs.write_bytes(
        b"".join(request_line(key, generation_request(f"What is {n} + {n}?")) for n, key in enumerate(keys))
    )
    other = gemini.submit_jsonl(
        theirs, MODEL, "cotgen-easy-generation-0123456789ab-shard-000-0123456789abcdef"
    )
    saved = json.loads((folder / "submission.json").read_text())
    saved["batch_names"] = [other.name]
    (folder / "submission.json").write_text(json.dumps(saved))
    wait_for(lambda: all(gemini.get_batch(n).done for n in [other.name, *ours["batch_names"]]), 30)

    refused = pipeline.materialize([generation_results, cot_samples], "easy", raise_on_error=False)
    error = refused.failure_data_for_node("generation_results").error
    assert error.cls_name == "Failure" and "\n" not in error.message.strip(), error.message
    assert f"batch {other.name} is not the job of submission {ours['submission_id']}" in error.message
    assert "cotgen-easy-generation-0123456789ab-shard-000-0123456789abcdef" in error.message
    assert f"{folder / 'submission.json'}" in error.message
    assert not (folder / "shard-000.results.jsonl").exists(), "nothing downloaded"
    assert not (data_dir / "cot_easy.jsonl").exists(), "no answer stored under another question"
