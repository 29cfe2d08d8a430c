"""`scripts/start.sh` as a user runs it, offline: stopped with Ctrl-C or a SIGTERM, nothing it
started is left running (dagster dev's webserver, daemon and code servers, the emulator)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from cotgen_assets_tests.harness.dagster import ROOT, free_port, wait_for

# What start.sh starts offline, by a word of each command line; dagster dev starts the rest.
SERVERS = ("cotgen-emulator", "dagster dev", "dagster_webserver", "dagster._daemon", "code-server")


def project_folder(tmp_path):
    """A project folder of links to this one's scripts and to the test run's venv (its bin), so that
    the emulator's state and log go to tmp_path; a fresh install stamp keeps setup.sh from syncing."""
    folder = tmp_path / "project"
    (folder / "scripts").mkdir(parents=True)
    for name in ("start.sh", "setup.sh", "dagster.yaml"):
        (folder / "scripts" / name).symlink_to(ROOT / "scripts" / name)
    for name in ("workspace.yaml", "pyproject.toml", "uv.lock"):
        (folder / name).symlink_to(ROOT / name)
    (folder / ".venv").mkdir()
    (folder / ".venv" / "bin").symlink_to(Path(sys.prefix) / "bin")
    (folder / ".venv" / ".cotgen-installed").touch()
    return folder


def running(processes: list[psutil.Process]) -> dict[psutil.Process, str]:
    """Each process still running (not ended, not a zombie) and its command line."""
    commands = {}
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                commands[process] = " ".join(process.cmdline())
        except psutil.NoSuchProcess:
            pass
    return commands


@pytest.mark.e2e
@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_stopping_start_sh_stops_every_process_it_started(tmp_path, stop):
    folder = project_folder(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "COTGEN_GEMINI_BACKEND")}
    env |= {
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "COTGEN_EMULATOR_PORT": str(free_port()),
        "COTGEN_UI_PORT": str(free_port()),
    }
    log_path = tmp_path / "start.log"
    # Its own session, as a terminal gives a command its own foreground process group.
    start = subprocess.Popen(
        ["bash", str(folder / "scripts" / "start.sh")],
        env=env,
        stdout=open(log_path, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    started = [psutil.Process(start.pid)]  # start.sh, then every process under it

    def every_server_started() -> bool:
        assert start.poll() is None, f"start.sh exited with {start.returncode}:\n{log_path.read_text()}"
        started[1:] = started[0].children(recursive=True)
        commands = running(started).values()
        return all(any(server in command for command in commands) for server in SERVERS)

    try:
        wait_for(every_server_started, 300, message=f"start.sh to start {SERVERS}")
        if stop == "ctrl-c":
            os.killpg(start.pid, signal.SIGINT)  # what the terminal sends its foreground group
        else:
            start.terminate()
        wait_for(lambda: not running(started), 60, message="every process start.sh started to end")
    finally:
        for process in running(started):
            process.kill()
        start.wait(timeout=10)
