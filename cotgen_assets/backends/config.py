"""Which batch API the platform uses, and where, from the environment: the one place it is read.

`COTGEN_GEMINI_BACKEND` is `developer` (the Gemini Developer API, the default) or `vertex` (Vertex AI
batch prediction; `GOOGLE_GENAI_USE_VERTEXAI=true` also selects it when the first is unset). Vertex
AI needs `GOOGLE_CLOUD_PROJECT`, takes `GOOGLE_CLOUD_LOCATION` (default `global`) and a staging
prefix, `COTGEN_VERTEX_STAGING=gs://bucket/prefix` (default: `COTGEN_DATA_DIR` when that is a gs://
URL). A value it cannot use is one SettingError naming the variable, raised when the code location
loads, before anything is written.
"""

import os
import re
from dataclasses import dataclass

from cotgen_assets.core.settings import SettingError

DEVELOPER, VERTEX = "developer", "vertex"
BACKENDS = (DEVELOPER, VERTEX)
DEFAULT_LOCATION = "global"
_GS_PREFIX = re.compile(r"^gs://[a-z0-9][a-z0-9._-]*[a-z0-9](/.*)?$")
# Google's formats: a project id is 6 to 30 lower-case ASCII letters, digits or hyphens, starting with
# a letter, not ending with a hyphen (gcloud projects create); older projects may carry a domain
# prefix ("example.com:my-project"); the API also takes the project's number. A location is
# `global`, a multi-region (`us`, `eu`) or a region (`us-central1`, `northamerica-northeast1`):
# it becomes part of the API's host name.
_PROJECT_ID = re.compile(r"^(([a-z0-9][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]|[0-9]{6,20})$")
_LOCATION = re.compile(r"^[a-z]+(-[a-z]+[0-9]+)?$")


@dataclass(frozen=True)
class VertexSettings:
    project: str
    location: str
    staging: str  # gs://bucket/prefix, without a trailing slash


def _env(name: str) -> str:
    return (os.environ.get(name) or "").strip()


def backend_from_env(names: tuple[str, ...] = BACKENDS) -> str:
    """`developer`, `vertex`, or another of the registered backends' `names`."""
    chosen = _env("COTGEN_GEMINI_BACKEND")
    if chosen:
        if chosen.lower() not in names:
            others = "".join(f", {name!r}" for name in names if name not in BACKENDS)
            raise SettingError(
                f"COTGEN_GEMINI_BACKEND={chosen!r} is not valid: it takes 'developer' (the Gemini "
                f"Developer API, the default) or 'vertex' (Vertex AI batch prediction){others}; "
                "fix it or unset it"
            )
        return chosen.lower()
    return VERTEX if _env("GOOGLE_GENAI_USE_VERTEXAI").lower() in ("true", "1") else DEVELOPER


def check_project_and_location(project: str, location: str) -> None:
    """Refuse a project id or location Google cannot have made, before it reaches a URL (where
    `a?b#c` would become a query and a fragment, and the API a misleading 403)."""
    if not _PROJECT_ID.match(project):
        raise SettingError(
            f"GOOGLE_CLOUD_PROJECT={project!r} is not a Google Cloud project id: it takes 6 to 30 lower-case "
            "letters, digits or hyphens, starting with a letter and not ending with a hyphen (the id or "
            "number, not the project's display name); fix it"
        )
    if not _LOCATION.match(location):
        raise SettingError(
            f"GOOGLE_CLOUD_LOCATION={location!r} is not a Google Cloud location: it takes a region "
            "(e.g. us-central1, europe-west4), a multi-region (us, eu) or 'global'; fix it or unset it"
        )


def check_vertex(
    project: str | None, location: str | None, staging: str | None, base_url: str | None
) -> None:
    """Refuse Vertex AI settings that cannot work, naming the variable to set."""
    if not project:
        raise SettingError(
            "GOOGLE_CLOUD_PROJECT is not set: the Vertex AI backend (COTGEN_GEMINI_BACKEND=vertex) runs "
            "its batch jobs in a Google Cloud project; set it to the project's id, or unset "
            "COTGEN_GEMINI_BACKEND to use the Gemini Developer API"
        )
    check_project_and_location(project, location or "")
    if not staging:
        raise SettingError(
            "COTGEN_VERTEX_STAGING is not set: the Vertex AI backend uploads request files to, and reads "
            "answers from, a Cloud Storage prefix; set COTGEN_VERTEX_STAGING=gs://BUCKET/prefix (it "
            "defaults to COTGEN_DATA_DIR when that is a gs:// URL)"
        )
    if not _GS_PREFIX.match(staging):
        raise SettingError(
            f"COTGEN_VERTEX_STAGING={staging!r} is not valid: Vertex AI batch prediction reads and writes "
            "Cloud Storage only; write gs://BUCKET/prefix (bucket in lower case)"
        )
    if base_url and not _env("STORAGE_EMULATOR_HOST"):
        raise SettingError(
            f"COTGEN_GEMINI_BASE_URL={base_url!r} points Vertex AI at a local server, but "
            "STORAGE_EMULATOR_HOST is not set, so request files would go to the real "
            f"{staging}: set STORAGE_EMULATOR_HOST to the GCS stand-in (scripts/start.sh does), or unset "
            "COTGEN_GEMINI_BASE_URL to use Vertex AI"
        )
    try:
        import gcsfs  # noqa: F401 - the staging bucket is read and written through it
    except ImportError:
        raise SettingError(
            "the Vertex AI backend needs the 'gcs' extra for its staging bucket: "
            "pip install 'cotgen_assets[gcs]'"
        ) from None


def vertex_from_env(base_url: str | None) -> VertexSettings:
    """The Vertex AI settings, checked."""
    data_dir = _env("COTGEN_DATA_DIR")
    staging = _env("COTGEN_VERTEX_STAGING") or (data_dir if data_dir.startswith("gs://") else "")
    settings = VertexSettings(
        project=_env("GOOGLE_CLOUD_PROJECT"),
        location=_env("GOOGLE_CLOUD_LOCATION") or DEFAULT_LOCATION,
        staging=staging.rstrip("/"),
    )
    check_vertex(settings.project, settings.location, settings.staging, base_url)
    return settings
