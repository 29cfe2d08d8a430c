"""End to end under `dagster dev`: k answers per problem. One click of `extend` for 5
`easy` problems with `samples_per_problem: 4`, the emulator answering 30 % of the answers wrong; the
sensor alone carries them to CoT and CoD; one click exports and reports them. Every figure checked
is computed here from the records on disk."""

import time
from collections import Counter

import dagster as dg
import pyarrow.parquet as pq
import pytest

from cotgen_assets_tests.harness.pipeline import read_jsonl
from cotgen_assets_tests.harness.platform import latest_metadata, offline_platform
from cotgen_assets_tests.harness.publish import table_rows

pytestmark = pytest.mark.e2e

PROBLEMS, K = 5, 4
# The emulator draws each answer's fault from a hash of (seed, job ordinal, request key), so a fresh
# emulator with seed 0 answers the same way every run: at 30 % it gives easy-0, easy-1 and easy-4
# mixed answers (1, 2 and 3 of 4 correct; easy-1 a tie for the vote) and easy-2 and easy-3 four
# correct ones. That is a problem with mixed answers and one without, so "a pair for exactly the
# mixed problems" is tested both ways (the test asserts both exist, not which problems they are).
EMULATOR_ARGS = ("--fault-wrong-rate", "0.3", "--seed", "0")


def test_one_extend_click_with_four_answers_each_gives_every_answer_its_drafts_export_and_report(tmp_path):
    # COTGEN_HF_REPO set empty: the export stays local whatever the caller's shell holds.
    with offline_platform(tmp_path, {"COTGEN_HF_REPO": ""}, emulator_args=EMULATOR_ARGS) as platform:
        instance, data = platform.instance, platform.data
        # The launchpad's config as a user types it (every other field its default).
        clicked = time.monotonic()
        run_id = platform.submit_generation(
            "easy", with_sources=True, mode="extend", limit=PROBLEMS, samples_per_problem=K
        )
        platform.wait_run(run_id)
        batch = latest_metadata(instance, "generation_batch", "easy")
        assert (batch["num_problems"], batch["samples_per_problem"], batch["num_requests"]) == (
            PROBLEMS,
            K,
            PROBLEMS * K,
        )

        # From here on the test only waits: the sensor saves the CoT, submits the drafts, saves them.
        platform.wait_samples(instance, "cot_samples", "easy", PROBLEMS * K)
        cot = {(r["id"], r["sample"]): r for r in read_jsonl(data / "cot_easy.jsonl")}
        problems = sorted({pid for pid, _ in cot}, key=lambda pid: int(pid.rsplit("-", 1)[1]))
        assert len(cot) == PROBLEMS * K and sorted(cot) == sorted((p, s) for p in problems for s in range(K))
        assert len(problems) == PROBLEMS and all(r["scenario"] == "easy" for r in cot.values())
        correctness = {p: [cot[p, s]["correct"] for s in range(K)] for p in problems}
        mixed = {p for p, found in correctness.items() if any(found) and not all(found)}
        assert mixed and mixed != set(problems), f"the seed's draws: {correctness}"
        correct = sorted(key for key, record in cot.items() if record["correct"])

        cod_meta = platform.wait_samples(instance, "cod_samples", "easy", len(correct))
        cod = read_jsonl(data / "cod_easy.jsonl")
        assert sorted((r["id"], r["sample"]) for r in cod) == correct, "a draft of each correct answer"
        assert cod_meta["num_samples"] == len(correct)
        summarization = latest_metadata(instance, "summarization_batch", "easy")
        assert summarization["num_requests"] == len(correct)
        assert summarization["num_skipped_incorrect"] == PROBLEMS * K - len(correct)
        launched = platform.wait_sensor_runs(instance, 2)
        assert sorted(r.job_name for r in launched) == ["generation_results_job", "summarization_results_job"]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in launched)
        check_nothing_asked_twice(platform.emulator, cot, correct)
        print(f"extend 5 x 4 answers: click to the last draft {time.monotonic() - clicked:.0f}s")

        # One click on the export (no hub_repo: local) and the report.
        platform.wait_run(
            platform.client.submit_job_execution(
                "__ASSET_JOB",
                repository_location_name="cotgen_assets",
                asset_selection=["hf_dataset", "dataset_report"],
            )
        )
        export = latest_metadata(instance, "hf_dataset")
        assert "hub_repo" not in export
        check_problems_config(data, problems, cot)
        num_pairs = check_pairs_config(data, mixed, cot)
        assert (export["num_rows_problems_easy"], export["num_rows_pairs_easy"]) == (PROBLEMS, num_pairs)
        check_report(
            latest_metadata(instance, "dataset_report"),
            latest_metadata(instance, "cot_samples", "easy"),
            pass_figures(problems, cot),
        )


def sent_key(record: dict) -> str:
    """The request key of an answer, as the docs give it: `<id>` for sample 0, then `<id>#<s>`."""
    return record["id"] if record["sample"] == 0 else f"{record['id']}#{record['sample']}"


def check_nothing_asked_twice(emulator, cot: dict, correct: list) -> None:
    """One generation job asked each (problem, sample) once; one summarization job each correct one."""
    jobs = emulator.requested_keys()
    by_stage = {
        stage: [job for job in jobs if f"-{stage}-" in job[0]] for stage in ("generation", "summarization")
    }
    assert len(jobs) == 2 and all(len(found) == 1 for found in by_stage.values()), jobs
    assert sorted(by_stage["generation"][0][1]) == sorted(map(sent_key, cot.values()))
    assert sorted(by_stage["summarization"][0][1]) == sorted(sent_key(cot[k]) for k in correct)
    assert not [c for c in emulator.calls() if c["path"].endswith(":generateContent")], "no online call"


def majority(records: list[dict]) -> tuple[str, bool]:
    """The most given answer, a tie to the one given first (the emulator writes an answer one way,
    so equal answers are equal strings), and whether it is right."""
    votes = Counter(r["predicted_answer"] for r in records)
    winner = next(r for r in records if votes[r["predicted_answer"]] == max(votes.values()))
    return winner["predicted_answer"], winner["correct"]


def check_problems_config(data, problems: list[str], cot: dict) -> None:
    rows = pq.read_table(data / "export" / "data" / "problems" / "easy.parquet").to_pylist()
    assert [row["id"] for row in rows] == problems
    for row in rows:
        answers = [cot[row["id"], s] for s in range(K)]
        assert row["samples"] == list(range(K)), row["id"]
        assert row["correctness"] == [r["correct"] for r in answers], row["id"]
        assert row["pass_rate"] == sum(r["correct"] for r in answers) / K, row["id"]
        assert row["generations"] == [r["cot"] for r in answers], row["id"]
        assert row["predicted_answers"] == [r["predicted_answer"] for r in answers], row["id"]
        assert (row["majority_answer"], row["majority_correct"]) == majority(answers), row["id"]
        assert (row["question"], row["answer"]) == (answers[0]["question"], answers[0]["answer"])


def check_pairs_config(data, mixed: set[str], cot: dict) -> int:
    """A pair for exactly the mixed problems: each wrong answer once, against a correct one. Returns
    how many pairs."""
    pairs = pq.read_table(data / "export" / "data" / "pairs" / "easy.parquet").to_pylist()
    assert {pair["id"] for pair in pairs} == mixed
    wrong = sorted((pid, s) for (pid, s), r in cot.items() if pid in mixed and not r["correct"])
    assert sorted((pair["id"], pair["rejected_sample"]) for pair in pairs) == wrong
    for pair in pairs:
        chosen, rejected = cot[pair["id"], pair["chosen_sample"]], cot[pair["id"], pair["rejected_sample"]]
        assert chosen["correct"] and not rejected["correct"]
        assert pair["prompt"] == [{"role": "user", "content": chosen["question"]}]
        assert pair["chosen"] == [{"role": "assistant", "content": chosen["cot"]}]
        assert pair["rejected"] == [{"role": "assistant", "content": rejected["cot"]}]
    return len(pairs)


def pass_figures(problems: list[str], cot: dict) -> dict[str, float]:
    """pass@1 (the share of correct answers), pass@k (of problems with a correct one), maj@k (of
    problems whose majority answer is right), from the records."""
    answers = {p: [cot[p, s] for s in range(K)] for p in problems}
    return {
        "pass@1": sum(r["correct"] for r in cot.values()) / len(cot),
        "pass@k": sum(any(r["correct"] for r in found) for found in answers.values()) / len(problems),
        "maj@k": sum(majority(found)[1] for found in answers.values()) / len(problems),
    }


def check_report(report: dict, cot_samples: dict, expected: dict[str, float]) -> None:
    """pass@1, pass@k and maj@k of `easy` in the report's figures and table, and in `cot_samples`."""
    easy = report["by_scenario"]["easy"]
    assert (easy["Problems (with a graded CoT)"], easy["Answers per problem (k)"]) == (PROBLEMS, K)
    assert {name: easy[name] for name in expected} == pytest.approx(expected)
    by_key = ("pass_at_1", "pass_at_k", "maj_at_k")
    assert tuple(report[key] for key in by_key) == pytest.approx(tuple(expected.values())), (
        "the other scenarios have no answers: `all` is `easy`"
    )
    table = table_rows(report["report"])
    column = table["header"].index("**easy**")
    assert {name: table[name][column] for name in expected} == {n: f"{v:.1%}" for n, v in expected.items()}
    assert (cot_samples["num_problems"], cot_samples["answers_per_problem"]) == (PROBLEMS, K)
    assert tuple(cot_samples[key] for key in by_key) == pytest.approx(tuple(expected.values()))
