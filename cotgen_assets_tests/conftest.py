"""Shared fixtures. The emulator's come first; other fixtures are appended below."""

import os
from pathlib import Path

import pytest

from cotgen_assets_tests.emulator_harness import start_emulator

# Offline copies of GSM8K and MATH (see ../shared/data/README.md), unless the caller chose others.
os.environ.setdefault(
    "COTGEN_DATASETS_DIR", str((Path(__file__).parents[2] / "shared" / "data").resolve())
)


@pytest.fixture
def emulator(tmp_path):
    """A fresh `cotgen-emulator` process (latency 0, state in tmp_path), stopped afterwards."""
    emu = start_emulator(tmp_path / "emulator", latency=0.0)
    try:
        yield emu
    finally:
        emu.stop()


# --------------------------------------------------------------------------- pipeline fixtures

@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A private COTGEN_DATA_DIR for the test."""
    path = tmp_path / "data"
    monkeypatch.setenv("COTGEN_DATA_DIR", str(path))
    return path


@pytest.fixture
def instance():
    import dagster as dg

    with dg.instance_for_test() as test_instance:
        yield test_instance
