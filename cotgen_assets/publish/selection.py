"""Which samples go out in the export, and why the others do not.

A record is identified by (id, sample): a problem may have k answers. An answer is exported when
its CoT and CoD are both graded correct, the CoD agrees with the CoT, and the problem is clean:
its id is in the scenario's `source_problems.parquet` (which leaves out benchmark matches and
repeats). `include_incorrect` keeps the incorrect and disagreeing ones too. Both configs always
hold the same (id, sample) keys, so a user can join them; every answer left out is counted under
the first reason it meets. The per-problem configs (`problems`, `pairs`) take every graded CoT
answer of every clean problem, right or wrong, and are never capped at the limit.

Memory does not grow with the number of samples: the answers are indexed on disk (`SampleIndex`)
and read back one at a time in (id, sample) order, a problem's answers together.
"""

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from cotgen_assets.core.ingest import machine_lock
from cotgen_assets.core.problems import PassFigures
from cotgen_assets.core.records import PAIR_FIELDS, PROBLEM_FIELDS, Field
from cotgen_assets.core.sample_keys import sample_of
from cotgen_assets.core.scenarios import Scenario
from cotgen_assets.core.stages import STAGES, Stage
from cotgen_assets.core.storage import local_copy, parquet_file, samples_entries, samples_path, scenario_dir
from cotgen_assets.core.storage import source_problems_path as problems_path

# The reasons a sample is left out, in the order they are tested (a sample counts for the first).
NOT_CLEAN = "not clean (problem not in source_problems)"
CONTAMINATED = "contaminated (matches a benchmark)"
REPEAT = "repeat of another problem"
NO_COD = "no CoD sample (not summarized)"
NO_COT = "no CoT sample"
COT_INCORRECT = "CoT incorrect"
COD_INCORRECT = "CoD incorrect"
DISAGREES = "CoD answer disagrees with CoT"
OVER_LIMIT = "over the scenario's limit (cap_at_limit)"
NOT_CLEAN_REASONS = (CONTAMINATED, REPEAT, NOT_CLEAN)
PROBLEMS, PAIRS = "problems", "pairs"  # the per-problem configs


def config_fields() -> dict[str, tuple[Field, ...]]:
    """Every export config and its fields (`records`): a stage's record kind, then the per-problem ones."""
    return {
        **{stage.record_kind: stage.fields for stage in STAGES},
        PROBLEMS: PROBLEM_FIELDS,
        PAIRS: PAIR_FIELDS,
    }


class ExportError(Exception):
    """The export cannot be written truthfully; the message says why and what to do."""


def id_key(sample_id: str) -> tuple:
    """`easy-9` before `easy-10`: the source row as a number where it is one."""
    head, _, tail = sample_id.rpartition("-")
    return (head, int(tail), "") if tail.isdigit() else (head, -1, tail)


def saved_decontamination(scenario: str) -> dict | None:
    """What source_problems left out and why (`<scenario>/decontamination.json`), if it saved it."""
    path = scenario_dir(scenario) / "decontamination.json"
    return json.loads(path.read_text()) if path.exists() else None


@dataclass
class Provenance:
    """Who made a stage's exported rows: each model, model version and prompt version once, and the
    submissions they came from."""

    found: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in PROVENANCE_KEYS})
    submissions: set[str] = field(default_factory=set)

    def add(self, block: dict) -> None:
        for key in PROVENANCE_KEYS:
            self.found[key].add(block.get(key) or "unknown")
        self.submissions.add(block["submission"])


PROVENANCE_KEYS = ("model", "model_version", "prompt_version")


@dataclass
class Split:
    """One scenario's export: what goes out (read in order from `index`) and what was left out.

    The figures fill in while `exported` and `problem_batches` are read: the counts left out, the
    rows written, the pass figures, who made the rows; nothing here holds a record.
    """

    scenario: Scenario
    index: "SampleIndex | None" = None  # None: the scenario has no samples
    include_incorrect: bool = False
    limit: int | None = None
    cap: bool = False
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> answers
    num_cot_records: int = 0  # in the files
    num_cod_records: int = 0
    # decontamination.json's figures, without its ids (those are in `index`: they grow with the problems)
    decontamination: dict | None = None
    num_over_limit: int = 0  # exportable problems beyond the limit (left out only with cap_at_limit)
    rows: dict[str, int] = field(default_factory=dict)  # rows written, by export config
    passes: PassFigures = field(default_factory=PassFigures)  # pass@1, pass@k, maj@k of the `problems` rows
    offline: bool = False  # any exported row made by the emulator (either block says so)
    made_by: dict[str, Provenance] = field(default_factory=lambda: {s.name: Provenance() for s in STAGES})

    @property
    def name(self) -> str:
        return self.scenario.name

    def close(self) -> None:
        if self.index:
            self.index.close()
            self.index = None


class SampleIndex:
    """Where each (id, sample) of a scenario's CoT and CoD files is, sorted by (id, sample) on disk.

    An SQLite file in a local scratch folder holds, per answer, its sort key and its line's offset in
    its file; the records are read back one by one in order (`os.pread`), so memory does not grow
    with the number of samples. A file in a bucket is copied into the scratch folder first.

    Each file is opened and indexed under `lock(path)`, the lock its ingestions hold while they
    replace it: the index and the open file are the same version of it, read back whole even when
    an ingestion replaces the file later (the open file is the old one until it is closed).
    """

    def __init__(self, scenario: Scenario, scratch: Path, lock: Callable[[Path], AbstractContextManager]):
        scratch.mkdir(parents=True, exist_ok=True)
        self.files, self.counts = [], []
        self.db = sqlite3.connect(scratch / "index.sqlite")
        try:
            self._build(scenario, scratch, lock)
        except BaseException:  # a damaged file: its descriptor and the index's would stay open
            self.close()
            raise

    def __enter__(self) -> "SampleIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _build(
        self, scenario: Scenario, scratch: Path, lock: Callable[[Path], AbstractContextManager]
    ) -> None:
        self.db.executescript(
            # 4 MB of page cache: at 16 MB the cache (and the sorter of CREATE INDEX, as large) grew with
            # the samples up to ~300k lines, for no CPU saved (5.8 vs 6.0 CPU-s to index 300k lines)
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-4000;"
            "CREATE TABLE answers(head TEXT, num INTEGER, tail TEXT, id TEXT, sample INTEGER, stage INTEGER,"
            " offset INTEGER, length INTEGER);"
            "CREATE TABLE clean(id TEXT PRIMARY KEY) WITHOUT ROWID;"
            "CREATE TABLE unclean(id TEXT PRIMARY KEY, reason TEXT) WITHOUT ROWID;"
        )
        for number, stage in enumerate(STAGES):
            path = samples_path(stage, scenario.suffix)
            with lock(path):
                local = local_copy(path, scratch) if path.exists() else None
                self.files.append(os.open(local, os.O_RDONLY) if local else None)
                self.counts.append(self._add(number, stage, local))
        self.db.execute("CREATE INDEX answers_order ON answers(head, num, tail, id, sample, stage)")

    def _add(self, number: int, stage: Stage, path: Path | None) -> int:
        """Index a samples file's answers (`samples_entries`: validated, each key once); their count."""
        count, rows = 0, []
        for offset, line, record in samples_entries(stage, path) if path else ():
            head, num, tail = id_key(record["id"])
            num = min(num, INT64_MAX)  # SQLite's integers are 64-bit; the id breaks the tie
            rows.append((head, num, tail, record["id"], record["sample"], number, offset, len(line)))
            count += 1
            if len(rows) == INSERT_ROWS:
                self.db.executemany(INSERT, rows)
                rows = []
        self.db.executemany(INSERT, rows)
        return count

    def add_clean(self, path) -> None:
        """The problem ids of `source_problems.parquet`, read a batch at a time."""
        with parquet_file(path) as parquet:
            for batch in parquet.iter_batches(columns=["problem_id"], batch_size=INSERT_ROWS):
                ids = batch.column(0).to_pylist()
                self.db.executemany("INSERT OR IGNORE INTO clean VALUES (?)", ((i,) for i in ids))

    def add_unclean(self, saved: dict) -> None:
        """Why source_problems left each problem out, from its decontamination.json (a match first)."""
        for ids, reason in (
            (saved.get("contaminated_ids", []), CONTAMINATED),
            (saved.get("duplicate_ids", {}), REPEAT),
        ):
            self.db.executemany("INSERT OR IGNORE INTO unclean VALUES (?, ?)", ((i, reason) for i in ids))

    def _read(self, stage: int, offset: int, length: int) -> dict:
        """A record indexed (so validated) before, with its sample."""
        record = orjson.loads(os.pread(self.files[stage], length, offset))
        record["sample"] = sample_of(record)
        return record

    def answers(self) -> Iterator[tuple[str | None, dict | None, dict | None]]:
        """(why its problem is not clean or None, CoT record or None, CoD record or None) of every
        (id, sample), in order."""
        rows = self.db.execute(
            "SELECT a.id, a.sample, a.stage, a.offset, a.length,"
            " CASE WHEN c.id IS NOT NULL THEN NULL ELSE coalesce(u.reason, ?) END"
            " FROM answers a LEFT JOIN clean c ON c.id = a.id LEFT JOIN unclean u ON u.id = a.id"
            " ORDER BY a.head, a.num, a.tail, a.id, a.sample, a.stage",
            (NOT_CLEAN,),
        )
        current, records, unclean = None, [None, None], None
        for problem_id, sample, stage, offset, length, why in rows:
            if (problem_id, sample) != current:
                if current is not None:
                    yield unclean, *records
                current, records, unclean = (problem_id, sample), [None, None], why
            records[stage] = self._read(stage, offset, length)
        if current is not None:
            yield unclean, *records

    def clean_cot(self) -> Iterator[dict]:
        """The CoT records of clean problems, in (id, sample) order."""
        rows = self.db.execute(
            "SELECT a.offset, a.length FROM answers a JOIN clean c ON c.id = a.id WHERE a.stage = 0 "
            "ORDER BY a.head, a.num, a.tail, a.id, a.sample"
        )
        for offset, length in rows:
            yield self._read(0, offset, length)

    def close(self) -> None:
        self.db.close()
        for handle in self.files:
            if handle is not None:
                os.close(handle)
        self.files = []


INSERT = "INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
INSERT_ROWS = 10_000
INT64_MAX = 2**63 - 1
PROBLEM_BATCH_ANSWERS = 2_000  # CoT records grouped into problem rows at once (whole problems)


def select(
    scenario: Scenario,
    scratch: Path,
    include_incorrect: bool = False,
    limit: int | None = None,
    cap: bool = False,
    lock: Callable[[Path], AbstractContextManager] = machine_lock,
) -> Split:
    """The scenario's samples indexed in (id, sample) order in `scratch`, ready to be read out by
    `exported` (the same keys in CoT and CoD) and `problem_batches` (its clean problems' answers).

    More than `limit` are all exported (they were paid for), unless `cap`: then the first `limit`
    by id (source order), so the same files always give the same rows. A scenario with samples but
    no source_problems table is refused: without it nobody can tell clean problems from contaminated ones.
    `lock(samples file)` is held while each file is indexed (`SampleIndex`). The caller closes `split.index`.
    """
    split = Split(scenario, include_incorrect=include_incorrect, limit=limit, cap=cap)
    index = SampleIndex(scenario, scratch, lock)
    split.num_cot_records, split.num_cod_records = index.counts
    if not split.num_cot_records and not split.num_cod_records:
        index.close()
        return split
    with ExitStack() as on_error:  # closes the index unless it is handed over in `split`
        on_error.enter_context(index)
        path = problems_path(scenario.name)
        if not path.exists():
            raise ExportError(
                f"scenario {scenario.name!r} has {split.num_cot_records} CoT and {split.num_cod_records} CoD "
                f"samples but no {path}, so nobody can tell its clean problems from contaminated ones. "
                f"Materialize source_problems for {scenario.name!r}, then export again. Nothing was exported."
            )
        index.add_clean(path)
        saved = saved_decontamination(scenario.name)
        if saved is not None:
            index.add_unclean(saved)
            split.decontamination = {
                k: v for k, v in saved.items() if k not in ("contaminated_ids", "duplicate_ids")
            }
        split.index = index
        on_error.pop_all()
    return split


def exported(split: Split) -> Iterator[tuple[dict, dict]]:
    """The (CoT, CoD) records that go out, in (id, sample) order; every answer left out is counted
    under the first reason it meets, and the rows' makers are noted."""
    exportable, paths = 0, [samples_path(stage, split.scenario.suffix) for stage in STAGES]
    for unclean, thought, draft in split.index.answers() if split.index else ():
        reason = unclean or why_not(thought, draft, split.include_incorrect)
        if reason is not None:
            split.left_out[reason] = split.left_out.get(reason, 0) + 1
            continue
        exportable += 1
        if split.cap and split.limit is not None and exportable > split.limit:
            continue
        for stage, record, path in zip(STAGES, (thought, draft), paths):
            refuse_undescribed_fields(record, stage, path)
            split.made_by[stage.name].add(record[stage.name])
            split.offline |= any((record.get(s.name) or {}).get("offline") for s in STAGES)
        yield thought, draft
    if split.limit is not None:
        split.num_over_limit = max(exportable - split.limit, 0)
        if split.cap and split.num_over_limit:
            split.left_out[OVER_LIMIT] = split.num_over_limit


def problem_batches(split: Split) -> Iterator[list[dict]]:
    """The clean problems' CoT records in (id, sample) order, about `PROBLEM_BATCH_ANSWERS` at a
    time, never splitting a problem's answers between two batches."""
    batch: list[dict] = []
    for record in split.index.clean_cot() if split.index else ():
        if len(batch) >= PROBLEM_BATCH_ANSWERS and record["id"] != batch[-1]["id"]:
            yield batch
            batch = []
        batch.append(record)
    if batch:
        yield batch


def why_not(thought: dict | None, draft: dict | None, include_incorrect: bool) -> str | None:
    """Why a clean problem's pair is left out, or None when it goes out."""
    if draft is None:
        return NO_COD
    if thought is None:
        return NO_COT
    if include_incorrect:
        return None
    if thought.get("correct") is not True:
        return COT_INCORRECT
    if draft.get("correct") is not True:
        return COD_INCORRECT
    if draft.get("agrees_with_cot") is not True:
        return DISAGREES
    return None


def refuse_undescribed_fields(record: dict, stage: Stage, path) -> None:
    """A field `records` does not describe would be dropped from the Parquet file: refuse instead."""
    extra = sorted(set(record) - {f.name for f in stage.fields})
    if extra:
        raise ExportError(
            f"{path.name}: record {record.get('id')!r} has {', '.join(map(repr, extra))}, which "
            "cotgen_assets/core/records.py does not describe, so the export would drop it. Describe it "
            "there (or remove it from the file), then export again. Nothing was exported."
        )
