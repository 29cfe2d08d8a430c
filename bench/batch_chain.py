"""One click carried to its last CoD sample through the batch quota, in-process, as the daemon would
carry it: the sensor's ticks (`decide_launches`) and every run they ask for executed here, one after
another. Shared by `bench/quotas.py` and `bench/scale.py`; figures only, no assertion on time.
"""

import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson

BIG_BUDGET_USD = 1e9  # a million requests pass the default max_cost_usd ($100); drafts take the click's


@dataclass
class Tick:
    followed: int  # jobs created and not seen to end when the tick began
    calls: int  # Gemini API calls the tick made (each page and attempt counts one)
    created: int  # jobs it created from the queue


@dataclass
class Chain:
    marks: dict = field(default_factory=dict)  # seconds from the click: "click returned", "cot", "cod"
    ticks: list[Tick] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)  # the job of each run the sensor asked for


@contextmanager
def _unmeasured(label: str) -> Iterator[dict]:
    yield {}


def lines_in(path: Path) -> int:
    return sum(1 for _ in open(path, "rb")) if path.exists() else 0


def _created_and_followed() -> tuple[int, int]:
    """(jobs created, jobs created and not seen to end), over every submission in the data folder."""
    from cotgen_assets.core.queue import QUEUED, all_submissions, live_jobs

    submissions = all_submissions()
    created = sum(name != QUEUED for s in submissions for name in s.batch_names)
    return created, sum(len(live_jobs(s)) for s in submissions)


def with_summarization_config(request, config: dict | None):
    """The sensor's run request with `config` added to the summarization_batch it runs, if any (what a
    deployment sets as the launchpad's defaults); the budget the sensor carries from the click stays."""
    if not config or request.job_name not in ("generation_results_job", "summarization_batch_job"):
        return request
    run_config = dict(request.run_config or {})
    ops = dict(run_config.get("ops", {}))
    carried = ops.get("summarization_batch", {}).get("config", {})
    ops["summarization_batch"] = {"config": {**carried, **config}}
    return request.with_replaced_attrs(run_config={**run_config, "ops": ops})


def drive(
    pipeline,
    scenario: str,
    samples: int,
    click_config: dict,
    *,
    tick_seconds: float,
    deadline: float,
    summarization_config: dict | None = None,
    measure: Callable[[str], AbstractContextManager[dict]] = _unmeasured,
) -> Chain:
    """Click `generation_batch` of `scenario` with `click_config`, then tick and run until `samples`
    CoD samples are written (the summarization batch with `summarization_config`). `measure(label)`
    wraps the click, each tick and each run (a run's wrapper gets its `run_id`)."""
    from cotgen_assets.defs.sensors import decide_launches
    from cotgen_assets.defs.sensors.cursor import SensorCursor

    data = Path(os.environ["COTGEN_DATA_DIR"])
    gemini, cursor, chain = pipeline.resources["gemini"], SensorCursor(), Chain()
    clicked = time.time()
    with measure("click: generation_batch"):
        pipeline.submit_generation(scenario, **click_config)
    chain.marks["click returned"] = time.time() - clicked
    while lines_in(data / f"cod_{scenario}.jsonl") < samples:
        if time.time() > deadline:
            raise TimeoutError(f"the chain did not finish in time: {chain.marks}")
        created, followed = _created_and_followed()
        calls = gemini.api_calls
        with measure("sensor ticks"):
            outcome = decide_launches(pipeline.instance, gemini, [scenario], cursor)
        chain.ticks.append(Tick(followed, gemini.api_calls - calls, _created_and_followed()[0] - created))
        for request in outcome.run_requests:
            with measure(request.job_name) as note:
                result = pipeline.run(with_summarization_config(request, summarization_config))
                note["run_id"] = result.run_id
            assert result.success, f"{request.job_name} failed"
            chain.runs.append(request.job_name)
        if "cot" not in chain.marks and lines_in(data / f"cot_{scenario}.jsonl") >= samples:
            chain.marks["cot"] = time.time() - clicked
        if not outcome.run_requests:
            time.sleep(tick_seconds)
    chain.marks["cod"] = time.time() - clicked
    return chain


def in_flight_seconds(state_dir: Path) -> tuple[float, float, float]:
    """(first create, last end, seconds with at least one job in flight) from the emulator's records."""
    spans = []
    for path in (state_dir / "batches").glob("*.json"):
        record = orjson.loads(path.read_bytes())
        spans.append((record["create_time"], record["start_time"] + record["latency"]))
    spans.sort()
    covered, reach = 0.0, 0.0
    for begin, end in spans:
        if end > reach:
            covered += end - max(begin, reach)
            reach = end
    return spans[0][0], max(end for _, end in spans), covered


def describe(chain: Chain, emulator) -> list[str]:
    """The chain's figures, a line each: click to CoT and CoD, the emulator's own time beside the
    platform's, jobs in flight and shards made twice, API calls per tick."""
    marks = chain.marks
    first, last, covered = in_flight_seconds(emulator.state_dir)
    # The emulator makes a job's answers when it is first seen finished, inside that API call.
    answering = sum(float(s) for s in re.findall(r"answered in ([\d.]+)s", emulator.log_path.read_text()))
    created = emulator.created_jobs()
    names = [job["display_name"] for job in created]
    twice = "no shard made into two jobs" if len(set(names)) == len(names) else "A SHARD MADE INTO TWO JOBS"
    lines = [
        f"click returned in {marks['click returned']:.1f} s; click -> last CoT sample {marks['cot']:.1f} s; "
        f"click -> last CoD sample {marks['cod']:.1f} s",
        f"emulator's own time: {covered + answering:.1f} s ({covered:.1f} s with a job in flight, of "
        f"{last - first:.1f} s between its first create and last end, and {answering:.1f} s making answers); "
        f"platform time beside it: {marks['cod'] - covered - answering:.1f} s",
        f"jobs created: {len(created)}, distinct shards: {len(set(names))} "
        f"({twice}), "
        f"most in flight at once: {max(j['active'] for j in created)}",
    ]
    return lines + _tick_lines(chain.ticks)


def _tick_lines(ticks: list[Tick]) -> list[str]:
    busy = [t for t in ticks if t.followed]
    lines = [f"sensor ticks: {len(ticks)}; with jobs in flight: {len(busy)}"]
    polling = [t for t in busy if not t.created]
    creating = [t for t in busy if t.created]
    if polling:
        calls = [t.calls for t in polling]
        followed = [t.followed for t in polling]
        lines.append(
            f"ticks that only polled: {len(polling)}, API calls mean {sum(calls) / len(calls):.1f}, "
            f"max {max(calls)}, for {sum(followed) / len(followed):.1f} jobs followed on average "
            f"(max {max(followed)}; a get per job would be as many calls)"
        )
    if creating:
        calls, made = sum(t.calls for t in creating), sum(t.created for t in creating)
        lines.append(
            f"ticks that created queued jobs: {len(creating)}, {made} jobs, {calls} API calls "
            f"({calls / made:.1f} a job: the display-name lookup, the upload and the create, plus polling)"
        )
    return lines
