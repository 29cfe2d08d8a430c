"""The `gemini` resource: the real google-genai client over HTTP against the emulator."""

import logging
import socket
import time

import pytest

from cotgen_assets.backends import developer as developer_module
from cotgen_assets.backends.base import BatchInfo
from cotgen_assets.backends.gemini_wire import job_end, job_state
from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets.backends.retries import GeminiError
from cotgen_assets.core.batch_output import iter_result_lines
from cotgen_assets.core.queue import QuotaFull
from cotgen_assets_tests.harness.emulator import generation_request, request_line
from cotgen_assets_tests.harness.http import JsonHandler, LocalHttpServer

# Distinctive, so that any leak is found by a plain substring search.
FAKE_KEY = "AIzaSyFAKE-cotgen-Leak-Canary-9f3b7c2e1d"
MODEL = "gemini-3.1-pro-preview"
QUESTIONS = ["What is 2 + 3?", "What is 7 * 6?", "What is 10 - 4?"]


def make_resource(base_url: str, **overrides) -> GeminiBatchResource:
    # A create that failed is looked for until create_timeout_seconds (120 s by default, for the real
    # API's late commits); the emulator lists a job as it creates it, so 1 s finds any.
    settings = dict(
        api_key=FAKE_KEY,
        base_url=base_url,
        timeout_seconds=10.0,
        max_attempts=12,
        backoff_seconds=0.01,
        create_timeout_seconds=1.0,
    )
    settings.update(overrides)
    return GeminiBatchResource(**settings)


@pytest.fixture
def gemini(emulator):
    return make_resource(emulator.base_url)


@pytest.fixture
def requests_file(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_bytes(b"".join(request_line(f"q-{i}", generation_request(q)) for i, q in enumerate(QUESTIONS)))
    return path


def wait_until_done(gemini: GeminiBatchResource, name: str, timeout: float = 30.0) -> BatchInfo:
    deadline = time.monotonic() + timeout
    while True:
        info = gemini.get_batch(name, timeout_seconds=5)
        if info.done or time.monotonic() > deadline:
            return info
        time.sleep(0.1)


def batches_named(gemini: GeminiBatchResource, display_name: str) -> list[BatchInfo]:
    return [b for b in gemini.list_batches(page_size=2) if b.display_name == display_name]


# -------------------------------------------------------------------------------- configuration


def test_where_it_talks_to_and_the_key_stays_hidden():
    real = GeminiBatchResource(api_key=FAKE_KEY)
    assert not real.offline
    assert real.describe() == "Gemini API (generativelanguage.googleapis.com)"
    assert real.endpoint is None
    offline = GeminiBatchResource()
    assert offline.offline and offline.endpoint == "http://127.0.0.1:8765"
    assert offline.describe() == "offline: local Gemini emulator at http://127.0.0.1:8765"
    moved = GeminiBatchResource(base_url="http://127.0.0.1:9999")
    assert moved.offline and moved.describe() == "offline: local Gemini emulator at http://127.0.0.1:9999"
    for text in (repr(real), str(real), real.describe()):
        assert FAKE_KEY not in text
    assert "api_key='***'" in repr(real)


class NotTheEmulator(LocalHttpServer):
    """An endpoint that answers like the API (an empty batch list) but is not the emulator."""

    def __init__(self):
        class Handler(JsonHandler):
            def do_GET(self):
                self.answer({})

        super().__init__(Handler)


def test_who_answers_decides_offline_not_whether_a_key_is_set(emulator, caplog):
    """A key with the base URL left at the emulator is offline; a key with another endpoint is not."""
    caplog.set_level(logging.INFO, logger="cotgen_assets.backends.resource")
    keyed = make_resource(emulator.base_url)
    assert keyed.offline
    assert keyed.describe() == f"offline: local Gemini emulator at {emulator.base_url}"
    [notice] = [r.getMessage() for r in caplog.records if "OFFLINE" in r.getMessage()]
    assert emulator.base_url in notice and "GEMINI_API_KEY" in notice and FAKE_KEY not in notice
    other = NotTheEmulator()
    try:
        proxied = make_resource(other.url)
        assert not proxied.offline and proxied.describe() == f"Gemini API at {other.url}"
    finally:
        other.stop()


def test_job_states_end_in_neutral_words():
    """Both spellings of the API's states: how a job ended, as core reads it; "" while it runs."""
    states = ("BATCH_STATE_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED", "BATCH_STATE_FAILED")
    states += ("JOB_STATE_CANCELLED", "BATCH_STATE_EXPIRED", "BATCH_STATE_RUNNING", "JOB_STATE_PENDING")
    ends = [job_end(job_state(state)) for state in states]
    assert ends == ["succeeded", "partially_succeeded", "failed", "cancelled", "expired", "", ""]


# -------------------------------------------------------------------------------- every call


def test_every_call(gemini, requests_file, tmp_path):
    file_name = gemini.upload_jsonl(requests_file, "cotgen-test-requests")
    assert file_name.startswith("files/")

    created = gemini.create_batch(MODEL, file_name, "cotgen-test-every-call")
    assert created.name.startswith("batches/")
    assert created.display_name == "cotgen-test-every-call"
    assert created.model == MODEL
    assert created.state.startswith("JOB_STATE_")
    assert created.create_time is not None and created.create_time.tzinfo is not None

    info = wait_until_done(gemini, created.name)
    assert info.state == "JOB_STATE_SUCCEEDED" and info.succeeded and info.done
    assert (info.request_count, info.succeeded_count, info.failed_count) == (3, 3, 0)
    assert info.result_file and info.result_file.startswith("files/")
    assert info.end_time is not None and info.error is None

    assert [b.name for b in batches_named(gemini, "cotgen-test-every-call")] == [created.name]
    assert gemini.find_batch("cotgen-test-every-call").name == created.name
    assert gemini.find_batch("no-such-display-name") is None

    dest = tmp_path / "out" / "results.jsonl"
    assert gemini.download_results(info.result_file, dest) == dest
    results = {r.key: r for r in iter_result_lines(dest, developer_module.WIRE)}
    assert set(results) == {"q-0", "q-1", "q-2"}
    assert all(r.status == "ok" and r.thought and r.answer for r in results.values())
    assert [p.name for p in dest.parent.iterdir()] == ["results.jsonl"]  # no temp file left

    gemini.delete_batch(created.name)
    with pytest.raises(GeminiError) as info_404:
        gemini.get_batch(created.name)
    assert info_404.value.status_code == 404


def test_list_pages_through_every_batch(gemini, requests_file):
    file_name = gemini.upload_jsonl(requests_file, "paging")
    names = {gemini.create_batch(MODEL, file_name, f"paging-{i}").name for i in range(5)}
    listed = [b.name for b in gemini.list_batches(page_size=2)]
    assert set(listed) == names and len(listed) == 5


def test_cancel(gemini, emulator, requests_file):
    emulator.set_faults(slow_latency=60.0, slow_count=1)
    info = gemini.submit_jsonl(requests_file, MODEL, "cotgen-test-cancel")
    assert not info.done
    gemini.cancel_batch(info.name)
    after = gemini.get_batch(info.name)
    assert after.state == "JOB_STATE_CANCELLED" and after.failed


@pytest.mark.parametrize("state", ["failed", "expired", "cancelled"])
def test_failed_jobs_are_reported_and_resubmitted(gemini, emulator, requests_file, state):
    emulator.set_faults(job_state=state, job_count=1)
    first = gemini.submit_jsonl(requests_file, MODEL, f"cotgen-test-{state}")
    done = wait_until_done(gemini, first.name)
    assert done.state == f"JOB_STATE_{state.upper()}" and done.failed and not done.succeeded
    # a failed job does not count as submitted: the next submit creates a fresh one
    second = gemini.submit_jsonl(requests_file, MODEL, f"cotgen-test-{state}")
    assert second.name != first.name
    assert wait_until_done(gemini, second.name).state == "JOB_STATE_SUCCEEDED"


def test_offline_mode_uses_the_emulator_and_says_so_once(emulator, requests_file, caplog, monkeypatch):
    monkeypatch.setattr(developer_module, "_announced_offline", set())
    caplog.set_level(logging.INFO, logger="cotgen_assets.backends.resource")
    offline = GeminiBatchResource(emulator_url=emulator.base_url, backoff_seconds=0.01)
    info = offline.submit_jsonl(requests_file, MODEL, "cotgen-test-offline")
    assert wait_until_done(offline, info.name).succeeded
    GeminiBatchResource(emulator_url=emulator.base_url).list_batches().__next__()
    notices = [r for r in caplog.records if "offline mode" in r.getMessage()]
    assert len(notices) == 1 and notices[0].levelno == logging.WARNING
    assert emulator.base_url in notices[0].getMessage()


# -------------------------------------------------------------------------------- faults


def retried(caplog, operation: str, since: int) -> bool:
    return any(
        r.getMessage().startswith(operation) and "; retrying (" in r.getMessage()
        for r in caplog.records[since:]
    )


def until_a_fault_hits(caplog, operation: str, call, tries: int = 40):
    """Repeat `call` until one of its calls met (and rode through) an injected HTTP error."""
    for _ in range(tries):
        since = len(caplog.records)
        result = call()
        if retried(caplog, operation, since):
            return result
    pytest.fail(f"no injected HTTP error hit {operation} in {tries} calls")


def test_rides_through_transient_http_errors(gemini, emulator, requests_file, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cotgen_assets.backends.resource")
    emulator.set_faults(http_error_rate=0.3)
    file_name = until_a_fault_hits(caplog, "upload of", lambda: gemini.upload_jsonl(requests_file, "flaky"))
    created, refused = [], []

    def create() -> None:
        """A 500 is retried; a 429 on create is the batch quota, full: QuotaFull at once, nothing made
        (the shard stays queued for the sensor)."""
        try:
            created.append(gemini.create_batch(MODEL, file_name, f"flaky-{len(created)}"))
        except QuotaFull as full:
            refused.append(str(full))

    until_a_fault_hits(caplog, "create of", create)
    info = until_a_fault_hits(caplog, "get of", lambda: gemini.get_batch(created[0].name))
    info = wait_until_done(gemini, created[0].name)
    assert info.succeeded and info.request_count == 3
    dest = until_a_fault_hits(
        caplog, "download of", lambda: gemini.download_results(info.result_file, tmp_path / "flaky.jsonl")
    )
    assert sorted(r.key for r in iter_result_lines(dest, developer_module.WIRE)) == ["q-0", "q-1", "q-2"]
    until_a_fault_hits(caplog, "list of", lambda: list(gemini.list_batches(page_size=1)))
    emulator.set_faults(http_error_rate=0.0)
    # every create call made exactly one batch: none lost, none doubled
    assert sorted(b.display_name for b in gemini.list_batches()) == sorted(c.display_name for c in created)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "429 RESOURCE_EXHAUSTED" in messages and "500 INTERNAL" in messages
    assert all("429 RESOURCE_EXHAUSTED" in why for why in refused)


def test_gives_up_on_transient_errors_after_max_attempts(emulator):
    emulator.set_faults(http_error_rate=1.0)
    gemini = make_resource(emulator.base_url, max_attempts=3)
    started = time.monotonic()
    with pytest.raises(GeminiError) as info:
        gemini.get_batch("batches/whatever")
    assert info.value.transient and info.value.status_code in (429, 500)
    assert "after 3 attempts" in str(info.value)
    assert time.monotonic() - started < 5


def test_lost_create_response_does_not_pay_twice(gemini, emulator, requests_file, caplog):
    caplog.set_level(logging.INFO, logger="cotgen_assets.backends.resource")
    emulator.set_faults(lose_create_count=1)
    info = gemini.submit_jsonl(requests_file, MODEL, "cotgen-test-lost-create")
    assert any("the job exists" in r.getMessage() for r in caplog.records)  # the fault did happen
    assert [b.name for b in batches_named(gemini, "cotgen-test-lost-create")] == [info.name]
    again = gemini.submit_jsonl(requests_file, MODEL, "cotgen-test-lost-create")
    assert again.name == info.name
    assert len(list(gemini.list_batches())) == 1


def test_a_create_answered_after_its_timeout_does_not_pay_twice(emulator, requests_file, caplog):
    """The create's answer is lost to the client's timeout, but the job is made a moment later."""
    caplog.set_level(logging.INFO)
    gemini = make_resource(emulator.base_url, create_timeout_seconds=5.0)
    emulator.wait_for_references()  # until then the emulator's calls are slow, not only the create
    emulator.set_faults(slow_create_seconds=6.0, slow_create_count=1)
    info = gemini.submit_jsonl(requests_file, MODEL, "cotgen-test-slow-create")
    emulator.wait_for_stalled_creates()
    assert [b.name for b in batches_named(gemini, "cotgen-test-slow-create")] == [info.name]
    assert any("failed, but the job exists" in r.getMessage() for r in caplog.records), "it timed out"
    assert wait_until_done(gemini, info.name).succeeded


def test_of_two_jobs_of_one_display_name_a_retried_create_keeps_the_oldest(
    gemini, emulator, requests_file, caplog
):
    """As when a lost create made its job after the retry had made another: the later is cancelled."""
    caplog.set_level(logging.INFO)
    file_name = gemini.upload_jsonl(requests_file, "twice")
    emulator.set_faults(hold=True)
    oldest = gemini.create_batch(MODEL, file_name, "cotgen-test-twice")
    emulator.set_faults(lose_create_count=1)
    kept = gemini.create_batch(MODEL, file_name, "cotgen-test-twice")
    assert kept.name == oldest.name
    (cancelled,) = [b for b in gemini.list_batches() if b.name != oldest.name]
    assert cancelled.state == "JOB_STATE_CANCELLED"
    assert any(oldest.name in r.getMessage() and cancelled.name in r.getMessage() for r in caplog.records)
    assert gemini.submit_jsonl(requests_file, MODEL, "cotgen-test-twice").name == oldest.name


def test_permanent_errors_carry_the_api_message(gemini, requests_file, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cotgen_assets.backends.resource")
    with pytest.raises(GeminiError) as missing:
        gemini.get_batch("batches/doesnotexist")
    assert missing.value.status_code == 404 and missing.value.status == "NOT_FOUND"
    assert "Batch batches/doesnotexist not found." in str(missing.value)

    with pytest.raises(GeminiError) as bad_source:
        gemini.create_batch(MODEL, "files/neverUploaded", "cotgen-test-bad")
    assert bad_source.value.status_code in (400, 404)
    assert "neverUploaded" in str(bad_source.value)

    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"\n")
    file_name = gemini.upload_jsonl(empty, "empty")
    with pytest.raises(GeminiError, match="The batch has no requests") as no_requests:
        gemini.create_batch(MODEL, file_name, "cotgen-test-empty")
    assert no_requests.value.status_code == 400 and not no_requests.value.transient

    assert not [r for r in caplog.records if "; retrying (" in r.getMessage()]  # none of these was retried
    assert gemini.find_batch("cotgen-test-bad") is None and gemini.find_batch("cotgen-test-empty") is None


def test_local_mistakes_are_plain_errors(gemini, tmp_path):
    with pytest.raises(FileNotFoundError):
        gemini.upload_jsonl(tmp_path / "absent.jsonl", "x")
    with pytest.raises(ValueError, match="batches/ID"):
        gemini.get_batch("abc")


def test_per_call_timeout_and_dead_endpoint_are_transient_errors():
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        gemini = make_resource(f"http://127.0.0.1:{silent.getsockname()[1]}", max_attempts=2)
        started = time.monotonic()
        with pytest.raises(GeminiError, match="Timeout") as slow:
            gemini.get_batch("batches/abc", timeout_seconds=0.3)
        assert slow.value.transient and time.monotonic() - started < 5
        dead_port = silent.getsockname()[1]
    gemini = make_resource(f"http://127.0.0.1:{dead_port}", max_attempts=2)
    with pytest.raises(GeminiError, match="ConnectError") as refused:
        list(gemini.list_batches())
    assert refused.value.transient


# -------------------------------------------------------------------------------- the key


def test_the_key_never_leaks(emulator, requests_file, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)  # every logger, the SDK's and httpx's included
    gemini = make_resource(emulator.base_url, max_attempts=4)
    texts = [repr(gemini), str(gemini), gemini.describe()]

    def failure(call):
        with pytest.raises(Exception) as info:
            call()
        exc = info.value
        assert exc.__context__ is None and exc.__cause__ is None  # the SDK's request is not attached
        texts.extend([str(exc), repr(exc), str(exc.args)])

    # success path, with retries on the way
    emulator.set_faults(http_error_rate=0.3)
    info = gemini.submit_jsonl(requests_file, MODEL, "cotgen-test-key")
    info = wait_until_done(gemini, info.name)
    dest = gemini.download_results(info.result_file, tmp_path / "key.jsonl")
    texts.append(repr(info))
    # failure paths: permanent, and transient until the attempts run out
    emulator.set_faults(http_error_rate=0.0)
    failure(lambda: gemini.get_batch("batches/nope"))
    failure(lambda: gemini.create_batch(MODEL, "files/nope", "x"))
    failure(lambda: gemini.delete_batch("batches/nope"))
    emulator.set_faults(http_error_rate=1.0)
    failure(lambda: gemini.get_batch(info.name))
    failure(lambda: gemini.upload_jsonl(requests_file, "x"))
    failure(lambda: make_resource("http://127.0.0.1:9", max_attempts=2).get_batch("batches/x"))

    captured = capfd.readouterr()
    texts += [captured.out, captured.err, caplog.text]
    texts += [r.getMessage() + repr(r.args) for r in caplog.records]
    texts.append(dest.read_text())
    texts.append(emulator.log_tail(lines=100_000))
    assert caplog.records  # something was logged, so the search below means something
    assert not [t for t in texts if FAKE_KEY in t]
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()]


def test_a_key_in_an_api_message_is_scrubbed():
    gemini = GeminiBatchResource(api_key=FAKE_KEY)
    from google.genai import errors

    echo = errors.ClientError(
        400,
        {"error": {"code": 400, "message": f"API key {FAKE_KEY} not valid.", "status": "INVALID_ARGUMENT"}},
    )
    error = gemini.batch_api().retrying.final_error("get of batches/x", echo, 1)
    assert isinstance(error, GeminiError) and error.status_code == 400
    assert FAKE_KEY not in str(error) and "API key *** not valid." in str(error)
