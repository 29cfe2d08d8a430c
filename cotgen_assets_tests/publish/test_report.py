"""The dataset report against the records: every figure recomputed here from the JSONL files.

One in-process chain feeds the module: easy whose first answers are all truncated (failed but
paid for), then a `fill` retries them through to CoD; medium through CoT only; hard untouched.
"""

import base64
import io
import re

import dagster as dg
import pytest

from cotgen_assets.core.scenarios import DEFAULT_SCENARIOS_FILE
from cotgen_assets.core.stages import GENERATION
from cotgen_assets.core.storage import data_dir
from cotgen_assets.defs.assets.publishing import dataset_report
from cotgen_assets.defs.assets.sources import source_problems
from cotgen_assets.publish import previews, report
from cotgen_assets_tests.harness.pipeline import Ticks, batches, chain_pipeline, read_jsonl
from cotgen_assets_tests.harness.publish import table_rows
from cotgen_assets_tests.harness.samples import cot_record, write_jsonl

pytestmark = pytest.mark.pipeline
UI_INLINE_MARKDOWN = (
    1000  # Dagster's UI shows shorter markdown metadata inline, longer behind [Show Markdown]
)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    with chain_pipeline(base) as (pipeline, emulator, _):
        pipeline.materialize([source_problems], "easy")
        emulator.set_faults(truncate_rate=1.0)  # every first try is cut short, and paid for
        pipeline.submit_generation("easy", limit=8, ask="missing")
        pipeline.drain()
        emulator.set_faults(truncate_rate=0.0)
        pipeline.submit_generation("easy", limit=8, ask="missing")  # fill: retries what failed
        pipeline.drain()

        pipeline.materialize([source_problems], "medium")
        pipeline.submit_generation("medium", limit=3, ask="missing")
        [request] = pipeline.tick_until_launch()
        assert request.job_name == "generation_results_job"
        assert pipeline.run(request).success  # CoT saved; its summarization stays in flight

        result = dg.materialize([dataset_report], instance=pipeline.instance)
        metadata = {
            k: v.value
            for k, v in result.asset_materializations_for_node("dataset_report")[0].metadata.items()
        }
        yield base / "data", metadata


def expected(data, scenario: str) -> dict:
    """The figures of one scenario, recomputed from its files without the report's code."""
    cot = read_jsonl(data / f"cot_{scenario}.jsonl")
    cod = read_jsonl(data / f"cod_{scenario}.jsonl")
    spent = 0.0
    for summary in (data / scenario / "submissions").glob("*/summary.json"):
        spent += sum(o["cost_usd"] for o in read_jsonl(summary.with_name("outcomes.jsonl")))
    gen = [r["generation"] for r in cot]
    summ = [r["summarization"] for r in cod]
    return {
        "cot_samples": len(cot),
        "cot_correct": sum(r["correct"] is True for r in cot),
        "cot_input": sum(g["usage"]["input_tokens"] for g in gen),
        "cot_thinking": sum(g["usage"]["thinking_tokens"] for g in gen),
        "cot_output": sum(g["usage"]["output_tokens"] for g in gen),
        "cot_cost": sum(g["cost_usd"] for g in gen),
        "cod_samples": len(cod),
        "cod_correct": sum(r["correct"] is True for r in cod),
        "cod_agreeing": sum(r["agrees_with_cot"] is True for r in cod),
        "cod_input": sum(s["usage"]["input_tokens"] for s in summ),
        "cod_thinking": sum(s["usage"]["thinking_tokens"] for s in summ),
        "cod_output": sum(s["usage"]["output_tokens"] for s in summ),
        "cod_cost": sum(s["cost_usd"] for s in summ),
        "thought_of_cod": sum(r["generation"]["usage"]["thinking_tokens"] for r in cod),
        "spent": spent,
    }


def test_the_chain_left_what_the_report_must_cope_with(chain):
    data, _ = chain
    easy = expected(data, "easy")
    assert easy["cot_samples"] == easy["cod_samples"] == 8
    assert easy["spent"] > easy["cot_cost"] + easy["cod_cost"], "some failed requests were paid for"
    medium = expected(data, "medium")
    assert medium["cot_samples"] == 3 and medium["cod_samples"] == 0
    assert not (data / "cot_hard.jsonl").exists()


@pytest.mark.parametrize("scenario", ["easy", "medium", "hard"])
def test_scenario_figures_match_the_records(chain, scenario):
    data, _ = chain
    want = expected(data, scenario)
    got = {f.scenario: f for f in report.all_figures()}[scenario]
    assert (got.cot.num_samples, got.cod.num_samples) == (want["cot_samples"], want["cod_samples"])
    assert (got.cot.input_tokens, got.cot.thinking_tokens, got.cot.output_tokens) == (
        want["cot_input"],
        want["cot_thinking"],
        want["cot_output"],
    )
    assert (got.cod.input_tokens, got.cod.thinking_tokens, got.cod.output_tokens) == (
        want["cod_input"],
        want["cod_thinking"],
        want["cod_output"],
    )
    assert got.cot.cost_usd == pytest.approx(want["cot_cost"])
    assert got.cod.cost_usd == pytest.approx(want["cod_cost"])
    assert got.spent_usd == pytest.approx(want["spent"])
    if want["cot_samples"]:
        assert got.cot.accuracy == pytest.approx(want["cot_correct"] / want["cot_samples"])
        assert got.cot.cost_per_1000_usd == pytest.approx(1000 * want["cot_cost"] / want["cot_samples"])
    if want["cod_samples"]:
        assert got.cod.accuracy == pytest.approx(want["cod_correct"] / want["cod_samples"])
        assert got.cod.answer_agreement == pytest.approx(want["cod_agreeing"] / want["cod_samples"])
        assert got.cod.draft_to_thought_token_ratio == pytest.approx(
            want["cod_output"] / want["thought_of_cod"]
        )
        assert got.cod.cost_per_1000_usd == pytest.approx(1000 * want["cod_cost"] / want["cod_samples"])


def test_asset_metadata_totals_match_the_records(chain):
    data, metadata = chain
    per = [expected(data, s) for s in ("easy", "medium", "hard")]

    def total(key):
        return sum(p[key] for p in per)

    assert metadata["num_cot_samples"] == total("cot_samples") == 11
    assert metadata["num_cod_samples"] == total("cod_samples") == 8
    assert metadata["input_tokens"] == total("cot_input") + total("cod_input")
    assert metadata["thinking_tokens"] == total("cot_thinking") + total("cod_thinking")
    assert metadata["output_tokens"] == total("cot_output") + total("cod_output")
    assert metadata["cost_usd"] == pytest.approx(total("cot_cost") + total("cod_cost"))
    assert metadata["spent_usd"] == pytest.approx(total("spent"))
    assert metadata["cot_accuracy"] == pytest.approx(total("cot_correct") / total("cot_samples"))
    assert metadata["answer_agreement"] == pytest.approx(total("cod_agreeing") / total("cod_samples"))
    assert metadata["draft_to_thought_token_ratio"] == pytest.approx(
        total("cod_output") / total("thought_of_cod")
    )
    assert metadata["cot_cost_per_1000_samples_usd"] == pytest.approx(
        1000 * total("cot_cost") / total("cot_samples")
    )
    assert set(metadata["by_scenario"]) == {"easy", "medium", "hard"}


def test_markdown_table_reads_like_the_records(chain):
    data, metadata = chain
    assert len(metadata["report"]) < UI_INLINE_MARKDOWN, "the UI shows `report` inline, not behind a button"
    rows = table_rows(metadata["report"])
    costs = table_rows(metadata["costs"])
    easy, medium = expected(data, "easy"), expected(data, "medium")
    assert rows["header"] == ["**easy**", "**medium**", "**hard**", "**all**"]
    assert rows["CoT samples"] == ["8", "3", "0", "11"]
    assert rows["CoD samples"] == ["8", "0", "0", "8"]
    assert costs["header"] == rows["header"]
    assert costs["CoT thinking tokens"][0] == f"{easy['cot_thinking']:,}"
    assert costs["CoT cost (USD)"][1] == f"${medium['cot_cost']:,.4f}"
    assert rows["CoD accuracy"][1:3] == ["–", "–"], "no CoD samples: no accuracy, not 0%"
    assert (
        rows["CoD-to-CoT token ratio (draft / thought)"][0]
        == f"{easy['cod_output'] / easy['thought_of_cod']:.3f}"
    )
    assert rows["Spent, failed requests and previews included (USD)"][0] == f"${easy['spent']:,.4f}"


def test_picture_is_a_png_on_disk_and_embedded_in_the_metadata(chain):
    import matplotlib.image

    data, metadata = chain
    path = data / "report" / "dataset_report.png"
    assert metadata["picture_path"] == str(path)
    png = path.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 800
    assert pixels.std() > 0.05, "the picture is not blank"
    embedded = re.fullmatch(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", metadata["picture"])
    assert embedded and base64.b64decode(embedded.group(1)) == png
    assert "![dataset report](dataset_report.png)" in path.with_suffix(".md").read_text()


def test_report_of_an_empty_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("COTGEN_DATA_DIR", str(tmp_path / "empty"))
    built = report.build_report()
    assert [f.cot.num_samples for f in built.figures] == [0, 0, 0]
    assert table_rows(built.table)["CoT accuracy"] == ["–"] * 4
    assert len(built.table) < UI_INLINE_MARKDOWN, "the UI shows `report` inline, not behind a button"
    assert built.picture == data_dir() / "report" / "dataset_report.png" and built.picture.exists()


def test_previews_show_excerpts_not_whole_texts():
    thought = "First I read the problem. " + "Then I compute a long thing. " * 40 + "So the answer is 72."
    record = {
        "id": "easy-0",
        "question": "How many clips? " * 20,
        "answer": "72",
        "predicted_answer": "72",
        "correct": True,
        "cot": f"<thought>{thought}</thought>\nThe answer is 72.",
        "generation": {"usage": {"thinking_tokens": 321}, "cost_usd": 0.001, "batch": "batches/x"},
    }
    [row], columns = previews.preview_rows([record], GENERATION)
    assert columns == [
        "id",
        "sample",
        "question",
        "thought (excerpt)",
        "thinking tokens",
        "predicted / reference",
        "correct",
        "cost_usd",
    ]
    text = row["thought (excerpt)"]
    assert text.startswith("First I read the problem.") and text.endswith("So the answer is 72.")
    assert " … " in text and len(text) < 160 and "<thought>" not in text
    draft = "<draft>" + "\n".join(f"step {i}: x = {i}" for i in range(9)) + "</draft>\n\\boxed{8}"
    assert previews.draft_excerpt(draft) == (
        "step 0: x = 0 | step 1: x = 1 | step 2: x = 2 | step 3: x = 3 | … (+5 steps)"
    )


def test_the_report_shows_each_round_and_the_money_to_the_target(pipeline, emulator, sources, data_dir):
    """hard at a 40 % wrong-answer rate, auto_fill to 10 good samples: per round the estimate, the
    ask, what came back and what the asks beyond the missing cost; per scenario the samples over
    the limit and what was spent per 1,000 correct CoT+CoD pairs. Each figure recomputed from files."""

    sources("hard")
    emulator.set_faults(wrong_rate=0.4)
    pipeline.submit_generation("hard", limit=10, auto_fill=True)
    ticks = Ticks(pipeline)
    ticks.until(
        lambda o: [e for e in o.observations if "auto_fill_ended" in e.metadata], "the end of the rounds"
    )
    ticks.until(lambda o: not o.run_requests and not o.messages, "the last drafts")  # nothing in flight
    result = dg.materialize([dataset_report], instance=pipeline.instance)
    metadata = {
        k: v.value for k, v in result.asset_materializations_for_node("dataset_report")[0].metadata.items()
    }

    cot = read_jsonl(data_dir / "cot_hard.jsonl")
    cod = read_jsonl(data_dir / "cod_hard.jsonl")
    sent = [b for b in batches(pipeline.instance) if b["batch_names"]]
    hard = {f.scenario: f for f in report.all_figures()}["hard"]
    assert [r.submission_id for r in hard.rounds] == [b["submission_id"] for b in sent]
    extra_cost = 0.0
    for got, batch in zip(hard.rounds, sent):
        folder = data_dir / "hard" / "submissions" / f"generation-{batch['submission_id']}"
        cost = sum(o["cost_usd"] for o in read_jsonl(folder / "outcomes.jsonl"))
        correct = sum(r["correct"] for r in cot if r["generation"]["submission"] == batch["submission_id"])
        assert (got.round, got.asked, got.missing) == (
            batch["round"],
            batch["num_requests"],
            batch["num_missing"],
        )
        assert got.estimate == pytest.approx(batch["accuracy_estimate"])
        assert (got.correct, got.accuracy) == (correct, pytest.approx(correct / batch["num_requests"]))
        assert got.extra_asks == batch["num_requests"] - batch["num_missing"] > 0, "the planner asked ahead"
        assert got.cost_usd == pytest.approx(cost)
        assert got.extra_cost_usd == pytest.approx(cost * got.extra_asks / got.asked)
        extra_cost += got.extra_cost_usd
    good = sum(r["correct"] for r in cot)
    pairs = sum(r["correct"] and r["agrees_with_cot"] for r in cod)
    assert hard.over_limit == good - 10 >= 0
    assert hard.num_pairs == pairs == good, "every correct CoT got a correct, agreeing draft"
    spent = sum(
        o["cost_usd"]
        for p in (data_dir / "hard" / "submissions").glob("*/outcomes.jsonl")
        for o in read_jsonl(p)
    )
    assert hard.cost_per_1000_pairs_usd == pytest.approx(1000 * spent / pairs)

    target, per_round = metadata["rounds"].split("\n\n")
    rows = table_rows(target)
    assert rows["Generation rounds (submissions)"][2] == str(len(sent))
    assert rows["Correct CoT samples over the limit (kept)"][2] == f"{good - 10:,}"
    assert rows["Cost of asks beyond the missing (USD)"][2] == f"${extra_cost:,.4f}"
    assert rows["Spent per 1,000 correct CoT+CoD pairs (USD)"][2] == f"${1000 * spent / pairs:,.4f}"
    rounds = [line for line in per_round.splitlines() if line.startswith("| hard |")]
    assert len(rounds) == len(sent) and rounds[0].startswith("| hard | 1 (fill) |")
    assert metadata["generation_rounds"] == len(sent) and metadata["num_correct_pairs"] == pairs


def over_limit_row(table: str) -> list[str]:
    [row] = [line for line in table.splitlines() if "Correct CoT samples over the limit (kept)" in line]
    return [cell.strip() for cell in row.strip("|").split("|")[1:]]


def test_the_all_column_sums_each_scenarios_samples_over_its_limit(tmp_path, monkeypatch, instance):
    """easy and hard 5 over a limit of 3 each, medium far under its 1,000: all is 10, not 0."""
    monkeypatch.setenv("COTGEN_DATA_DIR", str(tmp_path / "data"))
    text = DEFAULT_SCENARIOS_FILE.read_text().replace("    limit: 1000\n", "    limit: 3\n")
    medium = text.index("  medium:")
    text = text[:medium] + text[medium:].replace("limit: 3", "limit: 1000", 1)
    (tmp_path / "scenarios.yaml").write_text(text)
    monkeypatch.setenv("COTGEN_SCENARIOS_FILE", str(tmp_path / "scenarios.yaml"))
    for scenario in ("easy", "hard"):
        records = [cot_record(f"{scenario}-{row}") for row in range(8)]
        write_jsonl(tmp_path / "data" / f"cot_{scenario}.jsonl", records)
    write_jsonl(tmp_path / "data" / "cot_medium.jsonl", [cot_record("medium-1")])

    result = dg.materialize([dataset_report], instance=instance)
    table = result.asset_materializations_for_node("dataset_report")[0].metadata["rounds"].value
    assert over_limit_row(table) == ["5", "0", "5", "10"]


def test_the_violin_from_token_counts_is_matplotlibs_violin_over_every_sample():
    """The picture keeps how many samples had each length, not every sample: the same curve."""
    import random

    import numpy as np
    from matplotlib import cbook

    from cotgen_assets.core.quality import TokenCounts
    from cotgen_assets.publish.report import violin_stats

    rng = random.Random(5)
    for samples in (
        [12],
        [4, 4, 4],
        [rng.choice([rng.randint(1, 60), rng.randint(300, 9000)]) for _ in range(2_000)],
    ):
        every_sample = cbook.violin_stats([samples], ("GaussianKDE", None), points=100)[0]
        from_counts = violin_stats(TokenCounts(samples))
        for key, value in every_sample.items():
            assert np.allclose(value, from_counts[key]), key
