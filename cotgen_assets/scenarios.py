"""Scenarios: the user-editable list of problem sets, one Dagster partition each (DESIGN §2)."""

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_SCENARIOS_FILE = Path(__file__).with_name("scenarios.yaml")
ANSWER_FORMATS = ("gsm8k", "boxed")


class ScenarioError(ValueError):
    """A scenario or filter that cannot work; the message says what to fix."""


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
    path = Path(path) if path else scenarios_file()
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"scenarios file {path} does not exist") from None
    except yaml.YAMLError as error:
        raise ScenarioError(f"scenarios file {path} is not valid YAML: {error}") from None
    entries = document.get("scenarios") if isinstance(document, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise ScenarioError(f"scenarios file {path} needs a non-empty `scenarios:` mapping")
    return {name: _scenario(str(name), fields, path) for name, fields in entries.items()}


def _scenario(name: str, fields: object, path: Path) -> Scenario:
    where = f"scenario {name!r} in {path}"
    if not isinstance(fields, dict):
        raise ScenarioError(f"{where} must be a mapping of fields")
    known = {
        "dataset",
        "config",
        "split",
        "filters",
        "question_column",
        "solution_column",
        "answer_format",
        "suffix",
        "limit",
        "path",
    }
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ScenarioError(f"{where} has unknown fields {unknown}; known fields: {sorted(known)}")
    missing = [
        f
        for f in ("dataset", "split", "question_column", "solution_column", "answer_format")
        if not fields.get(f)
    ]
    if missing:
        raise ScenarioError(f"{where} lacks required fields {missing}")
    if fields["answer_format"] not in ANSWER_FORMATS:
        raise ScenarioError(f"{where}: answer_format must be one of {ANSWER_FORMATS}")
    limit = fields.get("limit", 1000)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        raise ScenarioError(f"{where}: limit must be a positive integer, got {limit!r}")
    filters = fields.get("filters") or []
    if not isinstance(filters, list):
        raise ScenarioError(f"{where}: filters must be a list of 'column=value1,value2' strings")
    try:
        parsed_filters = tuple(parse_filter(f) for f in filters)
    except ScenarioError as error:
        raise ScenarioError(f"{where}: {error}") from None
    return Scenario(
        name=name,
        dataset=str(fields["dataset"]),
        config=str(fields["config"]) if fields.get("config") else None,
        split=str(fields["split"]),
        filters=parsed_filters,
        question_column=str(fields["question_column"]),
        solution_column=str(fields["solution_column"]),
        answer_format=str(fields["answer_format"]),
        suffix=str(fields.get("suffix") or name),
        limit=limit,
        path=str(fields["path"]) if fields.get("path") else None,
    )


def get_scenario(name: str) -> Scenario:
    scenarios = load_scenarios()
    if name not in scenarios:
        raise ScenarioError(f"unknown scenario {name!r}; scenarios: {sorted(scenarios)}")
    return scenarios[name]
