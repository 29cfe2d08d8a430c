import orjson
import pytest

from cotgen_assets.backends.gemini_wire import input_line, request_body
from cotgen_assets.core.prompts import (
    DRAFT_SCHEMA,
    GENERATION_PROMPT_VERSION,
    SUMMARIZATION_PROMPT_VERSION,
    generation_prompt,
    parse_draft,
    summarization_prompt,
)

QUESTION = "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many in all?"


def test_versions_are_named():
    assert GENERATION_PROMPT_VERSION == "cot-gen-v1"
    assert SUMMARIZATION_PROMPT_VERSION == "cod-sum-v1"


def test_asks_say_what_to_ask_in_no_api_words():
    ask = generation_prompt("easy-1", QUESTION)
    assert ask.texts[-1] == QUESTION and ask.include_thoughts and ask.thinking == "high"
    assert ask.schema is None and ask.answers == 1
    draft = summarization_prompt("easy-1", QUESTION, "thought", "answer")
    assert draft.schema == DRAFT_SCHEMA and not draft.include_thoughts and draft.thinking == "low"


def test_generation_request_puts_the_question_last():
    request = request_body(generation_prompt("", QUESTION))
    last_user = [c for c in request["contents"] if c["role"] == "user"][-1]
    assert last_user["parts"][-1] == {"text": QUESTION}
    instructions = " ".join(p["text"] for p in last_user["parts"][:-1])
    assert "step by step" in instructions and "\\boxed{}" in instructions
    config = request["generationConfig"]
    assert config["thinkingConfig"] == {"includeThoughts": True, "thinkingLevel": "high"}
    assert "responseJsonSchema" not in config and "responseSchema" not in config
    low = request_body(generation_prompt("", QUESTION, "low"))
    assert low["generationConfig"]["thinkingConfig"]["thinkingLevel"] == "low"


def test_summarization_request_parts_and_schema():
    request = request_body(summarization_prompt("", QUESTION, "She sold 48/2 = 24 in May.", "\\boxed{72}"))
    parts = [p["text"] for p in request["contents"][-1]["parts"]]
    assert len(parts) == 4
    assert "Chain of Draft" in parts[0] and "five words" in parts[0]
    assert parts[1:] == [
        "Problem:\n" + QUESTION,
        "Reasoning:\nShe sold 48/2 = 24 in May.",
        "Answer:\n\\boxed{72}",
    ]
    config = request["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    schema = config["responseJsonSchema"]
    assert schema["properties"]["draft_steps"]["type"] == "array"
    assert schema["properties"]["draft_steps"]["items"] == {"type": "string"}
    assert schema["properties"]["final_answer"]["type"] == "string"
    assert set(schema["required"]) == {"draft_steps", "final_answer"}
    assert config["thinkingConfig"]["thinkingLevel"] == "low"


def test_request_line_is_one_json_line():
    line = input_line(generation_prompt("easy-00001", "π ≈ 3.14?"))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    data = orjson.loads(line)
    assert data["key"] == "easy-00001"
    assert data["request"]["contents"][0]["parts"][-1]["text"] == "π ≈ 3.14?"


def test_parse_draft_good():
    text = '{"draft_steps": ["May: 48/2 = 24", " total: 48+24 = 72 ", ""], "final_answer": " 72 "}'
    assert parse_draft(text) == (["May: 48/2 = 24", "total: 48+24 = 72"], "72")


def test_parse_draft_accepts_fenced_json_and_numeric_answer():
    text = '```json\n{"draft_steps": ["x = 2"], "final_answer": 2}\n```'
    assert parse_draft(text) == (["x = 2"], "2")


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "empty"),
        ("The answer is 72.", "not JSON"),
        ('["a", "b"]', "not an object"),
        ('{"final_answer": "72"}', "draft_steps"),
        ('{"draft_steps": "one step", "final_answer": "72"}', "draft_steps"),
        ('{"draft_steps": [1, 2], "final_answer": "72"}', "draft_steps"),
        ('{"draft_steps": ["  "], "final_answer": "72"}', "no draft steps"),
        ('{"draft_steps": ["a"]}', "final_answer"),
        ('{"draft_steps": ["a"], "final_answer": "  "}', "final_answer"),
        ('{"draft_steps": ["a"], "final_answer": true}', "final_answer"),
    ],
)
def test_parse_draft_bad(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_draft(text)
