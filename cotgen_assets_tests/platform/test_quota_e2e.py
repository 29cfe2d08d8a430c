"""End to end under `dagster dev`: an emulator that refuses a third concurrent job (as the API
refuses a create past its quota with 429 RESOURCE_EXHAUSTED), and one click that asks for more."""

import pytest

from cotgen_assets_tests.harness.platform import check_partition, latest_metadata, offline_platform

pytestmark = pytest.mark.e2e

PROBLEMS = 24


def test_one_click_past_the_quota_reaches_every_cot_sample_and_draft_with_no_second_click(tmp_path):
    with offline_platform(tmp_path, latency=3.0, emulator_args=("--max-active-jobs", "2")) as platform:
        instance = platform.instance
        run = platform.submit_generation(
            "easy", with_sources=True, limit=PROBLEMS, ask="missing", max_requests_per_job=4
        )
        platform.wait_run(run)  # the click returns at once, saying what it made and what waits
        batch = latest_metadata(instance, "generation_batch", "easy")
        assert (batch["num_jobs_created"], batch["num_jobs_queued"]) == (2, 4)

        # From here on the test only waits: the sensor creates the queued jobs as earlier ones end.
        platform.wait_samples(instance, "cod_samples", "easy", PROBLEMS)
        check_partition(instance, platform.data, "easy", "easy", PROBLEMS)
        created = platform.emulator.created_jobs()
        generation = [job for job in created if "-generation-" in job["display_name"]]
        assert len(generation) == 6 and len({job["display_name"] for job in created}) == len(created)
        assert max(job["active"] for job in created) <= 2
