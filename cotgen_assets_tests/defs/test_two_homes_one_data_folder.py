"""Two Dagster instances (each its own DAGSTER_HOME, SQLite) on one local data folder.

Their locks and histories live in their own storages and do not see each other, so the data folder
(what they share) says which storage it belongs to: the first to submit claims it, the other is
refused with one line and pays nothing. Both runs are real `dagster asset materialize` processes
started at the same moment.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import orjson
import pytest

from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets_tests.harness.dagster import ROOT
from cotgen_assets_tests.harness.pipeline import Pipeline, read_jsonl

pytestmark = pytest.mark.pipeline


LIMIT = 4


def start_generation_batch(home: Path, emulator) -> subprocess.Popen:
    """`dagster asset materialize` of generation_batch for `medium` in the instance at `home`."""
    config = orjson.dumps({"ops": {"generation_batch": {"config": {"limit": LIMIT, "ask": "missing"}}}})
    return subprocess.Popen(
        [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "cotgen_assets.definitions"]
        + ["--select", "generation_batch", "--partition", "medium", "--config-json", config.decode()],
        cwd=ROOT,
        env={
            **os.environ,
            "DAGSTER_HOME": str(home),
            "COTGEN_GEMINI_BASE_URL": emulator.base_url,
            "GEMINI_API_KEY": "",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def test_two_homes_on_one_data_folder_pay_once_and_the_other_is_refused(
    tmp_path, emulator, sources, data_dir
):
    sources("medium")
    homes = [tmp_path / "home-a", tmp_path / "home-b"]
    for home in homes:
        home.mkdir()
        shutil.copy(ROOT / "scripts" / "dagster.yaml", home / "dagster.yaml")

    processes = [start_generation_batch(home, emulator) for home in homes]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    codes = [process.returncode for process in processes]

    assert sorted(codes) == [0, 1], "\n\n".join(output[-3000:] for output in outputs)
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    refusals = [line for line in outputs[loser].splitlines() if "belongs to another Dagster" in line]
    assert refusals, outputs[loser][-3000:]
    assert str(data_dir) in refusals[0] and str(homes[winner]) in refusals[0], refusals[0]

    gemini = GeminiBatchResource(base_url=emulator.base_url, backoff_seconds=0.05)
    jobs = [job for job in gemini.list_batches() if "-generation-" in job.display_name]
    assert len(jobs) == 1, f"one batch paid for, not {[job.name for job in jobs]}"

    with dg.DagsterInstance.from_config(str(homes[loser])) as instance:
        assert instance.fetch_materializations(dg.AssetKey("generation_batch"), limit=1).records == []
    with dg.DagsterInstance.from_config(str(homes[winner])) as instance:
        pipeline = Pipeline(instance, emulator.base_url)
        batch = pipeline.metadata("generation_batch", "medium")
        assert batch["batch_names"] == [jobs[0].name]
        [request] = [r for r in pipeline.tick_until_launch() if r.job_name == "generation_results_job"]
        assert pipeline.run(request).success
    records = read_jsonl(data_dir / "cot_medium.jsonl")
    assert len(records) == batch["num_requests"] >= LIMIT, "every answer of the paid batch ingested"
    assert {record["generation"]["batch"] for record in records} == {jobs[0].name}


@pytest.mark.parametrize("claim", [b'{"storage_id": "3f7c', b"[]", b""], ids=["torn", "a list", "empty"])
def test_a_damaged_claim_file_is_one_line_naming_it_and_nothing_is_paid(
    tmp_path, emulator, sources, data_dir, claim
):
    """`dagster_storage.json` edited by hand into something that is not a claim: the batch run says
    which file and what to do, instead of a JSON parser's message naming no file."""
    sources("medium")
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "scripts" / "dagster.yaml", home / "dagster.yaml")
    (data_dir / "dagster_storage.json").write_bytes(claim)

    process = start_generation_batch(home, emulator)
    output = process.communicate(timeout=300)[0]

    assert process.returncode == 1, output[-3000:]
    [refusal, *_] = [
        line for line in output.splitlines() if "dagster_storage.json" in line and "Failure" in line
    ]
    assert f"{data_dir / 'dagster_storage.json'} is damaged" in refusal, refusal
    assert "nothing was submitted" in refusal
    gemini = GeminiBatchResource(base_url=emulator.base_url, backoff_seconds=0.05)
    assert [job for job in gemini.list_batches() if "-generation-" in job.display_name] == []
    assert (data_dir / "dagster_storage.json").read_bytes() == claim, "the file is left as it is"
