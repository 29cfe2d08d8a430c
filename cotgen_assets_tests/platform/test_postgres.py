"""Postgres for real: the documented Postgres dagster.yaml on a PostgreSQL server the test starts itself.

The whole flow on it (`dagster dev`, the sensor carrying a submission to CoD, runs, events and ticks
read back from Postgres's tables) is test_two_instances.py's machine A.
"""

import dagster as dg
import pytest
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from cotgen_assets_tests.harness.postgres import POSTGRES_DAGSTER_YAML, start_postgres

pytestmark = pytest.mark.pipeline  # a Dagster instance in this process, on Postgres


@pytest.fixture(scope="module")
def postgres_server():
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def postgres_url(postgres_server):
    """postgresql://dagster:<pw>@127.0.0.1:<port>/dagster of a server running for this module."""
    return postgres_server.url


@pytest.fixture
def postgres_env(postgres_server, monkeypatch):
    """The DAGSTER_PG_* variables, in this process too (the instance here reads the same file)."""
    for name, value in postgres_server.env().items():
        monkeypatch.setenv(name, value)
    return postgres_server.env()


def test_the_documented_dagster_yaml_gives_postgres_run_event_and_schedule_storage(
    tmp_path, postgres_server, postgres_url, postgres_env
):
    """With the `postgres` extra the documented file loads (SQLAlchemy 2.1 failed: no psycopg)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(POSTGRES_DAGSTER_YAML.read_text())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert instance.run_storage.postgres_url == postgres_url
        run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job())
        assert instance.get_run_by_id(run.run_id).job_name == "noop"
    assert postgres_server.query("SELECT pipeline_name FROM runs WHERE run_id = %s", run.run_id) == [
        ("noop",)
    ]
    assert not list(home.rglob("*.db")), "nothing may go to SQLite"
