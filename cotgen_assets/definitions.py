"""The one code location: every asset, job, sensor and resource of cotgen_assets."""

import os

import dagster as dg

from cotgen_assets.core.settings import check_numbers
from cotgen_assets.defs import assets
from cotgen_assets.defs.jobs import JOBS
from cotgen_assets.defs.sensors import batch_completion_sensor
from cotgen_assets.gemini.resource import OFFLINE_TAG, gemini_from_env

OFFLINE_NOTE = " OFFLINE: GEMINI_API_KEY is not set, so Gemini calls go to the local emulator (no real cost)."
GEMINI_ASSETS = [
    assets.generation_batch,
    assets.generation_results,
    assets.cot_samples,
    assets.summarization_batch,
    assets.summarization_results,
    assets.cod_samples,
]


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


check_numbers()  # a bad COTGEN_*_SECONDS or COTGEN_RUN_ATTEMPTS stops the location here, named
_gemini = gemini_from_env()
# HF_TOKEN through dg.EnvVar: the UI shows the variable's name, never its value; unset, pushes are refused.
_hub = assets.HubResource(token=dg.EnvVar("HF_TOKEN")) if os.environ.get("HF_TOKEN") else assets.HubResource()
defs = dg.Definitions(
    assets=[
        assets.source_problems,
        # Without a key it is surely the emulator; with one, whether the endpoint is the emulator is
        # asked when a run first talks to it (not here: loading makes no network call).
        *mark_offline(GEMINI_ASSETS, not _gemini.api_key),
        assets.dataset_report,
        assets.hf_dataset,
    ],
    jobs=JOBS,
    sensors=[batch_completion_sensor],
    resources={"gemini": _gemini, "hub": _hub},
    executor=dg.in_process_executor,
)
