"""Start `dagster dev` (webserver + daemon) as a real process and talk to it over GraphQL."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The assets from the sources to CoD, each the one before's only upstream, as the UI draws them.
CHAIN = (
    "source_problems",
    "generation_batch",
    "generation_results",
    "cot_samples",
    "summarization_batch",
    "summarization_results",
    "cod_samples",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not ended within 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_for(condition, timeout: float, interval: float = 0.5, message: str = "condition"):
    """Poll `condition()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {message}")
        time.sleep(interval)


@dataclass
class DagsterDev:
    process: subprocess.Popen
    port: int
    home: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise RuntimeError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def location_status(self) -> dict[str, str]:
        """Each code location's load status; a location that failed to load is its error message."""
        data = self.graphql(
            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
            "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
        )
        entries = data["workspaceOrError"]["locationEntries"]
        return {
            e["name"]: (e["locationOrLoadError"] or {}).get("message") or e["loadStatus"] for e in entries
        }

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Ctrl-C, as a person would (dagster dev ignores SIGTERM); then kill what is left."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # any straggler of the group
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)


def start_dagster_dev(
    home: Path, env: dict | None = None, timeout: float = 300, dagster_yaml: Path | None = None
) -> DagsterDev:
    """`dagster dev -w workspace.yaml` in the project root with its own DAGSTER_HOME (and dagster.yaml).
    Loading is awaited up to `timeout`: on a busy 2-core machine it took over 120 s."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(dagster_yaml or ROOT / "scripts" / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    log_path = home / "dagster-dev.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        env={**os.environ, **(env or {}), "DAGSTER_HOME": str(home)},
        stdout=open(log_path, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    dev = DagsterDev(process, port, home, log_path)

    def loaded():
        if process.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {process.returncode}:\n{dev.log()[-3000:]}")
        try:
            status = dev.location_status()
        except OSError:
            return False
        if status.get("cotgen_assets") in (None, "LOADING"):
            return False
        # Every platform test starts here: the README's workspace has exactly this one location.
        assert status == {"cotgen_assets": "LOADED"}, f"the code location did not load: {status}"
        return True

    try:
        wait_for(loaded, timeout, message="dagster dev to load the cotgen_assets code location")
    except Exception:
        dev.stop()
        raise
    return dev
