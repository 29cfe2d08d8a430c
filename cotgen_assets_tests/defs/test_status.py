"""Where is my batch? The sensor's progress observations on the batch asset, and `cotgen status`,
against a held emulator job whose counts then move from 0 to done. In-process: sensor ticks on an
on-disk instance the CLI finds through DAGSTER_HOME, as a user's shell would."""

import contextlib
import os
import shutil

import dagster as dg
import pytest

from cotgen_assets import cli
from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets_tests.harness.cli import cotgen
from cotgen_assets_tests.harness.dagster import ROOT, wait_for
from cotgen_assets_tests.harness.emulator import start_emulator
from cotgen_assets_tests.harness.pipeline import Pipeline

pytestmark = pytest.mark.pipeline


def progress(data) -> list:
    """The progress observations of one tick."""
    return [e for e in data.asset_events if "requests_done" in e.metadata]


def status_line(capsys, stage: str) -> str:
    assert cli.main(["status", "hard"]) == 0
    out = capsys.readouterr().out
    [line] = [row for row in out.splitlines() if row.split()[:2] == ["hard", stage]]
    return line


@contextlib.contextmanager
def hard_held(tmp_path, sources, monkeypatch, latency: float = 0.0, **config):
    """`hard` submitted (limit 5, `config`) to an emulator holding its job, on an instance `cotgen`
    finds; yields the pipeline and the emulator."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    sources("hard")
    emulator = start_emulator(tmp_path / "emulator", latency=latency)
    with emulator, dg.DagsterInstance.local_temp(str(home)) as instance:
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("COTGEN_GEMINI_BASE_URL", emulator.base_url)
        monkeypatch.delenv("GEMINI_API_KEY", raising=False)
        pipeline = Pipeline(instance, emulator.base_url)
        emulator.set_faults(hold_count=1)
        pipeline.submit_generation("hard", limit=5, **config)
        yield pipeline, emulator


def test_a_held_job_is_shown_at_0_then_its_counts_move_to_done(
    tmp_path, sources, data_dir, monkeypatch, capsys
):
    # once released: running for 3 s
    with hard_held(tmp_path, sources, monkeypatch, latency=3.0) as (pipeline, emulator):
        batch = pipeline.metadata("generation_batch", "hard")
        total = batch["num_requests"]

        [held] = progress(pipeline.tick())
        assert held.asset_key == dg.AssetKey("generation_batch") and held.partition == "hard"
        metadata = {k: v.value for k, v in held.metadata.items()}
        assert metadata["job_state"] == "JOB_STATE_PENDING"
        assert (metadata["requests_done"], metadata["requests_total"], metadata["round"]) == (0, total, 1)
        assert metadata["submission_id"] == batch["submission_id"] and metadata["age_minutes"] >= 0
        jobs = ("jobs_created", "jobs_queued", "jobs_running", "jobs_done")
        assert [metadata[name] for name in jobs] == [1, 0, 1, 0]
        assert progress(pipeline.tick()) == [], "nothing changed: nothing recorded"
        line = status_line(capsys, "generation")
        assert "JOB_STATE_PENDING" in line and f" 0/{total} " in line and "1 of 3" in line
        assert " 0/5 " in line and "in flight" in line and " 1/0/1/0 " in line  # jobs c/q/r/d
        assert status_line(capsys, "summarization").split()[2] == "-", "nothing submitted yet"

        emulator.release()
        seen = [held]

        def launched():
            data = pipeline.tick()
            seen.extend(progress(data))
            return data.run_requests

        [request] = wait_for(launched, timeout=60, interval=0.1, message="the results run")
        done = [o.metadata["requests_done"].value for o in seen]
        assert done == sorted(done) and done[0] == 0 and done[-1] == total, done
        assert seen[-1].metadata["job_state"].value == "JOB_STATE_SUCCEEDED"
        line = status_line(capsys, "generation")
        assert "JOB_STATE_SUCCEEDED" in line and f" {total}/{total} " in line and " 1/0/0/1 " in line

        assert pipeline.run(request).success
        line = status_line(capsys, "generation")
        assert line.split()[2] == "saved" and f" {total}/{total} " in line and f" {total}/5 " in line
        assert "in flight" not in line


@pytest.fixture
def held_hard(tmp_path, sources, data_dir, monkeypatch):
    with hard_held(tmp_path, sources, monkeypatch, ask="missing") as held:
        yield held


def test_a_saved_batch_shows_the_requests_answered_not_those_asked(held_hard, capsys):
    pipeline, emulator = held_hard
    total = pipeline.metadata("generation_batch", "hard")["num_requests"]
    assert cli.main(["cancel", "hard", "generation"]) == 0
    emulator.release()
    [request] = pipeline.tick_until_launch()
    assert pipeline.run(request).success
    capsys.readouterr()

    line = status_line(capsys, "generation")
    assert line.split()[2:5] == ["saved", "-", f"0/{total}"], line  # state, jobs c/q/r/d, done/total


def test_an_api_error_is_shown_whole_below_the_table(held_hard, capsys):
    pipeline, emulator = held_hard
    [name] = pipeline.metadata("generation_batch", "hard")["batch_names"]
    emulator.set_faults(http_error_rate=1.0)
    with pytest.raises(Exception) as raised:
        GeminiBatchResource(base_url=emulator.base_url, backoff_seconds=0.05).get_batch(
            name, timeout_seconds=10, max_attempts=2
        )
    message = " ".join(str(raised.value).split())
    assert len(message) > 80

    line = status_line(capsys, "generation")
    assert "unknown: the API failed (below)" in line
    assert cli.main(["status", "hard"]) == 0
    assert f"\nhard generation: the API: {message}\n" in capsys.readouterr().out


def test_cotgen_status_from_the_project_folder_finds_start_shs_home(tmp_path):
    """start.sh, run from the project folder, makes DAGSTER_HOME=$PWD/.dagster_home; a new shell there
    does not have the variable."""
    (tmp_path / ".dagster_home").mkdir()
    shutil.copy(ROOT / "scripts" / "dagster.yaml", tmp_path / ".dagster_home" / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env["COTGEN_DATA_DIR"] = str(tmp_path / "data")

    done = cotgen("status", "easy", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"cotgen: DAGSTER_HOME is not set: using {tmp_path / '.dagster_home'}, the home scripts/start.sh "
        "gives the platform run from this folder"
    ]
    assert done.stdout.splitlines()[1].split()[:3] == ["easy", "generation", "-"]
