"""The `gemini` resource: the batch API the assets and the sensor use, chosen by configuration.

A thin Dagster adapter: its fields are the settings, `backend` names a registered backend
(`registry`: the Gemini Developer API, offline the local emulator; Vertex AI batch prediction; or
one added there), and every call goes to `lifecycle.BatchJobs` over that backend. Assets, sensor,
records, cost and trace do not know which one runs.
"""

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from cotgen_assets.backends.base import CREATE_TIMEOUT_SECONDS, BackendSettings, BatchInfo
from cotgen_assets.backends.config import DEVELOPER, VERTEX, backend_from_env, vertex_from_env
from cotgen_assets.backends.lifecycle import BatchJobs
from cotgen_assets.backends.registry import backend_names, make_backend, surely_offline
from cotgen_assets.backends.retries import GeminiError

__all__ = ["OFFLINE_TAG", "GeminiBatchResource", "GeminiError", "gemini_from_env"]

OFFLINE_TAG = {"cotgen/gemini": "offline-emulator"}  # on assets and runs, so offline mode shows in the UI


class GeminiBatchResource(dg.ConfigurableResource):
    """Upload request files, run batch jobs and download their answers, on the backend configured.

    `developer`: with no `api_key` it is offline and uses the emulator at `base_url`, else
    `emulator_url`. `vertex`: jobs of `project` in `location`, staged under `staging` (gs://);
    with `base_url`, a local server (the emulator) and the GCS stand-in instead of Google.
    """

    backend: str = DEVELOPER
    api_key: str | None = None
    base_url: str | None = None
    emulator_url: str = "http://127.0.0.1:8765"
    project: str | None = None
    location: str = "global"
    staging: str | None = None
    timeout_seconds: float = 30.0
    create_timeout_seconds: float = CREATE_TIMEOUT_SECONDS
    max_attempts: int = 6
    backoff_seconds: float = 1.0

    _jobs: Any = PrivateAttr(default=None)

    def __repr_args__(self):
        """Never show the key, even in a pytest failure or a debug print."""
        for name, value in super().__repr_args__():
            yield name, ("***" if name == "api_key" and value else value)

    def settings(self) -> BackendSettings:
        fields = BackendSettings.__dataclass_fields__
        return BackendSettings(**{name: getattr(self, name) for name in fields})

    def batch_api(self) -> BatchJobs:
        """The backend's calls, made at first use (a bad Vertex AI setting is a SettingError here)."""
        if self._jobs is None:
            self._jobs = BatchJobs(make_backend(self.backend, self.settings()))
        return self._jobs

    @property
    def offline(self) -> bool:
        """Whether a local stand-in answers, not Gemini (on the Developer API, asked once with a key)."""
        return self.batch_api().backend.offline

    @property
    def surely_offline(self) -> bool:
        """Offline, known without a call (when the code location loads): no key on the Developer
        API, a local server on Vertex AI."""
        return surely_offline(self.backend, self.settings())

    @property
    def endpoint(self) -> str | None:
        """The base URL in use; None means the API's own endpoint."""
        return self.batch_api().backend.endpoint

    @property
    def api_calls(self) -> int:
        """API calls made through this resource so far (each attempt and page counts one)."""
        return self.batch_api().retrying.calls

    def describe(self) -> str:
        """For logs and metadata: which API, where; never a key."""
        return self.batch_api().backend.describe()

    def check_staging(self) -> None:
        self.batch_api().backend.check_staging()

    def upload_jsonl(self, path: str | Path, display_name: str, folder: str = "") -> str:
        return self.batch_api().upload(path, display_name, folder)

    def create_batch(self, model: str, source: str, display_name: str) -> BatchInfo:
        return self.batch_api().create_batch(model, source, display_name)

    def submit_jsonl(
        self, path: str | Path, model: str, display_name: str, same_ask: str = "", folder: str = ""
    ) -> BatchInfo:
        return self.batch_api().submit_jsonl(path, model, display_name, same_ask, folder)

    def get_batch(
        self, name: str, timeout_seconds: float | None = None, max_attempts: int | None = None
    ) -> BatchInfo:
        return self.batch_api().get_batch(name, timeout_seconds, max_attempts)

    def list_batches(self, page_size: int = 50) -> Iterator[BatchInfo]:
        return self.batch_api().list_batches(page_size)

    def find_batches(self, match: Callable[[str], bool], max_pages: int = 20) -> list[BatchInfo]:
        return self.batch_api().find_batches(match, max_pages)

    def find_batch(self, display_name: str, max_pages: int = 20) -> BatchInfo | None:
        return self.batch_api().find_batch(display_name, max_pages)

    def cancel_batch(self, name: str) -> None:
        self.batch_api().cancel_batch(name)

    def delete_batch(self, name: str) -> None:
        self.batch_api().delete_batch(name)

    def generate(self, model: str, request_line: bytes, tier: str) -> bytes:
        """One synchronous call for a request line at `tier`; its answer as an output line."""
        return self.batch_api().backend.generate(model, request_line, tier)

    def download_results(self, result_file: str, dest: str | Path) -> Path:
        return self.batch_api().download_results(result_file, dest)


def gemini_from_env() -> GeminiBatchResource:
    """The resource the environment configures (see `config`); a bad setting is a SettingError.

    Developer API: the real one when GEMINI_API_KEY is set, else the local emulator (offline).
    Vertex AI: never the key; Application Default Credentials, or a fixed token for a local server.
    Another registered backend: its name and the base URL, nothing else.
    """
    base_url = os.environ.get("COTGEN_GEMINI_BASE_URL") or None
    if (backend := backend_from_env(backend_names())) == VERTEX:
        vertex = vertex_from_env(base_url)
        return GeminiBatchResource(
            backend=VERTEX,
            base_url=base_url,
            project=vertex.project,
            location=vertex.location,
            staging=vertex.staging,
        )
    if backend != DEVELOPER:
        return GeminiBatchResource(backend=backend, base_url=base_url)
    return GeminiBatchResource(
        api_key=dg.EnvVar("GEMINI_API_KEY") if os.environ.get("GEMINI_API_KEY") else None,
        base_url=base_url,
    )
