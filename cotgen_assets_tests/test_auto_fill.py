"""`auto_fill`: one click, then the sensor submits fill rounds itself until the scenario reaches its
limit, its rounds are used up, or the budget of the whole run of rounds would be passed; the end
is said once. In-process: the real emulator at a known wrong-answer rate, sensor ticks evaluated
as the daemon would (`check_submissions`, the sensor's decision), each run it asks for executed."""

import dagster as dg
import orjson

from cotgen_assets.defs.jobs import ROUND_TAG, ROUNDS_TAG
from cotgen_assets.defs.sensors import check_submissions
from cotgen_assets_tests.dagster_harness import wait_for
from cotgen_assets_tests.emulator_harness import start_emulator
from cotgen_assets_tests.pipeline_harness import Pipeline, read_jsonl

LIMIT = 20


def batches(instance, partition: str = "hard") -> list[dict]:
    """Every generation_batch materialization of the partition, oldest first."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("generation_batch"), asset_partitions=[partition]),
        limit=100,
    ).records
    return [{k: v.value for k, v in r.asset_materialization.metadata.items()} for r in reversed(records)]


class Ticks:
    """The sensor's decisions, tick after tick, with every run it asks for executed at once."""

    def __init__(self, pipeline):
        self.pipeline, self.cursor, self.said = pipeline, {}, []

    def tick(self):
        outcome = check_submissions(
            self.pipeline.instance, self.pipeline.resources["gemini"], ["hard"], self.cursor
        )
        self.said.append(outcome)
        for request in outcome.run_requests:
            self.pipeline.run(request, raise_on_error=False)
        return outcome

    def until(self, condition, message: str):
        """Tick until `condition(outcome)` holds; that tick's outcome."""

        def check():
            outcome = self.tick()
            return outcome if condition(outcome) else None

        return wait_for(check, timeout=120, interval=0.05, message=message)

    def quiet(self, ticks: int = 3) -> list:
        """A few more ticks; what they said."""
        return [self.tick() for _ in range(ticks)]


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
