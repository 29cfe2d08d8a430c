"""Which samples go out in the export, and why the others do not.

A record is identified by (id, sample): a problem may have k answers. An answer is exported when
its CoT and CoD are both graded correct, the CoD agrees with the CoT, and the problem is clean:
its id is in the scenario's `source_problems.parquet` (which leaves out benchmark matches and
repeats). `include_incorrect` keeps the incorrect and disagreeing ones too. Both configs always
hold the same (id, sample) keys, so a user can join them; every answer left out is counted under
the first reason it meets. The per-problem configs (`problems`, `pairs`) take every graded CoT
answer of every clean problem, right or wrong, and are never capped at the limit.
"""

import json
from dataclasses import dataclass, field

from cotgen_assets.core.problems import PassFigures
from cotgen_assets.core.records import PAIR_FIELDS, PROBLEM_FIELDS, Field, record_key
from cotgen_assets.core.scenarios import Scenario
from cotgen_assets.core.stages import GENERATION, STAGES, SUMMARIZATION, Stage
from cotgen_assets.core.storage import read_parquet, read_samples, samples_path, scenario_dir
from cotgen_assets.core.storage import source_problems_path as problems_path
from cotgen_assets.publish.problem_rows import preference_pairs, problem_rows

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


def sort_key(key: tuple[str, int]) -> tuple:
    """(id, sample) keys in source order, then sample order."""
    return id_key(key[0]), key[1]


def saved_decontamination(scenario: str) -> dict | None:
    """What source_problems left out and why (`<scenario>/decontamination.json`), if it saved it."""
    path = scenario_dir(scenario) / "decontamination.json"
    return json.loads(path.read_text()) if path.exists() else None


@dataclass
class Split:
    """One scenario's exported rows and what was left out of them."""

    scenario: Scenario
    cot: list[dict] = field(default_factory=list)
    cod: list[dict] = field(default_factory=list)
    problems: list[dict] = field(default_factory=list)  # one row per clean problem with a graded answer
    pairs: list[dict] = field(default_factory=list)  # preference pairs of those problems
    passes: PassFigures = field(default_factory=PassFigures)  # pass@1, pass@k, maj@k of those problems
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> answers
    num_cot_records: int = 0  # in the files
    num_cod_records: int = 0
    decontamination: dict | None = None
    num_over_limit: int = 0  # exportable problems beyond the limit (left out only with cap_at_limit)

    @property
    def name(self) -> str:
        return self.scenario.name

    @property
    def rows(self) -> dict[str, list[dict]]:
        """Rows by export config: a stage's record kind (`cot`, `cod`), then `problems` and `pairs`."""
        return {
            GENERATION.record_kind: self.cot,
            SUMMARIZATION.record_kind: self.cod,
            PROBLEMS: self.problems,
            PAIRS: self.pairs,
        }

    @property
    def offline(self) -> bool:
        """Any exported row made by the emulator (either block says so)."""
        return any(
            (record.get(block) or {}).get("offline")
            for record in self.cot + self.cod
            for block in (stage.name for stage in STAGES)
        )


def select(
    scenario: Scenario, include_incorrect: bool = False, limit: int | None = None, cap: bool = False
) -> Split:
    """The scenario's samples fit for the export, the same keys in CoT and CoD, sorted by (id, sample),
    and its clean problems' rows.

    More than `limit` are all exported (they were paid for), unless `cap`: then the first `limit`
    by id (source order), so the same files always give the same rows. A scenario with samples but
    no source_problems table is refused: without it nobody can tell clean problems from contaminated ones.
    """
    cot = {record_key(r): r for r in read_samples(GENERATION, scenario.suffix)}
    cod = {record_key(r): r for r in read_samples(SUMMARIZATION, scenario.suffix)}
    split = Split(scenario, num_cot_records=len(cot), num_cod_records=len(cod))
    if not cot and not cod:
        return split
    path = problems_path(scenario.name)
    if not path.exists():
        raise ExportError(
            f"scenario {scenario.name!r} has {len(cot)} CoT and {len(cod)} CoD samples but no {path}, so "
            f"nobody can tell its clean problems from contaminated ones. Materialize source_problems for "
            f"{scenario.name!r}, then export again. Nothing was exported."
        )
    clean = set(read_parquet(path, columns=["problem_id"])["problem_id"].to_pylist())
    split.decontamination = saved_decontamination(scenario.name)
    saved = split.decontamination or {}
    unclean = {i: CONTAMINATED for i in saved.get("contaminated_ids", [])}
    unclean |= {i: REPEAT for i in saved.get("duplicate_ids", {}) if i not in unclean}
    for key in sorted(set(cot) | set(cod), key=sort_key):
        thought, draft = cot.get(key), cod.get(key)
        if key[0] not in clean:
            reason = unclean.get(key[0], NOT_CLEAN)
        else:
            reason = why_not(thought, draft, include_incorrect)
        if reason is None:
            split.cot.append(thought)
            split.cod.append(draft)
        else:
            split.left_out[reason] = split.left_out.get(reason, 0) + 1
    if limit is not None:
        split.num_over_limit = max(len(split.cot) - limit, 0)
        if cap and split.num_over_limit:
            del split.cot[limit:], split.cod[limit:]
            split.left_out[OVER_LIMIT] = split.num_over_limit
    for stage in STAGES:
        refuse_undescribed_fields(split.rows[stage.record_kind], stage, samples_path(stage, scenario.suffix))
    split.problems, split.passes = problem_rows([cot[k] for k in sorted(cot, key=sort_key) if k[0] in clean])
    split.pairs = preference_pairs(split.problems)
    return split


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


def refuse_undescribed_fields(rows: list[dict], stage: Stage, path) -> None:
    """A field `records` does not describe would be dropped from the Parquet file: refuse instead."""
    described = {f.name for f in stage.fields}
    for row in rows:
        extra = sorted(set(row) - described)
        if extra:
            raise ExportError(
                f"{path.name}: record {row.get('id')!r} has {', '.join(map(repr, extra))}, which "
                "cotgen_assets/core/records.py does not describe, so the export would drop it. Describe it "
                "there (or remove it from the file), then export again. Nothing was exported."
            )
