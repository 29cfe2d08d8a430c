"""Scenarios: the user-editable list of problem sets, one Dagster partition each."""

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cotgen_assets.core.sample_keys import MAX_SAMPLES_PER_PROBLEM

DEFAULT_SCENARIOS_FILE = Path(__file__).parents[1] / "scenarios.yaml"
# Names and suffixes become file and folder names under COTGEN_DATA_DIR: no separators, no `..`;
# nor `#`, so a problem id `<name>-<row>` never holds the separator of request keys (`sample_keys`).
IDENTIFIER = re.compile(r"[A-Za-z0-9_-]+")


class ScenarioError(ValueError):
    """A scenario or filter that cannot work; the message says what to fix."""


TOP_LEVEL_KEYS = ("benchmarks", "scenarios")
MAX_DEPTH = 10  # a scenario's fields sit at depth 3; a filter list at 4
MAX_QUOTED = 200  # characters of a value an error quotes


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (plain YAML keeps the last one),
    aliases, and deep nesting: a 1 KB file of nested aliases expands to gigabytes once read."""

    depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(
                f"line {event.start_mark.line + 1} uses the YAML alias *{event.anchor}; aliases (and nesting "
                f"deeper than {MAX_DEPTH} levels) are not allowed: write each value out"
            )
        if self.depth >= MAX_DEPTH:
            raise _Refused(
                f"line {self.peek_event().start_mark.line + 1} nests deeper than {MAX_DEPTH} levels, "
                "which no field of the file takes"
            )
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise _Refused(
                    f"duplicate key {quoted(key)} at line {key_node.start_mark.line + 1}; "
                    "each name and field may appear once"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _Refused(Exception):
    pass


def quoted(value: object) -> str:
    """`repr(value)`, cut to MAX_QUOTED characters: an error line stays a line whatever the file holds."""
    text = repr(value)
    return text if len(text) <= MAX_QUOTED else f"{text[:MAX_QUOTED]}… ({len(text):,} characters)"


@dataclass(frozen=True)
class Filter:
    """`column=v1,v2`: keep rows whose `column` is one of the values."""

    column: str
    values: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.column}={','.join(self.values)}"


@dataclass(frozen=True)
class Scenario:
    name: str
    dataset: str
    split: str
    question_column: str
    solution_column: str
    answer_format: str
    suffix: str
    limit: int
    config: str | None = None
    filters: tuple[Filter, ...] = ()
    path: str | None = None
    # Benchmarks whose problems source_problems leaves out. The loader fills in every benchmark when
    # the file says nothing; `decontaminate: []` opts out. Built by hand, a Scenario checks none.
    decontaminate: tuple[str, ...] = ()
    expected_accuracy: float | None = None  # share of first tries graded correct, before any is graded
    auto_fill: bool = False  # the sensor submits the next fill round itself while short of `limit`
    max_rounds: int = 3  # fill rounds in one run of rounds (the click's and the automatic ones)
    online_max_requests: int = 0  # an auto_fill round of at most this many requests goes to Flex; 0: off
    samples_per_problem: int = 1  # answers asked of each new problem (k request lines, one batch)


@dataclass(frozen=True)
class Benchmark:
    """An evaluation set that training problems must not overlap."""

    name: str
    dataset: str
    split: str
    question_column: str
    configs: tuple[str | None, ...] = (None,)  # several configs are concatenated (hendrycks_math)
    path: str | None = None


def parse_filter(text: str) -> Filter:
    """Parse the old CLI's `column=value1,value2` syntax."""
    column, sep, values = str(text).partition("=")
    column = column.strip()
    if not sep or not column:
        raise ScenarioError(f"filter {text!r} is not of the form column=value1,value2")
    parsed = tuple(v.strip() for v in values.split(",") if v.strip())
    if not parsed:
        raise ScenarioError(f"filter {text!r} on column {column!r} has no values")
    return Filter(column, parsed)


def scenarios_file() -> Path:
    """The scenarios file in use: `$COTGEN_SCENARIOS_FILE`, else the packaged default."""
    return Path(os.environ.get("COTGEN_SCENARIOS_FILE") or DEFAULT_SCENARIOS_FILE)


def load_scenarios(path: str | Path | None = None) -> dict[str, Scenario]:
    """Read and validate every scenario of the file, in file order."""
    return load_scenarios_and_benchmarks(path)[0]


def load_benchmarks(path: str | Path | None = None) -> dict[str, Benchmark]:
    """The benchmarks of the scenarios file (the packaged ones when it has no `benchmarks:` block)."""
    return load_scenarios_and_benchmarks(path)[1]


def load_scenarios_and_benchmarks(
    path: str | Path | None = None,
) -> tuple[dict[str, Scenario], dict[str, Benchmark]]:
    """Read and validate the whole file: scenarios in file order and the benchmarks they name."""
    path = Path(path) if path else scenarios_file()
    document = _read(path)
    unknown = sorted(map(str, set(document) - set(TOP_LEVEL_KEYS))) if isinstance(document, dict) else []
    if unknown:  # a misspelled `benchmarks:` would leave its benchmarks silently unchecked
        raise ScenarioError(
            f"scenarios file {path} has unknown top-level key(s) {quoted(unknown)}; "
            f"known keys: {list(TOP_LEVEL_KEYS)}"
        )
    entries = document.get("scenarios") if isinstance(document, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise ScenarioError(f"scenarios file {path} needs a non-empty `scenarios:` mapping")
    if "benchmarks" in document:
        benchmarks = _benchmarks(document["benchmarks"], path)
    elif path.resolve() != DEFAULT_SCENARIOS_FILE.resolve():
        # Decontamination is on by default: a file without the block checks against the packaged ones.
        benchmarks = load_benchmarks(DEFAULT_SCENARIOS_FILE)
    else:
        benchmarks = {}
    scenarios = {name: _scenario(name, fields, path, benchmarks) for name, fields in entries.items()}
    by_suffix: dict[str, str] = {}
    for scenario in scenarios.values():
        other = by_suffix.setdefault(scenario.suffix, scenario.name)
        if other != scenario.name:
            raise ScenarioError(
                f"scenarios {other!r} and {scenario.name!r} in {path} have the same suffix "
                f"{scenario.suffix!r}: their cot_/cod_ files would collide; give each its own `suffix:`"
            )
    return scenarios, benchmarks


def _read(path: Path) -> object:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except _Refused as error:
        raise ScenarioError(f"scenarios file {path}: {error}") from None
    except FileNotFoundError:
        raise ScenarioError(f"scenarios file {path} does not exist") from None
    except OSError as error:
        raise ScenarioError(f"scenarios file {path} cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ScenarioError(
            f"scenarios file {path} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset "
            f"{error.start}): save it as UTF-8"
        ) from None
    except yaml.YAMLError as error:
        raise ScenarioError(f"scenarios file {path} is not valid YAML: {error}") from None


def _check_identifier(value: object, field: str) -> str:
    """Refuse a name or suffix that is not a plain identifier (it becomes a file or folder name)."""
    if not isinstance(value, str):
        raise ScenarioError(
            f"the {field} must be a string of [A-Za-z0-9_-]+; YAML read {quoted(value)}, quote it"
        )
    if not IDENTIFIER.fullmatch(value):
        raise ScenarioError(
            f"the {field} {quoted(value)} must match [A-Za-z0-9_-]+ (letters, digits, _ and -), "
            f"since it names files and folders under COTGEN_DATA_DIR"
        )
    return value


def _suffix(value: object) -> str | None:
    return None if value in (None, "") else _check_identifier(value, "suffix")  # None: the scenario's name


def _filters(value: object) -> tuple[Filter, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ScenarioError("filters must be a list of 'column=value1,value2' strings")
    return tuple(parse_filter(text) for text in value)


Text = Annotated[str, Field(min_length=1)]


class _Fields(BaseModel):
    """One block of the file: unknown fields refused; text is text (a YAML number is read as text)."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class _ScenarioFields(_Fields):
    dataset: Text
    split: Text
    question_column: Text
    solution_column: Text
    answer_format: Literal["gsm8k", "boxed"]
    config: str | None = None
    filters: Annotated[tuple[Filter, ...], BeforeValidator(_filters)] = ()
    suffix: Annotated[str | None, BeforeValidator(_suffix)] = None
    limit: StrictInt = Field(1000, gt=0)
    path: str | None = None
    decontaminate: list[str] | None = None  # None: every benchmark of the file; [] opts out
    expected_accuracy: float | None = Field(None, gt=0, le=1, strict=True)
    auto_fill: StrictBool = False
    max_rounds: StrictInt = Field(3, ge=1)
    online_max_requests: StrictInt = Field(0, ge=0)
    samples_per_problem: StrictInt = Field(1, ge=1, le=MAX_SAMPLES_PER_PROBLEM)

    @field_validator("decontaminate")
    @classmethod
    def _known_benchmarks(cls, names: list[str] | None, info: ValidationInfo) -> list[str]:
        if names is None:  # written with no value (left out, the field is not validated)
            raise ScenarioError("decontaminate must be a list of benchmark names ([] opts out)")
        benchmarks = info.context["benchmarks"]
        unknown = [name for name in names if name not in benchmarks]
        if unknown:
            raise ScenarioError(
                f"decontaminate names unknown benchmarks {quoted(unknown)}; benchmarks: {sorted(benchmarks)}"
            )
        return names


class _BenchmarkFields(_Fields):
    dataset: Text
    split: Text
    question_column: Text
    config: str | None = None
    configs: list[str] | None = Field(None, min_length=1)  # several are concatenated
    path: str | None = None

    @field_validator("configs", mode="before")
    @classmethod
    def _one_config(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _config_or_configs(self) -> "_BenchmarkFields":
        if {"config", "configs"} <= self.model_fields_set:
            raise ScenarioError("give either `config:` or `configs:`, not both")
        return self


def _validate(model: type[_Fields], name: object, fields: object, where: str, **context) -> _Fields:
    """The block validated, or one error naming every problem of it, each with its field."""
    try:
        _check_identifier(name, "name")
        if not isinstance(fields, dict):
            raise ScenarioError("must be a mapping of fields")
        return model.model_validate(fields, context=context)
    except ScenarioError as error:
        raise ScenarioError(f"{where}: {error}") from None
    except ValidationError as error:
        errors = error.errors()
        unknown = [e["loc"][0] for e in errors if e["type"] == "extra_forbidden"]
        missing = [e["loc"][0] for e in errors if e["type"] == "missing"]
        problems = (
            [f"has unknown fields {unknown}; known fields: {sorted(model.model_fields)}"] if unknown else []
        )
        problems += [f"lacks required fields {missing}"] if missing else []
        for e in errors:
            if e["type"] == "value_error":  # ours: the sentence names its field
                problems.append(str(e["ctx"]["error"]))
            elif e["type"] not in ("extra_forbidden", "missing"):
                problems.append(f"{'.'.join(map(str, e['loc']))}: {e['msg']}, got {quoted(e['input'])}")
        raise ScenarioError(f"{where}: {'; '.join(problems)}") from None


def _benchmarks(entries: object, path: Path) -> dict[str, Benchmark]:
    if entries is None:
        return {}
    if not isinstance(entries, dict):
        raise ScenarioError(f"scenarios file {path}: `benchmarks:` must be a mapping of name -> fields")
    benchmarks = {}
    for name, fields in entries.items():
        block = _validate(_BenchmarkFields, name, fields, f"benchmark {name!r} in {path}")
        benchmarks[name] = Benchmark(
            name=name,
            dataset=block.dataset,
            split=block.split,
            question_column=block.question_column,
            configs=tuple(block.configs or [block.config]),
            path=block.path or None,
        )
    return benchmarks


def _scenario(name: object, fields: object, path: Path, benchmarks: dict[str, Benchmark]) -> Scenario:
    block = _validate(_ScenarioFields, name, fields, f"scenario {name!r} in {path}", benchmarks=benchmarks)
    decontaminate = list(benchmarks) if block.decontaminate is None else block.decontaminate
    return Scenario(
        name=name,
        dataset=block.dataset,
        config=block.config or None,
        split=block.split,
        filters=block.filters,
        question_column=block.question_column,
        solution_column=block.solution_column,
        answer_format=block.answer_format,
        suffix=block.suffix or name,
        limit=block.limit,
        path=block.path or None,
        decontaminate=tuple(dict.fromkeys(decontaminate)),
        expected_accuracy=block.expected_accuracy,
        auto_fill=block.auto_fill,
        max_rounds=block.max_rounds,
        online_max_requests=block.online_max_requests,
        samples_per_problem=block.samples_per_problem,
    )


def get_scenario(name: str) -> Scenario:
    scenarios = load_scenarios()
    if name not in scenarios:
        raise ScenarioError(f"unknown scenario {name!r}; scenarios: {sorted(scenarios)}")
    return scenarios[name]
