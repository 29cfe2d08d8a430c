"""The docs hold what the code defines, and only that: every relative link and anchor resolves, every
environment variable the code reads, config field, `cotgen` command and `cotgen-emulator` flag is
written down, and every one written down still exists.

Reference entries are rows of markdown tables, told apart by their header: `| variable |`
(environment variables), `| field | default |` (asset config) and `| flag |` (emulator flags). No
Dagster instance.
"""

import ast
import importlib
import inspect
import pkgutil
import re
from collections import Counter
from pathlib import Path

import dagster as dg

import cotgen_assets.defs
from cotgen_assets import cli
from cotgen_assets.emulator import server

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DOC_FILES = [
    ROOT / "README.md",
    *sorted(DOCS.glob("*.md")),
    ROOT / "deploy/README.md",
    ROOT / "bench/README.md",
]
# Names of the environment variables the project reads; other upper-case constants are wire names.
ENV_NAME = re.compile(r"(?:COTGEN|GEMINI|GOOGLE|HF|DAGSTER)_[A-Z0-9_]*[A-Z0-9]|STORAGE_EMULATOR_HOST")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where a `[x](y)` is no link."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation but `-` and `_` dropped,
    spaces as hyphens (runs of hyphens kept)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = re.sub(r"[`*]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a page's headings; a repeated one gets -1, -2 ... as on GitHub."""
    seen: Counter[str] = Counter()
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", read(path)), re.M):
        slug = github_slug(heading)
        found.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
        seen[slug] += 1
    return found


def broken_link(doc: Path, target: str) -> str | None:
    path, _, anchor = target.partition("#")
    file = (doc.parent / path).resolve() if path else doc
    if not file.exists():
        return "no such file"
    if anchor and (file.suffix != ".md" or anchor not in anchors(file)):
        return f"no heading #{anchor} in {file.relative_to(ROOT)}"
    return None


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for doc in DOC_FILES:
        for target in LINK.findall(prose(read(doc))):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
                continue
            if reason := broken_link(doc, target):
                broken.append(f"{doc.relative_to(ROOT)}: ({target}): {reason}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_readme_maps_every_page_of_docs():
    linked = {target.partition("#")[0] for target in LINK.findall(read(ROOT / "README.md"))}
    missing = [f"docs/{page.name}" for page in sorted(DOCS.glob("*.md")) if f"docs/{page.name}" not in linked]
    assert not missing, f"README.md's map of docs/ lacks: {missing}"


def table_entries(header: str) -> dict[str, str]:
    """Names written in the first column of the docs' tables whose header starts `header`, each with
    the page it is on. A cell may name several (`a`, `b`); a flag keeps its name (`--seed N`)."""
    entries = {}
    for doc in DOC_FILES:
        lines = FENCE.sub("", read(doc)).splitlines()
        for number, line in enumerate(lines[:-1]):
            if not (line.startswith(header) and lines[number + 1].startswith("|-")):
                continue
            for row in lines[number + 2 :]:
                if not row.startswith("|"):
                    break
                for name in re.findall(r"`([^`]+)`", re.split(r"(?<!\\)\|", row)[1]):
                    entries[name.split()[0]] = str(doc.relative_to(ROOT))
    return entries


def env_vars_read() -> dict[str, str]:
    """Environment variables the code reads: whole string constants of the package that are such a
    name, variables the scripts expand, and those the instance files take (`env: NAME`)."""
    found = {}
    for path in sorted((ROOT / "cotgen_assets").rglob("*.py")):
        for node in ast.walk(ast.parse(read(path))):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and ENV_NAME.fullmatch(node.value)
            ):
                found.setdefault(node.value, str(path.relative_to(ROOT)))
    for path in sorted((ROOT / "scripts").glob("*.sh")):
        for name in re.findall(r"\$\{?(" + ENV_NAME.pattern + ")", read(path)):
            found.setdefault(name, str(path.relative_to(ROOT)))
    for path in sorted((ROOT / "scripts").glob("*.yaml")):
        for name in re.findall(r"env: (\w+)", read(path)):
            found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def config_fields() -> dict[str, str]:
    """Every field of the `dg.Config` classes under `cotgen_assets.defs`, with its class."""
    fields = {}
    for module_info in pkgutil.walk_packages(cotgen_assets.defs.__path__, "cotgen_assets.defs."):
        module = importlib.import_module(module_info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            resource = issubclass(cls, dg.ConfigurableResource)  # set from the environment, not a launchpad
            if issubclass(cls, dg.Config) and not resource and cls.__module__ == module.__name__:
                for field in cls.model_fields:
                    fields.setdefault(field, name)
    return fields


def cotgen_commands() -> set[str]:
    (commands,) = (a for a in cli.build_parser()._actions if a.choices and a.dest == "command")
    return set(commands.choices)


def emulator_flags() -> set[str]:
    actions = [action for action in server.build_parser()._actions if action.dest != "help"]
    return {flag for action in actions for flag in action.option_strings}


def all_docs() -> str:
    return "\n".join(read(doc) for doc in DOC_FILES)


def test_every_environment_variable_the_code_reads_is_documented():
    documented = table_entries("| variable |")
    missing = [
        f"{name} (read in {where})"
        for name, where in sorted(env_vars_read().items())
        if name not in documented
    ]
    assert not missing, (
        "environment variables with no row in a `| variable | ... |` table of README.md or docs/ "
        "(docs/configuration.md holds them):\n" + "\n".join(missing)
    )


def test_every_config_field_is_documented():
    documented = table_entries("| field | default |")
    missing = [
        f"{field} ({cls})" for field, cls in sorted(config_fields().items()) if field not in documented
    ]
    assert not missing, (
        "config fields with no row in a `| field | ... |` table (docs/configuration.md#asset-config):\n"
        + "\n".join(missing)
    )


def test_every_cotgen_command_and_emulator_flag_is_documented():
    text = all_docs()
    missing = [f"cotgen {name}" for name in sorted(cotgen_commands()) if f"cotgen {name}" not in text]
    documented_flags = table_entries("| flag |")
    missing += [
        f"cotgen-emulator {flag}" for flag in sorted(emulator_flags()) if flag not in documented_flags
    ]
    assert not missing, (
        "commands not written in README.md or docs/, and emulator flags with no row in a "
        "`| flag | ... |` table (docs/emulator.md):\n" + "\n".join(missing)
    )


def code_text() -> str:
    """Where a setting may be defined: the package, the scripts, CI and the deployment files."""
    paths = [*(ROOT / "cotgen_assets").rglob("*.py"), *(ROOT / "scripts").glob("*"), ROOT / "Dockerfile"]
    paths += [ROOT / ".ci/run", ROOT / "deploy/values.yaml"]
    return "\n".join(read(path) for path in paths)


def test_nothing_documented_is_gone():
    code, reads, fields, flags = code_text(), env_vars_read(), config_fields(), emulator_flags()
    gone = [
        f"{name} ({doc})"
        for name, doc in sorted(
            {n: str(d.relative_to(ROOT)) for d in DOC_FILES for n in ENV_NAME.findall(read(d))}.items()
        )
        if name.startswith("COTGEN_") and not re.search(rf"\b{name}\b", code)
    ]
    gone += [
        f"variable {name} ({doc})"
        for name, doc in sorted(table_entries("| variable |").items())
        if name not in reads
    ]
    gone += [
        f"config field {name} ({doc})"
        for name, doc in sorted(table_entries("| field | default |").items())
        if name not in fields
    ]
    gone += [
        f"emulator flag {name} ({doc})"
        for name, doc in sorted(table_entries("| flag |").items())
        if name not in flags
    ]
    written = set(re.findall(r"(?:`|bin/)cotgen ([a-z]+)\b", all_docs()))
    gone += [f"cotgen {name}" for name in sorted(written - cotgen_commands())]
    assert not gone, "documented, but the code no longer has them:\n" + "\n".join(gone)
