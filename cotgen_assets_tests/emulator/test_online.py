"""Synchronous generateContent on the emulator, driven by the real google-genai client."""

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from google.genai import errors, types

from cotgen_assets.core.answers import extract_boxed_answer, extract_gsm8k_answer
from cotgen_assets_tests.harness.emulator import generation_request, start_emulator

MODEL = "gemini-3.1-pro-preview"
DATA = Path(os.environ["COTGEN_DATASETS_DIR"])


@pytest.fixture(scope="module")
def gsm8k_problems():
    """The first five GSM8K training problems and their reference answers."""
    path = DATA / "gsm8k" / "main" / "train.parquet"
    rows = pq.read_table(path, columns=["question", "answer"]).slice(0, 5).to_pylist()
    return [(row["question"], extract_gsm8k_answer(row["answer"])) for row in rows]


@pytest.fixture(scope="module")
def shared_emulator(tmp_path_factory):
    path = tmp_path_factory.mktemp("online") / "emulator"
    with start_emulator(path, extra_args=["--online-latency", "0", "--flex-latency", "0"]) as emu:
        yield emu


@pytest.fixture
def online_emulator(shared_emulator):
    """The module's emulator (loading the reference problems once), faults reset."""
    shared_emulator.set_faults(reset=True)
    return shared_emulator


def ask(client, question: str, tier: str | None = None, model: str = MODEL):
    request = generation_request(question)
    config = types.GenerateContentConfig(
        thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_level="high"),
        service_tier=tier,
    )
    return client.models.generate_content(model=model, contents=request["contents"], config=config)


def answer_parts(response) -> tuple[str, str]:
    parts = response.candidates[0].content.parts
    thought = "\n\n".join(p.text for p in parts if p.thought)
    answer = "".join(p.text for p in parts if not p.thought)
    return thought, answer


@pytest.mark.parametrize("api_version", ["v1", "v1beta"])
@pytest.mark.parametrize("tier", [None, "standard", "flex", "priority"])
def test_developer_api_answers_with_the_reference_solution(
    online_emulator, gsm8k_problems, api_version, tier
):
    client = online_emulator.client(api_version=api_version)
    question, reference = gsm8k_problems[0]
    response = ask(client, question, tier)
    thought, answer = answer_parts(response)
    assert thought and extract_boxed_answer(answer) == reference
    usage = response.usage_metadata
    assert usage.prompt_token_count > 0 and usage.thoughts_token_count > 0
    assert usage.total_token_count == (
        usage.prompt_token_count + usage.candidates_token_count + usage.thoughts_token_count
    )
    assert online_emulator.calls()[-1] == {
        "method": "POST",
        "path": f"/{api_version}/models/{MODEL}:generateContent",
        "status": 200,
    }


@pytest.mark.parametrize("api_version", ["v1", "v1beta1"])
def test_vertex_ai_path_is_served_too(online_emulator, gsm8k_problems, api_version):
    client = online_emulator.vertex_client(api_version=api_version)
    question, reference = gsm8k_problems[1]
    _, answer = answer_parts(ask(client, question, "flex"))
    assert extract_boxed_answer(answer) == reference
    call = online_emulator.calls()[-1]
    assert call["path"] == (
        f"/{api_version}/projects/test-proj/locations/us-central1/publishers/google/models/{MODEL}:generateContent"
    )


def test_same_answer_and_usage_as_a_batch_line(online_emulator, gsm8k_problems, tmp_path):
    """One responder answers both: the synchronous answer's text and usage equal the batch line's."""
    client = online_emulator.client()
    question, _ = gsm8k_problems[2]
    online = ask(client, question, "flex")
    job = client.batches.create(
        model=MODEL,
        src=[
            types.InlinedRequest(
                contents=generation_request(question)["contents"],
                config=types.GenerateContentConfig(
                    thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_level="high")
                ),
            )
        ],
    )
    while not (job := client.batches.get(name=job.name)).done:
        pass
    batch = job.dest.inlined_responses[0].response
    assert answer_parts(online) == answer_parts(batch)
    assert online.usage_metadata.prompt_token_count == batch.usage_metadata.prompt_token_count
    assert online.usage_metadata.thoughts_token_count == batch.usage_metadata.thoughts_token_count


def test_wrong_rate_is_deterministic_and_drawn_afresh_per_ask(tmp_path, gsm8k_problems):
    """At a 50 % wrong-answer rate, two emulators with one seed give the same answers in the same
    order of asks; the second ask of a question is a fresh draw, not a replay."""

    def run(name: str) -> list[bool]:
        extra_args = ["--online-latency", "0", "--fault-wrong-rate", "0.5"]
        with start_emulator(tmp_path / name, extra_args=extra_args) as emu:
            client = emu.client()
            right = []
            for _ in range(2):
                for question, reference in gsm8k_problems:
                    right.append(extract_boxed_answer(answer_parts(ask(client, question))[1]) == reference)
            return right

    first, second = run("a"), run("b")
    assert first == second
    assert 0 < sum(first) < len(first)
    assert first[:5] != first[5:], "the second round of asks drew the same faults as the first"


@pytest.mark.parametrize("status", [503, 429])
def test_flex_sheds_with_the_status_set_and_standard_is_never_shed(online_emulator, gsm8k_problems, status):
    online_emulator.set_faults(flex_shed_rate=1.0, flex_shed_status=status)
    client = online_emulator.client(retry_options=types.HttpRetryOptions(attempts=1))
    question, reference = gsm8k_problems[0]
    with pytest.raises(errors.APIError) as caught:
        ask(client, question, "flex")
    assert caught.value.code == status
    assert extract_boxed_answer(answer_parts(ask(client, question, "standard"))[1]) == reference


def test_refusals(online_emulator, gsm8k_problems):
    client = online_emulator.client(retry_options=types.HttpRetryOptions(attempts=1))
    question, _ = gsm8k_problems[0]
    with pytest.raises(errors.ClientError) as unknown_model:
        ask(client, question, model="gemini-0-nonexistent")
    assert unknown_model.value.code == 404 and "generateContent" in unknown_model.value.message
    with pytest.raises(errors.ClientError) as bad_level:
        client.models.generate_content(
            model="gemini-3-pro-preview",
            contents=question,
            config=types.GenerateContentConfig(thinking_config=types.ThinkingConfig(thinking_level="medium")),
        )
    assert bad_level.value.code == 400 and "not supported" in bad_level.value.message


def test_latency_per_tier_is_what_the_flags_say(tmp_path, gsm8k_problems):
    """--flex-latency holds a Flex call that long (a lower bound: the delay is the fault, not speed)."""
    import time

    extra_args = ["--online-latency", "0", "--flex-latency", "1.5"]
    with start_emulator(tmp_path / "emulator", extra_args=extra_args) as emu:
        client = emu.client()
        question, _ = gsm8k_problems[0]
        started = time.monotonic()
        ask(client, question, "flex")
        flex = time.monotonic() - started
    assert flex >= 1.5
