"""The CoT and CoD files as a trainer gets them: loaded with `datasets`, field by field.

One small in-process chain (5 GSM8K + 5 MATH problems, emulator, sensor ticks) feeds the tests of
the files; the last ones check that `records` is the only description of a record.
"""

import shutil

import datasets
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cotgen_assets.core import records, stages
from cotgen_assets.core.stages import GENERATION, SUMMARIZATION
from cotgen_assets.defs.assets.samples import column_schema
from cotgen_assets.defs.assets.sources import source_problems
from cotgen_assets.publish import export
from cotgen_assets_tests.harness.dagster import ROOT, wait_for
from cotgen_assets_tests.harness.pipeline import Pipeline, chain_pipeline

pytestmark = pytest.mark.pipeline

LIMIT = 5
PARTITIONS = ("easy", "medium")
USAGE_KEYS = {"input_tokens", "thinking_tokens", "output_tokens"}


def run_next(pipeline: Pipeline, job_name: str, partitions) -> None:
    """Tick until the sensor asks for `job_name` on every partition, then run those requests."""
    wanted: dict = {}

    def all_asked():
        for request in pipeline.tick().run_requests:
            if request.job_name == job_name:
                wanted[request.partition_key] = request
        return set(wanted) >= set(partitions)

    wait_for(all_asked, timeout=60, interval=0.1, message=f"{job_name} for {partitions}")
    for partition in partitions:
        assert pipeline.run(wanted[partition]).success


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Data dir after the whole chain ran for `easy` and `medium`."""
    root = tmp_path_factory.mktemp("records")
    with chain_pipeline(root) as (pipeline, _, _):
        for partition in PARTITIONS:
            pipeline.materialize([source_problems], partition)
            pipeline.submit_generation(partition, limit=LIMIT, ask="missing")
        run_next(pipeline, "generation_results_job", PARTITIONS)
        run_next(pipeline, "summarization_results_job", PARTITIONS)
    return root / "data"


def load(paths, cache_dir) -> datasets.Dataset:
    return datasets.load_dataset(
        "json", data_files=[str(p) for p in paths], split="train", cache_dir=str(cache_dir)
    )


def raw(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.mark.parametrize("partition", PARTITIONS)
def test_both_files_load_with_datasets_and_share_their_ids(data, partition, tmp_path):
    cot = load([data / f"cot_{partition}.jsonl"], tmp_path)
    cod = load([data / f"cod_{partition}.jsonl"], tmp_path)
    assert cot.num_rows == cod.num_rows == LIMIT
    assert sorted(cot["id"]) == sorted(cod["id"])
    assert len(set(cot["id"])) == LIMIT
    assert all(i.startswith(f"{partition}-") for i in cot["id"])
    assert cot.features["correct"] == datasets.Value("bool")
    assert cot.features["source"]["row"] == datasets.Value("int64")
    assert cot.features["generation"]["cost_usd"] == datasets.Value("float64")
    assert cod.features["summarization"]["usage"]["output_tokens"] == datasets.Value("int64")


def test_files_of_several_scenarios_load_as_one_dataset(data, tmp_path):
    """A trainer mixes difficulties: the scenarios' files should share one schema."""
    cot = load([data / f"cot_{p}.jsonl" for p in PARTITIONS], tmp_path)
    cod = load([data / f"cod_{p}.jsonl" for p in PARTITIONS], tmp_path)
    assert cot.num_rows == cod.num_rows == LIMIT * len(PARTITIONS)
    assert sorted(set(cot["scenario"])) == sorted(PARTITIONS)


def check_common(record: dict, partition: str) -> None:
    """Fields every CoT and CoD line carries, with their types."""
    assert isinstance(record["id"], str) and record["id"].startswith(f"{partition}-")
    assert record["scenario"] == partition
    assert isinstance(record["question"], str) and record["question"].strip()
    assert isinstance(record["answer"], str) and record["answer"].strip()
    assert isinstance(record["predicted_answer"], str) and record["predicted_answer"].strip()
    assert isinstance(record["correct"], bool)

    source = record["source"]
    assert isinstance(source["row"], int) and record["id"] == f"{partition}-{source['row']}"
    assert {"dataset", "config", "split"} <= source.keys()
    if partition == "easy":
        assert (source["dataset"], source["config"], source["split"]) == ("gsm8k", "main", "train")
    else:
        assert source["dataset"] == "qwedsacf/competition_math" and source["split"] == "train"
        assert source["level"] in ("Level 1", "Level 2", "Level 3")
        assert source["type"] in ("Algebra", "Intermediate Algebra", "Precalculus")
    check_lineage(record["generation"], "cot-gen-v1")


def check_lineage(block: dict, prompt_version: str) -> None:
    assert isinstance(block["model"], str) and block["model"]
    assert isinstance(block["batch"], str) and block["batch"].startswith("batches/")
    assert block["prompt_version"] == prompt_version
    assert block["finish_reason"] == "STOP"
    usage = block["usage"]
    assert USAGE_KEYS <= usage.keys() and all(isinstance(usage[k], int) for k in USAGE_KEYS)
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert isinstance(block["cost_usd"], float) and block["cost_usd"] > 0


def check_messages(record: dict, text_field: str) -> None:
    """Ready for SFT: one user turn with the question, one assistant turn with the target text."""
    assert record["messages"] == [
        {"role": "user", "content": record["question"]},
        {"role": "assistant", "content": record[text_field]},
    ]


def check_tagged(text: str, tag: str) -> None:
    """`<tag>` reasoning `</tag>` on its own line, then the answer: neither part empty."""
    inner, separator, answer = text.partition(f"</{tag}>\n")
    assert text.startswith(f"<{tag}>") and separator
    assert inner.removeprefix(f"<{tag}>").strip() and answer.strip()


@pytest.mark.parametrize("partition", PARTITIONS)
def test_cot_records_carry_every_field(data, partition):
    records = raw(data / f"cot_{partition}.jsonl")
    assert len(records) == LIMIT
    for record in records:
        check_common(record, partition)
        check_messages(record, "cot")
        check_tagged(record["cot"], "thought")
        assert record["cot"].count("<thought>") == record["cot"].count("</thought>") == 1
        assert record["generation"]["usage"]["thinking_tokens"] > 0
    assert sum(r["correct"] for r in records) >= LIMIT - 1, "the emulator answers with the reference"


@pytest.mark.parametrize("partition", PARTITIONS)
def test_cod_records_carry_every_field_and_their_cot_lineage(data, partition):
    cot = {r["id"]: r for r in raw(data / f"cot_{partition}.jsonl")}
    records = raw(data / f"cod_{partition}.jsonl")
    assert len(records) == LIMIT
    for record in records:
        check_common(record, partition)
        check_messages(record, "cod")
        check_tagged(record["cod"], "draft")
        check_lineage(record["summarization"], "cod-sum-v1")
        source_cot = cot[record["id"]]
        for field in ("scenario", "question", "answer", "source", "generation"):
            assert record[field] == source_cot[field], field


# --------------------------------------------------------------------------- records is the only schema

# Nullable, as every field added to records that the files written before it lack.
DIFFICULTY = records.Field(
    "difficulty", pa.string(), "how hard the problem is, by its source's own scale", nullable=True
)


@pytest.fixture
def with_difficulty():
    """A CoT field described in `records` only, as a developer adding one to `COT_FIELDS` would.

    The stage holds the fields (a frozen description), so the field is set on it for the test.
    """
    object.__setattr__(GENERATION, "fields", (*records.COT_FIELDS, DIFFICULTY))
    yield
    object.__setattr__(GENERATION, "fields", records.COT_FIELDS)


def test_the_records_page_is_written_from_records():
    page = (ROOT / "docs" / "records.md").read_text()
    assert stages.records_markdown() in page, (
        "docs/records.md is stale: paste in the output of "
        "`python -c 'from cotgen_assets.core import stages; print(stages.records_markdown())'`"
    )


def test_a_field_added_to_records_shows_in_the_arrow_schema_the_ui_and_the_docs(with_difficulty):
    assert records.arrow_schema(GENERATION.fields).field("difficulty").type == pa.string()
    [column] = [c for c in column_schema(GENERATION).columns if c.name == "difficulty"]
    assert (column.type, column.description) == ("string", DIFFICULTY.description)
    assert f"| `difficulty` | string | {DIFFICULTY.description} |" in stages.records_markdown()
    assert "difficulty" not in records.arrow_schema(SUMMARIZATION.fields).names


def test_a_field_added_to_records_reaches_the_exported_parquet_and_card(with_difficulty, data, tmp_path):
    """No second list of fields to forget: the export writes what `records` describes."""
    from huggingface_hub import DatasetCard

    shutil.copytree(data, tmp_path / "data")
    cot = raw(tmp_path / "data" / "cot_easy.jsonl")
    for record in cot:
        record["difficulty"] = f"level of {record['id']}"
    (tmp_path / "data" / "cot_easy.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in cot))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("COTGEN_DATA_DIR", str(tmp_path / "data"))
        written = export.write_export()
    rows = pq.read_table(written.folder / "data" / "cot" / "easy.parquet").to_pylist()
    assert rows and all(r["difficulty"] == f"level of {r['id']}" for r in rows)
    card = DatasetCard.load(written.folder / "README.md")
    [cot_info] = [i for i in card.data.to_dict()["dataset_info"] if i["config_name"] == "cot"]
    assert {"name": "difficulty", "dtype": "string"} in cot_info["features"]
    assert f"| `difficulty` | string | {DIFFICULTY.description} |" in card.text
