"""End to end: a click of `problem_preview` under `dagster dev` with the emulator, as a new user would
click it first: its table within a minute, only synchronous calls, nothing in the dataset."""

import time

import dagster as dg
import pytest

from cotgen_assets.core.pricing import load_prices
from cotgen_assets_tests.harness.dagster import wait_for
from cotgen_assets_tests.harness.pipeline import read_jsonl
from cotgen_assets_tests.harness.platform import latest_metadata, offline_platform

pytestmark = pytest.mark.e2e
MODEL = "gemini-3.1-pro-preview"
TABLE_WITHIN_SECONDS = 60  # the promise: a deadline awaited, not a speed measured (see bench/)


def click(platform, assets: list[str], run_config: dict | None = None) -> str:
    return platform.client.submit_job_execution(
        "__ASSET_JOB",
        repository_location_name="cotgen_assets",
        asset_selection=assets,
        tags={"dagster/partition": "easy"},
        run_config=run_config or {},
    )


def test_a_preview_click_shows_its_table_within_a_minute_and_pays_only_for_generate_content(tmp_path):
    with offline_platform(tmp_path) as platform:
        instance = platform.instance
        platform.wait_run(click(platform, ["source_problems"]))
        config = {"ops": {"problem_preview": {"config": {"num_problems": 3, "tier": "flex"}}}}
        clicked = time.monotonic()
        run_id = click(platform, ["problem_preview"], config)

        def table():
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("problem_preview"), asset_partitions=["easy"]),
                limit=1,
            ).records
            return records or None

        wait_for(table, timeout=TABLE_WITHIN_SECONDS, interval=0.5, message="the preview's table")
        seconds = time.monotonic() - clicked
        platform.wait_run(run_id)
        print(f"preview of 3 easy problems: click to table {seconds:.1f}s under dagster dev")

        meta = latest_metadata(instance, "problem_preview", "easy")
        assert len(meta["preview"].records) == 3
        records = read_jsonl(platform.data / "preview_easy.jsonl")
        num_correct = sum(1 for r in records if r["correct"])
        calls = platform.emulator.calls()
        assert calls and all(c["path"] == f"/v1beta/models/{MODEL}:generateContent" for c in calls), calls
        assert len(calls) == 3 + num_correct, "3 answers and a draft of each correct one, no batch"
        assert not list(platform.data.glob("cot_*")) and not list(platform.data.glob("cod_*"))

        flex = load_prices()[MODEL].flex
        usages = [
            r[block]["usage"] for r in records for block in ("generation", "summarization") if block in r
        ]
        by_hand = (
            sum(
                (u["input_tokens"] - u["cached_tokens"]) * flex.input
                + u["cached_tokens"] * flex.cached_input
                + (u["thinking_tokens"] + u["output_tokens"]) * flex.output
                for u in usages
            )
            / 1e6
        )
        assert meta["cost_usd"] == pytest.approx(by_hand) and by_hand > 0
