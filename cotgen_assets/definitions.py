"""The one code location: every asset, job, sensor and resource of cotgen_assets."""

import os

import dagster as dg

from cotgen_assets import assets
from cotgen_assets.gemini import GeminiBatchResource
from cotgen_assets.sensors import batch_completion_sensor


def gemini_resource() -> GeminiBatchResource:
    """The real Gemini API when GEMINI_API_KEY is set, else the local emulator (offline mode)."""
    return GeminiBatchResource(
        api_key=dg.EnvVar("GEMINI_API_KEY") if os.environ.get("GEMINI_API_KEY") else None,
        base_url=os.environ.get("COTGEN_GEMINI_BASE_URL") or None,
    )


defs = dg.Definitions(
    assets=[assets.source_problems, assets.generation_batch, assets.generation_results, assets.cot_samples,
            assets.summarization_batch, assets.summarization_results, assets.cod_samples],
    jobs=[assets.generation_results_job, assets.summarization_results_job, assets.summarization_batch_job],
    sensors=[batch_completion_sensor],
    resources={"gemini": gemini_resource()},
    executor=dg.in_process_executor,
)
