"""The sensor's cursor: typed, versioned, and a cursor written before the version field is read
without losing an entry (each entry is a decision that must happen once, or a report said once)."""

import json

import pytest
from pydantic import ValidationError

from cotgen_assets.defs.sensors.cursor import CURSOR_VERSION, Runs, SensorCursor

# Cursors as the sensor wrote them before version 2, copied from real test runs: an auto_fill run
# of rounds that reached its limit (test_auto_fill), a summarization catch-up (test_sensor), a stale
# job then cancelled (test_failures_sensor).
V1_CURSORS = [
    '{"handled": {"generation|hard": 45, "summarization|hard": 61}, "attempts": {"generation|hard": '
    '{"key": "generation|hard|7bcf0ad5d346|45", "requested": 1}, "summarization|hard": {"key": '
    '"summarization|hard|f7835e817d4d|61", "requested": 1}, "round|hard": {"key": '
    '"auto-fill|hard|8bc362de-ebba-47f8-a795-4300769e8d83|round-2", "requested": 1}}, "progress": '
    '{"generation|hard": [45, "JOB_STATE_SUCCEEDED", 20], "summarization|hard": [61, '
    '"JOB_STATE_SUCCEEDED", 8]}, "rounds_ended": {"hard": "8bc362de-ebba-47f8-a795-4300769e8d83"}}',
    '{"handled": {"generation|easy": 31, "summarization|easy": 76}, "attempts": {"generation|easy": '
    '{"key": "generation|easy|a2b790b2f6dd|31", "requested": 1}, "summarization|easy": {"key": '
    '"summarization|easy|f6055f17b16a|76", "requested": 1}, "summarization-catch-up|easy": {"key": '
    '"summarization-catch-up|easy|43", "requested": 1}}, "progress": {"generation|easy": [31, '
    '"JOB_STATE_SUCCEEDED", 3], "summarization|easy": [76, "JOB_STATE_SUCCEEDED", 3]}}',
    '{"handled": {}, "attempts": {"generation|easy": {"key": "generation|easy|e08b60d25b92|23", '
    '"requested": 1}}, "progress": {"generation|easy": [23, "JOB_STATE_SUCCEEDED", 5]}, '
    '"stale_reported": {"generation|easy": 3}}',
]


def runs_for(cursor: SensorCursor, slot: str) -> Runs:
    """Where version 2 keeps the runs version 1 kept under `slot` in "attempts"."""
    kind, _, scenario = slot.partition("|")
    if kind == "round":
        return cursor.round_runs[scenario]
    if kind == "summarization-catch-up":
        return cursor.catch_up_runs[scenario]
    return cursor.results_runs[slot]


@pytest.mark.parametrize("text", V1_CURSORS)
def test_a_cursor_written_before_the_version_field_is_upgraded_without_loss(text):
    old = json.loads(text)
    cursor = SensorCursor.read(text)
    assert cursor.version == CURSOR_VERSION
    assert cursor.handled == old["handled"]
    assert cursor.stale_reported == old.get("stale_reported", {})
    assert cursor.rounds_ended == old.get("rounds_ended", {})
    assert {slot: list(seen) for slot, seen in cursor.progress.items()} == old["progress"]
    for slot, runs in old["attempts"].items():
        assert runs_for(cursor, slot).model_dump() == {"done": False, **runs}
    kept = len(cursor.results_runs) + len(cursor.catch_up_runs) + len(cursor.round_runs)
    assert kept == len(old["attempts"]), "no launch's runs counted twice"
    assert SensorCursor.read(cursor.write()) == cursor, "written and read again, the same"
    assert json.loads(cursor.write())["version"] == CURSOR_VERSION


def test_no_cursor_yet_is_an_empty_one_and_an_unknown_entry_is_refused_not_dropped():
    assert SensorCursor.read(None) == SensorCursor() == SensorCursor.read("")
    with pytest.raises(ValidationError, match="handeld"):
        SensorCursor.read('{"version": 2, "handeld": {"generation|easy": 3}}')
    with pytest.raises(ValidationError, match="version"):
        SensorCursor.read('{"version": 3}')
