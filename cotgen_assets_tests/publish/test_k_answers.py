"""k answers per problem, downstream of the samples files: per-problem pass rates and majority votes,
pass@1 / pass@k / maj@k, the export's `problems` and `pairs` configs, the card, the trace.

Hand-made samples files with k = 4 answers per problem for `easy` (mixed right and wrong; equal
answers written differently, "1/2" and "0.5"), run through the real functions. Every expected
figure below is worked out by hand from the table `ANSWERS`, not by the code under test.
"""

import re
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cotgen_assets.core import prompts
from cotgen_assets.core.problems import file_passes, pass_figures, problem_figures
from cotgen_assets.core.records import COD_FIELDS, COT_FIELDS, record_key
from cotgen_assets.core.scenarios import load_scenarios
from cotgen_assets.core.stages import GENERATION
from cotgen_assets.core.storage import DamagedFile, samples_lines
from cotgen_assets.publish import export, parquet, report, selection
from cotgen_assets.publish.trace import trace

# problem -> (reference answer, [(predicted, correct)] by sample)
ANSWERS = {
    "easy-1": ("1/2", [("0.5", True), ("1/2", True), ("3", False), ("1/2", True)]),
    "easy-2": ("1/2", [("3", False), ("4", False), ("3", False), ("1/2", True)]),
    "easy-3": ("5", [("1", False), ("2", False), ("3", False), ("4", False)]),
    "easy-4": ("1/2", [("1/2", True), ("0.50", True), ("\\frac{1}{2}", True), ("7", False)]),
    "easy-5": ("3", [("2", False), ("3", True), ("3", True), ("2", False)]),
}
# worked out by hand: majority answer (tie: the answer given first), pass rate, pairs (chosen, rejected)
MAJORITY = {
    "easy-1": ("0.5", True),  # 0.5 ~ 1/2: three votes
    "easy-2": ("3", False),
    "easy-3": ("1", False),  # four singletons: the first
    "easy-4": ("1/2", True),
    "easy-5": ("2", False),  # 2 and 3 tie with two votes each: 2 was given first
}
PASS_RATE = {"easy-1": 0.75, "easy-2": 0.25, "easy-3": 0.0, "easy-4": 0.75, "easy-5": 0.5}
PAIRS = {  # each wrong answer once, against the correct ones in sample order, round-robin
    "easy-1": [(0, 2)],
    "easy-2": [(3, 0), (3, 1), (3, 2)],
    "easy-4": [(0, 3)],
    "easy-5": [(1, 0), (2, 3)],
}


def usage(thinking: int, output: int) -> dict:
    return {"input_tokens": 40, "cached_tokens": 0, "thinking_tokens": thinking, "output_tokens": output}


def block(stage: str, submission: str, thinking: int, output: int) -> dict:
    return {
        "model": "gemini-3-flash-preview",
        "model_version": "gemini-3-flash-preview-001",
        "batch": f"batches/{submission}",
        "submission": submission,
        "prompt_version": prompts.GENERATION_PROMPT_VERSION
        if stage == "generation"
        else prompts.SUMMARIZATION_PROMPT_VERSION,
        "finish_reason": "STOP",
        "usage": usage(thinking, output),
        "cost_usd": 0.001,
        "offline": True,
    }


def question(pid: str) -> str:
    return f"Problem {pid}: what is the value?"


def source(pid: str) -> dict:
    row = int(pid.rsplit("-", 1)[1])
    return {
        "dataset": "openai/gsm8k",
        "config": "main",
        "split": "train",
        "row": row,
        "level": "",
        "type": "",
    }


def cot_record(pid: str, sample: int | None, predicted: str, correct: bool) -> dict:
    text = f"<thought>Work on {pid}, try {sample}.</thought>\nSo the answer is \\boxed{{{predicted}}}."
    record = {
        "id": pid,
        "sample": sample,
        "scenario": "easy",
        "question": question(pid),
        "answer": ANSWERS.get(pid, ("1/2",))[0],
        "cot": text,
        "messages": [{"role": "user", "content": question(pid)}, {"role": "assistant", "content": text}],
        "predicted_answer": predicted,
        "correct": correct,
        "source": source(pid),
        "generation": block("generation", "gen1", 300 + 10 * (sample or 0), 20),
    }
    if sample is None:  # a record written before records had samples
        del record["sample"]
    return record


def cod_record(cot: dict) -> dict:
    draft = f"<draft>{cot['id']}\nhalf</draft>\n\\boxed{{{cot['predicted_answer']}}}"
    return {
        **{k: cot[k] for k in ("id", "scenario", "question", "answer", "source", "generation") if k in cot},
        **({"sample": cot["sample"]} if "sample" in cot else {}),
        "cod": draft,
        "messages": [{"role": "user", "content": cot["question"]}, {"role": "assistant", "content": draft}],
        "predicted_answer": cot["predicted_answer"],
        "correct": True,
        "agrees_with_cot": True,
        "unsupported_draft_numbers": [],
        "summarization": block("summarization", "sum1", 0, 8),
    }


def k_answer_records() -> list[dict]:
    """The table's CoT records, written in an order a retry would leave: sample 2 of easy-1 last."""
    records = [
        cot_record(pid, sample, predicted, correct)
        for pid, (_, answers) in ANSWERS.items()
        for sample, (predicted, correct) in enumerate(answers)
    ]
    late = next(r for r in records if (r["id"], r["sample"]) == ("easy-1", 2))
    records.remove(late)
    return [*records, late]


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def write_scenario(data: Path, cot: list[dict]) -> None:
    """The `easy` samples files (a CoD for every correct CoT) and its source_problems table."""
    data.mkdir(parents=True, exist_ok=True)
    write_jsonl(data / "cot_easy.jsonl", cot)
    write_jsonl(data / "cod_easy.jsonl", [cod_record(r) for r in cot if r["correct"]])
    ids = sorted({r["id"] for r in cot}, key=lambda i: int(i.rsplit("-", 1)[1]))
    (data / "easy").mkdir(exist_ok=True)
    table = pa.table(
        {
            "problem_id": ids,
            "scenario": ["easy"] * len(ids),
            "question": [question(i) for i in ids],
            "answer": [ANSWERS.get(i, ("1/2",))[0] for i in ids],
            "source_dataset": ["openai/gsm8k"] * len(ids),
            "source_config": ["main"] * len(ids),
            "source_split": ["train"] * len(ids),
            "source_row": [int(i.rsplit("-", 1)[1]) for i in ids],
        }
    )
    pq.write_table(table, data / "easy" / "source_problems.parquet")


@pytest.fixture
def easy_only():
    return {"easy": load_scenarios()["easy"]}


@pytest.fixture
def k4(tmp_path, monkeypatch, easy_only):
    data = tmp_path / "data"
    monkeypatch.setenv("COTGEN_DATA_DIR", str(data))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    write_scenario(data, k_answer_records())
    return data


def test_each_problem_has_its_pass_rate_and_majority_vote():
    answers = {
        pid: [(s, p, c) for s, (p, c) in enumerate(graded)] + [(9, "1/2", None)]  # ungraded: not counted
        for pid, (_, graded) in ANSWERS.items()
    }
    figures = {f.id: f for f in problem_figures(answers)}
    assert list(figures) == list(ANSWERS)
    for pid, (_, graded) in ANSWERS.items():
        assert figures[pid].samples == (0, 1, 2, 3)
        assert figures[pid].correctness == tuple(c for _, c in graded)
        assert figures[pid].pass_rate == PASS_RATE[pid]
        assert (figures[pid].majority_answer, figures[pid].majority_correct) == MAJORITY[pid], pid


@pytest.mark.parametrize("bucket_answers", [200_000, 3])  # one bucket; then five passes over the file
def test_pass_at_1_pass_at_k_and_maj_at_k_over_a_samples_file(tmp_path, bucket_answers):
    path = tmp_path / "cot_easy.jsonl"
    write_jsonl(path, k_answer_records())
    passes = file_passes(path, bucket_answers=bucket_answers)
    assert (passes.num_problems, passes.num_answers, passes.k) == (5, 20, 4)
    assert passes.pass_at_1 == 9 / 20  # 3 + 1 + 0 + 3 + 2 correct answers
    assert passes.pass_at_k == 4 / 5  # all but easy-3
    assert passes.maj_at_k == 2 / 5  # easy-1 and easy-4
    assert passes.histogram == (1, 1, 1, 2, 0)  # solved 0/4, 1/4, 2/4, 3/4, 4/4


def test_with_one_answer_per_problem_every_figure_is_the_accuracy():
    figures = problem_figures({"a-1": [(0, "2", True)], "a-2": [(0, "3", False)], "a-3": [(0, None, False)]})
    passes = pass_figures(figures)
    assert passes.k == 1 and passes.pass_at_1 == passes.pass_at_k == passes.maj_at_k == 1 / 3
    assert passes.histogram == (2, 1)


def test_the_export_has_a_problems_and_a_pairs_config_matching_the_records(k4, easy_only, tmp_path):
    import datasets

    written = export.write_export(scenarios=easy_only)
    folder = k4 / "export"

    def load(config: str) -> list[dict]:
        found = datasets.load_dataset(str(folder), config, split="easy", cache_dir=str(tmp_path / "cache"))
        return found.to_list()

    records = {(r["id"], r["sample"]): r for r in k_answer_records()}
    problems = load("problems")
    assert [row["id"] for row in problems] == list(ANSWERS)
    for row in problems:
        pid = row["id"]
        answers = [records[pid, s] for s in range(4)]
        assert row["samples"] == [0, 1, 2, 3]
        assert row["generations"] == [r["cot"] for r in answers]
        assert row["predicted_answers"] == [r["predicted_answer"] for r in answers]
        assert row["correctness"] == [r["correct"] for r in answers]
        assert row["pass_rate"] == PASS_RATE[pid]
        assert (row["majority_answer"], row["majority_correct"]) == MAJORITY[pid]
        assert (row["question"], row["answer"]) == (question(pid), ANSWERS[pid][0])

    pairs = load("pairs")
    assert [(p["id"], p["chosen_sample"], p["rejected_sample"]) for p in pairs] == [
        (pid, chosen, rejected) for pid, found in PAIRS.items() for chosen, rejected in found
    ]
    for pair in pairs:  # TRL's conversational preference format, a correct CoT over a wrong one
        chosen, rejected = (
            records[pair["id"], pair["chosen_sample"]],
            records[pair["id"], pair["rejected_sample"]],
        )
        assert chosen["correct"] and not rejected["correct"]
        assert pair["prompt"] == [{"role": "user", "content": question(pair["id"])}]
        assert pair["chosen"] == [{"role": "assistant", "content": chosen["cot"]}]
        assert pair["rejected"] == [{"role": "assistant", "content": rejected["cot"]}]

    cot = load("cot")  # every correct answer, each its own row, keyed by (id, sample)
    assert [(r["id"], r["sample"]) for r in cot] == sorted(
        (k for k, r in records.items() if r["correct"]), key=lambda k: (int(k[0].rsplit("-", 1)[1]), k[1])
    )
    assert [(r["id"], r["sample"]) for r in load("cod")] == [(r["id"], r["sample"]) for r in cot]
    assert written.rows["problems"] == {"easy": 5} and written.rows["pairs"] == {"easy": 7}


def test_the_card_states_the_measured_pass_figures_and_pairs(k4, easy_only):
    card = export.write_export(scenarios=easy_only).card
    assert "| `easy` | 5 | 4 | 45.0% | 80.0% | 40.0% | 7 |" in card
    assert "7 pairs in all." in card
    for config in ("cot", "cod", "problems", "pairs"):
        assert re.search(rf"- config_name: {config}\n  data_files:\n  - split: easy\n", card), config
    assert "| `pairs` | `easy` | 7 | `gsm8k` |" in card


def test_the_report_shows_pass_at_k(k4, easy_only):
    figures = report.all_figures(easy_only)
    rows = dict((label, value(figures[0])) for label, value, _ in report.ROWS)
    assert rows["Answers per problem (k)"] == 4
    assert (rows["pass@1"], rows["pass@k"], rows["maj@k"]) == (9 / 20, 4 / 5, 2 / 5)
    assert "| maj@k | 40.0% | 40.0% |" in report.markdown_table(figures)


def test_the_trace_shows_every_sample_of_a_problem_or_one(k4):
    found = trace("easy-2")
    samples = found["samples"]
    assert [s["sample"] for s in samples] == [0, 1, 2, 3]
    assert [s["cot"]["correct"] for s in samples] == [False, False, False, True]
    assert [s["cod"] is not None for s in samples] == [False, False, False, True]
    assert samples[0]["no_cod_because"].startswith("its CoT answer is wrong")
    assert samples[3]["cot"]["line"] == 7  # easy-1's samples 0, 1, 3 come first
    one = trace("easy-1#2")  # written last: found wherever it sits in the file
    assert [s["sample"] for s in one["samples"]] == [2]
    assert one["samples"][0]["cot"]["predicted_answer"] == "3"
    with pytest.raises(LookupError, match="no sample 7"):
        trace("easy-1#7")


def test_one_answer_per_problem_exports_as_before_but_for_sample(tmp_path, monkeypatch, easy_only):
    """A k = 1 file written before records had `sample` and the same file with `sample: 0` give the
    same `cot` and `cod` Parquet bytes, with `sample` right after `id`; `pairs` is left out."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    first = [cot_record(pid, None, answers[0][0], answers[0][1]) for pid, (_, answers) in ANSWERS.items()]
    exports = {}
    for name, records in (("old", first), ("new", [r | {"sample": 0} for r in first])):
        monkeypatch.setenv("COTGEN_DATA_DIR", str(tmp_path / name))
        write_scenario(tmp_path / name, records)
        exports[name] = export.write_export(scenarios=easy_only)
    old, new = exports["old"], exports["new"]
    for config, fields in (("cot", COT_FIELDS), ("cod", COD_FIELDS)):
        path = f"data/{config}/easy.parquet"
        assert (tmp_path / "old" / "export" / path).read_bytes() == (
            tmp_path / "new" / "export" / path
        ).read_bytes()
        table = pq.read_table(tmp_path / "new" / "export" / path)
        assert table.column_names[:2] == ["id", "sample"] and table.column_names == [f.name for f in fields]
        assert table["sample"].to_pylist() == [0] * table.num_rows
    assert old.fingerprint == new.fingerprint
    assert new.rows["pairs"] == {}
    assert not (tmp_path / "new" / "export" / "data" / "pairs").exists()
    assert "**This export has no pairs, so the config is left out**" in new.card
    assert new.rows["problems"] == {"easy": 5}


def test_the_samples_reader_keys_records_by_id_and_sample(tmp_path):
    """k answers of one problem are k records; two different records of one (id, sample) are damage."""
    path = tmp_path / "cot_easy.jsonl"
    records = k_answer_records()
    write_jsonl(path, records + [records[0]])  # a line repeated word for word counts once
    assert [record_key(r) for _, r in samples_lines(GENERATION, path)] == [record_key(r) for r in records]
    other = records[0] | {"predicted_answer": "9", "correct": False}
    write_jsonl(path, records + [other])
    with pytest.raises(
        DamagedFile, match=r"line 21 holds another record of id 'easy-1' sample 0, already on line 1"
    ):
        list(samples_lines(GENERATION, path))


def test_small_row_groups_and_problem_batches_give_the_same_rows(k4, easy_only, monkeypatch):
    """The export streams: rows made Arrow 2 at a time, a row group of each (any bytes fill one), a
    batch of 3 answers at a time: every config holds the rows, in their order, and the card the
    figures of the export written in one piece."""
    whole = export.write_export(scenarios=easy_only)
    tables = {path.split("/")[1]: pq.read_table(k4 / "export" / path) for path in whole.files}
    monkeypatch.setattr(parquet, "BATCH_ROWS", 2)
    monkeypatch.setattr(parquet, "ROW_GROUP_BYTES", 1)
    monkeypatch.setattr(selection, "PROBLEM_BATCH_ANSWERS", 3)
    streamed = export.write_export(scenarios=easy_only)
    assert set(tables) == {"cot", "cod", "problems", "pairs"} and streamed.rows == whole.rows
    for config, table in tables.items():
        path = k4 / "export" / parquet.data_file(config, "easy")
        assert pq.read_table(path).equals(table), config
        assert pq.ParquetFile(path).metadata.num_row_groups == -(-table.num_rows // 2), config
    assert (
        streamed.facts.scenarios == whole.facts.scenarios
        and streamed.facts.made_with == whole.facts.made_with
    )
    monkeypatch.setattr(parquet, "ROW_GROUP_BYTES", 16 * 1024 * 1024)  # the default: batches fill a row group
    export.write_export(scenarios=easy_only)
    for config, table in tables.items():
        path = k4 / "export" / parquet.data_file(config, "easy")
        assert pq.read_table(path).equals(table), config
        assert pq.ParquetFile(path).metadata.num_row_groups == 1, config
