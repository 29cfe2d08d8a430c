"""Records, costs and checks of an emulator run are what they were before the batch seam moved.

The files in `golden/` were made by this test on the code before the move (COTGEN_UPDATE_GOLDEN=1
writes them anew); each test re-runs the pipeline and compares byte for byte.
"""

import os

import orjson
import pytest

from cotgen_assets_tests.harness.emulator import start_emulator
from cotgen_assets_tests.harness.golden import GOLDEN_DIR, golden_text, run_easy, snapshot
from cotgen_assets_tests.harness.pipeline import Pipeline

pytestmark = pytest.mark.pipeline


def check_golden(name: str, snap: dict) -> None:
    path = GOLDEN_DIR / name
    if os.environ.get("COTGEN_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(golden_text(snap))
    expected = orjson.loads(path.read_bytes())
    assert snap == expected  # a readable diff first
    assert golden_text(snap) == path.read_bytes()


def test_easy_run_is_the_golden_one(pipeline, data_dir):
    run_easy(pipeline)
    check_golden("easy.json", snapshot(pipeline, data_dir))


def test_easy_run_with_wrong_answers_and_line_errors_is_the_golden_one(tmp_path, instance, data_dir):
    """Faults are drawn per batch name, so the emulator starts with a fixed salt for its names."""
    state = tmp_path / "emulator"
    state.mkdir()
    (state / "counters.json").write_bytes(orjson.dumps({"batch_seq": 0, "salt": "golden-run"}))
    emu = start_emulator(state, latency=0.0)
    try:
        emu.set_faults(wrong_rate=0.3, line_error_rate=0.2)
        pipeline = Pipeline(instance, emu.base_url)
        run_easy(pipeline)
        snap = snapshot(pipeline, data_dir)
    finally:
        emu.stop()
    assert snap["metadata"]["cot_samples"]["failed_by_reason"], "the faults hit some lines"
    assert snap["metadata"]["cot_samples"]["accuracy"] < 1
    check_golden("easy-faults.json", snap)
