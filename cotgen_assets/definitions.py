"""The one code location: every asset, job, sensor and resource of cotgen_assets."""

import dagster as dg

from cotgen_assets.backends.resource import OFFLINE_TAG, gemini_from_env
from cotgen_assets.core.settings import validate_settings
from cotgen_assets.defs.assets import batches, previews, publishing, results, samples, sources
from cotgen_assets.defs.jobs import JOBS
from cotgen_assets.defs.resources import hub_from_env
from cotgen_assets.defs.sensors import batch_completion_sensor

OFFLINE_NOTE = {  # by backend
    "developer": " OFFLINE: GEMINI_API_KEY is not set, so Gemini calls go to the local emulator "
    "(no real cost).",
    "vertex": " OFFLINE: COTGEN_GEMINI_BASE_URL points Vertex AI at the local emulator (no real cost).",
}
GEMINI_ASSETS = [
    previews.problem_preview,
    batches.generation_batch,
    results.generation_results,
    samples.cot_samples,
    batches.summarization_batch,
    results.summarization_results,
    samples.cod_samples,
]


def mark_offline(assets_defs: list, offline: bool, backend: str = "developer") -> list:
    """Make offline mode unmistakable in the UI: a tag and a sentence on every asset Gemini touches."""
    if not offline:
        return assets_defs
    return dg.map_asset_specs(
        lambda spec: spec.replace_attributes(
            description=(spec.description or "") + OFFLINE_NOTE[backend]
        ).merge_attributes(tags=OFFLINE_TAG),
        assets_defs,
    )


validate_settings()  # a bad COTGEN_*_SECONDS or COTGEN_RUN_ATTEMPTS stops the location here, named
_gemini = gemini_from_env()  # so does a bad COTGEN_GEMINI_BACKEND or Vertex AI setting
defs = dg.Definitions(
    assets=[
        sources.source_problems,
        # Without a key (Vertex AI: with a local base URL) it is surely the emulator; with one, whether
        # the endpoint is the emulator is asked when a run first talks to it (loading makes no call).
        *mark_offline(GEMINI_ASSETS, _gemini.surely_offline, _gemini.backend),
        publishing.dataset_report,
        publishing.hf_dataset,
    ],
    jobs=JOBS,
    sensors=[batch_completion_sensor],
    resources={"gemini": _gemini, "hub": hub_from_env()},
    executor=dg.in_process_executor,
)
