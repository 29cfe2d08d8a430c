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
from cotgen_assets_tests.harness.cli import dagster_materialize
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


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        ("", "is damaged"),
        ('{"storage_id": "ab', "is damaged"),
        ("[]", "is damaged"),
        (None, "is a folder"),  # a folder where the file goes
    ],
)
def test_a_damaged_owner_file_is_refused_naming_it_and_nothing_is_submitted(
    tmp_path, emulator, sources, data_dir, damage, said
):
    """An emptied, cut-short or rewritten `dagster_storage.json`, or a folder in its place: one line
    naming it, nothing paid."""
    sources("medium")
    owner_file = data_dir / "dagster_storage.json"
    if damage is None:
        owner_file.mkdir()
    else:
        owner_file.write_text(damage)

    run = dagster_materialize(
        tmp_path / "home",
        "generation_batch",
        "medium",
        {"limit": LIMIT, "ask": "missing"},
        COTGEN_GEMINI_BASE_URL=emulator.base_url,
        GEMINI_API_KEY="",
    )
    assert run.returncode != 0, run.stdout[-2000:]
    output = run.stdout + run.stderr
    assert f"{owner_file} {said}" in output, output[-3000:]
    assert all(raw not in output for raw in ("JSONDecodeError", "AttributeError", "IsADirectoryError")), (
        output[-3000:]
    )
    assert list(GeminiBatchResource(base_url=emulator.base_url).list_batches()) == [], "nothing submitted"
    left = owner_file.is_dir() if damage is None else owner_file.read_text() == damage
    assert left, "the file is left for a person to look at"
