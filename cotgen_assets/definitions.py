"""The one code location: every asset, check, job, sensor and resource of cotgen_assets."""

import dagster as dg

from cotgen_assets import assets

defs = dg.Definitions(
    assets=[assets.source_problems],
    executor=dg.in_process_executor,
)
