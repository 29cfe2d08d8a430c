"""Postgres for real: the README's Postgres dagster.yaml on a PostgreSQL server the test starts itself.

The e2e test runs the flow of test_e2e.py (submission -> sensor -> CoT -> CoD) with `dagster dev`
on that instance and checks that runs, events and sensor ticks went to Postgres and nothing to SQLite.
"""

import dagster as dg
import pytest
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from cotgen_assets_tests.platform_harness import check_partition, latest_metadata, offline_platform
from cotgen_assets_tests.postgres_harness import POSTGRES_DAGSTER_YAML, start_postgres

LIMIT = 5
DEADLINE_SECONDS = 150  # after startup; the whole test takes ~60 s on an idle 2-core box


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


def query(server, sql: str, *params):
    with server.connect() as connection, connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


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
    assert query(postgres_server, "SELECT pipeline_name FROM runs WHERE run_id = %s", run.run_id) == [
        ("noop",)
    ]
    assert not list(home.rglob("*.db")), "nothing may go to SQLite"


@pytest.mark.e2e
def test_the_sensor_carries_a_submission_to_cod_on_postgres(tmp_path, postgres_server, postgres_env):
    data, home = tmp_path / "data", tmp_path / "dagster_home"
    with offline_platform(
        tmp_path,
        postgres_env,
        deadline_seconds=DEADLINE_SECONDS,
        dagster_yaml=POSTGRES_DAGSTER_YAML,
        more_logs={"postgres": postgres_server.log},
    ) as platform:
        instance = platform.instance
        assert isinstance(instance.run_storage, PostgresRunStorage)

        submission = platform.submit_generation("easy", with_sources=True, limit=LIMIT, ask="missing")
        platform.wait_run(submission)
        batch = latest_metadata(instance, "generation_batch", "easy")
        assert batch["num_requests"] == LIMIT and batch["batch_names"] and batch["offline"] is True

        # From here on the test only waits: the daemon's sensor launches the other runs.
        cod_meta = platform.wait_samples(instance, "cod_samples", "easy", LIMIT)
        cot, cod = check_partition(instance, data, "easy", "easy", LIMIT)
        cot_meta = latest_metadata(instance, "cot_samples", "easy")
        assert cot_meta["num_samples"] == cot_meta["num_new"] == LIMIT
        assert cot_meta["cost_usd"] == pytest.approx(sum(r["generation"]["cost_usd"] for r in cot))
        assert cod_meta["cost_usd"] == pytest.approx(sum(r["summarization"]["cost_usd"] for r in cod))
        assert cot_meta["cost_usd"] > 0 and cod_meta["cost_usd"] > 0

        launched = platform.wait_sensor_runs(instance, 2)
        assert sorted(r.job_name for r in launched) == ["generation_results_job", "summarization_results_job"]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in launched)

        # The storage really is Postgres: the runs, their events and the sensor's ticks are in its tables.
        run_ids = {submission, *(r.run_id for r in launched)}
        stored = {row[0] for row in query(postgres_server, "SELECT run_id FROM runs")}
        assert run_ids <= stored
        events = dict(
            query(
                postgres_server,
                "SELECT run_id, count(*) FROM event_logs WHERE run_id = ANY(%s) GROUP BY run_id",
                list(run_ids),
            )
        )
        assert set(events) == run_ids and all(count > 0 for count in events.values())
        materialized = query(
            postgres_server,
            "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
            " AND asset_key LIKE %s",
            '%"cod_samples"%',
        )
        assert materialized[0][0] >= 1
        ticks = query(postgres_server, "SELECT count(*) FROM job_ticks WHERE type = 'SENSOR'")
        assert ticks[0][0] >= 1
        assert not list(home.rglob("*.db")), f"SQLite files in DAGSTER_HOME: {list(home.rglob('*.db'))}"
