import orjson
import pytest

from cotgen_assets.backends.developer import WIRE
from cotgen_assets.core.batch_output import ResultLine, classify, iter_result_lines
from cotgen_assets.core.model_io import Usage


def parse_result_line(raw: bytes, require_thoughts: bool = True) -> ResultLine:
    """A Developer API output line, read by its backend, classified by core."""
    return classify(WIRE.read_line(raw), require_thoughts)


def line(key="easy-1", parts=None, finish="STOP", usage=None, **extra) -> bytes:
    parts = (
        parts
        if parts is not None
        else [
            {"text": "**Adding**\n48 + 24 = 72.", "thought": True},
            {"text": "48 + 24 = 72, so \\boxed{72}.", "thoughtSignature": "CiQB0e2K"},
        ]
    )
    candidate = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    response = {
        "candidates": [candidate],
        "usageMetadata": usage
        or {
            "promptTokenCount": 40,
            "candidatesTokenCount": 12,
            "thoughtsTokenCount": 300,
            "totalTokenCount": 352,
        },
        "modelVersion": "gemini-3.1-pro-preview",
    }
    data = {"key": key, "response": response} if key is not None else {"response": response}
    data.update(extra)
    return orjson.dumps(data)


def test_ok_line():
    result = parse_result_line(line())
    assert result == ResultLine(
        key="easy-1",
        status="ok",
        thought="**Adding**\n48 + 24 = 72.",
        answer="48 + 24 = 72, so \\boxed{72}.",
        finish_reason="STOP",
        usage=Usage(40, 0, 300, 12),
        model_version="gemini-3.1-pro-preview",
        reason=None,
    )
    assert result.ok


def test_signature_only_part_is_ignored():
    parts = [
        {"text": "think", "thought": True},
        {"text": "answer "},
        {"thoughtSignature": "CiQB0e2Kb9y0"},
        {"text": "72"},
    ]
    result = parse_result_line(line(parts=parts))
    assert (result.status, result.thought, result.answer) == ("ok", "think", "answer 72")


def test_cached_tokens_and_string_counts():
    usage = {"promptTokenCount": "2100", "cachedContentTokenCount": 2048, "candidatesTokenCount": 5}
    result = parse_result_line(line(usage=usage))
    assert result.usage == Usage(input_tokens=2100, cached_tokens=2048, thinking_tokens=0, output_tokens=5)


def test_usage_adds():
    assert Usage(1, 2, 3, 4) + Usage(10, 20, 30, 40) == Usage(11, 22, 33, 44)
    assert sum([Usage(1, 0, 1, 1), Usage(2, 1, 0, 0)], Usage()) == Usage(3, 1, 1, 1)


def test_line_error():
    raw = orjson.dumps(
        {
            "key": "easy-7",
            "error": {
                "code": 400,
                "message": "Request contains an invalid argument.",
                "status": "INVALID_ARGUMENT",
            },
        }
    )
    result = parse_result_line(raw)
    assert (result.key, result.status, result.usage) == ("easy-7", "line_error", Usage())
    assert "400 INVALID_ARGUMENT" in result.reason and "invalid argument" in result.reason


def test_truncated_keeps_usage():
    result = parse_result_line(line(finish="MAX_TOKENS", parts=[{"text": "long thought", "thought": True}]))
    assert result.status == "truncated" and "MAX_TOKENS" in result.reason
    assert result.usage.thinking_tokens == 300  # billed all the same


@pytest.mark.parametrize("finish", ["SAFETY", "RECITATION", "OTHER", "MALFORMED_FUNCTION_CALL"])
def test_bad_finish(finish):
    result = parse_result_line(line(finish=finish))
    assert result.status == "bad_finish" and finish in result.reason
    assert result.finish_reason == finish


def test_blocked_prompt_has_no_candidates():
    raw = orjson.dumps(
        {
            "key": "k",
            "response": {
                "promptFeedback": {"blockReason": "SAFETY"},
                "usageMetadata": {"promptTokenCount": 9},
            },
        }
    )
    result = parse_result_line(raw)
    assert (result.status, result.usage.input_tokens) == ("bad_finish", 9)
    assert "SAFETY" in result.reason


def test_no_thoughts():
    result = parse_result_line(line(parts=[{"text": "\\boxed{72}"}]))
    assert result.status == "no_thoughts" and result.answer == "\\boxed{72}" and result.reason
    assert parse_result_line(line(parts=[{"text": "\\boxed{72}"}]), require_thoughts=False).status == "ok"


def test_empty_answer():
    for parts in (
        [{"text": "thinking", "thought": True}],
        [{"text": "thinking", "thought": True}, {"text": "  \n"}],
        [],
    ):
        result = parse_result_line(line(parts=parts))
        assert result.status == "empty" and result.reason
    no_candidates = parse_result_line(orjson.dumps({"key": "k", "response": {"candidates": []}}))
    assert no_candidates.status == "empty"
    neither = parse_result_line(orjson.dumps({"key": "k"}))
    assert (neither.key, neither.status) == ("k", "empty")


def test_not_json_recovers_the_key_when_it_can():
    truncated = line(key="easy-9")[:60]
    result = parse_result_line(truncated)
    assert (result.key, result.status) == ("easy-9", "not_json") and "not JSON" in result.reason
    garbage = parse_result_line(b"<html>502 Bad Gateway</html>")
    assert (garbage.key, garbage.status) == (None, "not_json")
    assert parse_result_line(b'["a list"]').status == "not_json"


def test_invalid_utf8():
    raw = b'{"key": "easy-3", "response": {"text": "caf\xe9"}}'
    result = parse_result_line(raw)
    assert (result.key, result.status) == ("easy-3", "invalid_utf8") and "UTF-8" in result.reason


def test_no_key():
    for raw in (line(key=None), line(key=""), orjson.dumps({"key": 5, "error": {"code": 500}})):
        result = parse_result_line(raw)
        assert (result.key, result.status) == (None, "no_key") and result.reason


def test_every_non_ok_status_has_a_reason():
    raws = [
        line(finish="MAX_TOKENS"),
        line(finish="SAFETY"),
        line(parts=[{"text": "a"}]),
        line(parts=[]),
        b"nope",
        b"\xff\xfe",
        line(key=None),
        orjson.dumps({"key": "k", "error": {"message": "x"}}),
    ]
    results = [parse_result_line(r) for r in raws]
    assert {r.status for r in results} == {
        "truncated",
        "bad_finish",
        "no_thoughts",
        "empty",
        "not_json",
        "invalid_utf8",
        "no_key",
        "line_error",
    }
    assert all(r.reason for r in results)


def test_iter_result_lines_streams_a_file(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(
        line(key="b") + b"\n\n" + b"garbage\r\n" + line(key="a", finish="SAFETY") + b"\n   \n" + line(key="c")
    )
    results = list(iter_result_lines(path, WIRE))
    assert [(r.key, r.status) for r in results] == [
        ("b", "ok"),
        (None, "not_json"),
        ("a", "bad_finish"),
        ("c", "ok"),
    ]
    assert {r.key: r for r in results if r.key}["c"].answer.endswith("\\boxed{72}.")


def test_a_vertex_status_line_is_that_request_s_failure_with_its_usage_kept():
    from cotgen_assets.backends.vertex import WIRE as VERTEX

    raw = orjson.dumps(
        {"key": "easy-2", "status": "Quota exceeded", "response": {"usageMetadata": {"promptTokenCount": 7}}}
    )
    failed = classify(VERTEX.read_line(raw))
    assert (failed.key, failed.status, failed.reason) == ("easy-2", "line_error", "Quota exceeded")
    assert failed.usage == Usage(input_tokens=7)
    ok = classify(VERTEX.read_line(orjson.dumps({"key": "easy-1", "status": "", **orjson.loads(line())})))
    assert ok.status == "ok" and ok.answer.endswith("\\boxed{72}.")
