"""The jobs batch_completion_sensor launches when a batch ends."""

import dagster as dg

from cotgen_assets.core.stages import GENERATION, SUMMARIZATION

generation_results_job = dg.define_asset_job(
    GENERATION.results_job,
    selection=[GENERATION.results_asset, GENERATION.samples_asset, SUMMARIZATION.batch_asset],
    description="Download a finished generation batch, save CoT samples, submit the summarization batch.",
)
summarization_results_job = dg.define_asset_job(
    SUMMARIZATION.results_job,
    selection=[SUMMARIZATION.results_asset, SUMMARIZATION.samples_asset],
    description="Download a finished summarization batch and save CoD samples.",
)
summarization_batch_job = dg.define_asset_job(
    SUMMARIZATION.batch_job,
    selection=[SUMMARIZATION.batch_asset],
    description="Submit the CoT samples still lacking a CoD, once an earlier summarization is ingested.",
)
generation_batch_job = dg.define_asset_job(
    GENERATION.batch_job,
    selection=[GENERATION.batch_asset],
    description="Submit the next fill round of a scenario with auto_fill that is still short of its limit.",
)
JOBS = [generation_results_job, summarization_results_job, summarization_batch_job, generation_batch_job]

ROUND_TAG = "cotgen/round"  # which fill round of its run of rounds a generation_batch run is
ROUNDS_TAG = "cotgen/rounds"  # the run of rounds it belongs to: the run id of the click that began it


def drafts_run_config(generation_batch: dict | None) -> dict:
    """The run config of a summarization the sensor submits for a click's CoT samples: the click's
    `max_cost_usd` is the budget of the drafts too, so a budget raised to send a large generation
    batch also lets its drafts go (the default, $100, stays $100 for both)."""
    budget = ((generation_batch or {}).get("rounds_config") or {}).get("max_cost_usd")
    if budget is None:
        return {}
    return {"ops": {SUMMARIZATION.batch_asset: {"config": {"max_cost_usd": budget}}}}
