"""A read-only data folder and a full disk under a results run: one line naming the folder, nothing
half-written, and the run again once the folder is writable ingests each answer once.

As root (as CI runs) `chmod` does not stop a write, so the data folder is a small tmpfs the test mounts:
remounted read-only, or filled to the last byte.
"""

import shutil
import subprocess

import pytest

from cotgen_assets_tests.harness.pipeline import read_jsonl

pytestmark = pytest.mark.pipeline


@pytest.fixture
def disk(tmp_path, monkeypatch, sources, data_dir):
    """COTGEN_DATA_DIR on a 64 MiB tmpfs of its own, holding easy's problems."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        sources("easy")
        shutil.copytree(data_dir, mount / "data")
        monkeypatch.setenv("COTGEN_DATA_DIR", str(mount / "data"))
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def failure(result) -> str:
    [failed] = [event for event in result.all_events if event.is_step_failure]
    user_failure = failed.step_failure_data.user_failure_data
    assert user_failure is not None, failed.step_failure_data.error.to_string()
    return user_failure.description


def finished_generation(pipeline):
    pipeline.submit_generation("easy", limit=3, ask="missing")
    [request] = pipeline.tick_until_launch()
    return request


def test_a_read_only_data_folder_is_one_line_naming_it(pipeline, disk):
    request = finished_generation(pipeline)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)

    result = pipeline.run(request, raise_on_error=False)
    message = failure(result)
    assert "\n" not in message
    assert f"the folder {disk / 'data' / 'easy' / 'submissions'}" in message, message
    assert "is read-only (Read-only file system). No file there was changed" in message

    subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
    assert pipeline.run(request).success
    assert len(read_jsonl(disk / "data" / "cot_easy.jsonl")) == 3


def test_a_full_disk_is_one_line_naming_the_folder(pipeline, disk):
    request = finished_generation(pipeline)
    filler = disk / "filler"
    with open(filler, "wb") as handle:
        with pytest.raises(OSError):
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()

    result = pipeline.run(request, raise_on_error=False)
    message = failure(result)
    assert "\n" not in message
    assert f"the disk holding {disk / 'data'}" in message, message
    assert "is full (No space left on device). No file there was changed" in message
    assert not (disk / "data" / "cot_easy.jsonl").exists()

    filler.unlink()
    assert pipeline.run(request).success
    assert len(read_jsonl(disk / "data" / "cot_easy.jsonl")) == 3


def test_source_problems_on_a_read_only_data_folder_is_one_line_naming_it(pipeline, disk):
    before = (disk / "data" / "easy" / "source_problems.parquet").read_bytes()
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)

    result = pipeline.materialize("source_problems", "easy", raise_on_error=False)
    message = failure(result)
    assert "\n" not in message
    assert f"the folder {disk / 'data' / 'easy'} is read-only (Read-only file system)" in message, message
    assert (disk / "data" / "easy" / "source_problems.parquet").read_bytes() == before
