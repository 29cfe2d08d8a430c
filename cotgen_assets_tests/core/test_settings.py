"""Numeric settings from the environment: a bad value is one error naming the variable and what it
takes, at load and where it is read, never a bare conversion error or a value silently accepted."""

import os
import subprocess
import sys

import pytest

from cotgen_assets.core.source_writer import workers
from cotgen_assets.core.sources import BATCH_ROWS
from cotgen_assets.defs.assets.results import generation_results
from cotgen_assets.defs.assets.samples import cot_samples
from cotgen_assets.defs.locks import lock_wait_seconds
from cotgen_assets.defs.sensors.results import stale_after_seconds
from cotgen_assets.defs.sensors.run_retries import max_attempts, retry_delay_seconds
from cotgen_assets.defs.sensors.sensor import sensor_interval_seconds
from cotgen_assets_tests.harness.dagster import ROOT
from cotgen_assets_tests.harness.pipeline import read_jsonl

READERS = {
    "COTGEN_SENSOR_INTERVAL_SECONDS": sensor_interval_seconds,
    "COTGEN_STALE_AFTER_SECONDS": stale_after_seconds,
    "COTGEN_RUN_ATTEMPTS": max_attempts,
    "COTGEN_RETRY_DELAY_SECONDS": lambda: retry_delay_seconds(1),
    "COTGEN_LOCK_WAIT_SECONDS": lock_wait_seconds,
    "COTGEN_SOURCE_WORKERS": lambda: workers(BATCH_ROWS + 1),
}


@pytest.mark.parametrize(
    "name, value, takes",
    [
        ("COTGEN_SENSOR_INTERVAL_SECONDS", "abc", "a whole number of at least 1"),
        ("COTGEN_SENSOR_INTERVAL_SECONDS", "-5", "a whole number of at least 1"),
        ("COTGEN_SENSOR_INTERVAL_SECONDS", "2.5", "a whole number of at least 1"),
        ("COTGEN_STALE_AFTER_SECONDS", "-1", "a number of at least 0"),
        ("COTGEN_RUN_ATTEMPTS", "0", "a whole number of at least 1"),
        ("COTGEN_RETRY_DELAY_SECONDS", "nan", "a number of at least 0"),
        ("COTGEN_LOCK_WAIT_SECONDS", "abc", "a number of at least 0"),
        ("COTGEN_LOCK_WAIT_SECONDS", "inf", "a number of at least 0"),
        ("COTGEN_SOURCE_WORKERS", "0", "a whole number of at least 1"),
    ],
)
def test_a_bad_value_is_one_error_naming_the_variable_and_what_it_takes(name, value, takes, monkeypatch):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as raised:
        READERS[name]()
    assert str(raised.value).startswith(f"{name}={value!r} is not valid: it takes {takes} (default ")


def test_unset_or_empty_is_the_default_and_good_values_are_read(monkeypatch):
    for name in READERS:
        monkeypatch.delenv(name, raising=False)
    assert (sensor_interval_seconds(), max_attempts(), lock_wait_seconds()) == (30, 4, 1800)
    monkeypatch.setenv("COTGEN_RUN_ATTEMPTS", "")
    monkeypatch.setenv("COTGEN_SENSOR_INTERVAL_SECONDS", " 5 ")
    monkeypatch.setenv("COTGEN_RETRY_DELAY_SECONDS", "0.5")
    assert (max_attempts(), sensor_interval_seconds(), retry_delay_seconds(2)) == (4, 5, 1.0)


@pytest.mark.parametrize("name", ["COTGEN_SENSOR_INTERVAL_SECONDS", "COTGEN_LOCK_WAIT_SECONDS"])
def test_the_code_location_does_not_load_with_a_bad_setting(name):
    """Stopped at load, naming the variable, rather than in a run after a batch was paid for."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import cotgen_assets.definitions"],
        cwd=ROOT,
        env={**os.environ, name: "abc"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode != 0
    assert f"SettingError: {name}='abc' is not valid: it takes a" in loaded.stderr, loaded.stderr[-2000:]
    assert "could not convert" not in loaded.stderr and "invalid literal" not in loaded.stderr


def test_an_ingestion_with_a_bad_lock_wait_fails_naming_it_and_loses_nothing(
    pipeline, sources, data_dir, monkeypatch
):
    sources("easy")
    pipeline.submit_generation("easy", limit=2, ask="missing")
    [request] = pipeline.tick_until_launch()
    monkeypatch.setenv("COTGEN_LOCK_WAIT_SECONDS", "abc")
    result = pipeline.materialize([generation_results, cot_samples], "easy", raise_on_error=False)
    error = result.failure_data_for_node("cot_samples").error
    assert error.cls_name == "Failure"
    assert "COTGEN_LOCK_WAIT_SECONDS='abc' is not valid: it takes a number of at least 0" in error.message
    assert read_jsonl(data_dir / "cot_easy.jsonl") == []

    monkeypatch.delenv("COTGEN_LOCK_WAIT_SECONDS")
    assert pipeline.run(request).success
    assert len(read_jsonl(data_dir / "cot_easy.jsonl")) == 2
