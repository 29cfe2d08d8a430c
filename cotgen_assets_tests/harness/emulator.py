"""Start and stop `cotgen-emulator` as a real process, for tests and benchmarks.

emu = start_emulator(tmp_path / "emulator", latency=0.0)
client = emu.client()            # google-genai client pointed at it (v1beta)
vertex = emu.vertex_client()     # the same in Vertex AI mode (v1beta1, gs:// in and out)
emu.set_faults(line_error_rate=0.2)
emu.set_faults(hold_count=1)     # the next job stays PENDING ...
emu.release()                    # ... until released
emu.calls()                      # the API calls it answered: method, path, status
emu.requested_keys()             # each batch job's display name and request keys
emu.restart()                    # same port, same state dir
emu.stop()
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cotgen_assets_tests.harness.dagster import free_port, stop_process

STARTUP_TIMEOUT = 20.0


def generation_request(question: str, thinking_level: str = "high") -> dict:
    """A generation request as the pipeline sends it to a Gemini API (a line's `request`)."""
    from cotgen_assets.backends.gemini_wire import request_body
    from cotgen_assets.core.prompts import generation_prompt

    return request_body(generation_prompt("", question, thinking_level))


def summarization_request(question: str, thought: str, answer: str, thinking_level: str = "low") -> dict:
    """A summarization request as the pipeline sends it to a Gemini API."""
    from cotgen_assets.backends.gemini_wire import request_body
    from cotgen_assets.core.prompts import summarization_prompt

    return request_body(summarization_prompt("", question, thought, answer, thinking_level))


def request_line(key: str, request: dict) -> bytes:
    """One line of a Gemini batch input file, for any request body (a test may bend one)."""
    import orjson

    return orjson.dumps({"key": key, "request": request}) + b"\n"


class EmulatorProcess:
    """One emulator process; `restart()` brings it back on the same port and state dir."""

    def __init__(
        self,
        state_dir: Path,
        port: int,
        latency: float,
        extra_args: Sequence[str],
        env: dict[str, str] | None,
        log_path: Path,
    ):
        self.state_dir = Path(state_dir)
        self.port = port
        self.latency = latency
        self.extra_args = list(extra_args)
        self.env = env
        self.log_path = log_path
        self.host = "127.0.0.1"
        self.base_url = f"http://{self.host}:{port}"
        self.proc: subprocess.Popen | None = None

    # ---- process --------------------------------------------------------------------------

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "cotgen_assets.emulator.server",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--state-dir",
            str(self.state_dir),
            "--latency",
            str(self.latency),
            *self.extra_args,
        ]

    def start(self) -> EmulatorProcess:
        env = dict(os.environ)
        env.update(self.env or {})
        for name in ("GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_ENTERPRISE"):
            env.pop(name, None)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env
            )
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cotgen-emulator exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.admin("GET", "health").get("ok"):
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"cotgen-emulator not healthy after {STARTUP_TIMEOUT}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc)
        self.proc = None

    def restart(self) -> EmulatorProcess:
        self.stop()
        return self.start()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    # ---- admin API --------------------------------------------------------------------------

    def admin(self, method: str, endpoint: str, body: dict | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.base_url}/_emulator/{endpoint}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Partial update of the faults (names as the CLI flags, snake_case); returns them all."""
        return self.admin("POST", "faults", faults)

    def get_faults(self) -> dict[str, Any]:
        return self.admin("GET", "faults")

    def set_quotas(self, **quotas: int | None) -> dict[str, Any]:
        """`max_active_jobs` and/or `max_enqueued_tokens` (None lifts one); returns both."""
        return self.admin("POST", "quotas", quotas)

    def created_jobs(self) -> list[dict[str, Any]]:
        """Each job this emulator's log says it created, in order: name, display name, and how many
        jobs were in flight with it."""
        found = re.findall(r'created (\S+) "([^"]*)" \(.*?, (\d+) active,', self.log_path.read_text())
        return [{"name": n, "display_name": d, "active": int(a)} for n, d, a in found]

    def requested_keys(self) -> list[tuple[str, list[str]]]:
        """(display name, the key of each request line) of every batch job this emulator was
        given, oldest first, read from its state (it keeps each job's input)."""
        batches = self.state_dir / "batches"
        jobs = sorted((json.loads(p.read_text()) for p in batches.glob("*.json")), key=lambda job: job["seq"])
        return [
            (job["display_name"], [json.loads(line)["key"] for line in self._input_lines(job["id"])])
            for job in jobs
        ]

    def _input_lines(self, job_id: str) -> list[str]:
        text = (self.state_dir / "batches" / f"{job_id}.input.jsonl").read_text()
        return [line for line in text.splitlines() if line.strip()]

    def wait_for_stalled_creates(self) -> None:
        """Until no create stalls in the slow_create fault: every job such a create makes exists."""
        self._wait_for_health(lambda health: health["stalled_creates"] == 0, "a create still stalls")

    def wait_for_references(self) -> None:
        """Until the reference problems are loaded: before, every call that answers a job waits."""
        self._wait_for_health(lambda health: health["references_loaded"], "references still load")

    def _wait_for_health(self, ready, failure: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready(self.admin("GET", "health")):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{failure} after {timeout:.0f}s")
            time.sleep(0.05)

    def calls(self) -> list[dict[str, Any]]:
        """The API calls this process answered, oldest first: `{"method", "path", "status"}`."""
        return self.admin("GET", "calls")["calls"]

    def hold(self, name: str | None = None) -> dict[str, Any]:
        """Hold `name` (a batch name), or every unfinished and every new job, until released: a held
        job stays as it is (a new one PENDING). To hold only the next N new jobs:
        `set_faults(hold_count=N)`."""
        return self.admin("POST", "hold", {"hold": True} if name is None else {"hold": True, "name": name})

    def release(self, name: str | None = None) -> dict[str, Any]:
        """Let `name`, or every held job, go on (and hold no new ones); returns the hold state."""
        return self.admin("POST", "hold", {"hold": False} if name is None else {"hold": False, "name": name})

    # ---- clients ----------------------------------------------------------------------------

    def client(self, api_version: str = "v1beta", api_key: str = "emulator-key", **http_options):
        """A real `google-genai` client talking to this emulator."""
        from google import genai
        from google.genai import types

        return genai.Client(
            api_key=api_key,
            http_options=types.HttpOptions(base_url=self.base_url, api_version=api_version, **http_options),
        )

    def vertex_client(
        self,
        project: str = "test-proj",
        location: str = "us-central1",
        api_version: str = "v1beta1",
        token: str = "emulator-token",
    ):
        """A real `google-genai` client in Vertex AI mode talking to this emulator.

        Project and location are passed explicitly (with a custom base URL the SDK drops the ones
        from the environment), and a fixed bearer token stands in for credentials (anonymous ones
        cannot be refreshed)."""
        import google.oauth2.credentials
        from google import genai
        from google.genai import types

        return genai.Client(
            vertexai=True,
            project=project,
            location=location,
            credentials=google.oauth2.credentials.Credentials(token=token),
            http_options=types.HttpOptions(base_url=self.base_url, api_version=api_version),
        )


def start_emulator(
    state_dir: str | os.PathLike,
    port: int | None = None,
    latency: float = 0.0,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    log_path: str | os.PathLike | None = None,
) -> EmulatorProcess:
    """Launch `python -m cotgen_assets.emulator.server` on a free loopback port; wait until healthy.

    `COTGEN_DATASETS_DIR` is passed through from the environment (or `env`). The log (stdout and
    stderr) goes to `log_path`, by default `<state_dir>.log` beside the state dir.
    """
    state_dir = Path(state_dir)
    log = Path(log_path) if log_path else state_dir.with_name(state_dir.name + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    emulator = EmulatorProcess(state_dir, port or free_port(), latency, extra_args, env, log)
    return emulator.start()
