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
    "summarization_batch_job",
    selection=[SUMMARIZATION.batch_asset],
    description="Submit the CoT samples still lacking a CoD, once an earlier summarization is ingested.",
)
JOBS = [generation_results_job, summarization_results_job, summarization_batch_job]
