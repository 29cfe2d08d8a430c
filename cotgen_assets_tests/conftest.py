"""Shared fixtures. The emulator's come first; other fixtures are appended below."""

import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cotgen_assets_tests.harness.emulator import start_emulator

# Offline copies of GSM8K and MATH (see ../shared/data/README.md), unless the caller chose others.
os.environ.setdefault("COTGEN_DATASETS_DIR", str((Path(__file__).parents[2] / "shared" / "data").resolve()))


@pytest.fixture(scope="session", autouse=True)
def datasets_cache(tmp_path_factory):
    """Each test process (and what it starts) its own `datasets` cache: on several workers, two loads
    of one dataset into the shared ~/.cache at once can see each other's half-written files."""
    os.environ["HF_DATASETS_CACHE"] = str(tmp_path_factory.mktemp("hf_datasets_cache"))


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


@pytest.fixture(scope="session")
def source_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("source_problems")


@pytest.fixture
def pipeline(instance, emulator, data_dir):
    """The pipeline in-process on a test instance, against a fresh emulator."""
    from cotgen_assets_tests.harness.pipeline import Pipeline

    return Pipeline(instance, emulator.base_url)


@pytest.fixture
def sources(data_dir, source_cache):
    """Put a scenario's source_problems.parquet in place, as a materialization would."""
    from cotgen_assets.core.scenarios import get_scenario
    from cotgen_assets.core.sources import load_source_problems

    def seed(scenario: str):
        cached = source_cache / f"{scenario}.parquet"
        if not cached.exists():
            pq.write_table(load_source_problems(get_scenario(scenario))[0], cached)
        (data_dir / scenario).mkdir(parents=True, exist_ok=True)
        shutil.copy(cached, data_dir / scenario / "source_problems.parquet")

    return seed


# --------------------------------------------------------------------------- order


def pytest_collection_modifyitems(items):
    """Modules that start `dagster dev` or a browser first: on several workers (scripts/test.sh) each
    takes minutes, and one started last would keep the whole run waiting for it."""
    platform = {
        item.path for item in items if item.get_closest_marker("e2e") or item.get_closest_marker("browser")
    }
    items.sort(key=lambda item: item.path not in platform)
