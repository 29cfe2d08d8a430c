"""Shared fixtures. The emulator's come first; other fixtures are appended below."""

import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import cotgen_assets.backends  # noqa: F401 - registers the batch APIs' wire formats, as the code location does
from cotgen_assets_tests.harness.emulator import start_emulator
from cotgen_assets_tests.harness.gcs import BUCKET, start_gcs

# Offline copies of GSM8K and MATH (see ../shared/data/README.md), unless the caller chose others.
os.environ.setdefault("COTGEN_DATASETS_DIR", str((Path(__file__).parents[2] / "shared" / "data").resolve()))
# The only GCS the tests reach is the local stand-in, where gcsfs's bucket-layout probe over gRPC
# hangs 60 s a call: off for this process and all it starts (the emulator reads Vertex AI's input
# files with gcsfs too). gcsfs reads it once, as it is first imported.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"


@pytest.fixture(scope="session", autouse=True)
def datasets_cache(tmp_path_factory):
    """Each test process (and what it starts) its own `datasets` cache: on several workers, two loads
    of one dataset into the shared ~/.cache at once can see each other's half-written files."""
    os.environ["HF_DATASETS_CACHE"] = str(tmp_path_factory.mktemp("hf_datasets_cache"))


@pytest.fixture
def emulator(tmp_path):
    """A fresh `cotgen-emulator` process (latency 0, state in tmp_path), stopped afterwards."""
    with start_emulator(tmp_path / "emulator", latency=0.0) as emu:
        yield emu


# --------------------------------------------------------------------------- GCS and Vertex AI


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """A GCS stand-in (`gcp-storage-emulator`) for the module, with the bucket `BUCKET`."""
    server = start_gcs(BUCKET, tmp_path_factory.mktemp("gcs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gcs_env(gcs, monkeypatch):
    """gcsfs in this process (the data folder, Vertex AI's staging) goes to the module's stand-in."""
    for name, value in gcs.env().items():
        monkeypatch.setenv(name, value)
    return gcs


@pytest.fixture(scope="module")
def vertex_emulator(gcs, tmp_path_factory):
    """One emulator for the module's Vertex AI jobs, told only where the GCS stand-in is, as a user
    would tell it."""
    state_dir = tmp_path_factory.mktemp("vertex") / "emulator"
    with start_emulator(state_dir, env={"STORAGE_EMULATOR_HOST": gcs.url}) as emulator:
        yield emulator


@pytest.fixture
def emu(vertex_emulator):
    """The module's Vertex AI emulator, with no faults; the jobs a test held are released after it."""
    vertex_emulator.set_faults(reset=True)
    yield vertex_emulator
    vertex_emulator.release()


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
    from cotgen_assets_tests.harness.sources import load_source_problems

    def seed(scenario: str):
        cached = source_cache / f"{scenario}.parquet"
        if not cached.exists():
            pq.write_table(load_source_problems(get_scenario(scenario))[0], cached)
        (data_dir / scenario).mkdir(parents=True, exist_ok=True)
        shutil.copy(cached, data_dir / scenario / "source_problems.parquet")

    return seed


# --------------------------------------------------------------------------- marks and order

# Fixtures that make a Dagster instance in this process: a test using one is a `pipeline` test.
DAGSTER_FIXTURES = {"instance", "pipeline"}
# Marks of the tests that may run Dagster; the quick loop (-m "not pipeline and not e2e and not
# browser") leaves them out.
DAGSTER_MARKS = ("pipeline", "e2e", "browser")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by mark
def pytest_collection_modifyitems(items):
    """A test using a Dagster fixture is marked `pipeline` whether or not its module says so. Then the
    modules that start `dagster dev` or a browser first: on several workers (scripts/test.sh) each
    takes minutes, and one started last would keep the whole run waiting for it."""
    for item in items:
        if DAGSTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.pipeline)
    platform = {
        item.path for item in items if item.get_closest_marker("e2e") or item.get_closest_marker("browser")
    }
    items.sort(key=lambda item: item.path not in platform)


@pytest.fixture(autouse=True)
def no_dagster_instance_unless_marked(request, monkeypatch):
    """A test that makes a Dagster instance in-process (dg.materialize, a sensor tick, a lock in the
    storage) without a `pipeline` mark fails, so the quick loop stays pure functions and the wire."""
    if any(request.node.get_closest_marker(mark) for mark in DAGSTER_MARKS):
        return
    import dagster as dg

    def refuse(*args, **kwargs):
        raise AssertionError(
            f"{request.node.nodeid} makes a Dagster instance in this process: use the `instance` or "
            "`pipeline` fixture, or mark it `pipeline`"
        )

    monkeypatch.setattr(dg.DagsterInstance, "__init__", refuse)
