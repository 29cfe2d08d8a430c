"""The Hugging Face export and push, against a real run of two scenarios.

One in-process chain (emulator, sensor ticks): `easy` first made with decontamination switched
off, so it holds a sample of `easy-20`, a GSM8K-test look-alike; then source_problems is made again
with decontamination on, which leaves easy-20 out, as a lead would once it exists. One CoT answer is
planted wrong. Every expected row is counted here from the JSONL files and the rules, not by the
export's code. The Hub is a tiny local HTTP stand-in that records what the client sends.
"""

import json
import os
import re
import shutil
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import huggingface_hub
import orjson
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cotgen_assets.core import prompts
from cotgen_assets.core.problems import PassFigures
from cotgen_assets.core.records import PROBLEM_FIELDS
from cotgen_assets.core.scenarios import DEFAULT_SCENARIOS_FILE
from cotgen_assets.core.stages import SUMMARIZATION
from cotgen_assets.core.storage import DamagedFile, atomic_write
from cotgen_assets.defs.assets.publishing import hf_dataset
from cotgen_assets.defs.assets.sources import source_problems
from cotgen_assets.defs.locks import samples_lock
from cotgen_assets.defs.resources import HubResource
from cotgen_assets.publish import export, hub, parquet, report, selection
from cotgen_assets.publish.card import (
    LABEL_EXPORTED,
    LABEL_FILES,
    card_body,
    dataset_card,
)
from cotgen_assets.publish.exported import CardFacts, MadeWith, ScenarioFacts
from cotgen_assets_tests.harness.dagster import wait_for
from cotgen_assets_tests.harness.http import JsonHandler, LocalHttpServer
from cotgen_assets_tests.harness.pipeline import chain_pipeline, read_jsonl
from cotgen_assets_tests.harness.publish import FAKE_TOKEN, expected_ids, load, table_rows
from cotgen_assets_tests.harness.samples import cot_record, write_jsonl

pytestmark = pytest.mark.pipeline

CONTAMINATED = "easy-20"  # shares a 13-word run with a GSM8K test problem
PLANTED = "easy-3"  # its CoT answer is made wrong after the run


def materialize_export(instance, token: str | None = None, **config) -> dg.ExecuteInProcessResult:
    hub_resource = HubResource(token=dg.EnvVar("HF_TOKEN")) if token else HubResource()
    return dg.materialize(
        [hf_dataset],
        instance=instance,
        resources={"hub": hub_resource},
        run_config={"ops": {"hf_dataset": {"config": config}}},
        raise_on_error=False,
    )


def export_metadata(result) -> dict:
    [materialization] = result.asset_materializations_for_node("hf_dataset")
    return {k: v.value for k, v in materialization.metadata.items()}


def plant_wrong_answer(path: Path, sample_id: str) -> None:
    records = read_jsonl(path)
    for record in records:
        if record["id"] == sample_id:
            record["predicted_answer"], record["correct"] = "-1", False
    with atomic_write(path) as handle:
        handle.write(b"".join(orjson.dumps(r) + b"\n" for r in records))


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    opted_out = base / "scenarios-no-decontamination.yaml"
    text = DEFAULT_SCENARIOS_FILE.read_text()
    opted_out.write_text(text.replace("    suffix: easy\n", "    suffix: easy\n    decontaminate: []\n", 1))
    with chain_pipeline(base) as (pipeline, _, env):
        env.setenv("COTGEN_SCENARIOS_FILE", str(opted_out))
        env.delenv("COTGEN_HF_REPO", raising=False)
        env.delenv("HF_TOKEN", raising=False)
        for scenario, limit in (("easy", 24), ("hard", 4)):
            pipeline.materialize([source_problems], scenario)
            pipeline.submit_generation(scenario, limit=limit, ask="missing")
        pipeline.drain()
        env.setenv("COTGEN_SCENARIOS_FILE", str(DEFAULT_SCENARIOS_FILE))
        pipeline.materialize([source_problems], "easy")  # decontaminated now: easy-20 out
        plant_wrong_answer(base / "data" / "cot_easy.jsonl", PLANTED)
        result = materialize_export(pipeline.instance)
        assert result.success
        yield base / "data", pipeline.instance, pipeline, export_metadata(result)


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_the_chain_left_a_contaminated_and_a_wrong_sample(chain):
    data, *_ = chain
    cot = {r["id"]: r for r in read_jsonl(data / "cot_easy.jsonl")}
    cod = {r["id"] for r in read_jsonl(data / "cod_easy.jsonl")}
    assert CONTAMINATED in cot and CONTAMINATED in cod, "made while easy was not decontaminated"
    assert cot[PLANTED]["correct"] is False and PLANTED in cod
    clean = pq.read_table(data / "easy" / "source_problems.parquet")["problem_id"].to_pylist()
    assert CONTAMINATED not in clean and PLANTED in clean
    saved = json.loads((data / "easy" / "decontamination.json").read_text())
    assert CONTAMINATED in saved["contaminated_ids"]


@pytest.mark.parametrize(
    ("config", "split"), [("cot", "easy"), ("cod", "hard"), ("cod", "easy"), ("cot", "hard")]
)
def test_load_dataset_reads_exactly_the_expected_rows(chain, tmp_path, config, split):
    data, *_ = chain
    rows = load(data / "export", config, split, tmp_path / "cache")
    want = expected_ids(data, split)
    assert rows["id"] == want and len(want) == (22 if split == "easy" else 4)
    assert CONTAMINATED not in want and PLANTED not in want
    records = {r["id"]: r for r in read_jsonl(data / f"{config}_{split}.jsonl")}
    assert rows.to_list() == [records[i] for i in want], "every field round-trips unchanged"


def test_both_configs_hold_the_same_ids_and_metadata_counts_them(chain):
    data, _, _, metadata = chain
    for split in ("easy", "hard"):
        cot = pq.read_table(data / "export" / "data" / "cot" / f"{split}.parquet")["id"].to_pylist()
        cod = pq.read_table(data / "export" / "data" / "cod" / f"{split}.parquet")["id"].to_pylist()
        assert cot == cod == expected_ids(data, split)
    assert metadata["rows"] == {
        "cot": {"easy": 22, "hard": 4},
        "cod": {"easy": 22, "hard": 4},
        "problems": {"easy": 23, "hard": 4},  # every clean problem, the planted wrong answer's too
        "pairs": {},  # one answer per problem: no problem has a right and a wrong one
    }
    assert metadata["num_rows_cod_hard"] == 4 and metadata["num_rows"] == 26
    assert metadata["left_out"]["easy"] == {selection.CONTAMINATED: 1, selection.COT_INCORRECT: 1}
    assert metadata["offline"] is True and metadata["path"] == str(data / "export")
    assert not (data / "export" / "data" / "cot" / "medium.parquet").exists(), "no samples, no split"
    cost = sum(
        r[block]["cost_usd"]
        for split in ("easy", "hard")
        for config, block in (("cot", "generation"), ("cod", "summarization"))
        for r in pq.read_table(data / "export" / "data" / config / f"{split}.parquet").to_pylist()
    )
    assert metadata["cost_usd"] == pytest.approx(cost)


def test_the_card_yaml_lists_every_config_and_split_with_its_size(chain):
    from huggingface_hub import DatasetCard

    data, *_ = chain
    card = DatasetCard.load(data / "export" / "README.md")
    info = card.data.to_dict()
    assert info["license"] == "mit" and "offline-emulator" in info["tags"]
    assert {c["config_name"]: c["data_files"] for c in info["configs"]} == {
        config: [{"split": s, "path": f"data/{config}/{s}.parquet"} for s in ("easy", "hard")]
        for config in ("cot", "cod", "problems")
    }, "no pairs: the config is left out"
    sizes = {
        i["config_name"]: {s["name"]: s["num_examples"] for s in i["splits"]} for i in info["dataset_info"]
    }
    assert sizes == {
        "cot": {"easy": 22, "hard": 4},
        "cod": {"easy": 22, "hard": 4},
        "problems": {"easy": 23, "hard": 4},
    }
    features = {i["config_name"]: [f["name"] for f in i["features"]] for i in info["dataset_info"]}
    assert features["cod"] == [f.name for f in SUMMARIZATION.fields]
    assert features["problems"] == [f.name for f in PROBLEM_FIELDS]
    assert info["size_categories"] == ["n<1K"]
    assert info["source_datasets"] == ["gsm8k", "qwedsacf/competition_math"]
    # OFFLINE in the title and the first paragraph
    title, first = [p.strip() for p in card.text.split("\n\n") if p.strip()][:2]
    assert title.startswith("# OFFLINE") and first.startswith("**OFFLINE")
    assert "![thought vs draft tokens per scenario](dataset_report.png)" in card.text
    assert (data / "export" / "dataset_report.png").read_bytes().startswith(b"\x89PNG")


SECTIONS = [
    "Contents",
    "How to load",
    "k answers per problem: `problems` and `pairs`",
    "Fields",
    "How it was made",
    "Figures per scenario",
    "Picture",
    "Decontamination",
    "Limitations",
    "Sources and licences",
    "Fingerprint",
]


def test_the_card_has_every_section_in_order(chain):
    data, *_ = chain
    text = (data / "export" / "README.md").read_text()
    assert re.findall(r"^## (.+)$", text, re.MULTILINE) == SECTIONS
    assert re.findall(r"^### `(\w+)`$", text, re.MULTILINE) == ["easy", "medium", "hard"]


def test_the_card_is_rendered_from_its_facts_alone():
    """No files, no export: a hand-made CardFacts is the whole input, and each fact lands in its place."""
    made = MadeWith(["gemini-x"], ["gemini-x-001"], ["cot-gen-v0"], ["high"], ["2026-01-02", "2026-01-05"])
    scenario = ScenarioFacts(
        name="algebra",
        dataset="someone/algebra",
        rows=1234,
        num_cot_records=1300,
        num_cod_records=1250,
        left_out={selection.COT_INCORRECT: 16},
        figures=[("CoT samples", "1,234", "1,300")],
        benchmarks=[],
        num_contaminated=None,
        num_repeats=None,
        num_left_out_unclean=0,
        rows_by_config={"cot": 1234, "cod": 1234, "problems": 650, "pairs": 34},
        passes=PassFigures(Counter({(2, 2): 600, (1, 2): 34, (0, 2): 16}), num_majority_correct=610),
    )
    facts = CardFacts(
        title="Algebra drafts",
        offline=False,
        include_incorrect=False,
        where="someone/drafts",
        scenarios=[scenario],
        made_with={"generation": made, "summarization": made},
        stale_prompt_versions=["cot-gen-v0"],
        exported_on="2026-01-06",
        fingerprint="f00d",
        card_data={"license": "mit", "pretty_name": "Algebra drafts"},
    )
    rendered = dataset_card(facts)
    text = rendered.text
    assert rendered.data.license == "mit" and rendered.data.pretty_name == "Algebra drafts"
    assert re.findall(r"^## (.+)$", text, re.MULTILINE) == SECTIONS
    title, first = text.lstrip().split("\n\n")[:2]
    assert title == "# Algebra drafts"
    assert first.startswith("1,234 math problems, each solved twice by `gemini-x`")
    assert "OFFLINE" not in text and "This export is empty" not in text
    for line in (
        "| `cot` | `algebra` | 1,234 | `someone/algebra` |",
        "| `problems` | `algebra` | 650 | `someone/algebra` |",
        "| `pairs` | `algebra` | 34 | `someone/algebra` |",
        "| `algebra` | 650 | 2 | 94.9% | 97.5% | 93.8% | 34 |",  # 1234/1300, 634/650, 610/650
        "34 pairs in all.",
        'pairs = load_dataset("someone/drafts", "pairs", split="algebra")',
        "| `algebra` | 1,300 | 1,250 | 1,234 | CoT incorrect: 16 |",
        'cot = load_dataset("someone/drafts", "cot", split="algebra")',
        "| batches submitted and ingested (UTC) | 2026-01-02 to 2026-01-05 | 2026-01-02 to 2026-01-05 |",
        "**Note:** some rows were made with other prompt versions (`cot-gen-v0`) than those shown.",
        "| CoT samples | 1,234 | 1,300 |",
        "| `algebra` | **none: NOT decontaminated** | not recorded | not recorded | 0 |",
        "Exported on 2026-01-06.",
        "`sha256:f00d`",
        "![thought vs draft tokens per scenario](dataset_report.png)",
    ):
        assert line in text, line
    body = card_body(facts, image="![inline](data:image/png;base64,AAAA)")
    assert body.startswith("# Algebra drafts") and "![inline](data:image/png;base64,AAAA)" in body
    assert "dataset_report.png" not in body and "license:" not in body


def card_tables(card: str) -> dict[str, dict[str, list[str]]]:
    """Scenario -> label -> [exported cell, files cell], from the card's per-scenario tables."""
    tables = {}
    for name, body in re.findall(r"### `(\w+)`\n\n(\|.*?)(?:\n\n|\Z)", card, re.DOTALL):
        tables[name] = table_rows(body)
    return tables


def test_the_cards_numbers_equal_the_reports(chain):
    data, _, _, metadata = chain
    card = (data / "export" / "README.md").read_text()
    tables = card_tables(card)
    files = table_rows(report.markdown_table(report.all_figures()))
    columns = {name.strip("*"): i for i, name in enumerate(files["header"])}
    for scenario in ("easy", "medium", "hard"):
        rows = tables[scenario]
        assert rows["header"] == [LABEL_EXPORTED, LABEL_FILES]
        for label, _, _ in report.ROWS:  # where both describe the files, every cell is the report's
            assert rows[label][1] == files[label][columns[scenario]], (scenario, label)
    # the exported column, recomputed from the Parquet files
    for scenario in ("easy", "hard"):
        cot = pq.read_table(data / "export" / "data" / "cot" / f"{scenario}.parquet").to_pylist()
        cod = pq.read_table(data / "export" / "data" / "cod" / f"{scenario}.parquet").to_pylist()
        rows = tables[scenario]
        thought = sorted(r["generation"]["usage"]["thinking_tokens"] for r in cot)
        draft = sorted(r["summarization"]["usage"]["output_tokens"] for r in cod)
        assert rows["CoT samples"][0] == f"{len(cot):,}" and rows["CoD samples"][0] == f"{len(cod):,}"
        assert rows["CoT accuracy"][0] == rows["CoD accuracy"][0] == "100.0%"
        assert rows["Answer agreement (CoD vs CoT)"][0] == "100.0%"
        assert rows["CoT thinking tokens"][0] == f"{sum(thought):,}"
        assert rows["Mean thought tokens (CoT)"][0] == f"{sum(thought) / len(thought):,.1f}"
        assert (
            rows["Median draft tokens (CoD)"][0]
            == f"{(draft[len(draft) // 2] + draft[(len(draft) - 1) // 2]) / 2:,.1f}"
        )
        assert rows["CoD-to-CoT token ratio (draft / thought)"][0] == f"{sum(draft) / sum(thought):.3f}"
        cost = sum(r["generation"]["cost_usd"] for r in cot)
        assert rows["CoT cost (USD)"][0] == f"${cost:,.4f}"
        assert rows["CoT cost per 1,000 samples (USD)"][0] == f"${1000 * cost / len(cot):,.4f}"
    # the easy files hold the two samples left out; the exported column does not
    assert tables["easy"]["CoT samples"] == ["22", "24"]
    assert "gemini-3.1-pro-preview" in card and "`high`" in card and "`low`" in card
    for text in (prompts.GENERATION_INSTRUCTIONS, prompts.SUMMARIZATION_INSTRUCTIONS):
        assert text in card, "the prompts verbatim"
    assert "Batch API" in card and "arXiv:2502.18600" in card and "GSM8K" in card
    assert "`gsm8k_test`, `math_test`, `math500`" in card
    assert metadata["card"].startswith("# OFFLINE") and "data:image/png;base64," in metadata["card"]


def test_push_refuses_without_token_offline_or_empty(chain, tmp_path, monkeypatch):
    data, instance, _, _ = chain
    folder = data / "export"
    with pytest.raises(hub.PushRefused, match="HF_TOKEN is not set"):
        hub.push_export(folder, "someone/cotgen", None, endpoint="http://127.0.0.1:9")
    with pytest.raises(hub.PushRefused, match="OFFLINE"):
        hub.push_export(folder, "someone/cotgen", FAKE_TOKEN, endpoint="http://127.0.0.1:9")
    monkeypatch.setenv("COTGEN_DATA_DIR", str(tmp_path / "empty"))
    empty = export.write_export()
    assert (
        empty.rows == {"cot": {}, "cod": {}, "problems": {}, "pairs": {}}
        and "This export is empty" in empty.card
    )
    with pytest.raises(hub.PushRefused, match="empty"):
        hub.push_export(empty.folder, "someone/cotgen", FAKE_TOKEN, endpoint="http://127.0.0.1:9")

    # Through the asset: a refused push fails the run with the reason, and the token leaks nowhere.
    monkeypatch.setenv("COTGEN_DATA_DIR", str(data))
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    result = materialize_export(instance, token=FAKE_TOKEN, hub_repo="someone/cotgen")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "OFFLINE" in str(failure.event_specific_data.error.message)
    logs = instance.all_logs(result.run_id)
    assert logs and not any(FAKE_TOKEN in (record.message or "") for record in logs)
    assert not any(FAKE_TOKEN in str(record.dagster_event) for record in logs)
    for path in data.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path


class HubStandIn(LocalHttpServer):
    """Answers the few Hub API calls a commit makes, and records them (nothing leaves the machine)."""

    def __init__(self, refuse_create: bool = False):
        self.calls = []
        stand_in = self

        class Handler(JsonHandler):
            def do_GET(self):
                stand_in.calls.append(("GET", self.path, dict(self.headers), b""))
                if refuse_create:  # asked whether the repo exists after all
                    self.answer({"error": "Repository not found"}, 404)
                else:
                    self.answer([])  # the repo's files: none yet

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stand_in.calls.append(("POST", self.path, dict(self.headers), body))
                if self.path == "/api/repos/create" and refuse_create:
                    self.answer(
                        {"error": "You don't have the rights to create a dataset under the namespace"},
                        403,
                    )
                elif self.path == "/api/repos/create":
                    self.answer({"url": f"{stand_in.url}/datasets/someone/cotgen"})
                elif "/preupload/" in self.path:
                    files = json.loads(body)["files"]
                    self.answer(
                        {
                            "files": [
                                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                for f in files
                            ]
                        }
                    )
                elif "/commit/" in self.path:
                    self.answer(
                        {
                            "commitUrl": f"{stand_in.url}/datasets/someone/cotgen/commit/c0ffee",
                            "commitOid": "c0ffee",
                        }
                    )
                else:
                    self.answer({})

        super().__init__(Handler)


def online_copy(folder: Path, target: Path) -> Path:
    """The export as if Gemini had made it (offline flags cleared), to exercise the upload path."""
    for path in folder.rglob("*"):
        if path.is_file():
            out = target / path.relative_to(folder)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(path.read_bytes())
    for path in target.glob("data/*/*.parquet"):
        rows = pq.read_table(path).to_pylist()
        for row in rows:
            for block in ("generation", "summarization"):
                if block in row:
                    row[block]["offline"] = False
        pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)
    return target


def test_push_uploads_the_folder_in_one_commit_naming_the_run(chain, tmp_path, monkeypatch):
    data, *_ = chain
    monkeypatch.delenv("HF_HUB_OFFLINE")
    folder = online_copy(data / "export", tmp_path / "online")
    stand_in = HubStandIn()
    try:
        url = hub.push_export(
            folder, "someone/cotgen", FAKE_TOKEN, public=False, run_id="run-1234", endpoint=stand_in.url
        )
    finally:
        stand_in.stop()
    assert url == f"{stand_in.url}/datasets/someone/cotgen/commit/c0ffee"
    paths = [(method, path.split("?")[0]) for method, path, _, _ in stand_in.calls]
    commits = [c for c in stand_in.calls if "/commit/" in c[1]]
    assert len(commits) == 1, paths
    create = next(c for c in stand_in.calls if c[1] == "/api/repos/create")
    created = json.loads(create[3])
    assert created["type"] == "dataset" and created["name"] == "cotgen", created
    assert created.get("visibility", "private" if created.get("private") else None) == "private", created
    lines = [json.loads(line) for line in commits[0][3].splitlines()]
    header = next(line["value"] for line in lines if line["key"] == "header")
    assert "run-1234" in header["summary"]
    sent = {line["value"]["path"] for line in lines if line["key"] == "file"}
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert sent == on_disk and "README.md" in sent and "data/cod/hard.parquet" in sent
    for _, _, headers, body in stand_in.calls:
        assert FAKE_TOKEN.encode() not in body
        assert all(FAKE_TOKEN not in v for k, v in headers.items() if k.lower() != "authorization")


def online_data(data: Path, target: Path) -> Path:
    """A copy of the data folder as if Gemini had made its samples (offline flags cleared)."""
    shutil.copytree(data, target, ignore=shutil.ignore_patterns("export", ".export*"))
    for path in target.glob("co[td]_*.jsonl"):
        records = read_jsonl(path)
        for record in records:
            for block in ("generation", "summarization"):
                if block in record:
                    record[block]["offline"] = False
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return target


def step_failure(result) -> dg.DagsterEvent:
    return next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")


def test_a_damaged_samples_file_or_a_failed_push_is_a_failure_with_the_reason(chain, tmp_path, monkeypatch):
    data, instance, _, _ = chain
    online = online_data(data, tmp_path / "data")
    monkeypatch.setenv("COTGEN_DATA_DIR", str(online))
    assert materialize_export(instance).success

    # A push the Hub turns down (here: a token without write access to the namespace).
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    stand_in = HubStandIn(refuse_create=True)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", stand_in.url)
    try:
        result = materialize_export(instance, token=FAKE_TOKEN, hub_repo="someone/cotgen")
    finally:
        stand_in.stop()
    assert not result.success
    error = step_failure(result).event_specific_data.error
    assert error.cls_name == "Failure", error.message
    message = error.message.removeprefix("dagster._core.definitions.events.Failure: ").rstrip("\n")
    assert message.startswith("push to someone/cotgen failed: ") and "403" in message
    assert "\n" not in message and FAKE_TOKEN not in message
    assert str(online / "export") in message, "says where the export is"
    assert not any(FAKE_TOKEN in str(record) for record in instance.all_logs(result.run_id))

    # A damaged samples file: a Failure naming the file and the line; the last export is kept.
    exported = {p: p.read_bytes() for p in (online / "export").rglob("*") if p.is_file()}
    cot = online / "cot_easy.jsonl"
    cot.write_bytes(cot.read_bytes() + b'{"id": "easy-99", "cot": "torn\n')
    result = materialize_export(instance)
    assert not result.success
    error = step_failure(result).event_specific_data.error
    assert error.cls_name == "Failure", error.message
    assert f"{cot} is damaged: line(s) {len(read_jsonl(data / 'cot_easy.jsonl')) + 1} " in error.message
    assert {p: p.read_bytes() for p in (online / "export").rglob("*") if p.is_file()} == exported


def test_fingerprint_is_stable_and_follows_the_samples(chain, tmp_path):
    data, instance, pipeline, metadata = chain
    first = metadata["fingerprint"]
    again = export_metadata(materialize_export(instance))
    assert again["fingerprint"] == first, "same samples, same bytes, same fingerprint"
    assert parquet.fingerprint(data / "export") == first, "the folder's own data files give it"

    loose = export_metadata(materialize_export(instance, include_incorrect=True))
    assert loose["rows"]["cot"]["easy"] == 23 and loose["fingerprint"] != first
    rows = load(data / "export", "cot", "easy", tmp_path / "cache")
    assert rows["id"] == expected_ids(data, "easy", include_incorrect=True)
    assert [r["correct"] for r in rows if r["id"] == PLANTED] == [False]

    pipeline.submit_generation("hard", mode="extend", limit=1)  # one new sample, through to CoD
    pipeline.drain()
    grown = export_metadata(materialize_export(instance))
    assert grown["rows"]["cod"]["hard"] == 5 and grown["fingerprint"] not in (first, loose["fingerprint"])
    assert not [p for p in data.iterdir() if p.name.startswith(".export")], "no staging folder left behind"


def test_an_export_without_source_problems_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("COTGEN_DATA_DIR", str(tmp_path))
    write_jsonl(tmp_path / "cot_easy.jsonl", [cot_record("easy-0")])
    with pytest.raises(
        selection.ExportError, match="materialize source_problems|Materialize source_problems"
    ):
        export.write_export()
    assert not (tmp_path / "export").exists()


def test_an_unusable_scratch_folder_stops_the_export_and_keeps_the_old_one(chain, tmp_path, monkeypatch):
    """The export indexes the samples in a local scratch folder: one it cannot make is one line naming
    COTGEN_SCRATCH_DIR and the export, and the export written before stays as it was."""
    data, *_ = chain
    shutil.copytree(data, tmp_path / "data")
    before = {p: p.read_bytes() for p in (tmp_path / "data" / "export").rglob("*") if p.is_file()}
    monkeypatch.setenv("COTGEN_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("COTGEN_SCRATCH_DIR", str(tmp_path / "a-file"))
    with pytest.raises(
        ValueError, match="COTGEN_SCRATCH_DIR=.* cannot hold the export's scratch folder"
    ) as refused:
        export.write_export()
    assert str(refused.value).endswith("nothing was exported")
    after = {p: p.read_bytes() for p in (tmp_path / "data" / "export").rglob("*") if p.is_file()}
    assert after == before


def test_a_record_field_records_does_not_describe_is_refused(chain, tmp_path, monkeypatch):
    """A field the export would drop silently is an error naming it; the old export stays."""
    data, *_ = chain
    shutil.copytree(data, tmp_path / "data")
    path = tmp_path / "data" / "cot_hard.jsonl"
    records = read_jsonl(path)
    records[1]["thought_numbers"] = ["2", "4"]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    before = {p: p.read_bytes() for p in (tmp_path / "data" / "export").rglob("*") if p.is_file()}
    monkeypatch.setenv("COTGEN_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(selection.ExportError) as refused:
        export.write_export()
    message = str(refused.value)
    assert "'thought_numbers'" in message and records[1]["id"] in message and "cot_hard.jsonl" in message
    assert "Nothing was exported" in message
    after = {p: p.read_bytes() for p in (tmp_path / "data" / "export").rglob("*") if p.is_file()}
    assert after == before


def test_samples_beyond_the_limit_are_kept_and_exported_unless_capped(pipeline, data_dir, sources):
    """A fill asks ahead, so more correct samples than `limit` come back: none is thrown away,
    the export says how many there are beyond it, and `cap_at_limit` keeps the first `limit` by id."""
    sources("easy")
    pipeline.submit_generation("easy", limit=5)
    pipeline.drain()
    cot = read_jsonl(data_dir / "cot_easy.jsonl")
    assert len(cot) > 5 and all(r["correct"] for r in cot), "every sample is kept, past the limit"

    everything = export_metadata(materialize_export(pipeline.instance))
    assert (
        everything["num_rows_cot_easy"] == len(cot) and everything["num_over_limit"]["easy"] == len(cot) - 5
    )
    capped = export_metadata(materialize_export(pipeline.instance, cap_at_limit=True))
    assert capped["num_rows_cot_easy"] == capped["num_rows_cod_easy"] == 5
    assert capped["left_out"]["easy"] == {selection.OVER_LIMIT: len(cot) - 5}
    assert capped["num_over_limit"]["easy"] == len(cot) - 5 and capped["cap_at_limit"] is True
    rows = load(data_dir / "export", "cot", "easy", data_dir / "cache")
    assert rows["id"] == sorted((r["id"] for r in cot), key=selection.id_key)[:5]
    assert len(read_jsonl(data_dir / "cot_easy.jsonl")) == len(cot), "the files keep every sample"
    assert f"{selection.OVER_LIMIT}: {len(cot) - 5}" in capped["card"], "the card says what was left out"


def test_a_killed_exports_staging_folders_go_with_the_next_export_not_a_running_ones(
    chain, tmp_path, monkeypatch
):
    """A killed export leaves `.export.new-<pid>` (a whole export: GBs at a million lines) and maybe
    `.export.old-<pid>`; the next export removes those of processes that are gone, and leaves a
    running export's own."""
    data, instance, *_ = chain
    shutil.copytree(data, tmp_path / "data")
    monkeypatch.setenv("COTGEN_DATA_DIR", str(tmp_path / "data"))
    gone = subprocess.Popen(["true"])
    gone.wait()
    killed = [tmp_path / "data" / f".export.{kind}-{gone.pid}" for kind in ("new", "old")]
    running = tmp_path / "data" / f".export.new-{os.getppid()}"
    for folder in [*killed, running]:
        shutil.copytree(data / "export", folder)
    assert materialize_export(instance).success
    assert [p.name for p in (tmp_path / "data").iterdir() if p.name.startswith(".export")] == [running.name]


def test_an_export_stopped_by_bad_input_leaves_no_file_open(tmp_path, monkeypatch):
    """The export closes what it opened when bad input stops it (here an unreadable
    source_problems.parquet): a long-running code server would otherwise keep, a failed export at a
    time, descriptors of the samples files and of the index it deleted, and that index's disk space."""
    monkeypatch.setenv("COTGEN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COTGEN_SCRATCH_DIR", str(tmp_path / "scratch"))
    write_jsonl(tmp_path / "cot_easy.jsonl", [cot_record("easy-0")])
    (tmp_path / "easy").mkdir()
    (tmp_path / "easy" / "source_problems.parquet").write_bytes(b"not a Parquet file")
    with pytest.raises(DamagedFile, match="source_problems.parquet is damaged: it cannot be read as Parquet"):
        export.write_export()
    opened = [f.path for f in psutil.Process().open_files()]
    assert not [path for path in opened if path.startswith(str(tmp_path))]


def test_an_export_waits_for_an_ingestion_replacing_a_samples_file_then_exports_the_new_file(
    chain, tmp_path, monkeypatch
):
    """An ingestion replaces a samples file under its lock; an export started meanwhile waits for
    the lock, then exports the new file (it indexed the file it found and read records back at
    those offsets from whichever file was there by then)."""
    data, instance, *_ = chain
    shutil.copytree(data, tmp_path / "data")
    monkeypatch.setenv("COTGEN_DATA_DIR", str(tmp_path / "data"))
    cot = tmp_path / "data" / "cot_easy.jsonl"
    with ThreadPoolExecutor(1) as pool, samples_lock(instance, cot):  # the lock: as an ingestion holds it
        started = {run.run_id for run in instance.get_runs()}
        running = pool.submit(materialize_export, instance)

        def waiting() -> bool:
            runs = [run.run_id for run in instance.get_runs() if run.run_id not in started]
            logs = [entry.user_message for run_id in runs for entry in instance.all_logs(run_id)]
            return any("waiting for lock 'samples/cot_easy.jsonl'" in message for message in logs)

        wait_for(waiting, timeout=300, interval=0.2, message="the export to wait for the samples file's lock")
        records = read_jsonl(cot)  # the ingestion's new file: the planted answer re-graded, lines reordered
        for record in records:
            if record["id"] == PLANTED:
                record["predicted_answer"], record["correct"] = record["answer"], True
        with atomic_write(cot) as handle:
            handle.write(b"".join(orjson.dumps(r) + b"\n" for r in reversed(records)))
    result = running.result()  # the lock is released: the export goes on
    assert result.success
    rows = load(tmp_path / "data" / "export", "cot", "easy", tmp_path / "cache")
    assert rows["id"] == expected_ids(tmp_path / "data", "easy") != expected_ids(data, "easy")
