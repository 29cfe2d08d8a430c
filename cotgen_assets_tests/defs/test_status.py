"""Where is my batch? The sensor's progress observations on the batch asset, and `cotgen status`,
against a held emulator job whose counts then move from 0 to done. In-process (sensor ticks on an
on-disk instance the CLI finds through DAGSTER_HOME, as a user's shell would); over GraphQL, as the
UI reads them, in test_auto_fill_e2e.py."""

import dagster as dg
import pytest

from cotgen_assets import cli
from cotgen_assets_tests.harness.dagster import wait_for
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


def test_a_held_job_is_shown_at_0_then_its_counts_move_to_done(
    tmp_path, sources, data_dir, monkeypatch, capsys
):
    home = tmp_path / "dagster_home"
    home.mkdir()
    sources("hard")
    emulator = start_emulator(tmp_path / "emulator", latency=3.0)  # once released: running for 3 s
    with emulator, dg.DagsterInstance.local_temp(str(home)) as instance:
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("COTGEN_GEMINI_BASE_URL", emulator.base_url)
        monkeypatch.delenv("GEMINI_API_KEY", raising=False)
        pipeline = Pipeline(instance, emulator.base_url)
        emulator.set_faults(hold_count=1)
        pipeline.submit_generation("hard", limit=5)
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
