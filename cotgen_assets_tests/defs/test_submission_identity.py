"""A submission's file is not trusted blindly: a job is downloaded only if it is the one this
submission made (its display name, which carries the shard's content hash)."""

import json

import orjson
import pytest

from cotgen_assets.backends.developer import WIRE
from cotgen_assets.core.prompts import generation_prompt
from cotgen_assets.defs.assets.results import generation_results
from cotgen_assets.defs.assets.samples import cot_samples
from cotgen_assets_tests.harness.dagster import wait_for

pytestmark = pytest.mark.pipeline

MODEL = "gemini-3.1-pro-preview"


def submit_ours_and_theirs(pipeline, sources, data_dir, tmp_path):
    """Our submission for `easy`, and another deployment's job over the same keys with other
    questions; returns our metadata, our folder and their job, once both jobs have ended."""
    sources("easy")
    pipeline.submit_generation("easy", limit=3, ask="missing")
    ours = pipeline.metadata("generation_batch", "easy")
    folder = data_dir / "easy" / "submissions" / f"generation-{ours['submission_id']}"
    keys = [orjson.loads(line)["key"] for line in (folder / "shard-000.requests.jsonl").open("rb")]

    # Another deployment's job: the same keys, other questions.
    gemini = pipeline.resources["gemini"]
    theirs = tmp_path / "theirs.requests.jsonl"
    theirs.write_bytes(
        b"".join(WIRE.input_line(generation_prompt(key, f"What is {n} + {n}?")) for n, key in enumerate(keys))
    )
    other = gemini.submit_jsonl(
        theirs, MODEL, "cotgen-easy-generation-0123456789ab-shard-000-0123456789abcdef"
    )
    wait_for(lambda: all(gemini.get_batch(n).done for n in [other.name, *ours["batch_names"]]), 30)
    return ours, folder, other


def edit_submission(folder, **changes) -> None:
    saved = json.loads((folder / "submission.json").read_text())
    (folder / "submission.json").write_text(json.dumps(saved | changes))


def test_a_hand_edited_batch_name_naming_another_job_is_refused_before_downloading(
    pipeline, sources, data_dir, tmp_path
):
    ours, folder, other = submit_ours_and_theirs(pipeline, sources, data_dir, tmp_path)
    edit_submission(folder, batch_names=[other.name])

    refused = pipeline.materialize([generation_results, cot_samples], "easy", raise_on_error=False)
    error = refused.failure_data_for_node("generation_results").error
    assert error.cls_name == "Failure" and "\n" not in error.message.strip(), error.message
    assert f"batch {other.name} is not the job of submission {ours['submission_id']}" in error.message
    assert "cotgen-easy-generation-0123456789ab-shard-000-0123456789abcdef" in error.message
    assert f"{folder / 'submission.json'}" in error.message
    assert not (folder / "shard-000.results.jsonl").exists(), "nothing downloaded"
    assert not (data_dir / "cot_easy.jsonl").exists(), "no answer stored under another question"


def test_a_submission_file_edited_throughout_is_still_refused_by_its_request_file(
    pipeline, sources, data_dir, tmp_path
):
    """`batch_names`, `display_names` and `ask_id` all edited to another job's: the file agrees with
    itself, but the job's content hash is not that of the request file this submission sent."""
    ours, folder, other = submit_ours_and_theirs(pipeline, sources, data_dir, tmp_path)
    name = "cotgen-easy-generation-0123456789ab-shard-000-0123456789abcdef"
    edit_submission(folder, batch_names=[other.name], display_names=[name], ask_id="0123456789ab")

    refused = pipeline.materialize([generation_results, cot_samples], "easy", raise_on_error=False)
    error = refused.failure_data_for_node("generation_results").error
    assert error.cls_name == "Failure" and "\n" not in error.message.strip(), error.message
    assert f"batch {other.name} is not the job of submission {ours['submission_id']}" in error.message
    assert f"{folder / 'shard-000.requests.jsonl'}" in error.message
    assert not (folder / "shard-000.results.jsonl").exists(), "nothing downloaded"
    assert not (data_dir / "cot_easy.jsonl").exists(), "no answer stored under another question"
