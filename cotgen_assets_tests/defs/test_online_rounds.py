"""Online rounds: an `auto_fill` round of at most `online_max_requests` requests is answered on the
Flex tier through generateContent instead of a batch job, with the same records, and no answer
paid twice when a round is killed half-way and run again. In-process, against the real emulator."""

import pytest

from cotgen_assets.core.scenarios import get_scenario
from cotgen_assets.defs.status import cost_cell, status_screen
from cotgen_assets.publish.report import scenario_figures
from cotgen_assets_tests.harness.pipeline import Ticks, batches, read_jsonl

pytestmark = pytest.mark.pipeline
LIMIT = 20
GENERATE = ":generateContent"


def answered_online(emulator) -> list[dict]:
    return [c for c in emulator.calls() if c["path"].endswith(GENERATE) and c["status"] == 200]


def run_rounds_to_the_end(pipeline):
    ticks = Ticks(pipeline)
    done = ticks.until(
        lambda outcome: [o for o in outcome.observations if "auto_fill_ended" in o.metadata],
        "the sensor to say the run of rounds ended",
    )
    ticks.quiet()  # the last round's drafts
    pipeline.drain()
    return done


def test_first_round_batch_last_round_online_reaches_the_limit_with_drafts(
    pipeline, emulator, sources, data_dir
):
    sources("hard")
    emulator.set_faults(wrong_rate=0.3)
    # ask="missing": each round asks exactly what is missing, so round 1 (20) is a batch, the later
    # (a handful) go online
    pipeline.submit_generation(
        "hard", limit=LIMIT, ask="missing", auto_fill=True, max_rounds=8, online_max_requests=10
    )
    done = run_rounds_to_the_end(pipeline)
    [end] = [o for o in done.observations if "auto_fill_ended" in o.metadata]
    assert end.metadata["auto_fill_ended"].value == "limit reached"

    rounds = [b for b in batches(pipeline.instance) if b["batch_names"]]
    assert len(rounds) >= 2
    assert rounds[0]["num_requests"] == LIMIT and rounds[0]["batch_names"][0].startswith("batches/")
    assert all(name.startswith("online:flex:") for name in rounds[-1]["batch_names"])
    cot = read_jsonl(data_dir / "cot_hard.jsonl")
    good = [r for r in cot if r["correct"]]
    assert len(good) >= LIMIT
    assert [r for r in cot if r["generation"]["batch"].startswith("online:flex:")]
    online_rounds = [b for b in rounds if b["batch_names"][0].startswith("online:")]
    assert len(answered_online(emulator)) == sum(b["num_requests"] for b in online_rounds)
    cod = read_jsonl(data_dir / "cod_hard.jsonl")
    assert sorted(r["id"] for r in cod) == sorted(r["id"] for r in good)


def test_a_round_killed_half_way_and_run_again_pays_for_no_answer_twice(
    pipeline, emulator, sources, data_dir
):
    sources("hard")
    emulator.set_faults(online_fail_after=3)  # the 4th answer never comes: the run fails
    config = {"limit": 6, "ask": "missing", "auto_fill": True, "online_max_requests": 10}
    killed = pipeline.submit_generation("hard", raise_on_error=False, **config)
    assert not killed.success
    assert len(answered_online(emulator)) == 3

    emulator.set_faults(online_fail_after=0)
    assert pipeline.submit_generation("hard", **config).success
    pipeline.drain()
    calls = answered_online(emulator)
    assert len(calls) == 6, "each of the round's 6 requests answered (and paid) once"
    cot = read_jsonl(data_dir / "cot_hard.jsonl")
    assert len(cot) == 6 and all(r["generation"]["batch"].startswith("online:flex:") for r in cot)
    # spend: the online round apart from batch spend, in the report and in `cotgen status`
    online_usd = sum(r["generation"]["cost_usd"] for r in cot)
    figures = scenario_figures(get_scenario("hard"))
    assert online_usd > 0 and figures.online_usd == pytest.approx(online_usd)
    [line] = [
        s
        for s in status_screen(pipeline.instance, pipeline.resources["gemini"], [get_scenario("hard")])
        if s.stage == "generation"
    ]
    assert f"online ${online_usd:.4f}" in cost_cell(line)


def test_flex_shedding_too_much_sends_the_rest_to_a_batch_job(
    pipeline, emulator, sources, data_dir, monkeypatch
):
    sources("hard")
    monkeypatch.setenv("COTGEN_ONLINE_MAX_SHED_RATE", "0.2")
    emulator.set_faults(flex_shed_rate=0.6)
    assert pipeline.submit_generation(
        "hard", limit=8, ask="missing", auto_fill=True, online_max_requests=10
    ).success
    [meta] = [b for b in batches(pipeline.instance) if b["batch_names"]]
    names = meta["batch_names"]
    assert any(n.startswith("online:flex:") for n in names) and any(n.startswith("batches/") for n in names)
    pipeline.drain()
    cot = read_jsonl(data_dir / "cot_hard.jsonl")
    assert len(cot) == 8 and len({r["id"] for r in cot}) == 8
    kinds = {r["generation"]["batch"].split(":")[0].split("/")[0] for r in cot}
    assert kinds == {"online", "batches"}
