"""The one code location: every asset, job, sensor and resource of cotgen_assets."""

import os

import dagster as dg

from cotgen_assets import assets
from cotgen_assets.gemini import OFFLINE_TAG, GeminiBatchResource
from cotgen_assets.sensors import batch_completion_sensor


def gemini_resource() -> GeminiBatchResource:
    """The real Gemini API when GEMINI_API_KEY is set, else the local emulator (offline mode)."""
    return GeminiBatchResource(
        api_key=dg.EnvVar("GEMINI_API_KEY") if os.environ.get("GEMINI_API_KEY") else None,
        base_url=os.environ.get("COTGEN_GEMINI_BASE_URL") or None,
    )


OFFLINE_NOTE = " OFFLINE: GEMINI_API_KEY is not set, so Gemini calls go to the local emulator (no real cost)."


def mark_offline(assets_defs: list, offline: bool) -> list:
    """Make offline mode unmistakable in the UI: a tag and a sentence on every asset Gemini touches."""
    if not offline:
        return assets_defs
    return dg.map_asset_specs(
        lambda spec: spec.replace_attributes(
            description=(spec.description or "") + OFFLINE_NOTE
        ).merge_attributes(tags=OFFLINE_TAG),
        assets_defs,
    )


_gemini = gemini_resource()
defs = dg.Definitions(
    assets=[
        assets.source_problems,
        *mark_offline(
            [
                assets.generation_batch,
                assets.generation_results,
                assets.cot_samples,
                assets.summarization_batch,
                assets.summarization_results,
                assets.cod_samples,
            ],
            _gemini.offline,
        ),
        assets.dataset_report,
    ],
    jobs=[assets.generation_results_job, assets.summarization_results_job, assets.summarization_batch_job],
    sensors=[batch_completion_sensor],
    resources={"gemini": _gemini},
    executor=dg.in_process_executor,
)
