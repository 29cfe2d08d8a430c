"""Ingestion under crashes and bad results files: every requested key gets one outcome, samples are
exactly the good answers, and a killed process leaves nothing torn.

Submissions are written by hand here (no Dagster, no emulator): a results file is what Gemini
handed back, and `ingest_submission` is what the cot_samples asset runs on it.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import dagster as dg
import orjson
import pytest

from cotgen_assets.core.ingest import ingest_submission
from cotgen_assets.core.stages import GENERATION
from cotgen_assets.core.storage import samples_path
from cotgen_assets.core.submission_history import tries_by_problem
from cotgen_assets.core.submissions import load_submission
from cotgen_assets.defs.locks import lock_holder
from cotgen_assets_tests.harness.dagster import ROOT
from cotgen_assets_tests.harness.pipeline import read_jsonl
from cotgen_assets_tests.harness.results import asking, line, make_submission, response, write_results


@pytest.fixture
def cot_file(data_dir):
    return samples_path(GENERATION, "easy")


# --------------------------------------------------------------------------- a hand-written results file


def test_every_kind_of_bad_line_is_counted_and_never_a_sample(data_dir, cot_file):
    submission = make_submission("handwritten", list(range(10)))
    good = response("easy-0", "0")
    truncated = response("easy-2", "4", finish="MAX_TOKENS")
    cut_short = line(response("easy-4", "8"))
    not_utf8 = line(response("easy-5", "10")).replace(b"So it is", b"So it\xff\xfe is")
    lines = [
        line(good),
        line({"key": "easy-1", "error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}}),
        line(truncated),
        line(response("easy-3", "6", thought="")),
        cut_short[: len(cut_short) // 2] + b"\n",
        not_utf8,
        line(response("easy-6", "12")),
        line(response("easy-6", "999")),  # a duplicate key: the first answer counts
        # easy-7: no line at all
        line(response("easy-8", "17")),  # a wrong answer is a sample, graded wrong
        b"\n",
        line(response("easy-9", "18"))[:-1] + b"\r\n",
        line(response("easy-99", "198")),  # a key never requested
        b"}{ not json, no key\n",
        b"[1, 2, 3]\n",
    ]
    submission.results_path("shard-000").write_bytes(b"".join(lines))

    stats = ingest_submission(submission, cot_file)

    records = read_jsonl(cot_file)
    assert [r["id"] for r in records] == ["easy-0", "easy-6", "easy-8", "easy-9"]
    assert [r["correct"] for r in records] == [True, True, False, True]
    assert records[1]["predicted_answer"] == "12", "the first of two lines for a key counts"
    cot_file.read_bytes().decode("utf-8")  # the samples file is valid UTF-8 throughout

    outcomes = {o["id"]: o for o in read_jsonl(submission.folder / "outcomes.jsonl")}
    assert sorted(outcomes) == sorted(f"easy-{n}" for n in range(10)), "one outcome per requested key"
    assert {k: o["status"] for k, o in outcomes.items() if o["status"] != "ok"} == {
        "easy-1": "line_error",
        "easy-2": "truncated",
        "easy-3": "no_thoughts",
        "easy-4": "not_json",
        "easy-5": "invalid_utf8",
        "easy-7": "missing",
    }
    assert all(o["reason"] for o in outcomes.values() if o["status"] != "ok")
    assert "MAX_TOKENS" in outcomes["easy-2"]["reason"] and "500" in outcomes["easy-1"]["reason"]
    assert outcomes["easy-2"]["cost_usd"] > 0, "a truncated answer was billed, and is counted"

    assert stats.num_failed == 6 and stats.num_new == 4
    assert (stats.unknown_keys, stats.duplicate_keys) == (3, 1)
    summary = json.loads((submission.folder / "summary.json").read_text())
    assert summary["statuses"] == {
        "ok": 4,
        "line_error": 1,
        "truncated": 1,
        "no_thoughts": 1,
        "not_json": 1,
        "invalid_utf8": 1,
        "missing": 1,
    }
    assert tries_by_problem("easy", GENERATION) == {f"easy-{n}": 1 for n in range(10)}


def test_a_cancelled_job_leaves_unanswered_requests_untried(data_dir, cot_file):
    submission = make_submission("cancelled", list(range(4)))
    submission.job_states = ["JOB_STATE_CANCELLED"]
    submission.save()
    submission.results_path("shard-000").write_bytes(
        line(response("easy-0", "0")) + line(response("easy-1", "2"))
    )
    stats = ingest_submission(load_submission("easy", GENERATION, "cancelled"), cot_file)
    assert stats.statuses == {"ok": 2, "not_run": 2}
    assert tries_by_problem("easy", GENERATION) == {"easy-0": 1, "easy-1": 1}


def vertex_line(key: str | None, status: str = "", answer: str | None = None, **more) -> bytes:
    """An output line as Vertex AI writes it: the input's keys, the request re-serialized, a status."""
    out = {"key": key} if key is not None else {}
    out |= {"request": asking(key or ""), "status": status}
    out |= {"processed_time": "2026-12-02T10:00:00.123+00:00"}
    if answer is not None:
        out["response"] = response(key or "", answer)["response"]
    return line(out | more)


def test_vertex_lines_are_matched_by_key_and_a_status_text_is_that_requests_failure(data_dir, cot_file):
    """Vertex AI answers in another order, says a request failed only by a non-empty `status`, and
    may carry a key twice, one never asked, or none: each counted, none a crash or a second sample."""
    submission = make_submission("vertex", list(range(5)), backend="vertex")
    failure = "INVALID_ARGUMENT: Request contains an invalid argument."
    submission.results_path("shard-000").write_bytes(
        vertex_line("easy-3", answer="6")
        + vertex_line("easy-1", status=failure)
        + vertex_line("easy-0", answer="0")
        + vertex_line("easy-4", status="RESOURCE_EXHAUSTED: quota", answer="8")
        + vertex_line("easy-0", answer="999")  # a duplicate key: the first answer counts
        + vertex_line("easy-77", answer="154")  # a key never asked
        + vertex_line(None, answer="1")  # no key at all
    )

    stats = ingest_submission(submission, cot_file)

    assert sorted(r["id"] for r in read_jsonl(cot_file)) == ["easy-0", "easy-3"]
    outcomes = {o["id"]: o for o in read_jsonl(submission.folder / "outcomes.jsonl")}
    assert {k: (o["status"], o["reason"]) for k, o in outcomes.items() if o["status"] != "ok"} == {
        "easy-1": ("line_error", failure),
        "easy-4": ("line_error", "RESOURCE_EXHAUSTED: quota"),
        "easy-2": ("missing", "no line for this request in the results file"),
    }
    assert (stats.unknown_keys, stats.duplicate_keys) == (2, 1)
    assert stats.unused_cost_usd > 0, "what the unused lines' answers cost is known"


def test_a_partially_succeeded_job_leaves_unanswered_requests_untried(data_dir, cot_file):
    """Vertex AI's PARTIALLY_SUCCEEDED: the answered requests count (failed ones as a try), the ones it
    never ran do not, so the next fill asks for both without spending a try on the unrun ones."""
    submission = make_submission("partial", list(range(4)), backend="vertex")
    submission.job_states = ["JOB_STATE_PARTIALLY_SUCCEEDED"]
    submission.save()
    submission.results_path("shard-000").write_bytes(
        vertex_line("easy-1", status="INTERNAL: Internal error encountered.")
        + vertex_line("easy-0", answer="0")
    )
    stats = ingest_submission(load_submission("easy", GENERATION, "partial"), cot_file)
    assert stats.statuses == {"ok": 1, "line_error": 1, "not_run": 2}
    assert tries_by_problem("easy", GENERATION) == {"easy-0": 1, "easy-1": 1}


def test_hostile_keys_and_a_huge_line_are_never_samples_nor_paths(data_dir, cot_file):
    """Keys shaped like a path or naming a sample never asked are unknown lines (no record, no
    file); a line of megabytes is read whole."""
    submission = make_submission("hostile", list(range(3)), samples=(0, 1))
    huge = "Let me think it through. " * 400_000  # 10 MB of thought on one line
    submission.results_path("shard-000").write_bytes(
        line(response("../x", "0"))
        + line(response("easy-1#-1", "2"))
        + line(response("easy-1#999", "2"))  # a sample never asked
        + line(response("easy-1#0", "2"))  # sample 0's key is the id alone
        + line(response("easy-2#1", "4", thought=huge))
        + line(response("easy-0", "0"))
    )

    stats = ingest_submission(submission, cot_file)

    records = read_jsonl(cot_file)
    assert sorted((r["id"], r["sample"]) for r in records) == [("easy-0", 0), ("easy-2", 1)]
    assert next(r for r in records if r["id"] == "easy-2")["cot"].startswith(f"<thought>{huge.strip()}</")
    outcomes = {o["id"]: o["status"] for o in read_jsonl(submission.folder / "outcomes.jsonl")}
    assert outcomes == {
        "easy-0": "ok",
        "easy-0#1": "missing",
        "easy-1": "missing",
        "easy-1#1": "missing",
        "easy-2": "missing",
        "easy-2#1": "ok",
    }
    assert (stats.unknown_keys, stats.duplicate_keys) == (4, 0)
    assert not [path for path in data_dir.rglob("x")], "a key is never a path"


def test_a_vertex_line_echoing_another_request_is_refused(data_dir, cot_file):
    """Vertex AI echoes the request of each answer: one that is not the request sent under its key
    (another question) is never a sample; a line echoing its own request is."""
    submission = make_submission("echo", list(range(2)), backend="vertex")
    submission.results_path("shard-000").write_bytes(
        vertex_line("easy-1", answer="2", request=asking("easy-0")) + vertex_line("easy-0", answer="0")
    )

    ingest_submission(submission, cot_file)

    assert [r["id"] for r in read_jsonl(cot_file)] == ["easy-0"]
    outcomes = {o["id"]: o["status"] for o in read_jsonl(submission.folder / "outcomes.jsonl")}
    assert outcomes == {"easy-0": "ok", "easy-1": "request_mismatch"}


# --------------------------------------------------------------------------- killed mid-ingestion

# Runs `ingest_submission` in a real process, which kills itself with SIGKILL at a chosen point.
# The kill points are hooks of this script only (module attributes it replaces), not of the product.
CHILD = r"""
import os, signal, sys, time
from pathlib import Path

import cotgen_assets.backends  # registers the batch APIs' wire formats, as the code location does
import cotgen_assets.core.ingest as samples
from cotgen_assets.core.stages import GENERATION
from cotgen_assets.core.submissions import load_submission

submission_id, samples_file, point, at = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
calls = []


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def counting(real):
    def wrapper(*args, **kwargs):
        calls.append(1)
        if point == "grading" and len(calls) == at:
            die()
        result = real(*args, **kwargs)
        if point == "merged":
            die()
        return result
    return wrapper


def observe(record):
    calls.append(1)
    if point == "observing" and len(calls) == at:
        die()
    if point == "pausing" and len(calls) == at:  # wait, mid-merge, until the test says go on
        print("paused", flush=True)
        while not os.path.exists(sys.argv[5]):
            time.sleep(0.01)


if point == "grading":
    samples.grade_many = counting(samples.grade_many)
if point == "merged":
    samples.merge_samples = counting(samples.merge_samples)
lock = None
if len(sys.argv) > 6:  # the lock the Dagster assets use, in the Dagster storage of this DAGSTER_HOME
    import dagster as dg
    from cotgen_assets.defs.locks import samples_lock

    instance = dg.DagsterInstance.from_config(sys.argv[6])
    lock = samples_lock(instance, samples_file, say=lambda message: print(message, flush=True))
print("ready", flush=True)
samples.ingest_submission(load_submission("easy", GENERATION, submission_id), samples_file,
                          observe=observe if point in ("observing", "pausing") else (lambda record: None),
                          lock=lock)
print("done", flush=True)
"""

OLD_ROWS = list(range(0, 3000))
NEW_ROWS = list(range(2000, 3600))  # 1,000 replace old samples (wrong before, right now), 600 are new


@pytest.fixture
def crash_scene(data_dir, cot_file, tmp_path):
    """An old samples file, a downloaded submission to ingest, and the files a clean ingestion makes."""
    old = make_submission("old", OLD_ROWS)
    write_results(old, answer_offset=1)  # all wrong, so the new ones replace them
    ingest_submission(old, cot_file)
    new = make_submission("new", NEW_ROWS, shard_size=1000)
    write_results(new)

    clean = tmp_path / "clean"
    shutil.copytree(data_dir, clean)
    env_before = os.environ["COTGEN_DATA_DIR"]
    os.environ["COTGEN_DATA_DIR"] = str(clean)
    try:
        ingest_submission(load_submission("easy", GENERATION, "new"), samples_path(GENERATION, "easy"))
    finally:
        os.environ["COTGEN_DATA_DIR"] = env_before
    expected = {
        name: (clean / "easy" / "submissions" / "generation-new" / name).read_bytes()
        for name in ("outcomes.jsonl", "summary.json")
    }
    expected["samples"] = (clean / cot_file.name).read_bytes()
    return {"before": cot_file.read_bytes(), "expected": expected, "submission": new}


def start_child(
    cot_file, point: str, at: int = 0, submission_id: str = "new", go: str = "", home: str = ""
) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, submission_id, str(cot_file), point, str(at), go]
        + ([home] if home else []),
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "ready"
    return child


def assert_recovers(scene, cot_file):
    """After the kill: the file is whole (old or new, never torn); a re-run gives the clean result."""
    for raw in cot_file.read_bytes().splitlines():
        orjson.loads(raw)
    ingest_submission(load_submission("easy", GENERATION, "new"), cot_file)
    folder = scene["submission"].folder
    assert cot_file.read_bytes() == scene["expected"]["samples"]
    assert (folder / "outcomes.jsonl").read_bytes() == scene["expected"]["outcomes.jsonl"]
    assert (folder / "summary.json").read_bytes() == scene["expected"]["summary.json"]
    ids = [r["id"] for r in read_jsonl(cot_file)]
    assert len(ids) == len(set(ids)) == len(set(OLD_ROWS) | set(NEW_ROWS))
    assert all(r["correct"] for r in read_jsonl(cot_file) if int(r["id"].split("-")[1]) in NEW_ROWS)


@pytest.mark.parametrize(
    "point, at",
    [
        ("grading", 2),  # killed while writing the new samples, one grading chunk in
        ("observing", 2100),  # killed in the middle of the merge into the samples file
        ("merged", 0),  # killed after the merge, before the submission's summary is written
    ],
)
def test_a_process_killed_during_ingestion_recovers_on_rerun(crash_scene, cot_file, point, at):
    child = start_child(cot_file, point, at)
    assert child.wait(timeout=120) == -signal.SIGKILL
    if point != "merged":
        assert cot_file.read_bytes() == crash_scene["before"], (
            "the samples file is untouched until the rename"
        )
    assert not (crash_scene["submission"].folder / "summary.json").exists()
    assert_recovers(crash_scene, cot_file)


def test_a_process_killed_from_outside_mid_write_recovers_on_rerun(crash_scene, cot_file):
    """SIGKILL from another process as soon as the merge's temporary file has grown past 1 MB."""
    child = start_child(cot_file, "none")
    temp = cot_file.with_name(f".{cot_file.name}.tmp-{child.pid}")
    deadline = time.monotonic() + 120
    while not (temp.exists() and temp.stat().st_size > 1_000_000):
        assert child.poll() is None, "the ingestion ended before it could be killed mid-write"
        assert time.monotonic() < deadline
        time.sleep(0.001)
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert cot_file.read_bytes() == crash_scene["before"], "killed before the rename: the old file is whole"
    assert_recovers(crash_scene, cot_file)


@pytest.mark.pipeline  # the lock is a row in a Dagster instance's storage
def test_two_ingestions_into_one_samples_file_at_once_keep_both(crash_scene, cot_file, tmp_path):
    """E.g. a cot_samples run by hand while the sensor's run ingests a newer submission; with the
    lock the assets use (a row in the Dagster storage, here a SQLite DAGSTER_HOME both share)."""
    other_rows = list(range(5000, 5100))
    write_results(make_submission("other", other_rows))
    resume, home = tmp_path / "resume", tmp_path / "dagster_home"
    home.mkdir()
    dg.DagsterInstance.from_config(str(home)).dispose()  # the schema exists before the two start
    first = start_child(cot_file, "pausing", 2100, go=str(resume), home=str(home))  # holds its merge half-way
    second = None
    try:
        assert first.stdout.readline().strip() == "paused"
        holder = lock_holder(dg.DagsterInstance.from_config(str(home)), f"samples/{cot_file.name}")
        assert holder and holder["pid"] == first.pid
        second = start_child(cot_file, "none", submission_id="other", home=str(home))
        said = second.stdout.readline().strip()  # the condition: the second is waiting for the first
        assert said.startswith(f"waiting for lock 'samples/{cot_file.name}', held by process {first.pid}"), (
            said
        )
        assert second.poll() is None
        resume.touch()
        assert first.wait(timeout=60) == 0 and second.wait(timeout=60) == 0
    finally:
        first.kill()
        if second:
            second.kill()
    ids = [r["id"] for r in read_jsonl(cot_file)]
    assert len(ids) == len(set(ids))
    assert set(ids) == {f"easy-{n}" for n in set(OLD_ROWS) | set(NEW_ROWS) | set(other_rows)}, (
        "neither ingestion's records were dropped by the other's rename"
    )


@pytest.mark.parametrize("kind", ["a file", "under a file"])
def test_an_unusable_scratch_dir_fails_the_ingestion_naming_it_and_loses_nothing(
    kind, pipeline, sources, data_dir, tmp_path, monkeypatch
):
    from cotgen_assets.defs.assets.results import generation_results
    from cotgen_assets.defs.assets.samples import cot_samples

    sources("easy")
    pipeline.submit_generation("easy", limit=2, ask="missing")
    [request] = pipeline.tick_until_launch()
    blocker = tmp_path / "scratch"
    blocker.write_text("not a folder")
    scratch = blocker if kind == "a file" else blocker / "sub"
    monkeypatch.setenv("COTGEN_SCRATCH_DIR", str(scratch))
    result = pipeline.materialize([generation_results, cot_samples], "easy", raise_on_error=False)
    error = result.failure_data_for_node("cot_samples").error
    assert error.cls_name == "Failure"
    reason = "it is a file" if kind == "a file" else "Not a directory"
    assert f"COTGEN_SCRATCH_DIR={str(scratch)!r} cannot hold ingestion's scratch folder: {reason}." in (
        error.message
    )
    assert read_jsonl(data_dir / "cot_easy.jsonl") == []

    monkeypatch.delenv("COTGEN_SCRATCH_DIR")
    assert pipeline.run(request).success
    assert len(read_jsonl(data_dir / "cot_easy.jsonl")) == 2
