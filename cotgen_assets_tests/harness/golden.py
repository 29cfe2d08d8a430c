"""A golden run: `easy` carried from source_problems to CoD, reduced to what must not change.

`snapshot` keeps the CoT and CoD records, the cost and token figures of every asset's
materialization, and the samples assets' check results. It normalises only what differs between
two runs of the same code: the batch job names the API hands out (each becomes `<batch-N>`, in
order of first appearance) and the submission's `rounds_id`/time stamps, which it leaves out.
Submission ids stay: they hash the request bytes, so a changed request shows up as a changed id.
"""

from pathlib import Path

import dagster as dg
import orjson

from cotgen_assets.defs.assets.sources import source_problems
from cotgen_assets_tests.harness.dagster import CHAIN
from cotgen_assets_tests.harness.pipeline import read_jsonl

GOLDEN_DIR = Path(__file__).parents[1] / "golden"
ASSETS = CHAIN[1:]  # every asset after source_problems: a batch, its results, its samples
# The figures each asset's metadata must keep: counts, tokens and money, no paths or endpoints.
KEPT_METADATA = {
    "submission_id",
    "num_requests",
    "num_retries",
    "num_new_problems",
    "num_shards",
    "projected_cost_usd",
    "projected_input_tokens",
    "projected_thinking_tokens",
    "projected_output_tokens",
    "model",
    "prompt_version",
    "batch_names",
    "job_state",
    "num_succeeded",
    "num_failed",
    "num_failed_jobs",
    "job_errors",
    "num_samples",
    "num_new",
    "failed_by_reason",
    "num_unknown_keys",
    "num_duplicate_keys",
    "unused_lines_cost_usd",
    "input_tokens",
    "cached_tokens",
    "thinking_tokens",
    "output_tokens",
    "cost_usd",
    "total_cost_usd",
    "accuracy",
    "answer_agreement",
    "draft_to_thought_token_ratio",
}


def run_easy(pipeline, limit: int = 6) -> None:
    """What a person does: materialize the sources, ask for `limit` samples, let the sensor finish."""
    pipeline.materialize([source_problems], "easy")
    pipeline.submit_generation("easy", limit=limit)
    pipeline.drain()


def snapshot(pipeline, data_dir: Path) -> dict:
    """The run's records, costs and checks, batch names normalised (see the module docstring)."""
    names: dict[str, str] = {}

    def batch(name: str) -> str:
        return names.setdefault(name, f"<batch-{len(names) + 1}>")

    metadata = {asset: _metadata(pipeline, asset) for asset in ASSETS}
    records = {f: read_jsonl(data_dir / f) for f in ("cot_easy.jsonl", "cod_easy.jsonl")}
    for asset in ASSETS:
        if "batch_names" in metadata[asset]:
            metadata[asset]["batch_names"] = [batch(n) for n in metadata[asset]["batch_names"]]
    for rows in records.values():
        for row in rows:
            for block in ("generation", "summarization"):
                if block in row:
                    row[block]["batch"] = batch(row[block]["batch"])
    return {"metadata": metadata, "checks": _checks(pipeline.instance), "records": records}


def _metadata(pipeline, asset: str) -> dict:
    kept = {k: v for k, v in pipeline.metadata(asset, "easy").items() if k in KEPT_METADATA}
    return orjson.loads(orjson.dumps(kept, default=str))  # plain JSON values, as stored


def _checks(instance: dg.DagsterInstance) -> dict:
    """The latest result of every check of the samples assets: passed, severity and its numbers."""
    found = {}
    for asset in ("cot_samples", "cod_samples"):
        for spec in _check_keys(asset):
            record = instance.get_latest_asset_check_evaluation_record(spec)
            evaluation = record.event.dagster_event.event_specific_data if record and record.event else None
            if evaluation is None:
                continue
            found[f"{asset}/{spec.name}"] = {
                "passed": evaluation.passed,
                "severity": evaluation.severity.value,
                "metadata": orjson.loads(
                    orjson.dumps({k: v.value for k, v in evaluation.metadata.items()}, default=str)
                ),
            }
    return found


def _check_keys(asset: str) -> list[dg.AssetCheckKey]:
    from cotgen_assets.core.quality import gate_names
    from cotgen_assets.core.stages import STAGES

    stage = next(s for s in STAGES if s.samples_asset == asset)
    return [dg.AssetCheckKey(dg.AssetKey(asset), name) for name in gate_names(stage)]


def golden_text(snap: dict) -> bytes:
    """The stored form: sorted keys, indented, so a diff of the file reads well."""
    return orjson.dumps(snap, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"
