"""What an export is, as data: the rows, files and figures written (`Export`) and what its card
states (`CardFacts`). `export` writes one; `card` gathers its facts and renders them."""

from dataclasses import dataclass, field
from pathlib import Path

from cotgen_assets.core.problems import PassFigures
from cotgen_assets.publish.parquet import DataFile, data_file
from cotgen_assets.publish.report import ScenarioFigures
from cotgen_assets.publish.selection import PAIRS, PROBLEMS, Split


@dataclass(frozen=True)
class MadeWith:
    """How one stage's exported rows were made, read from the rows and their submissions."""

    model: list[str]
    model_version: list[str]
    prompt_version: list[str]
    thinking_level: list[str]
    dates: list[str]  # the first and last day its batches were submitted and ingested (UTC); one if equal


@dataclass(frozen=True)
class ScenarioFacts:
    name: str
    dataset: str
    rows: int  # exported, in `cot` and in `cod`
    num_cot_records: int  # in the samples files
    num_cod_records: int
    left_out: dict[str, int]  # reason -> answers
    figures: list[tuple[str, str, str]]  # (label, exported rows' cell, all samples' cell)
    benchmarks: list[str]  # checked by decontamination
    num_contaminated: int | None  # None: source_problems saved no decontamination.json
    num_repeats: int | None
    num_left_out_unclean: int  # samples of problems source_problems left out
    rounds: tuple[tuple[str, ...], ...] = ()  # its generation rounds (report.round_rows)
    rows_by_config: dict[str, int] = field(default_factory=dict)
    passes: PassFigures = field(
        default_factory=PassFigures
    )  # over the `problems` rows: every graded answer of a clean problem


@dataclass(frozen=True)
class CardFacts:
    """Everything the card states, as data."""

    title: str
    offline: bool
    include_incorrect: bool
    where: str  # what `load_dataset` is given: the Hub repo, or the folder
    scenarios: list[ScenarioFacts]
    made_with: dict[str, MadeWith]  # by stage name
    stale_prompt_versions: list[str]
    exported_on: str
    fingerprint: str
    card_data: dict  # the YAML block: licence, tags, configs, features, split sizes

    @property
    def num_rows(self) -> int:
        return sum(s.rows for s in self.scenarios)

    @property
    def exported(self) -> list[ScenarioFacts]:
        """The scenarios with rows: the splits of both configs."""
        return [s for s in self.scenarios if s.rows]

    @property
    def with_problems(self) -> list[ScenarioFacts]:
        """The scenarios with rows in `problems`."""
        return [s for s in self.scenarios if s.rows_by_config.get(PROBLEMS)]

    @property
    def num_pairs(self) -> int:
        return sum(s.rows_by_config.get(PAIRS, 0) for s in self.scenarios)


@dataclass
class Export:
    """One export as written: its scenarios' splits, their files and figures, and the card."""

    folder: Path
    include_incorrect: bool
    report_figures: dict[str, ScenarioFigures]  # of the whole files (the dataset report's)
    data_files: dict[str, dict[str, DataFile]]  # config -> split -> its file
    splits: list[Split] = field(default_factory=list)
    figures: dict[str, ScenarioFigures] = field(default_factory=dict)  # of the exported rows, by scenario
    offline: bool = False
    png: bytes = b""
    fingerprint: str = ""
    facts: CardFacts | None = None  # what the card states
    card: str = ""  # README.md

    @property
    def files(self) -> dict[str, DataFile]:
        """The data files, by path in the folder."""
        return {
            data_file(c, s): file for c, by_split in self.data_files.items() for s, file in by_split.items()
        }

    @property
    def rows(self) -> dict[str, dict[str, int]]:
        """Rows per config and split (splits with no rows are not in the export; nor is a config
        with no split: `pairs` when no problem has both a correct and a wrong answer)."""
        return {c: {s: f.rows for s, f in by_split.items()} for c, by_split in self.data_files.items()}

    @property
    def num_rows(self) -> int:
        return sum(self.rows["cot"].values())

    @property
    def cost_usd(self) -> float:
        """What the exported rows cost (their CoT and CoD requests)."""
        return sum(f.cost_usd for f in self.figures.values())
