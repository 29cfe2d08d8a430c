"""The two stages of the chain, each described once: generation makes CoT records, summarization
cuts each into a CoD record.

Everything that differs between the stages is a field of `Stage`: the samples file, the record's
text and its tag, the record's fields and builder, the prompt version, and the names of its
assets and job (its quality gates follow from what it makes: `quality.verdicts`). Code takes a
`Stage` and reads these, never a table keyed by stage name. On disk, in run tags and in Dagster
metadata a stage is its `name`; `stage_named` finds the stage again.
"""

from collections.abc import Callable
from dataclasses import dataclass

from cotgen_assets.core.batch_output import ResultLine
from cotgen_assets.core.model_io import Usage
from cotgen_assets.core.prompts import GENERATION_PROMPT_VERSION, SUMMARIZATION_PROMPT_VERSION
from cotgen_assets.core.records import COD_FIELDS, COT_FIELDS, Field, cod_record, cot_record, field_table


@dataclass(frozen=True, eq=False)
class Stage:
    """One stage: what it makes and the names it goes by. Compared by identity."""

    name: str  # "generation": submission folders, job display names, `cotgen cancel`; the record's block
    record_kind: str  # "cot": the samples file `cot_<suffix>.jsonl`, the text field, the export config
    tag: str  # "thought": the record's text is `<thought>…</thought>`, a newline, then the answer
    fields: tuple[Field, ...]  # the record's fields, in order
    build: Callable[[dict, ResultLine, dict], tuple[dict, list]]  # (context, line, block) -> record, gradings
    prompt_version: str
    needs_thoughts: bool  # an answer without thoughts is a failed line
    usage_prior: Usage  # the answer's size assumed by projected costs until there are samples
    summarizes: "Stage | None" = None  # the stage whose records this one cuts down
    figures: tuple[str, ...] = ()  # `SampleStats` figures shown in this stage's samples metadata

    @property
    def batch_asset(self) -> str:
        return f"{self.name}_batch"

    @property
    def results_asset(self) -> str:
        return f"{self.name}_results"

    @property
    def samples_asset(self) -> str:
        return f"{self.record_kind}_samples"

    @property
    def batch_job(self) -> str:
        """The job the sensor launches to submit this stage's next batch."""
        return f"{self.name}_batch_job"

    @property
    def results_job(self) -> str:
        """The job the sensor launches when this stage's batch ends."""
        return f"{self.name}_results_job"

    def samples_file(self, suffix: str) -> str:
        return f"{self.record_kind}_{suffix}.jsonl"


GENERATION = Stage(
    name="generation",
    record_kind="cot",
    tag="thought",
    fields=COT_FIELDS,
    build=cot_record,
    prompt_version=GENERATION_PROMPT_VERSION,
    needs_thoughts=True,
    usage_prior=Usage(thinking_tokens=3000, output_tokens=400),
)
SUMMARIZATION = Stage(
    name="summarization",
    record_kind="cod",
    tag="draft",
    fields=COD_FIELDS,
    build=cod_record,
    prompt_version=SUMMARIZATION_PROMPT_VERSION,
    needs_thoughts=False,
    usage_prior=Usage(thinking_tokens=300, output_tokens=150),
    summarizes=GENERATION,
    figures=("draft_to_thought_token_ratio", "answer_agreement"),
)
STAGES = (GENERATION, SUMMARIZATION)


def stage_named(name: str) -> Stage:
    """The stage stored as `name` (in a submission.json, a run tag, a command line)."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise LookupError(f"unknown stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")


def records_markdown() -> str:
    """docs/records.md's tables: one per samples file."""
    return "\n\n".join(
        f"Each line of `{stage.samples_file('<suffix>')}`:\n\n{field_table(stage.fields)}" for stage in STAGES
    )
