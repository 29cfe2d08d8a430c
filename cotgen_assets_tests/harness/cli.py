"""Run the project's commands as a user's shell does: `dagster asset materialize` and `cotgen`, each
in its own process, with the test's environment."""

import os
import subprocess
import sys
from pathlib import Path

import orjson

from cotgen_assets_tests.harness.dagster import ROOT


def dagster_materialize(
    home: Path, asset: str, partition: str | None = None, config: dict | None = None, **env: str
) -> subprocess.CompletedProcess:
    """`dagster asset materialize -m cotgen_assets.definitions --select ASSET`, as the README shows it."""
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "cotgen_assets.definitions"]
    command += ["--select", asset] + (["--partition", partition] if partition else [])
    if config:
        command += ["--config-json", orjson.dumps({"ops": {asset: {"config": config}}}).decode()]
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "DAGSTER_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def cotgen(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    """`.venv/bin/cotgen ARGS` (the console script of this interpreter's environment), from `cwd`."""
    return subprocess.run(
        [str(Path(sys.executable).with_name("cotgen")), *args],
        cwd=cwd,
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
