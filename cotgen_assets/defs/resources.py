"""The resources the assets take besides `gemini` (which is `backends/resource.py`'s)."""

import os

import dagster as dg


class HubResource(dg.ConfigurableResource):
    """The Hugging Face Hub write token (`HF_TOKEN`, through `dg.EnvVar`); None: export only."""

    token: str | None = None


def hub_from_env() -> HubResource:
    """HF_TOKEN through dg.EnvVar: the UI shows the variable's name, never its value; unset, pushes are
    refused."""
    return HubResource(token=dg.EnvVar("HF_TOKEN")) if os.environ.get("HF_TOKEN") else HubResource()
