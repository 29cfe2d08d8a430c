"""The software-defined assets, one chain per scenario (DESIGN §3). Wiring only: logic lives in
plain modules (sources, batches, samples, ...) that tests call directly."""

import dagster as dg
import pyarrow.parquet as pq

from cotgen_assets.partitions import scenario_partitions
from cotgen_assets.scenarios import get_scenario
from cotgen_assets.sources import load_source_problems
from cotgen_assets.storage import atomic_write, scenario_dir

GROUP = "cotgen"
PREVIEW_ROWS = 5


def source_problems_path(scenario: str):
    return scenario_dir(scenario) / "source_problems.parquet"


def preview_table(rows: list[dict], columns: list[str], width: int = 160) -> dg.MetadataValue:
    """A few rows as a table the UI renders, long texts cut to `width` characters."""
    def cell(value):
        text = "" if value is None else str(value)
        return text if len(text) <= width else text[: width - 1] + "…"

    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: cell(row.get(c)) for c in columns}) for row in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns]),
    )


@dg.asset(
    partitions_def=scenario_partitions,
    group_name=GROUP,
    kinds={"huggingface", "parquet"},
    description="The scenario's filtered math problems with stable ids and reference answers (Parquet).",
)
def source_problems(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    scenario = get_scenario(context.partition_key)
    problems, dropped, dataset_rows = load_source_problems(scenario)
    path = source_problems_path(scenario.name)
    with atomic_write(path) as handle:
        pq.write_table(problems, handle)
    if dropped:
        context.log.warning(
            f"{len(dropped)} matching rows have no reference answer in their solution and were "
            f"left out, since they could never be graded: {dropped}"
        )
    schema = dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in problems.schema])
    return dg.MaterializeResult(
        metadata={
            "num_rows": dg.MetadataValue.int(problems.num_rows),
            "num_matched": dg.MetadataValue.int(problems.num_rows + len(dropped)),
            "num_dropped_no_answer": dg.MetadataValue.int(len(dropped)),
            "dropped_ids": dg.MetadataValue.json(dropped),
            "dataset_rows": dg.MetadataValue.int(dataset_rows),
            "dataset": scenario.dataset,
            "config": scenario.config or "",
            "split": scenario.split,
            "filters": dg.MetadataValue.json([str(f) for f in scenario.filters]),
            "path": dg.MetadataValue.path(str(path)),
            "dagster/row_count": dg.MetadataValue.int(problems.num_rows),
            "dagster/column_schema": schema,
            "preview": preview_table(
                problems.slice(0, PREVIEW_ROWS).to_pylist(), ["problem_id", "question", "answer"]
            ),
        }
    )
