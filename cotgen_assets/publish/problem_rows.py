"""The export's per-problem configs: `problems` (every problem's answers and their vote) and `pairs`
(preference pairs for DPO), made from a scenario's clean CoT records.

Pairs are in TRL's conversational preference format (`prompt`, `chosen`, `rejected`, each a list
of messages; https://huggingface.co/docs/trl/dataset_formats). Pairing rule: each wrong answer,
in sample order, is paired with a correct answer of the same problem, the correct ones taken in
sample order, round-robin. Every wrong answer (paid for, and otherwise thrown away) is used exactly
once, no pair repeats, and a problem gives as many pairs as it has wrong answers (at most k - 1):
the harder the problem, the more it teaches, while a problem the model always solves or never
solves gives none.
"""

from cotgen_assets.core.problems import PassFigures, ProblemFigures, pass_figures, problem_figures


def answers_by_problem(records: list[dict]) -> dict[str, dict[int, dict]]:
    """CoT records grouped by problem id, then by sample, in the records' order."""
    found: dict[str, dict[int, dict]] = {}
    for record in records:
        found.setdefault(record["id"], {})[record["sample"]] = record
    return found


def problem_rows(records: list[dict]) -> tuple[list[dict], PassFigures]:
    """One row per problem with a graded answer (the lists in sample order), and their pass@k figures."""
    by_problem = answers_by_problem(records)
    figures = problem_figures(
        {
            pid: [(s, r.get("predicted_answer"), r.get("correct")) for s, r in answers.items()]
            for pid, answers in by_problem.items()
        }
    )
    return [_problem_row(by_problem[f.id], f) for f in figures], pass_figures(figures)


def _problem_row(answers: dict[int, dict], figures: ProblemFigures) -> dict:
    first = answers[figures.samples[0]]
    return {
        "id": figures.id,
        "scenario": first["scenario"],
        "question": first["question"],
        "answer": first["answer"],
        "samples": list(figures.samples),
        "generations": [answers[s]["cot"] for s in figures.samples],
        "predicted_answers": list(figures.predicted),
        "correctness": list(figures.correctness),
        "pass_rate": figures.pass_rate,
        "majority_answer": figures.majority_answer,
        "majority_correct": figures.majority_correct,
    }


def preference_pairs(problems: list[dict]) -> list[dict]:
    """Every problem with a correct and a wrong answer: each wrong one against a correct one, round-robin."""
    pairs = []
    for problem in problems:
        graded = list(zip(problem["samples"], problem["generations"], problem["correctness"]))
        correct = [(s, text) for s, text, ok in graded if ok]
        wrong = [(s, text) for s, text, ok in graded if not ok]
        if not correct:
            continue
        for n, (rejected_sample, rejected) in enumerate(wrong):
            chosen_sample, chosen = correct[n % len(correct)]
            pairs.append(
                {
                    "id": problem["id"],
                    "prompt": [{"role": "user", "content": problem["question"]}],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                    "chosen_sample": chosen_sample,
                    "rejected_sample": rejected_sample,
                }
            )
    return pairs
