"""`cotgen trace ID`: one sample's lineage after a real in-process chain, checked against its files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cotgen_assets.defs.assets.sources import source_problems
from cotgen_assets.publish.trace import trace
from cotgen_assets_tests.harness.pipeline import chain_pipeline, read_jsonl

pytestmark = pytest.mark.pipeline

COTGEN = Path(sys.executable).with_name("cotgen")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """easy: every first generation line fails, a fill retries them, all reach CoD.
    medium: source problems only, plus one generation request still in flight."""
    base = tmp_path_factory.mktemp("trace")
    with chain_pipeline(base) as (pipeline, emulator, _):
        pipeline.materialize([source_problems], "easy")
        emulator.set_faults(line_error_rate=1.0)  # every first try fails (deterministic)
        pipeline.submit_generation("easy", limit=4, ask="missing")
        pipeline.drain()
        emulator.set_faults(line_error_rate=0.0)
        pipeline.submit_generation("easy", limit=4, ask="missing")
        pipeline.drain()
        pipeline.materialize([source_problems], "medium")
        pipeline.submit_generation("medium", limit=1, ask="missing")  # never ticked: stays in flight
        yield base / "data"


def outcomes_for(data: Path, scenario: str, sample_id: str) -> list[tuple[str, dict]]:
    """(stage, outcome line) of every ingested request for the id, read straight from the files."""
    found = []
    for outcomes in (data / scenario / "submissions").glob("*/outcomes.jsonl"):
        stage = outcomes.parent.name.split("-")[0]
        found += [(stage, o) for o in read_jsonl(outcomes) if o["id"] == sample_id]
    return found


def retried_id(data: Path) -> str:
    for record in read_jsonl(data / "cot_easy.jsonl"):
        statuses = {
            o["status"] for stage, o in outcomes_for(data, "easy", record["id"]) if stage == "generation"
        }
        if statuses == {"line_error", "ok"}:
            return record["id"]
    raise AssertionError("no easy sample needed a second try; the chain should have made one")


def run_cli(*args: str, data: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(COTGEN), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COTGEN_DATA_DIR": str(data)},
    )


def test_trace_follows_a_retried_sample_from_source_row_to_cod(chain):
    data = chain
    sample_id = retried_id(data)
    found = trace(sample_id)

    row = pq.read_table(
        data / "easy" / "source_problems.parquet", filters=[("problem_id", "=", sample_id)]
    ).to_pylist()[0]
    assert found["source"] == {
        "dataset": "gsm8k",
        "config": "main",
        "split": "train",
        "row": row["source_row"],
        "question": row["question"],
        "answer": row["answer"],
    }
    assert row["source_row"] == int(sample_id.split("-")[1])

    cot = next(r for r in read_jsonl(data / "cot_easy.jsonl") if r["id"] == sample_id)
    cod = next(r for r in read_jsonl(data / "cod_easy.jsonl") if r["id"] == sample_id)
    [answer] = found["samples"]  # one answer per problem: sample 0
    assert answer["sample"] == cot["sample"] == cod["sample"] == 0 and answer["no_cod_because"] is None
    for block, record, stage in ((answer["cot"], cot, "generation"), (answer["cod"], cod, "summarization")):
        for key in ("batch", "model", "prompt_version", "submission", "usage", "cost_usd"):
            assert block[key] == record[stage][key], (stage, key)
        assert Path(block["file"]).exists()
    assert answer["cot"]["prompt_version"] == "cot-gen-v1" and answer["cod"]["prompt_version"] == "cod-sum-v1"
    assert answer["cod"]["agrees_with_cot"] is True and answer["cot"]["offline"] is True
    assert trace(f"{sample_id}#0")["samples"] == found["samples"]

    attempts = found["attempts"]
    assert [(a["stage"], a["try"], a["status"]) for a in attempts] == [
        ("generation", 1, "line_error"),
        ("generation", 2, "ok"),
        ("summarization", 1, "ok"),
    ]
    by_file = {
        (stage, o["batch"], o["status"], o["cost_usd"]) for stage, o in outcomes_for(data, "easy", sample_id)
    }
    assert {(a["stage"], a["batch"], a["status"], a["cost_usd"]) for a in attempts} == by_file
    assert attempts[1]["batch"] == cot["generation"]["batch"]
    assert attempts[0]["reason"], "a failed attempt says why"
    assert found["total_cost_usd"] == pytest.approx(
        sum(o["cost_usd"] for _, o in outcomes_for(data, "easy", sample_id))
    )
    for attempt in attempts:
        assert {"submission", "outcomes", "requests", "results"} <= set(attempt["files"])
        assert all(Path(p).exists() for p in attempt["files"].values())
    assert sorted(found["in_the_ui"]["run_tags"]) == sorted(
        f"cotgen/submission_id={a['submission']}" for a in attempts
    )


def test_trace_of_a_math_problem_not_yet_answered(chain):
    ids = (
        pq.read_table(chain / "medium" / "source_problems.parquet", columns=["problem_id"])
        .column(0)
        .to_pylist()
    )
    asked, never_asked = trace(ids[0]), trace(ids[1])
    assert asked["source"]["dataset"] == "qwedsacf/competition_math"
    assert asked["source"]["level"] in {"Level 1", "Level 2", "Level 3"} and asked["source"]["type"]
    assert asked["samples"] == []
    [attempt] = asked["attempts"]
    assert attempt["status"] == "in_flight" and attempt["batch"].startswith("batches/")
    assert never_asked["attempts"] == [] and never_asked["samples"] == []


def test_cli_prints_the_same_trace_as_json(chain):
    sample_id = retried_id(chain)
    result = run_cli("trace", sample_id, data=chain)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == trace(sample_id)


@pytest.mark.parametrize(
    "unknown, message",
    [
        ("easy-999999", "unknown id 'easy-999999': no source problem, sample or request with this id in "),
        ("nosuch-3", "unknown id 'nosuch-3': ids look like <scenario>-<source row>"),
    ],
)
def test_cli_unknown_id_exits_1_with_a_clear_message(chain, unknown, message):
    result = run_cli("trace", unknown, data=chain)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"cotgen: {message}")
    assert "Traceback" not in result.stderr
    with pytest.raises(LookupError, match="unknown id"):
        trace(unknown)


@pytest.mark.parametrize(
    "query, message",
    [
        ("{id}#-1", "'{id}#-1': write ID for every sample or ID#N for one, e.g. easy-17#2"),
        ("{id}#abc", "'{id}#abc': write ID for every sample or ID#N for one"),
        ("{id}#", "'{id}#': write ID for every sample or ID#N for one"),
        ("{id}#²", "'{id}#²': write ID for every sample or ID#N for one"),  # isdigit(), yet no int
        ("{id}#999", "'{id}' has no sample 999: its samples are ["),
        ("../{id}", "unknown id '../{id}': ids look like <scenario>-<source row>"),
        (
            "easy-../../etc/passwd",
            "unknown id 'easy-../../etc/passwd': ids look like <scenario>-<source row>",
        ),
        ("", "unknown id '': ids look like <scenario>-<source row>"),
    ],
)
def test_cli_hostile_query_is_one_clear_line(chain, query, message):
    sample_id = retried_id(chain)
    result = run_cli("trace", query.format(id=sample_id), data=chain)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"cotgen: {message.format(id=sample_id)}"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
