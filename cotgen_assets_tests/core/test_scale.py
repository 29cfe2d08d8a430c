"""Scale features a user relies on: sharded submissions ingested together, results joined by key
in any order, merges that never duplicate or lose a sample. Figures (speed, memory) are in
bench/, never asserted here."""

import random
import time

import orjson
import pyarrow.parquet as pq
import pytest

from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets.core import requests as requests_module
from cotgen_assets.core.ingest import ingest_submission
from cotgen_assets.core.prepare import prepare_generation
from cotgen_assets.core.scenarios import get_scenario
from cotgen_assets.core.shards import write_shards
from cotgen_assets.core.submissions import Submission
from cotgen_assets.defs.assets.sources import source_problems
from cotgen_assets_tests.harness.asks import generation_ask
from cotgen_assets_tests.harness.pipeline import Pipeline, read_jsonl
from cotgen_assets_tests.harness.results import MODEL, context, easy_submission
from cotgen_assets_tests.harness.samples import cot_record, write_jsonl
from cotgen_assets_tests.harness.sources import load_source_problems

# --------------------------------------------------------------------------- sharded batches, end to end


@pytest.mark.pipeline
def test_a_submission_split_into_three_jobs_is_ingested_once_all_three_ended(instance, emulator, data_dir):
    pipeline = Pipeline(instance, emulator.base_url)
    pipeline.materialize([source_problems], "easy")
    emulator.set_faults(hold_count=1)  # the first shard's job stays in flight until released
    pipeline.submit_generation("easy", limit=25, max_requests_per_job=10, ask="missing")

    batch = pipeline.metadata("generation_batch", "easy")
    assert batch["num_requests"] == 25 and batch["num_shards"] == 3
    names = batch["batch_names"]
    assert len(set(names)) == 3
    shard_sizes = [sum(1 for _ in open(path, "rb")) for path in batch["request_files"]]
    assert shard_sizes == [10, 10, 5]

    gemini = GeminiBatchResource(base_url=emulator.base_url)
    deadline = time.monotonic() + 30
    while not all(gemini.get_batch(name).done for name in names[1:]):
        assert time.monotonic() < deadline, "the two fast jobs never ended"
        time.sleep(0.1)
    assert not gemini.get_batch(names[0]).done, "the held job ended"
    waiting = pipeline.tick()
    assert waiting.run_requests == [], "launched while one of the three jobs was still running"
    assert "MIXED" in waiting.skip_message or "RUNNING" in waiting.skip_message

    emulator.release()
    [request] = pipeline.tick_until_launch(attempts=400)  # 0.05 s apart: up to 20 s
    assert request.job_name == "generation_results_job"
    assert all(gemini.get_batch(name).done for name in names)
    assert pipeline.tick().run_requests == [], "one launch per submission, not one per job"
    assert pipeline.run(request).success

    results = pipeline.metadata("generation_results", "easy")
    assert results["job_state"] == "JOB_STATE_SUCCEEDED" and results["num_succeeded"] == 25
    cot = read_jsonl(data_dir / "cot_easy.jsonl")
    ids = [r["id"] for r in cot]
    assert len(ids) == len(set(ids)) == 25
    assert {r["generation"]["batch"] for r in cot} == set(names), "every job's answers are in the file"
    samples = pipeline.metadata("cot_samples", "easy")
    assert samples["num_samples"] == samples["num_new"] == 25 and samples["num_failed"] == 0


# --------------------------------------------------------------------------- ingestion, as plain functions


def result(i: int, answer: int | None = None, error: bool = False) -> bytes:
    if error:
        return orjson.dumps(
            {"key": f"easy-{i}", "error": {"code": 500, "message": "boom", "status": "INTERNAL"}}
        )
    text = f"So the answer is \\boxed{{{2 * i if answer is None else answer}}}."
    return orjson.dumps(
        {
            "key": f"easy-{i}",
            "response": {
                "candidates": [
                    {
                        "content": {
                            "role": "model",
                            "parts": [
                                {"text": f"**Adding**\n{i} + {i} = {2 * i}.", "thought": True},
                                {"text": text},
                            ],
                        },
                        "finishReason": "STOP",
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": 20,
                    "candidatesTokenCount": 10,
                    "thoughtsTokenCount": 50,
                },
                "modelVersion": MODEL,
            },
        }
    )


def submission_with_results(count: int, per_shard: int, lines_by_shard) -> Submission:
    """A written submission whose shard k's downloaded results are `lines_by_shard(k, keys)`."""
    submission = easy_submission("scale", count)
    write_shards(
        submission,
        ((orjson.dumps({"key": f"easy-{i}"}) + b"\n", context(i)) for i in range(count)),
        per_shard,
        10**9,
    )
    submission.batch_names = [f"batches/job-{k}" for k in range(len(submission.shards))]
    for k, shard in enumerate(submission.shards):
        keys = [orjson.loads(line)["id"] for line in submission.context_path(shard).read_bytes().splitlines()]
        numbers = [int(key.removeprefix("easy-")) for key in keys]
        submission.results_path(shard).write_bytes(
            b"".join(line + b"\n" for line in lines_by_shard(k, numbers))
        )
    return submission


def leftovers(*folders) -> list[str]:
    """Temporary files an ingestion might leave behind."""
    return [
        p.name
        for folder in folders
        for p in folder.iterdir()
        if p.name.startswith(".") and not p.name.endswith(".lock")
    ]


def test_results_join_by_key_in_any_order_and_merge_without_duplicates(data_dir):
    samples_file = data_dir / "cot_easy.jsonl"
    old = [cot_record(f"easy-{i}", correct=False) for i in (100, 0, 3)]
    for record in old:
        record["generation"]["batch"] = "batches/old"
    write_jsonl(samples_file, old)

    def lines(shard, numbers):
        rng = random.Random(shard)
        out = [result(i, error=(i == 3)) for i in numbers if i != 29]  # easy-29 never answered
        if shard == 1:
            out += [
                result(numbers[0], answer=-1),  # a second answer for a key: the first counts
                result(999),  # a key nobody asked for
                b"{not json",
            ]
        rng.shuffle(out)
        return out

    submission = submission_with_results(30, 12, lines)
    assert len(submission.shards) == 3
    seen = []
    stats = ingest_submission(submission, samples_file, observe=seen.append)

    records = read_jsonl(samples_file)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids))
    assert ids[:2] == ["easy-100", "easy-3"], (
        "old records stay first; easy-3's new answer failed, so it is kept"
    )
    assert records[1]["generation"]["batch"] == "batches/old"
    assert sorted(ids[2:], key=lambda k: int(k[5:])) == [f"easy-{i}" for i in range(30) if i not in (3, 29)]
    by_id = {r["id"]: r for r in records}
    assert by_id["easy-0"]["generation"]["batch"] == "batches/job-0" and by_id["easy-0"]["correct"] is True
    assert by_id["easy-12"]["predicted_answer"] == "24", "the first answer of a duplicated key counts"
    assert sorted(r["id"] for r in seen) == sorted(ids), "every record of the merged file observed once"

    outcomes = read_jsonl(submission.folder / "outcomes.jsonl")
    assert sorted(o["id"] for o in outcomes) == sorted(f"easy-{i}" for i in range(30)), (
        "one outcome per request"
    )
    status = {o["id"]: o["status"] for o in outcomes}
    assert status["easy-3"] == "line_error" and status["easy-29"] == "missing"
    assert stats.num_new == 28 and stats.statuses == {"ok": 28, "line_error": 1, "missing": 1}
    assert stats.unknown_keys == 2 and stats.duplicate_keys == 1
    assert leftovers(data_dir, submission.folder) == []

    again = ingest_submission(submission, samples_file)
    assert again.num_new == 28
    assert sorted(r["id"] for r in read_jsonl(samples_file)) == sorted(ids), (
        "a repeat replaces, never duplicates"
    )


def test_requests_are_written_batch_by_batch_in_table_order(data_dir, monkeypatch):
    """prepare_generation streams the problems table; batches cut at row-group edges lose nothing."""
    monkeypatch.setattr(requests_module, "PROBLEM_BATCH_ROWS", 500)  # many batches, as with a large table
    table, _, _ = load_source_problems(get_scenario("easy"))
    (data_dir / "easy").mkdir(parents=True)
    pq.write_table(table, data_dir / "easy" / "source_problems.parquet", row_group_size=777)
    submission = prepare_generation(
        generation_ask(limit=3000, mode="extend", max_requests_per_job=1000), offline=True
    ).submission
    assert len(submission.shards) == 3
    keys = [
        orjson.loads(line)["key"]
        for s in submission.shards
        for line in submission.requests_path(s).read_bytes().splitlines()
    ]
    assert keys == table["problem_id"].to_pylist()[:3000]
    rows = {row["problem_id"]: row for row in table.slice(0, 3000).to_pylist()}
    for shard in submission.shards:
        for line in submission.context_path(shard).read_bytes().splitlines():
            saved = orjson.loads(line)
            assert (saved["question"], saved["answer"]) == (
                rows[saved["id"]]["question"],
                rows[saved["id"]]["answer"],
            )
            assert saved["source"]["row"] == rows[saved["id"]]["source_row"]


def test_shards_stay_under_the_request_and_byte_limits(data_dir):
    """A job's input file must stay under the Batch API's 2 GB: shards split on bytes too."""
    submission = easy_submission("bytes", 10)
    lines = [orjson.dumps({"key": f"easy-{i}", "pad": "x" * 90}) + b"\n" for i in range(10)]
    write_shards(submission, ((line, context(i)) for i, line in enumerate(lines)), 4, 3 * len(lines[0]) + 5)
    sizes = [len(submission.requests_path(s).read_bytes().splitlines()) for s in submission.shards]
    assert sizes == [3, 3, 3, 1], "three lines fit the byte limit, the fourth does not"
    requested = b"".join(submission.requests_path(s).read_bytes() for s in submission.shards)
    assert requested == b"".join(lines), "every request once, in order"
    contexts = [
        orjson.loads(line)["id"]
        for s in submission.shards
        for line in submission.context_path(s).read_bytes().splitlines()
    ]
    assert contexts == [f"easy-{i}" for i in range(10)], "each shard's contexts match its requests"
    assert len(set(submission.display_names)) == 4


def test_a_failure_during_ingestion_leaves_the_samples_file_as_it_was(data_dir):
    samples_file = data_dir / "cot_easy.jsonl"
    write_jsonl(samples_file, [cot_record("easy-100")])
    before = samples_file.read_bytes()
    submission = submission_with_results(5, 10, lambda shard, numbers: [result(i) for i in numbers])

    def broken_observer(record):
        raise RuntimeError("observer failed")

    with pytest.raises(RuntimeError, match="observer failed"):
        ingest_submission(submission, samples_file, observe=broken_observer)
    assert samples_file.read_bytes() == before
    assert leftovers(data_dir, submission.folder) == []


def test_what_a_killed_ingestion_left_is_cleared_by_the_next_one(data_dir):
    submission = submission_with_results(5, 10, lambda shard, numbers: [result(i) for i in numbers])
    samples_file = data_dir / "cot_easy.jsonl"
    killed = [data_dir / ".cot_easy.jsonl.new-99999", submission.folder / ".requests-99999.sqlite"]
    for path in killed:  # a kill -9 mid-ingestion leaves these, several GB at a million lines
        path.write_bytes(b"x" * 1000)
    stats = ingest_submission(submission, samples_file)
    assert stats.num_new == 5 and len(read_jsonl(samples_file)) == 5
    assert leftovers(data_dir, submission.folder) == []
