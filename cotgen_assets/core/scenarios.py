"""Scenarios: the user-editable list of problem sets, one Dagster partition each (DESIGN §2)."""

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_SCENARIOS_FILE = Path(__file__).parents[1] / "scenarios.yaml"
ANSWER_FORMATS = ("gsm8k", "boxed")
# Names and suffixes become file and folder names under COTGEN_DATA_DIR: no separators, no `..`.
IDENTIFIER = re.compile(r"[A-Za-z0-9_-]+")


class ScenarioError(ValueError):
    """A scenario or filter that cannot work; the message says what to fix."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (plain YAML keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise _DuplicateKey(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    pass


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


@dataclass(frozen=True)
class Benchmark:
    """An evaluation set that training problems must not overlap (issue 13)."""

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
    scenarios = {}
    for name, fields in entries.items():
        _check_identifier(name, "name", f"scenario {name!r} in {path}")
        scenarios[name] = _scenario(name, fields, path, benchmarks)
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
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506
    except _DuplicateKey as error:
        raise ScenarioError(f"scenarios file {path}: {error}; each name and field may appear once") from None
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


def _benchmarks(entries: object, path: Path) -> dict[str, Benchmark]:
    if entries is None:
        return {}
    if not isinstance(entries, dict):
        raise ScenarioError(f"scenarios file {path}: `benchmarks:` must be a mapping of name -> fields")
    benchmarks = {}
    for name, fields in entries.items():
        where = f"benchmark {name!r} in {path}"
        _check_identifier(name, "name", where)
        if not isinstance(fields, dict):
            raise ScenarioError(f"{where} must be a mapping of fields")
        known = {"dataset", "config", "configs", "split", "question_column", "path"}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ScenarioError(f"{where} has unknown fields {unknown}; known fields: {sorted(known)}")
        missing = [f for f in ("dataset", "split", "question_column") if not fields.get(f)]
        if missing:
            raise ScenarioError(f"{where} lacks required fields {missing}")
        if "config" in fields and "configs" in fields:
            raise ScenarioError(f"{where}: give either `config:` or `configs:`, not both")
        configs = fields.get("configs", fields.get("config"))
        if configs is None:
            configs = [None]
        elif isinstance(configs, str):
            configs = [configs]
        elif not isinstance(configs, list) or not configs or not all(isinstance(c, str) for c in configs):
            raise ScenarioError(f"{where}: configs must be a non-empty list of config names")
        benchmarks[name] = Benchmark(
            name=name,
            dataset=str(fields["dataset"]),
            split=str(fields["split"]),
            question_column=str(fields["question_column"]),
            configs=tuple(configs),
            path=str(fields["path"]) if fields.get("path") else None,
        )
    return benchmarks


def _check_identifier(value: object, field: str, where: str) -> None:
    """Refuse a name or suffix that is not a plain identifier (it becomes a file or folder name)."""
    if not isinstance(value, str):
        raise ScenarioError(
            f"{where}: the {field} must be a string of [A-Za-z0-9_-]+; YAML read {value!r}, quote it"
        )
    if not IDENTIFIER.fullmatch(value):
        raise ScenarioError(
            f"{where}: the {field} {value!r} must match [A-Za-z0-9_-]+ (letters, digits, _ and -), "
            f"since it names files and folders under COTGEN_DATA_DIR"
        )


def _scenario(name: str, fields: object, path: Path, benchmarks: dict[str, Benchmark]) -> Scenario:
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
        "decontaminate",
        "expected_accuracy",
        "auto_fill",
        "max_rounds",
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
    _check_rounds(fields, where)
    suffix = fields.get("suffix")
    suffix = name if suffix is None or suffix == "" else suffix
    _check_identifier(suffix, "suffix", where)
    filters = fields.get("filters") or []
    if not isinstance(filters, list):
        raise ScenarioError(f"{where}: filters must be a list of 'column=value1,value2' strings")
    try:
        parsed_filters = tuple(parse_filter(f) for f in filters)
    except ScenarioError as error:
        raise ScenarioError(f"{where}: {error}") from None
    decontaminate = fields.get("decontaminate", list(benchmarks))
    if not isinstance(decontaminate, list) or not all(isinstance(b, str) for b in decontaminate):
        raise ScenarioError(f"{where}: decontaminate must be a list of benchmark names ([] opts out)")
    unknown_benchmarks = [b for b in decontaminate if b not in benchmarks]
    if unknown_benchmarks:
        raise ScenarioError(
            f"{where}: decontaminate names unknown benchmarks {unknown_benchmarks}; "
            f"benchmarks: {sorted(benchmarks)}"
        )
    return Scenario(
        name=name,
        dataset=str(fields["dataset"]),
        config=str(fields["config"]) if fields.get("config") else None,
        split=str(fields["split"]),
        filters=parsed_filters,
        question_column=str(fields["question_column"]),
        solution_column=str(fields["solution_column"]),
        answer_format=str(fields["answer_format"]),
        suffix=suffix,
        limit=limit,
        path=str(fields["path"]) if fields.get("path") else None,
        decontaminate=tuple(dict.fromkeys(decontaminate)),
        expected_accuracy=fields.get("expected_accuracy"),
        auto_fill=fields.get("auto_fill", False),
        max_rounds=fields.get("max_rounds", 3),
    )


def _check_rounds(fields: dict, where: str) -> None:
    """The fill-round settings: a share in (0, 1], a true/false, a positive count."""
    accuracy = fields.get("expected_accuracy")
    if accuracy is not None and (
        isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not 0 < accuracy <= 1
    ):
        raise ScenarioError(
            f"{where}: expected_accuracy must be a number above 0 and at most 1, got {accuracy!r}"
        )
    if not isinstance(fields.get("auto_fill", False), bool):
        raise ScenarioError(f"{where}: auto_fill must be true or false, got {fields['auto_fill']!r}")
    rounds = fields.get("max_rounds", 3)
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise ScenarioError(f"{where}: max_rounds must be a positive integer, got {rounds!r}")


def get_scenario(name: str) -> Scenario:
    scenarios = load_scenarios()
    if name not in scenarios:
        raise ScenarioError(f"unknown scenario {name!r}; scenarios: {sorted(scenarios)}")
    return scenarios[name]
