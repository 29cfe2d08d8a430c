"""k answers per problem, the request side: planning, request lines and keys, ingestion by (id, sample)."""

import math

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cotgen_assets.backends import gemini_wire  # noqa: F401  (registers the wire formats)
from cotgen_assets.core.ask import GenerationAsk
from cotgen_assets.core.ingest import ingest_submission
from cotgen_assets.core.model_io import wire_for
from cotgen_assets.core.planning import plan_generation
from cotgen_assets.core.prompts import generation_prompt
from cotgen_assets.core.requests import generation_requests, rows_asked
from cotgen_assets.core.rounds import Accuracy, new_problems_to_ask
from cotgen_assets.core.sample_keys import problem_and_sample, sample_key
from cotgen_assets.core.stages import GENERATION
from cotgen_assets.core.storage import samples_path
from cotgen_assets.core.submission_history import tries_by_problem
from cotgen_assets_tests.harness.asks import generation_ask
from cotgen_assets_tests.harness.pipeline import read_jsonl
from cotgen_assets_tests.harness.results import line, make_submission, response

PROBLEMS = [f"easy-{n}" for n in range(100)]

# --------------------------------------------------------------------------- keys


def test_sample_0_keeps_the_problem_id_and_other_samples_round_trip():
    assert sample_key("easy-7", 0) == "easy-7"
    assert sample_key("easy-7", 3) == "easy-7#3"
    assert problem_and_sample("easy-7#3") == ("easy-7", 3)
    assert problem_and_sample("easy-7") == ("easy-7", 0)


# --------------------------------------------------------------------------- planning


def test_extend_asks_limit_new_problems_k_times_each_under_their_own_keys():
    plan = plan_generation(PROBLEMS, set(), set(), {}, 5, "extend", 3, samples_per_problem=4)
    assert plan.items == [(sample_key(f"easy-{n}", s), 1) for n in range(5) for s in range(4)]
    assert (plan.num_new, plan.num_problems, plan.num_retries) == (5, 5, 0)


def test_with_k_answers_only_failed_requests_are_asked_again_keeping_their_sample():
    """easy-0 was asked 4 times: one right, one wrong (data: never topped up), one failed once
    (asked again, as sample 2), one failed max_tries times (given up)."""
    answered = {"easy-0", "easy-0#1"}
    good = {"easy-0"}
    tries = {"easy-0": 1, "easy-0#1": 1, "easy-0#2": 1, "easy-0#3": 3}
    plan = plan_generation(
        PROBLEMS, good, {"easy-0"}, tries, 3, "fill", 3, samples_per_problem=4, answered=answered
    )
    assert plan.items[0] == ("easy-0#2", 2) and plan.num_retries == 1
    assert "easy-0#1" not in {key for key, _ in plan.items}, "a wrong answer is never asked again"
    assert plan.given_up == ["easy-0#3"]
    # exactly what is missing (2), less the retry: 1 answer, so one new problem of 4 answers
    assert plan.num_new == 1 and plan.items[1:] == [(sample_key("easy-1", s), 1) for s in range(4)]


def test_a_k_answer_problem_whose_requests_never_ran_is_a_new_problem():
    """A job cancelled before it ran a problem's requests: its keys are known (0 tries), and the
    problem is asked afresh, k answers, never twice."""
    tries = {f"easy-0#{s}" if s else "easy-0": 0 for s in range(4)}
    plan = plan_generation(PROBLEMS, set(), set(), tries, 1, "fill", 3, samples_per_problem=4, answered=set())
    assert plan.items == [(sample_key("easy-0", s), 1) for s in range(4)] and plan.num_retries == 0


def test_a_fill_is_sized_by_the_accuracy_per_answer_divided_among_k_answers():
    accuracy = Accuracy(0.7, 0.35)
    plan = plan_generation(PROBLEMS, set(), set(), {}, 40, "fill", 3, accuracy, samples_per_problem=4)
    answers = new_problems_to_ask(40, 0, accuracy, available=100 * 4)
    assert plan.num_new == math.ceil(answers / 4) and len(plan.items) == 4 * plan.num_new
    assert plan.expected_correct == pytest.approx(0.7 * 4 * plan.num_new) and plan.expected_correct >= 40
    one = plan_generation(PROBLEMS, set(), set(), {}, 40, "fill", 3, accuracy)
    assert one.num_new == answers, "k = 1: as many problems as answers"


def test_with_k_answers_the_correct_answers_count_towards_the_limit():
    """`limit` counts correct answers, not problems: 3 correct answers of one problem are 3."""
    good = {"easy-0", "easy-0#1", "easy-0#2"}
    answered = good | {"easy-0#3"}
    tries = dict.fromkeys(answered, 1)
    plan = plan_generation(
        PROBLEMS, good, {"easy-0"}, tries, 3, "fill", 3, samples_per_problem=4, answered=answered
    )
    assert (plan.num_good, plan.num_missing, plan.items) == (3, 0, [])


# --------------------------------------------------------------------------- request lines


def problems_file(tmp_path, rows: int) -> pq.ParquetFile:
    table = pa.table(
        {
            "problem_id": [f"easy-{n}" for n in range(rows)],
            "question": [f"What is {n} + {n}?" for n in range(rows)],
            "answer": [str(2 * n) for n in range(rows)],
            "source_dataset": ["gsm8k"] * rows,
            "source_config": ["main"] * rows,
            "source_split": ["train"] * rows,
            "source_row": list(range(rows)),
        }
    )
    pq.write_table(table, tmp_path / "problems.parquet")
    return pq.ParquetFile(tmp_path / "problems.parquet")


def ask(k: int) -> GenerationAsk:
    return generation_ask(limit=2, max_requests_per_job=10, samples_per_problem=k)


def test_k_answers_are_k_lines_of_the_same_prompt_under_their_own_keys(tmp_path):
    wire = wire_for("developer")
    problems = problems_file(tmp_path, 3)
    ids = problems.read(columns=["problem_id"]).column("problem_id")
    asked, samples = rows_asked(ids, ["easy-1", "easy-1#1", "easy-1#2", "easy-2#1"])
    assert asked.to_pylist() == [False, True, True]
    assert samples == {"easy-1": [0, 1, 2], "easy-2": [1]}
    lines = list(generation_requests(ask(3), problems, asked, samples, wire))
    requests = [orjson.loads(request) for request, _ in lines]
    assert [r["key"] for r in requests] == ["easy-1", "easy-1#1", "easy-1#2", "easy-2#1"]
    assert requests[0]["request"] == requests[1]["request"] == requests[2]["request"], "the same prompt"
    assert [(c["id"], c["sample"]) for _, c in lines] == [
        ("easy-1", 0),
        ("easy-1", 1),
        ("easy-1", 2),
        ("easy-2", 1),
    ]


def test_one_answer_per_problem_sends_the_bytes_it_always_sent(tmp_path):
    """k = 1: the key is the problem id and the line is the prompt of that id, byte for byte."""
    wire = wire_for("developer")
    lines = list(
        generation_requests(
            ask(1), problems_file(tmp_path, 2), pa.array([True, True]), {"easy-0": [0], "easy-1": [0]}, wire
        )
    )
    assert [request for request, _ in lines] == [
        wire.input_line(generation_prompt(f"easy-{n}", f"What is {n} + {n}?", "high")) for n in range(2)
    ]
    assert [c["sample"] for _, c in lines] == [0, 0]


# --------------------------------------------------------------------------- ingestion


def test_k_answers_are_one_record_each_and_a_retried_failed_one_keeps_its_sample(data_dir):
    cot_file = samples_path(GENERATION, "easy")
    first = make_submission("k-first", [0, 1], samples=(0, 1, 2))
    first.results_path("shard-000").write_bytes(
        line(response("easy-0", "0"))
        + line(response("easy-0#1", "5"))  # wrong: a record, graded wrong
        + line({"key": "easy-0#2", "error": {"code": 500, "message": "Internal", "status": "INTERNAL"}})
        + line(response("easy-1", "2"))
        + line(response("easy-1#1", "2"))
        + line(response("easy-1#2", "2"))
    )
    ingest_submission(first, cot_file)
    records = read_jsonl(cot_file)
    assert [(r["id"], r["sample"], r["correct"]) for r in records] == [
        ("easy-0", 0, True),
        ("easy-0", 1, False),
        ("easy-1", 0, True),
        ("easy-1", 1, True),
        ("easy-1", 2, True),
    ]
    assert tries_by_problem("easy", GENERATION) == {
        key: 1 for key in ("easy-0", "easy-0#1", "easy-0#2", "easy-1", "easy-1#1", "easy-1#2")
    }, "tries per (id, sample)"

    retry = make_submission("k-retry", [0], samples=(2,))
    retry.results_path("shard-000").write_bytes(line(response("easy-0#2", "0")))
    ingest_submission(retry, cot_file)
    ingest_submission(first, cot_file)  # ingesting again duplicates nothing
    ingest_submission(retry, cot_file)
    records = read_jsonl(cot_file)
    assert sorted((r["id"], r["sample"]) for r in records) == [
        ("easy-0", 0),
        ("easy-0", 1),
        ("easy-0", 2),
        ("easy-1", 0),
        ("easy-1", 1),
        ("easy-1", 2),
    ]
    retried = next(r for r in records if (r["id"], r["sample"]) == ("easy-0", 2))
    assert retried["correct"] and retried["generation"]["submission"] == "k-retry"
    assert tries_by_problem("easy", GENERATION)["easy-0#2"] == 2
