"""The dataset report against the records: every figure recomputed here from the JSONL files.

One in-process chain feeds the module: easy whose first answers are all truncated (failed but
paid for), then a `fill` retries them through to CoD; medium through CoT only; hard untouched.
"""

import base64
import io
import re

import dagster as dg
import pytest

from cotgen_assets.core.stages import GENERATION
from cotgen_assets.core.storage import data_dir
from cotgen_assets.defs.assets.publishing import dataset_report
from cotgen_assets.defs.assets.sources import source_problems
from cotgen_assets.publish import previews, report
from cotgen_assets_tests.emulator_harness import start_emulator
from cotgen_assets_tests.pipeline_harness import Pipeline, read_jsonl


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    emulator = start_emulator(base / "emulator", latency=0.0)
    with pytest.MonkeyPatch.context() as env, dg.instance_for_test() as instance:
        env.setenv("COTGEN_DATA_DIR", str(base / "data"))
        pipeline = Pipeline(instance, emulator.base_url)
        try:
            pipeline.materialize([source_problems], "easy")
            emulator.set_faults(truncate_rate=1.0)  # every first try is cut short, and paid for
            pipeline.submit_generation("easy", limit=8)
            pipeline.drain()
            emulator.set_faults(truncate_rate=0.0)
            pipeline.submit_generation("easy", limit=8)  # fill: retries what failed
            pipeline.drain()

            pipeline.materialize([source_problems], "medium")
            pipeline.submit_generation("medium", limit=3)
            [request] = pipeline.tick_until_launch()
            assert request.job_name == "generation_results_job"
            assert pipeline.run(request).success  # CoT saved; its summarization stays in flight

            result = dg.materialize([dataset_report], instance=instance)
            metadata = {
                k: v.value
                for k, v in result.asset_materializations_for_node("dataset_report")[0].metadata.items()
            }
            yield base / "data", metadata
        finally:
            emulator.stop()


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


def table_rows(markdown: str) -> dict[str, list[str]]:
    """Label -> cells of a markdown table; the header row under the key "header"."""
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines()]
    return {"header": lines[0][1:]} | {cells[0]: cells[1:] for cells in lines[2:]}


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
    rows = table_rows(metadata["report"])
    easy, medium = expected(data, "easy"), expected(data, "medium")
    assert rows["header"] == ["**easy**", "**medium**", "**hard**", "**all**"]
    assert rows["CoT samples"] == ["8", "3", "0", "11"]
    assert rows["CoD samples"] == ["8", "0", "0", "8"]
    assert rows["CoT thinking tokens"][0] == f"{easy['cot_thinking']:,}"
    assert rows["CoT cost (USD)"][1] == f"${medium['cot_cost']:,.4f}"
    assert rows["CoD accuracy"][1:3] == ["–", "–"], "no CoD samples: no accuracy, not 0%"
    assert (
        rows["CoD-to-CoT token ratio (draft / thought)"][0]
        == f"{easy['cod_output'] / easy['thought_of_cod']:.3f}"
    )
    assert rows["Spent, failed requests included (USD)"][0] == f"${easy['spent']:,.4f}"


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
