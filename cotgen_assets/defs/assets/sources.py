"""`source_problems`: a scenario's problems, decontaminated, as the first asset of its chain."""

import dagster as dg

from cotgen_assets.core.decontamination import Decontamination, WorkersLost
from cotgen_assets.core.scenarios import (
    Scenario,
    ScenarioError,
    get_scenario,
    load_benchmarks,
    load_scenarios_and_benchmarks,
)
from cotgen_assets.core.source_writer import write_problems
from cotgen_assets.core.storage import StorageError, source_problems_path
from cotgen_assets.defs.assets.ui import GROUP, PREVIEW_ROWS, preview_table
from cotgen_assets.defs.partitions import scenario_partitions


def _decontamination_note() -> str:
    """The asset's description names the scenarios not checked against every benchmark."""
    scenarios, benchmarks = load_scenarios_and_benchmarks()
    opted_out = [name for name, scenario in scenarios.items() if not scenario.decontaminate]
    note = f" NOT decontaminated: {', '.join(opted_out)} (`decontaminate: []`)." if opted_out else ""
    for name, scenario in scenarios.items():
        skipped = [b for b in benchmarks if b not in scenario.decontaminate]
        if scenario.decontaminate and skipped:
            note += f" PARTLY decontaminated: {name} (not checked against {', '.join(skipped)})."
    return note


def _overlap_checks(
    scenario: Scenario, overlap: list[str], contamination: Decontamination
) -> list[dg.AssetCheckResult]:
    """The written table checked again (error), and what the benchmarks it skips would find (warning)."""
    checked = ", ".join(scenario.decontaminate)
    skipped, found = contamination.skipped, contamination.skipped_overlap_ids
    if contamination.skipped_error:
        why = f"the kept problems could not be compared with {', '.join(skipped)}: "
        why += contamination.skipped_error
    elif found:
        counts = ", ".join(f"{name} {count}" for name, count in contamination.skipped_overlap.items())
        why = (
            f"{len(found)} kept problems match benchmarks this scenario does not check ({counts}): name "
            f"them in its `decontaminate:` list, or drop the list to check every benchmark"
        )
    else:
        why = f"no kept problem matches the benchmarks this scenario does not check ({', '.join(skipped)})"
    return [
        dg.AssetCheckResult(
            check_name="no_benchmark_overlap",
            passed=not overlap,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "benchmarks_checked": dg.MetadataValue.json(list(scenario.decontaminate)),
                "num_overlapping": len(overlap),
                "overlapping_ids": dg.MetadataValue.json(overlap[:50]),
            },
            description=f"the written problem table, checked again against {checked}"
            if checked
            else "NOT checked: the scenario opts out of decontamination (`decontaminate: []`)",
        ),
        dg.AssetCheckResult(
            check_name="no_overlap_with_skipped_benchmarks",
            passed=not found and not contamination.skipped_error,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "benchmarks_skipped": dg.MetadataValue.json(list(skipped)),
                "num_overlapping": dg.MetadataValue.json(dict(contamination.skipped_overlap)),
                "overlapping_ids": dg.MetadataValue.json(found[:50]),
            },
            description=why if skipped else "every benchmark of the scenarios file is checked",
        ),
    ]


@dg.asset(
    partitions_def=scenario_partitions,
    group_name=GROUP,
    kinds={"huggingface", "parquet"},
    check_specs=[
        dg.AssetCheckSpec("no_benchmark_overlap", asset="source_problems"),
        dg.AssetCheckSpec("no_overlap_with_skipped_benchmarks", asset="source_problems"),
    ],
    description="The scenario's filtered math problems with stable ids and reference answers (Parquet), "
    "without benchmark problems (GSM8K test, MATH test, MATH-500) or repeats." + _decontamination_note(),
)
def source_problems(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    path = source_problems_path(context.partition_key)
    try:
        scenario = get_scenario(context.partition_key)
        benchmarks = load_benchmarks()
        written = write_problems(scenario, benchmarks, path, PREVIEW_ROWS)
    # StorageError: a read-only folder, a full disk; WorkersLost: a worker killed (out of memory)
    except (ScenarioError, StorageError, WorkersLost) as error:
        raise dg.Failure(description=str(error)) from None  # the reason as the run's headline
    contamination, dropped = written.contamination, written.dropped
    if dropped:
        context.log.warning(
            f"{len(dropped)} matching rows have no reference answer in their solution and were "
            f"left out, since they could never be graded: {dropped}"
        )
    (context.log.info if contamination.decontaminated else context.log.warning)(contamination.note())
    found = contamination.metadata()
    examples = found.pop("contamination_examples")
    schema = dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in written.schema])
    return dg.MaterializeResult(
        metadata={
            "num_rows": written.num_rows,
            "num_matched": written.num_matched,
            "num_dropped_no_answer": len(dropped),
            "dropped_ids": dg.MetadataValue.json(dropped),
            "num_contaminated": found.pop("num_contaminated"),
            "num_duplicates": found.pop("num_duplicates"),
            "decontamination": found.pop("decontamination"),
            "contamination_examples": preview_table(
                examples, ["problem_id", "question", "benchmark", "benchmark_question", "match"]
            ),
            "decontaminated": found.pop("decontaminated"),
            "contamination_rule": found.pop("contamination_rule"),
            "contamination_ngram": found.pop("contamination_ngram"),
            **{key: dg.MetadataValue.json(value) for key, value in found.items()},  # ids, counts by kind
            "dataset_rows": written.dataset_rows,
            "dataset": scenario.dataset,
            "config": scenario.config or "",
            "split": scenario.split,
            "filters": dg.MetadataValue.json([str(f) for f in scenario.filters]),
            "path": dg.MetadataValue.path(str(path)),
            "dagster/row_count": written.num_rows,
            "dagster/column_schema": schema,
            "preview": preview_table(written.preview, ["problem_id", "question", "answer"]),
        },
        check_results=_overlap_checks(scenario, written.overlap, contamination),
    )
