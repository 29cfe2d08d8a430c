"""`cotgen trace ID`: everything the project knows about one problem id, read from its files.

`trace("easy-17")` answers "where did these samples come from and what did they cost?": the source
row, then every sample (answer) of the problem with its index and its CoT and CoD records' batch,
model, prompt version, submission, usage and cost; every attempt made for the id (from each
submission's `outcomes.jsonl`, or still in flight), and the paths of the files all this was read
from. `trace("easy-17#2")` shows sample 2 only. Files are streamed and searched by the id's bytes
first, so a trace stays quick on large samples files.
"""

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson

from cotgen_assets.core.decontamination import excluded_problems
from cotgen_assets.core.records import MADE_BY_KEYS, Field, record_key, record_problem
from cotgen_assets.core.sample_keys import is_number, parse_key
from cotgen_assets.core.scenarios import Scenario, load_scenarios
from cotgen_assets.core.stages import GENERATION, STAGES, SUMMARIZATION, Stage
from cotgen_assets.core.storage import (
    damaged_file,
    data_dir,
    read_parquet,
    samples_path,
    source_problems_path,
)

OUTCOME_KEYS = ("id", "batch", "status", "reason", "cost_usd")  # what ingestion writes per request
STAGE_NAMES = [stage.name for stage in STAGES]  # an attempt's stage is its submission.json's name


def scenario_of(sample_id: str, scenarios: dict[str, Scenario] | None = None) -> Scenario:
    """The scenario an id belongs to: ids are `<scenario>-<source row>` (scenario names may hold `-`)."""
    scenarios = load_scenarios() if scenarios is None else scenarios
    matches = [
        s
        for name, s in scenarios.items()
        if sample_id.startswith(f"{name}-") and is_number(sample_id[len(name) + 1 :])
    ]
    if not matches:
        raise LookupError(
            f"unknown id {sample_id!r}: ids look like <scenario>-<source row>, e.g. "
            f"{next(iter(scenarios), 'easy')}-17; scenarios: {list(scenarios)}"
        )
    return max(matches, key=lambda s: len(s.name))


def lines_of(
    path: Path, sample_id: str, required: tuple[str, ...] = (), schema: tuple[Field, ...] = ()
) -> Iterator[tuple[int, dict]]:
    """(1-based line number, record) of each line with the id in a JSONL file, streamed.

    A damaged line that may be the id's (it holds the id, but is not JSON, lacks a `required`
    key, or is no record of the `schema`: a samples file's) is a DamagedFile naming the file and
    line, not a silent miss nor a bare KeyError.
    """
    if not path.exists():
        return
    needle = orjson.dumps(sample_id)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            if needle in raw:
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    raise damaged_file(path, number, required) from None
                if not isinstance(record, dict):
                    raise damaged_file(path, number, required)
                if record.get("id") == sample_id:
                    if any(key not in record for key in required) or record_problem(record, schema):
                        raise damaged_file(path, number, required, schema)
                    yield number, record


def find_line(path: Path, sample_id: str, required: tuple[str, ...] = ()) -> tuple[int, dict] | None:
    """The first line with the id, or None."""
    return next(lines_of(path, sample_id, required), None)


def find_records(path: Path, sample_id: str, stage: Stage) -> list[tuple[int, dict]]:
    """Every record of the problem in the stage's samples file, by sample."""
    return sorted(lines_of(path, sample_id, schema=stage.fields), key=lambda hit: record_key(hit[1])[1])


def source_row(scenario: Scenario, sample_id: str) -> dict | None:
    """The problem's row in `source_problems.parquet`, as the dataset knows it."""
    path = source_problems_path(scenario.name)
    if not path.exists():
        return None
    table = read_parquet(path, filters=[("problem_id", "=", sample_id)])
    if table.num_rows == 0:
        return None
    row = table.slice(0, 1).to_pylist()[0]
    source = {
        "dataset": row["source_dataset"],
        "config": row["source_config"],
        "split": row["source_split"],
        "row": row["source_row"],
    }
    source |= {c: row[c] for c in ("level", "type") if c in row}
    return source | {"question": row["question"], "answer": row["answer"]}


def record_summary(path: Path, found: tuple[int, dict] | None, stage: Stage) -> dict | None:
    """Who made a record, how and for how much, plus its grade and where it sits in its file."""
    if found is None:
        return None
    line, record = found
    summary = {k: record[stage.name].get(k) for k in MADE_BY_KEYS}
    summary |= {"predicted_answer": record.get("predicted_answer"), "correct": record.get("correct")}
    if stage.summarizes is not None:
        summary |= {
            "agrees_with_cot": record.get("agrees_with_cot"),
            "unsupported_draft_numbers": record.get("unsupported_draft_numbers"),
        }
    return summary | {"file": str(path), "line": line}


def _mtime(path: Path) -> str | None:
    if not path.exists():
        return None
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")


def attempts(scenario: Scenario, sample_id: str) -> list[dict]:
    """Every request made for the id, oldest first: its outcome once ingested, else `in_flight`."""
    root = data_dir() / scenario.name / "submissions"
    found = []
    for folder in sorted(root.glob("*-*")) if root.exists() else []:
        meta_path = folder / "submission.json"
        if not meta_path.exists():
            continue
        meta = json.loads(meta_path.read_text())
        base = {
            "stage": meta["stage"],
            "submission": meta["submission_id"],
            "model": meta["model"],
            "prompt_version": meta["prompt_version"],
            "offline": meta.get("offline", False),
            "backend": meta.get("backend", "developer"),
            "submitted_at": _mtime(meta_path),
            "_order": meta_path.stat().st_mtime_ns,
        }
        shard_of_batch = dict(zip(meta.get("batch_names") or [], meta.get("shards") or []))
        outcomes = folder / "outcomes.jsonl"
        if outcomes.exists():
            hit = find_line(outcomes, sample_id, OUTCOME_KEYS)
            if hit is None:
                continue
            outcome = hit[1]
            shard = shard_of_batch.get(outcome["batch"])
            found.append(
                base
                | {
                    "batch": outcome["batch"],
                    "status": outcome["status"],
                    "reason": outcome["reason"],
                    "cost_usd": outcome["cost_usd"],
                    "ingested_at": _mtime(folder / "summary.json"),
                    "files": _attempt_files(folder, shard),
                    "job_files": _job_files(meta, outcome["batch"]),
                }
            )
            continue
        for shard in meta.get("shards") or []:  # submitted (or only written) but not ingested yet
            if find_line(folder / f"{shard}.context.jsonl", sample_id):
                batch = dict(zip(meta.get("shards") or [], meta.get("batch_names") or [])).get(shard)
                status = "in_flight" if batch else "not_submitted"
                found.append(
                    base
                    | {
                        "batch": batch,
                        "status": status,
                        "reason": None,
                        "cost_usd": 0.0,
                        "ingested_at": None,
                        "files": _attempt_files(folder, shard),
                        "job_files": _job_files(meta, batch),
                    }
                )
                break
    found.sort(key=lambda a: (a.pop("_order"), STAGE_NAMES.index(a["stage"])))
    for stage in STAGE_NAMES:
        for number, attempt in enumerate((a for a in found if a["stage"] == stage), 1):
            attempt["try"] = number
    return found


def _attempt_files(folder: Path, shard: str | None) -> dict:
    files = {"submission": folder / "submission.json", "outcomes": folder / "outcomes.jsonl"}
    if shard:
        files |= {
            "requests": folder / f"{shard}.requests.jsonl",
            "results": folder / f"{shard}.results.jsonl",
        }
    return {k: str(v) for k, v in files.items() if v.exists()}


def _job_files(meta: dict, batch: str | None) -> dict:
    """Where the batch API kept the attempt's requests and answers: on Vertex AI, gs:// URIs in the
    staging prefix (the answers once the job ended); on the Developer API, Files API names."""
    names = meta.get("batch_names") or []
    if batch not in names:
        return {}
    shard = names.index(batch)
    found = {}
    for key, field in (("requests", "job_inputs"), ("answers", "job_outputs")):
        values = meta.get(field) or []
        if shard < len(values) and values[shard]:
            found[key] = values[shard]
    return found


def why_no_cod(scenario: Scenario, sample_id: str, cot_found, tried: list[dict]) -> str:
    """Why a sample has no Chain of Draft yet, in words a person can act on."""
    excluded = excluded_problems(scenario.name).get(sample_id)
    if excluded:
        return f"source_problems leaves this problem out ({excluded}): it is never summarized"
    if cot_found is None:
        return "no CoT sample yet"
    if not cot_found[1].get("correct"):
        return "its CoT answer is wrong: only correct samples are summarized (summarize: correct)"
    last = next((a for a in reversed(tried) if a["stage"] == SUMMARIZATION.name), None)
    if last is None:
        return f"not summarized yet: {SUMMARIZATION.batch_asset} has not asked for it"
    return f"its last summarization request is {last['status']}" + (
        f": {last['reason']}" if last["reason"] else ""
    )


def sample_summaries(
    scenario: Scenario, sample_id: str, cot: tuple[Path, list], cod: tuple[Path, list], tried: list[dict]
) -> list[dict]:
    """Each sample of the problem, by index: its CoT and CoD records (path, found lines), why no CoD."""
    (cot_path, cot_found), (cod_path, cod_found) = cot, cod
    cots = {record_key(r)[1]: (n, r) for n, r in cot_found}
    cods = {record_key(r)[1]: (n, r) for n, r in cod_found}
    return [
        {
            "sample": index,
            "cot": record_summary(cot_path, cots.get(index), GENERATION),
            "cod": record_summary(cod_path, cods.get(index), SUMMARIZATION),
            "no_cod_because": None
            if index in cods
            else why_no_cod(scenario, sample_id, cots.get(index), tried),
        }
        for index in sorted(set(cots) | set(cods))
    ]


def trace(query: str) -> dict:
    """Everything about one problem id (`ID`) or one of its samples (`ID#N`); LookupError when
    the project has never seen it."""
    try:  # `easy-17`: every sample of the problem; `easy-17#2`: sample 2 only
        sample_id, only = parse_key(query.strip())
    except ValueError:
        raise LookupError(f"{query!r}: write ID for every sample or ID#N for one, e.g. easy-17#2") from None
    scenario = scenario_of(sample_id)
    cot_path = samples_path(GENERATION, scenario.suffix)
    cod_path = samples_path(SUMMARIZATION, scenario.suffix)
    source = source_row(scenario, sample_id)
    tried = attempts(scenario, sample_id)
    cots = find_records(cot_path, sample_id, GENERATION)
    cods = find_records(cod_path, sample_id, SUMMARIZATION)
    samples = sample_summaries(scenario, sample_id, (cot_path, cots), (cod_path, cods), tried)
    if not (source or samples or tried):
        raise LookupError(
            f"unknown id {sample_id!r}: no source problem, sample or request with this id in "
            f"{data_dir()} (scenario {scenario.name!r}; is COTGEN_DATA_DIR the data dir you meant?)"
        )
    if only is not None:
        if only not in [s["sample"] for s in samples]:
            raise LookupError(
                f"{sample_id!r} has no sample {only}: its samples are {[s['sample'] for s in samples]}"
            )
        samples = [s for s in samples if s["sample"] == only]
    if source is None:  # source_problems not materialized here: a record still says where it came from
        source = next((record.get("source") for _, record in cots + cods), None)
    submissions = sorted({a["submission"] for a in tried})
    return {
        "id": sample_id,
        "scenario": scenario.name,
        "source": source,
        "samples": samples,
        "attempts": tried,
        "total_cost_usd": sum(a["cost_usd"] or 0.0 for a in tried),
        "files": {
            "source_problems": str(source_problems_path(scenario.name)),
            GENERATION.samples_asset: str(cot_path),
            SUMMARIZATION.samples_asset: str(cod_path),
            "submissions": sorted({a["files"]["submission"].rpartition("/")[0] for a in tried}),
        },
        "in_the_ui": {
            "partition": scenario.name,
            "assets": ["source_problems", GENERATION.samples_asset, SUMMARIZATION.samples_asset],
            "run_tags": [f"cotgen/submission_id={s}" for s in submissions],
            "batch_names": sorted({a["batch"] for a in tried if a["batch"]}),
        },
    }
