"""Reading many jobs' states with list pages rather than a get per job, against the emulator with the
real google-genai client; the API calls counted as the sensor's tick counts them."""

from cotgen_assets.backends.polling import LIST_FROM, Poller
from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets_tests.harness.emulator import generation_request, request_line

MODEL = "gemini-3.1-pro-preview"


def test_many_jobs_are_read_from_one_list_page_and_a_few_with_a_get_each(emulator, tmp_path):
    gemini = GeminiBatchResource(base_url=emulator.base_url, backoff_seconds=0.05)
    path = tmp_path / "requests.jsonl"
    path.write_bytes(request_line("k", generation_request("What is 6 times 7?")))
    names = [gemini.submit_jsonl(path, MODEL, f"polling-{i}").name for i in range(LIST_FROM + 1)]

    before = gemini.api_calls
    jobs = Poller(gemini.batch_api()).jobs(names)
    assert [job.name for job in jobs] == names and all(job.display_name for job in jobs)
    assert gemini.api_calls - before == 1, "one page of 100 holds them all"

    before = gemini.api_calls
    poller = Poller(gemini.batch_api())
    assert [job.name for job in poller.jobs(names[:3])] == names[:3]
    assert gemini.api_calls - before == 3, "a few jobs: a get each"
    poller.jobs(names[:3])
    assert gemini.api_calls - before == 3, "a tick reads a job once"
