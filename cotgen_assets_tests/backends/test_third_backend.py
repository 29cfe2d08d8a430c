"""The seam proved: a third batch API, written here and nowhere else, carries `easy` to CoD.

`inmemory` is a small batch API in this process with its own wire format (Anthropic-like
`custom_id` lines, `thinking` and `text` content blocks, its own job states). It is registered
through `backends.registry.register_backend` and priced through COTGEN_PRICES_FILE, exactly as
docs/writing-a-backend.md says, and its model is the emulator's responder, so its records, costs
and checks must be the golden emulator run's, apart from the API's own words (finish reason, job
state) and its batch names.
"""

import csv
import re
from pathlib import Path

import orjson
import pytest

from cotgen_assets.backends.base import Backend, BatchInfo
from cotgen_assets.backends.registry import register_backend
from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets.backends.retries import Retrying
from cotgen_assets.core import model_io
from cotgen_assets.core.model_io import Limits, Prompt, Reply, Usage
from cotgen_assets.core.pricing import default_prices_path
from cotgen_assets.emulator.responder import Responder, count_tokens
from cotgen_assets_tests.harness.golden import GOLDEN_DIR, run_easy, snapshot
from cotgen_assets_tests.harness.pipeline import Pipeline

pytestmark = pytest.mark.pipeline

NAME = "inmemory"
ENDS = {"ended": model_io.SUCCEEDED, "canceled": model_io.CANCELLED}


class InMemoryWire:
    """Lines in: `{"custom_id", "params"}`; lines out: `{"custom_id", "result"}`."""

    name = NAME
    label = "the in-memory batch API"
    limits = Limits(max_requests_per_job=100_000, max_bytes_per_file=10_000_000)

    def request_body(self, prompt: Prompt) -> dict:
        return {
            "messages": [{"role": "user", "content": [{"type": "text", "text": p} for p in prompt.texts]}],
            "thinking": {"effort": prompt.thinking, "summary": prompt.include_thoughts},
            "output_schema": prompt.schema,
            "n": prompt.answers,
        }

    def job_end(self, state: str) -> str:
        return ENDS.get(state, "")

    def input_line(self, prompt: Prompt) -> bytes:
        return orjson.dumps({"custom_id": prompt.key, "params": self.request_body(prompt)}) + b"\n"

    def read_line(self, raw: bytes) -> Reply:
        line = orjson.loads(raw)
        result = line["result"]
        if result["type"] != "succeeded":
            return Reply(line["custom_id"], failure=model_io.LINE_ERROR, reason=result["error"])
        message = result["message"]
        blocks = {block["type"]: block for block in message["content"]}
        tokens = message["usage"]
        return Reply(
            line["custom_id"],
            text=blocks["text"]["text"],
            thought=blocks.get("thinking", {}).get("thinking", ""),
            usage=Usage(tokens["in"], 0, tokens["thinking"], tokens["out"]),
            finish=model_io.COMPLETE if message["stop_reason"] == "end_turn" else model_io.OTHER_END,
            finish_reason=message["stop_reason"],
            model_version=message["model"],
        )


class InMemoryAPI:
    """The API's side: uploaded files, jobs, and a model (the emulator's responder) that answers at once."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.jobs: dict[str, dict] = {}
        self.model = Responder()

    def answer(self, model: str, line: bytes) -> bytes:
        request = orjson.loads(line)
        params, texts = request["params"], []
        for content in params["messages"][0]["content"]:
            texts.append(content["text"])
        config = {"responseJsonSchema": params["output_schema"]} if params["output_schema"] else {}
        reply = self.model.reply(
            {
                "contents": [{"role": "user", "parts": [{"text": t} for t in texts]}],
                "generationConfig": config,
            }
        )
        content = (
            [{"type": "thinking", "thinking": "".join(reply.thoughts)}]
            if params["thinking"]["summary"]
            else []
        )
        content.append({"type": "text", "text": reply.answer})
        usage = {
            "in": count_tokens(*texts),
            "thinking": count_tokens(*reply.thoughts),
            "out": count_tokens(reply.answer),
        }
        message = {"content": content, "stop_reason": "end_turn", "usage": usage, "model": model}
        result = {"type": "succeeded", "message": message}
        return orjson.dumps({"custom_id": request["custom_id"], "result": result}) + b"\n"


class InMemoryBatches(Backend):
    wire = InMemoryWire()

    def __init__(self, api: InMemoryAPI):
        super().__init__(Retrying(max_attempts=1, backoff_seconds=0))
        self.api = api

    @property
    def offline(self) -> bool:
        return True

    def describe(self) -> str:
        return "offline: the in-memory batch API of the tests"

    def info(self, name: str) -> BatchInfo:
        job = self.api.jobs[name]
        return BatchInfo(
            name=name,
            display_name=job["display_name"],
            state=job["state"],
            end=self.wire.job_end(job["state"]),
            model=job["model"],
            result_file=f"results/{name}" if job["state"] in ENDS else None,
            create_time=None,
            end_time=None,
            request_count=len(job["lines"]),
            succeeded_count=len(job["lines"]),
            failed_count=0,
            error=None,
            source=job["source"],
        )

    def upload(self, path: Path, display_name: str, folder: str) -> str:
        source = f"files/{len(self.api.files)}"
        self.api.files[source] = path.read_bytes()
        return source

    def create(self, model: str, source: str, display_name: str) -> BatchInfo:
        name = f"jobs/{len(self.api.jobs)}"
        lines = [self.api.answer(model, line) for line in self.api.files[source].splitlines()]
        self.api.jobs[name] = dict(
            display_name=display_name, model=model, source=source, lines=lines, state="ended"
        )
        return self.info(name)

    def get(self, name: str, timeout_seconds: float | None) -> BatchInfo:
        return self.info(name)

    def page(self, page_size: int, token: str | None) -> tuple[list[BatchInfo], str | None]:
        return [self.info(name) for name in self.api.jobs], None

    def cancel(self, name: str) -> None:
        self.api.jobs[name]["state"] = "canceled"

    def delete(self, name: str) -> None:
        del self.api.jobs[name]

    def download(self, result_file: str, dest: Path) -> None:
        dest.write_bytes(b"".join(self.api.jobs[result_file.removeprefix("results/")]["lines"]))


@pytest.fixture
def inmemory(tmp_path, monkeypatch):
    """A fresh API, its backend registered, its prices those of the Developer API (a new file)."""
    api = InMemoryAPI()
    register_backend(InMemoryWire(), lambda settings: InMemoryBatches(api), surely_offline=lambda s: True)
    with open(default_prices_path()) as handle:
        rows = list(csv.DictReader(handle))
    prices = tmp_path / "prices.csv"
    with open(prices, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=rows[0].keys())
        writer.writeheader()
        writer.writerows(rows + [row | {"backend": NAME} for row in rows if row["backend"] == "developer"])
    monkeypatch.setenv("COTGEN_PRICES_FILE", str(prices))
    return api


def api_neutral(snap: dict) -> dict:
    """The snapshot without what a wire format's bytes decide: submission ids (they hash the
    request lines) and projected input (estimated from their size). Costs billed stay."""
    ids: dict[str, str] = {}
    text = orjson.dumps(snap, option=orjson.OPT_SORT_KEYS).decode()
    for found in re.findall(r'"submission(?:_id)?":"([0-9a-f]{12})"', text):
        ids.setdefault(found, f"<submission-{len(ids) + 1}>")
    for found, placeholder in ids.items():
        text = text.replace(f'"{found}"', f'"{placeholder}"')
    neutral = orjson.loads(text)
    for asset in ("generation_batch", "summarization_batch"):
        for key in ("projected_cost_usd", "projected_input_tokens"):
            del neutral["metadata"][asset][key]
    return neutral


def test_a_backend_written_in_the_tests_carries_easy_to_cod(inmemory, instance, data_dir):
    pipeline = Pipeline(instance, base_url=None)
    pipeline.resources["gemini"] = GeminiBatchResource(backend=NAME)
    run_easy(pipeline)
    snap = snapshot(pipeline, data_dir)

    assert len(inmemory.jobs) == 2 and all(
        job["source"].startswith("files/") for job in inmemory.jobs.values()
    )
    sent = next(iter(inmemory.files.values())).splitlines()[0]
    assert orjson.loads(sent)["custom_id"] == "easy-0", "its own input lines went to its API"
    for rows in snap["records"].values():
        for row in rows:
            for block in ("generation", "summarization"):
                if block in row:
                    assert row[block]["finish_reason"] == "end_turn"  # the API's own word, kept
                    row[block]["finish_reason"] = "STOP"
    for asset in ("generation_results", "summarization_results"):
        assert snap["metadata"][asset]["job_state"] == "ended"
        snap["metadata"][asset]["job_state"] = "JOB_STATE_SUCCEEDED"
    golden = orjson.loads((GOLDEN_DIR / "easy.json").read_bytes())
    assert (
        snap["metadata"]["cod_samples"]["total_cost_usd"]
        == golden["metadata"]["cod_samples"]["total_cost_usd"]
    )
    assert api_neutral(snap) == api_neutral(golden)
