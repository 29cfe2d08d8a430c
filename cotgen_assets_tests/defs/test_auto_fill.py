"""`auto_fill`: one click, then the sensor submits fill rounds itself until the scenario reaches its
limit, its rounds are used up, or the budget of the whole run of rounds would be passed; the end
is said once. In-process: the real emulator at a known wrong-answer rate, sensor ticks evaluated
as the daemon would (`decide_launches`, the sensor's decision), each run it asks for executed.
Last, the whole story under `dagster dev`, with progress read as the UI reads it."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import orjson
import pytest

from cotgen_assets import cli
from cotgen_assets.defs.jobs import ROUND_TAG, ROUNDS_TAG
from cotgen_assets.defs.sensors import decide_launches
from cotgen_assets.defs.sensors.cursor import SensorCursor
from cotgen_assets_tests.harness.dagster import ROOT, wait_for
from cotgen_assets_tests.harness.emulator import start_emulator
from cotgen_assets_tests.harness.pipeline import Pipeline, Ticks, batches, read_jsonl
from cotgen_assets_tests.harness.platform import latest_metadata, offline_platform

pytestmark = pytest.mark.pipeline

LIMIT = 20


def auto_round_runs(instance) -> list:
    """The runs of automatic rounds (executed here in-process, so found by their round tag)."""
    return [run for run in instance.get_runs() if ROUND_TAG in run.tags]


def test_one_click_reaches_the_limit_in_automatic_rounds_and_says_so_once(
    pipeline, emulator, sources, data_dir
):
    sources("hard")
    emulator.set_faults(wrong_rate=0.6)  # the prior (0.8) is far too high: round 1 falls short
    pipeline.submit_generation("hard", limit=LIMIT, auto_fill=True)
    ticks = Ticks(pipeline)
    done = ticks.until(
        lambda outcome: [o for o in outcome.observations if "auto_fill_ended" in o.metadata],
        "the sensor to say the run of rounds ended",
    )
    [end] = [o for o in done.observations if "auto_fill_ended" in o.metadata]
    assert end.metadata["auto_fill_ended"].value == "limit reached"
    assert [m for m in done.messages if "AUTO-FILL DONE: limit reached" in m], done.messages

    cot = read_jsonl(data_dir / "cot_hard.jsonl")
    good = [r for r in cot if r["correct"]]
    assert len(good) >= LIMIT and end.metadata["num_good"].value == len(good)
    rounds = [b for b in batches(pipeline.instance) if b["batch_names"]]
    assert 2 <= len(rounds) <= 3 and [b["round"] for b in rounds] == list(range(1, len(rounds) + 1))
    assert len({b["rounds_id"] for b in rounds}) == 1, "one run of rounds"
    runs = auto_round_runs(pipeline.instance)
    assert sorted(r.tags[ROUND_TAG] for r in runs) == [str(n) for n in range(2, len(rounds) + 1)]
    assert all(r.tags[ROUNDS_TAG] == rounds[0]["rounds_id"] for r in runs)
    # a good problem is never asked again: each round asks only the wrong ones again, and new ones
    earlier, seen = set(), set()
    for batch in rounds:
        keys = {orjson.loads(line)["key"] for f in batch["request_files"] for line in open(f, "rb")}
        assert not keys & {r["id"] for r in good if r["generation"]["submission"] in earlier}
        earlier.add(batch["submission_id"])
        seen |= keys
    ids = [r["id"] for r in cot]
    assert len(ids) == len(set(ids)) and set(ids) == seen

    later = ticks.quiet()
    assert not [o for t in later for o in t.observations if "auto_fill_ended" in o.metadata], "said once"
    assert not [r for t in later for r in t.run_requests if r.job_name == "generation_batch_job"]


def test_the_same_round_started_twice_sends_one_batch(pipeline, emulator, sources, data_dir):
    """Two daemons (or a retried tick) asking for round 2 at once: one run sends it, the other is
    refused by the in-flight check; nothing is asked twice."""
    sources("hard")
    emulator.set_faults(wrong_rate=0.6)
    pipeline.submit_generation("hard", limit=LIMIT, auto_fill=True)
    cursor, requests = SensorCursor(), []

    def round_two():
        outcome = decide_launches(pipeline.instance, pipeline.resources["gemini"], ["hard"], cursor)
        for request in outcome.run_requests:
            if ROUND_TAG in request.tags:
                requests.append(request)
            else:
                pipeline.run(request)
        return requests

    [request] = wait_for(round_two, timeout=120, interval=0.05, message="the sensor to ask for round 2")
    emulator.set_faults(hold_count=1)  # round 2's job stays in flight
    assert pipeline.run(request).success
    again = pipeline.run(request, raise_on_error=False)
    assert not again.success
    refusal = again.failure_data_for_node("generation_batch").error.message
    assert "still in flight" in refusal or "results are not saved yet" in refusal
    sent = [b for b in batches(pipeline.instance) if b["batch_names"]]
    assert [b["round"] for b in sent] == [1, 2]
    generation_jobs = [
        b for b in pipeline.resources["gemini"].list_batches() if "-generation-" in b.display_name
    ]
    assert len(generation_jobs) == 2, "one job per round"


def budget_pass(pipeline, emulator, budget: float) -> tuple[Ticks, dict | None]:
    """A warm-up fill (3 right answers, so projected costs rest on measured answers), then one
    click with auto_fill for 10 good samples of a model that gets everything wrong. Ticks until
    round 2 is materialized or refused; returns the ticks and round 2's metadata (None: refused)."""
    emulator.set_faults(wrong_rate=0.0)
    pipeline.submit_generation("hard", limit=3, ask="missing")
    ticks = Ticks(pipeline)
    ticks.until(lambda _: len(read_jsonl(pipeline.data / "cot_hard.jsonl")) == 3, "the warm-up's samples")
    emulator.set_faults(wrong_rate=1.0)
    pipeline.submit_generation("hard", limit=10, auto_fill=True, max_cost_usd=budget)
    ticks.until(
        lambda outcome: outcome.alerts or any(b.get("round") == 2 for b in batches(pipeline.instance)),
        "round 2 to be submitted or refused",
    )
    return ticks, next((b for b in batches(pipeline.instance) if b.get("round") == 2), None)


def test_the_budget_counts_every_round_of_the_run_and_stops_the_one_that_would_pass_it(
    pipeline, emulator, sources, data_dir, tmp_path, monkeypatch
):
    """A model that gets everything wrong: round 1 fits the budget, and so would round 2 alone,
    but round 1 + round 2 does not. A first pass with a large budget measures both (the emulator
    is deterministic here: every answer wrong); the second pass, with that budget, stops at round 2."""
    sources("hard")
    pipeline.data = data_dir
    _, probe = budget_pass(pipeline, emulator, budget=100.0)
    first, second = probe["earlier_rounds_cost_usd"], probe["projected_cost_usd"]
    budget = first + 0.99 * second
    assert 0 < second < budget < first + second

    again = tmp_path / "again"
    (again / "hard").mkdir(parents=True)
    (again / "hard" / "source_problems.parquet").write_bytes(
        (data_dir / "hard" / "source_problems.parquet").read_bytes()
    )
    monkeypatch.setenv("COTGEN_DATA_DIR", str(again))
    fresh = start_emulator(tmp_path / "emulator-2")  # its jobs are not the first pass's
    with fresh, dg.instance_for_test() as instance:
        pipeline = Pipeline(instance, fresh.base_url)
        pipeline.data = again
        ticks, round_two = budget_pass(pipeline, fresh, budget=budget)
        assert round_two is None, "round 2 sent nothing"
        [alert] = [a for t in ticks.said for a in t.alerts]
        assert (
            "AUTO-FILL STOPPED at round 2: NOT RETRIED" in alert
            and f"above max_cost_usd ${budget:.2f}" in alert
        )
        assert f"plus ${first:.2f} spent by the earlier rounds of this run of rounds" in alert
        [observation] = [o for t in ticks.said for o in t.observations if o.metadata.get("run_failed")]
        assert observation.asset_key == dg.AssetKey("generation_batch") and observation.partition == "hard"
        assert "max_cost_usd" in observation.metadata["reason"].value
        [refused] = auto_round_runs(instance)
        assert refused.status == dg.DagsterRunStatus.FAILURE and refused.tags[ROUND_TAG] == "2"
        later = ticks.quiet()
        assert not [a for t in later for a in t.alerts] and not [r for t in later for r in t.run_requests]


def test_when_the_rounds_are_used_up_the_sensor_says_so_once(pipeline, emulator, sources, data_dir):
    sources("hard")
    emulator.set_faults(wrong_rate=0.6)
    pipeline.submit_generation("hard", limit=LIMIT, auto_fill=True, max_rounds=1)
    ticks = Ticks(pipeline)
    ended = ticks.until(lambda outcome: outcome.alerts, "the sensor to report the end of the run of rounds")
    [alert] = ended.alerts
    assert "AUTO-FILL ENDED SHORT: rounds used up" in alert and "after 1 round(s)" in alert
    [end] = [o for o in ended.observations if "auto_fill_ended" in o.metadata]
    assert (
        end.metadata["auto_fill_ended"].value == "rounds used up" and end.metadata["rounds_used"].value == 1
    )
    assert end.metadata["num_good"].value < LIMIT
    assert not auto_round_runs(pipeline.instance)
    later = ticks.quiet()
    assert not [a for t in later for a in t.alerts] and not [r for t in later for r in t.run_requests]


# --------------------------------------------------------------------------- under dagster dev

OBSERVATIONS = """
query ($key: AssetKeyInput!, $partition: String!) {
  assetOrError(assetKey: $key) {
    ... on Asset {
      assetObservations(partitions: [$partition]) {
        timestamp
        metadataEntries {
          label
          ... on IntMetadataEntry { intValue }
          ... on FloatMetadataEntry { floatValue }
          ... on TextMetadataEntry { text }
        }
      }
    }
  }
}
"""


def observations(dev, asset: str, partition: str) -> list[dict]:
    """The asset's observations as the UI reads them (GraphQL), oldest first, as label -> value."""
    data = dev.graphql(OBSERVATIONS, {"key": {"path": [asset]}, "partition": partition})
    events = sorted(data["assetOrError"]["assetObservations"], key=lambda e: float(e["timestamp"]))
    return [
        {m["label"]: m.get("intValue", m.get("floatValue", m.get("text"))) for m in e["metadataEntries"]}
        for e in events
    ]


def cotgen_status(platform) -> str:
    """`cotgen status hard` in a shell of its own, pointed at the platform's home, data and API."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("cotgen")), "status", "hard"],
        cwd=ROOT,
        env={
            **os.environ,
            "DAGSTER_HOME": str(platform.dev.home),
            "COTGEN_DATA_DIR": str(platform.data),
            "COTGEN_GEMINI_BASE_URL": platform.emulator.base_url,
            "GEMINI_API_KEY": "",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    [line] = [row for row in done.stdout.splitlines() if row.split()[:2] == ["hard", "generation"]]
    return line


@pytest.mark.e2e
def test_under_dagster_dev_one_click_makes_40_correct_pairs_of_hard_in_at_most_two_rounds(tmp_path):
    """hard, the model wrong 30 % of the time, one click with auto_fill and limit 40. The first job
    is held: `cotgen status` and the batch asset's observations (over GraphQL) show it at 0; once
    released its counts move to done, and the daemon's sensor alone goes on until 40 correct CoT
    samples and their drafts exist, in at most 2 rounds."""
    env = {"COTGEN_SENSOR_INTERVAL_SECONDS": "3"}
    with offline_platform(tmp_path, env, latency=4.0, deadline_seconds=600) as platform:
        instance, dev, emulator = platform.instance, platform.dev, platform.emulator
        emulator.set_faults(wrong_rate=0.3, hold_count=1)
        click = platform.submit_generation("hard", with_sources=True, limit=40, auto_fill=True)
        platform.wait_run(click)
        first = latest_metadata(instance, "generation_batch", "hard")
        total = first["num_requests"]
        assert first["auto_fill"] is True and first["round"] == 1 and total > 40

        def progress() -> list[dict]:
            return [o for o in observations(dev, "generation_batch", "hard") if "requests_done" in o]

        [held] = wait_for(progress, timeout=platform.remaining(), message="a progress observation")
        assert (held["job_state"], held["requests_done"], held["requests_total"]) == (
            "JOB_STATE_PENDING",
            0,
            total,
        )
        line = cotgen_status(platform)
        assert "JOB_STATE_PENDING" in line and f" 0/{total} " in line and "1 of 3, auto_fill" in line

        emulator.release()
        ended = wait_for(
            lambda: [o for o in observations(dev, "generation_batch", "hard") if "auto_fill_ended" in o],
            timeout=platform.remaining(),
            interval=2,
            message="the sensor to say the run of rounds ended",
        )
        assert [e["auto_fill_ended"] for e in ended] == ["limit reached"] and ended[0]["rounds_used"] <= 2
        good = [r for r in read_jsonl(platform.data / "cot_hard.jsonl") if r["correct"]]
        assert len(good) >= 40 and ended[0]["num_good"] == len(good)
        cod = platform.wait_samples(instance, "cod_samples", "hard", len(good))
        drafted = {r["id"] for r in read_jsonl(platform.data / "cod_hard.jsonl") if r["correct"]}
        assert drafted == {r["id"] for r in good} and cod["num_samples"] == len(good)

        round_one = [o for o in progress() if o["submission_id"] == first["submission_id"]]
        done = [o["requests_done"] for o in round_one]
        assert done[0] == 0 and done[-1] == total and done == sorted(done), done
        assert round_one[-1]["job_state"] == "JOB_STATE_SUCCEEDED"
        sent = [b for b in batches(instance) if b["batch_names"]]
        assert 1 <= len(sent) <= 2 and [b["round"] for b in sent] == list(range(1, len(sent) + 1))
        runs = instance.get_runs()
        assert [r.run_id for r in runs if "dagster/sensor_name" not in r.tags] == [click], "no further click"
        assert len([r for r in runs if r.tags.get(ROUND_TAG)]) == len(sent) - 1
        line = cotgen_status(platform)
        assert line.split()[2] == "saved" and f" {len(good)}/40 " in line


def test_cotgen_cancel_ends_the_run_of_rounds_and_says_so_once(
    tmp_path, emulator, sources, data_dir, monkeypatch, capsys
):
    """Jobs held, one click with auto_fill, then `cotgen cancel` (against an on-disk instance found
    through DAGSTER_HOME, as a user's shell finds it): the sensor saves what the round answered and
    ends the run of rounds, said once; it does not send the same requests again as round 2."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    sources("medium")
    emulator.set_faults(hold=True)
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        pipeline = Pipeline(instance, emulator.base_url)
        pipeline.submit_generation("medium", limit=10, auto_fill=True, max_rounds=3, max_cost_usd=5)
        [round_one] = [b for b in batches(instance, "medium") if b["batch_names"]]

        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("COTGEN_GEMINI_BASE_URL", emulator.base_url)
        monkeypatch.delenv("GEMINI_API_KEY", raising=False)
        assert cli.main(["cancel", "medium", "generation"]) == 0
        assert f"cancelled {round_one['batch_names']}" in capsys.readouterr().out

        said = []

        def ended():
            data = pipeline.tick()
            said.append(data)
            for request in data.run_requests:
                pipeline.run(request, raise_on_error=False)
            ends = [e for e in data.asset_events if "auto_fill_ended" in e.metadata]
            return ends or len([b for b in batches(instance, "medium") if b["batch_names"]]) > 1

        assert wait_for(ended, timeout=120, interval=0.05, message="the sensor to end the run of rounds")
        sent = [b for b in batches(instance, "medium") if b["batch_names"]]
        assert [b["round"] for b in sent] == [1], "no round 2 after the cancel"
        [end] = [e for e in said[-1].asset_events if "auto_fill_ended" in e.metadata]
        assert end.metadata["auto_fill_ended"].value == "cancelled" and end.metadata["rounds_used"].value == 1
        assert "AUTO-FILL CANCELLED" in said[-1].skip_message and "round 1" in said[-1].skip_message
        assert pipeline.metadata("generation_results", "medium")["job_state"] == "JOB_STATE_CANCELLED"
        later = [pipeline.tick() for _ in range(3)]
        assert not [e for t in later for e in t.asset_events if "auto_fill_ended" in e.metadata], "said once"
        assert not [r for t in said + later for r in t.run_requests if r.job_name == "generation_batch_job"]
        assert [b["round"] for b in batches(instance, "medium") if b["batch_names"]] == [1]
        assert not auto_round_runs(instance)


def test_cotgen_cancel_while_a_round_is_ingested_ends_the_run_of_rounds(
    tmp_path, emulator, sources, data_dir, monkeypatch, capsys
):
    """The round's job has ended and its results run is about to save it when `cotgen cancel` comes:
    nothing is left to cancel at the API, but the user asked the rounds to stop, so the sensor saves
    the round and ends the run of rounds instead of launching round 2."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    sources("medium")
    emulator.set_faults(wrong_rate=1.0)  # round 1 gets nothing right: without the cancel, round 2 follows
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        pipeline = Pipeline(instance, emulator.base_url)
        pipeline.submit_generation("medium", limit=10, auto_fill=True, max_rounds=3, max_cost_usd=5)
        [round_one] = [b for b in batches(instance, "medium") if b["batch_names"]]
        [results_run] = [r for r in pipeline.tick_until_launch() if r.job_name == "generation_results_job"]

        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("COTGEN_GEMINI_BASE_URL", emulator.base_url)
        monkeypatch.delenv("GEMINI_API_KEY", raising=False)
        assert cli.main(["cancel", "medium", "generation"]) == 0
        said = capsys.readouterr().out
        assert "nothing to cancel" in said and "no round 2" in said, said

        assert pipeline.run(results_run).success
        ticks = [pipeline.tick() for _ in range(3)]
        assert not [r for t in ticks for r in t.run_requests if r.job_name == "generation_batch_job"]
        [end] = [e for t in ticks for e in t.asset_events if "auto_fill_ended" in e.metadata]
        assert end.metadata["auto_fill_ended"].value == "cancelled"
        assert [b["round"] for b in batches(instance, "medium") if b["batch_names"]] == [1]
        assert round_one["batch_names"]
