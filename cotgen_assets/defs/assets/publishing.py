"""The assets over every scenario: `dataset_report` (the scenarios side by side) and `hf_dataset`
(the Hugging Face export, pushed to the Hub when asked)."""

import os

import dagster as dg
from pydantic import Field

from cotgen_assets.core.stages import STAGES
from cotgen_assets.defs.assets.ui import GROUP
from cotgen_assets.defs.locks import LockTimeout, samples_lock
from cotgen_assets.defs.resources import HubResource
from cotgen_assets.publish.card import PICTURE_ALT, card_body
from cotgen_assets.publish.export import write_export
from cotgen_assets.publish.hub import PushFailed, PushRefused, push_export
from cotgen_assets.publish.report import build_report, by_scenario, markdown_image, numeric_totals
from cotgen_assets.publish.selection import ExportError

# The report and the export read every scenario's samples files.
EVERY_SCENARIOS_SAMPLES = [
    dg.AssetDep(stage.samples_asset, partition_mapping=dg.AllPartitionMapping()) for stage in STAGES
]


@dg.asset(
    group_name=GROUP,
    kinds={"matplotlib", "markdown"},
    deps=EVERY_SCENARIOS_SAMPLES,
    description="Every scenario side by side: samples, accuracy, tokens, cost per 1,000 samples, "
    "CoD/CoT token ratio, answer agreement, pass@1 / pass@k / maj@k, generation rounds and what they "
    "cost, spent per 1,000 correct CoT+CoD pairs, a picture of thought vs draft length and one of "
    "pass rates.",
)
def dataset_report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    report = build_report()
    context.log.info(f"report picture written to {report.picture}")
    numbers = {
        key: value if isinstance(value, int) else dg.MetadataValue.float(value)
        for key, value in numeric_totals(report.figures).items()
    }
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(report.table),
            "costs": dg.MetadataValue.md(report.costs),
            "rounds": dg.MetadataValue.md(report.rounds),
            "picture": dg.MetadataValue.md(
                markdown_image(report.png, "thought vs draft tokens per scenario")
            ),
            "picture_path": dg.MetadataValue.path(str(report.picture)),
            "pass_rates": dg.MetadataValue.md(
                markdown_image(report.pass_rates_png, "pass rates per scenario")
            ),
            **numbers,
            "by_scenario": dg.MetadataValue.json(by_scenario(report.figures)),
        }
    )


class HfDatasetConfig(dg.Config):
    include_incorrect: bool = Field(
        False, description="also export incorrect and disagreeing samples, with their flags"
    )
    hub_repo: str | None = Field(
        None, description='push to this dataset repo ("user/name"); default: $COTGEN_HF_REPO, else no push'
    )
    public: bool = Field(False, description="a repo the push creates is private unless this is true")
    cap_at_limit: bool = Field(
        False, description="export at most each scenario's limit of rows (default: every good one)"
    )


@dg.asset(
    group_name=GROUP,
    kinds={"huggingface", "parquet"},
    deps=EVERY_SCENARIOS_SAMPLES,
    description="The samples as a Hugging Face dataset folder (`export/`: configs `cot`, `cod`, `problems` "
    "and `pairs`, one split per scenario, the dataset card), pushed to the Hub when `hub_repo` or "
    "COTGEN_HF_REPO is set.",
)
def hf_dataset(
    context: dg.AssetExecutionContext, config: HfDatasetConfig, hub: HubResource
) -> dg.MaterializeResult:
    repo = config.hub_repo or os.environ.get("COTGEN_HF_REPO") or None
    try:
        export = write_export(
            config.include_incorrect,
            repo_id=repo,
            cap_at_limit=config.cap_at_limit,
            lock=lambda path: samples_lock(
                context.instance,
                path,
                context.run.run_id,
                "hf_dataset",
                say=context.log.info,
                warn=context.log.warning,
            ),
        )
    # ValueError: a damaged samples file, a bad COTGEN_DATA_DIR; LockTimeout: an ingestion kept the file
    except (ExportError, ValueError, LockTimeout) as error:
        raise dg.Failure(description=str(error)) from None
    context.log.info(f"export written to {export.folder}: {export.rows}, fingerprint {export.fingerprint}")
    if export.offline:
        context.log.warning("OFFLINE: the export holds emulator data, not Gemini's; it can never be pushed.")
    rows = {f"num_rows_{c}_{s}": n for c, by_split in export.rows.items() for s, n in by_split.items()}
    card = card_body(export.facts, image=markdown_image(export.png, PICTURE_ALT))
    metadata = {
        "offline": export.offline,
        "num_rows": export.num_rows,
        "rows": dg.MetadataValue.json(export.rows),
        **rows,
        "left_out": dg.MetadataValue.json({s.name: s.left_out for s in export.splits}),
        "num_over_limit": dg.MetadataValue.json({s.name: s.num_over_limit for s in export.splits}),
        "cap_at_limit": config.cap_at_limit,
        "cost_usd": dg.MetadataValue.float(export.cost_usd),
        "spent_usd": dg.MetadataValue.float(sum(f.spent_usd for f in export.report_figures.values())),
        "include_incorrect": config.include_incorrect,
        "fingerprint": export.fingerprint,
        "path": dg.MetadataValue.path(str(export.folder)),
        "card": dg.MetadataValue.md(card),
        "dagster/row_count": export.num_rows,
    }
    if repo:
        try:
            url = push_export(export.folder, repo, hub.token, config.public, context.run.run_id)
        except (PushRefused, PushFailed) as error:
            raise dg.Failure(description=str(error)) from None
        context.log.info(f"pushed to {repo}: {url}")
        metadata["hub_repo"] = repo
        metadata["hub_commit_url"] = dg.MetadataValue.url(url)
    return dg.MaterializeResult(metadata=metadata)
