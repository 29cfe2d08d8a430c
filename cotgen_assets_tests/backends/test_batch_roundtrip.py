"""1,000 real GSM8K questions through a whole batch: requests, upload, job, download, parsing, cost."""

import os
import time
from fractions import Fraction
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cotgen_assets.backends.developer import WIRE
from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets.core.answers import extract_boxed_answer, extract_gsm8k_answer
from cotgen_assets.core.batch_output import iter_result_lines
from cotgen_assets.core.model_io import Usage
from cotgen_assets.core.pricing import cost_usd, load_prices
from cotgen_assets_tests.harness.emulator import generation_request, request_line

try:
    from cotgen_assets.core.grading import answers_match
except ImportError:  # grading not there yet: GSM8K answers are numbers

    def answers_match(predicted, reference):
        try:
            return Fraction(predicted.replace(",", "")) == Fraction(reference.replace(",", ""))
        except (AttributeError, ValueError, ZeroDivisionError):
            return False


MODEL = "gemini-3.1-pro-preview"
N = 1000


@pytest.fixture(scope="module")
def gsm8k_rows():
    path = Path(os.environ["COTGEN_DATASETS_DIR"]) / "gsm8k" / "main" / "train.parquet"
    table = pq.read_table(path, columns=["question", "answer"]).slice(0, N)
    return {f"easy-{i:05d}": row for i, row in enumerate(table.to_pylist())}


def test_thousand_gsm8k_questions_round_trip(emulator, gsm8k_rows, tmp_path):
    assert len(gsm8k_rows) == N
    requests = tmp_path / "requests.jsonl"
    with open(requests, "wb") as f:
        for key, row in gsm8k_rows.items():
            f.write(request_line(key, generation_request(row["question"])))

    gemini = GeminiBatchResource(emulator_url=emulator.base_url)  # offline, as on a machine without a key
    assert gemini.offline
    submitted = gemini.submit_jsonl(requests, MODEL, "roundtrip-easy-1000")
    deadline = time.monotonic() + 120
    while not (info := gemini.get_batch(submitted.name, timeout_seconds=5)).done:
        assert time.monotonic() < deadline, f"batch still {info.state}"
        time.sleep(0.2)
    assert info.state == "JOB_STATE_SUCCEEDED"
    assert (info.request_count, info.succeeded_count, info.failed_count) == (N, N, 0)

    results_path = gemini.download_results(info.result_file, tmp_path / "results.jsonl")
    outcomes = {}
    for result in iter_result_lines(results_path, WIRE):
        assert result.key not in outcomes, f"duplicate key {result.key}"
        outcomes[result.key] = result
    assert set(outcomes) == set(gsm8k_rows)  # joined by key, exactly one outcome each

    for key, result in outcomes.items():
        assert result.status == "ok", (key, result.reason)
        assert result.thought.strip() and result.answer.strip()
        assert (
            result.usage.input_tokens > 0
            and result.usage.thinking_tokens > 0
            and result.usage.output_tokens > 0
        )

    # cost: the sum of per-request costs is the price formula applied to the summed usage,
    # worked out here by hand from the batch rates ($1.00 in, $0.20 cached, $6.00 out per 1M)
    total = sum((r.usage for r in outcomes.values()), Usage())
    assert all(r.usage.input_tokens <= 200_000 for r in outcomes.values())
    by_hand = (
        (total.input_tokens - total.cached_tokens) * 1.00
        + total.cached_tokens * 0.20
        + (total.thinking_tokens + total.output_tokens) * 6.00
    ) / 1_000_000
    prices = load_prices()
    per_request = sum(cost_usd(MODEL, r.usage, prices=prices) for r in outcomes.values())
    assert per_request == pytest.approx(by_hand, rel=1e-9)
    assert cost_usd(MODEL, total, prices=prices) == pytest.approx(by_hand, rel=1e-9)
    assert by_hand > 0

    # the emulator recognised every question (so each request's last part is the question)
    # and answered with the GSM8K reference answer
    mismatches = [
        key
        for key, result in outcomes.items()
        if not answers_match(
            extract_boxed_answer(result.answer), extract_gsm8k_answer(gsm8k_rows[key]["answer"])
        )
    ]
    assert mismatches == []
