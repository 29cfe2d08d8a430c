"""Bad input is a clear error naming the problem, at the place a user meets it.

core/test_scenarios.py and core/test_sources.py check the messages of the plain functions; here they are
checked where a user sees them: loading the code location, and materializing the assets.
"""

import os
import shutil
import subprocess
import sys

import dagster as dg
import pyarrow.parquet as pq
import pytest

from cotgen_assets.core.scenarios import DEFAULT_SCENARIOS_FILE, get_scenario
from cotgen_assets.defs.assets.batches import generation_batch, summarization_batch
from cotgen_assets.defs.assets.publishing import hf_dataset
from cotgen_assets.defs.assets.sources import source_problems
from cotgen_assets_tests.harness.dagster import ROOT
from cotgen_assets_tests.harness.pipeline import Pipeline
from cotgen_assets_tests.harness.sources import load_source_problems

UNREACHABLE = "http://127.0.0.1:9"  # no API call is made before these refusals


def scenarios_file(tmp_path, monkeypatch, text: str):
    path = tmp_path / "scenarios.yaml"
    path.write_text(text)
    monkeypatch.setenv("COTGEN_SCENARIOS_FILE", str(path))
    return path


def test_a_malformed_scenarios_file_stops_the_code_location_with_its_reason(tmp_path, monkeypatch):
    path = scenarios_file(tmp_path, monkeypatch, "scenarios:\n  easy: [dataset: gsm8k\n")
    loaded = subprocess.run(
        [sys.executable, "-c", "import cotgen_assets.definitions"],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert loaded.returncode != 0
    assert f"ScenarioError: scenarios file {path} is not valid YAML" in loaded.stderr


def error_chain(error) -> str:
    """An error's message and those of its causes, as the UI shows them one below the other."""
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def medium_with(**changes) -> str:
    """The default scenarios file with fields of `medium` replaced."""
    text = DEFAULT_SCENARIOS_FILE.read_text()
    start = text.index("  medium:")
    end = text.index("\n  hard:")
    block = text[start:end]
    for field, (old, new) in changes.items():
        assert old in block, field
        block = block.replace(old, new)
    return text[:start] + block + text[end:]


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"dataset": ("qwedsacf/competition_math", "acme/no-such-set")},
            "could not load dataset 'acme/no-such-set'",
        ),
        ({"filter": ("level=Level 1,Level 2,Level 3", "difficulty=hard")}, "'difficulty'"),
        (
            {"filter": ("level=Level 1,Level 2,Level 3", "level=Level 9")},
            "no row of 'qwedsacf/competition_math'",
        ),
        ({"filter": ("level=Level 1,Level 2,Level 3", "level=")}, "'level' has no values"),
        (None, "is not valid YAML"),
    ],
)
def test_bad_scenarios_fail_source_problems_with_their_reason(
    tmp_path, monkeypatch, instance, data_dir, changes, message
):
    """The scenarios file is read again at every materialization, so an edit shows up here."""
    scenarios_file(tmp_path, monkeypatch, medium_with(**changes) if changes else "scenarios: {medium: [\n")
    result = dg.materialize(
        [source_problems], partition_key="medium", instance=instance, raise_on_error=False
    )
    assert not result.success
    assert message in error_chain(result.failure_data_for_node("source_problems").error)
    assert not (data_dir / "medium" / "source_problems.parquet").exists()


@pytest.fixture(scope="module")
def easy_problems(tmp_path_factory):
    path = tmp_path_factory.mktemp("sources") / "easy.parquet"
    pq.write_table(load_source_problems(get_scenario("easy"))[0], path)
    return path


@pytest.mark.parametrize(
    "config, message",
    [
        ({"limit": 0}, "limit: Input should be greater than 0, got 0"),
        ({"limit": -5}, "limit: Input should be greater than 0, got -5"),
        ({"max_tries": 0}, "max_tries: Input should be greater than or equal to 1, got 0"),
        (
            {"thinking_level": "bogus"},
            "thinking_level 'bogus' is not one that model 'gemini-3.1-pro-preview' takes; "
            "it takes: low, medium, high",
        ),
        (
            {"model": "gemini-3-pro-preview", "thinking_level": "medium"},
            "thinking_level 'medium' is not one that model 'gemini-3-pro-preview' takes; it takes: low, high",
        ),
    ],
)
def test_bad_batch_config_is_a_failure_naming_it_and_submits_nothing(
    instance, data_dir, easy_problems, config, message
):
    (data_dir / "easy").mkdir(parents=True)
    shutil.copy(easy_problems, data_dir / "easy" / "source_problems.parquet")
    pipeline = Pipeline(instance, UNREACHABLE)
    result = pipeline.submit_generation("easy", raise_on_error=False, **config)
    assert not result.success
    error = result.failure_data_for_node("generation_batch").error
    assert error.cls_name == "Failure" and message in error.message
    assert not (data_dir / "easy" / "submissions").exists()


def test_config_out_of_bounds_is_refused_first_naming_every_field(instance, data_dir):
    """Refused as the run starts, before the asset looks at anything (here source_problems is missing,
    which would be the error otherwise), as a `Failure`: a refusal the sensor never retries."""
    pipeline = Pipeline(instance, UNREACHABLE)
    config = {"limit": 0, "max_tries": 0, "max_cost_usd": -1}
    result = pipeline.submit_generation("hard", raise_on_error=False, **config)
    error = result.failure_data_for_node("generation_batch").error
    assert error.cls_name == "Failure"
    assert (
        "max_cost_usd: Input should be greater than or equal to 0, got -1.0; "
        "max_tries: Input should be greater than or equal to 1, got 0; "
        "limit: Input should be greater than 0, got 0" in error.message
    )
    assert not data_dir.exists()


@pytest.mark.parametrize("asset", [generation_batch, summarization_batch, hf_dataset])
def test_the_launchpad_describes_every_config_field(asset):
    """Dagster's launchpad shows these descriptions beside the fields (and checks types and enums;
    bounds are checked as the run starts, above)."""
    fields = asset.op.config_schema.as_field().config_type.fields
    assert [name for name, field in fields.items() if not field.description] == []


def test_a_thinking_level_the_model_does_not_take_is_refused_for_summaries_too(
    instance, data_dir, easy_problems
):
    """Refused before anything is written: no request file, no batch, no try counted."""
    (data_dir / "easy").mkdir(parents=True)
    shutil.copy(easy_problems, data_dir / "easy" / "source_problems.parquet")
    result = Pipeline(instance, UNREACHABLE).materialize(
        [summarization_batch],
        "easy",
        {"ops": {"summarization_batch": {"config": {"thinking_level": "minimal"}}}},
        raise_on_error=False,
    )
    assert not result.success
    error = result.failure_data_for_node("summarization_batch").error
    assert error.cls_name == "Failure"
    assert (
        "thinking_level 'minimal' is not one that model 'gemini-3.1-pro-preview' takes; "
        "it takes: low, medium, high" in error.message
    )
    assert not (data_dir / "easy" / "submissions").exists()


def test_an_unknown_mode_is_refused_before_the_run_starts(instance, data_dir, easy_problems):
    """`mode` is an enum in the launchpad: a typo never reaches the asset."""
    pipeline = Pipeline(instance, UNREACHABLE)
    with pytest.raises(dg.DagsterInvalidConfigError, match="mode not in enum type.*got fil"):
        pipeline.submit_generation("easy", mode="fil")
    assert not (data_dir / "easy" / "submissions").exists()


def test_batch_before_source_problems_says_what_to_materialize_first(instance, data_dir):
    result = Pipeline(instance, UNREACHABLE).submit_generation("hard", raise_on_error=False)
    message = result.failure_data_for_node("generation_batch").error.message
    assert "source_problems for scenario 'hard' is not materialized yet: materialize it first" in message


def test_a_damaged_source_problems_file_is_named_and_nothing_is_submitted(instance, data_dir, easy_problems):
    """Arrow's own error names no file: the run's failure names it and says what makes it again."""
    target = data_dir / "easy" / "source_problems.parquet"
    target.parent.mkdir(parents=True)
    target.write_bytes(easy_problems.read_bytes()[:1000])  # a copy cut short
    result = Pipeline(instance, UNREACHABLE).submit_generation("easy", raise_on_error=False)
    message = result.failure_data_for_node("generation_batch").error.message
    assert f"{target} is damaged: it cannot be read as Parquet" in message
    assert "again (source_problems for source_problems.parquet" in message
    assert not (data_dir / "easy" / "submissions").exists() and target.stat().st_size == 1000
