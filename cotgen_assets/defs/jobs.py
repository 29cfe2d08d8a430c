"""The jobs batch_completion_sensor launches when a batch ends."""

import dagster as dg

generation_results_job = dg.define_asset_job(
    "generation_results_job",
    selection=["generation_results", "cot_samples", "summarization_batch"],
    description="Download a finished generation batch, save CoT samples, submit the summarization batch.",
)
summarization_results_job = dg.define_asset_job(
    "summarization_results_job",
    selection=["summarization_results", "cod_samples"],
    description="Download a finished summarization batch and save CoD samples.",
)
summarization_batch_job = dg.define_asset_job(
    "summarization_batch_job",
    selection=["summarization_batch"],
    description="Submit the CoT samples still lacking a CoD, once an earlier summarization is ingested.",
)
JOBS = [generation_results_job, summarization_results_job, summarization_batch_job]
