"""The shape of the code location and the promises of its layers, checked without `dagster dev`."""

import ast
import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import grimp
import pytest

from cotgen_assets.core.records import COD_FIELDS, COT_FIELDS, MADE_BY_KEYS
from cotgen_assets.core.stages import GENERATION, SUMMARIZATION
from cotgen_assets.definitions import defs
from cotgen_assets_tests.harness.dagster import CHAIN, ROOT

ASSETS = [*CHAIN, "dataset_report", "hf_dataset"]


def test_definitions_load_and_validate():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert set(ASSETS) <= keys
    lineage = [
        *zip(CHAIN, CHAIN[1:]),
        ("cod_samples", "dataset_report"),
        ("cod_samples", "hf_dataset"),
        ("cot_samples", "hf_dataset"),
    ]
    for upstream, downstream in lineage:
        parents = {p.to_user_string() for p in graph.get(dg.AssetKey(downstream)).parent_keys}
        assert upstream in parents, f"{downstream} should depend on {upstream}"
    for job in ("generation_results_job", "summarization_results_job", "summarization_batch_job"):
        assert defs.resolve_job_def(job).name == job
    sensor = defs.resolve_sensor_def("batch_completion_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert "gemini" in defs.resources
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert ("source_problems", "no_benchmark_overlap") in checks
    assert ("cot_samples", "tags_well_formed") in checks and ("cod_samples", "token_ratio_in_band") in checks


def test_column_schemas_are_the_record_fields():
    for asset, fields in (("cot_samples", COT_FIELDS), ("cod_samples", COD_FIELDS)):
        spec = defs.resolve_assets_def(asset).specs_by_key[dg.AssetKey(asset)]
        columns = spec.metadata["dagster/column_schema"].columns
        assert [(c.name, c.type, c.description) for c in columns] == [
            (f.name, f.type, f.description) for f in fields
        ]


def test_the_records_page_names_every_field():
    named = set(re.findall(r"[a-z_]+", (ROOT / "docs" / "records.md").read_text()))
    for field in [*COT_FIELDS, *COD_FIELDS]:
        assert field.name in named, f"docs/records.md does not name {field.name!r}"
    for key in MADE_BY_KEYS:
        assert key in named, f"docs/records.md does not name generation.{key}"


def test_builders_make_exactly_the_described_fields(tmp_path):
    """A record as ingestion builds it has the described fields, in order."""
    from cotgen_assets.core.batch_output import ResultLine
    from cotgen_assets.core.model_io import Usage
    from cotgen_assets.core.records import made_by
    from cotgen_assets.core.submissions import Submission

    submission = Submission("easy", GENERATION, "abc", "gemini-3.1-pro-preview", "v1", 1)
    line = ResultLine("easy-1", "ok", thought="2+2=4", answer="\\boxed{4}", usage=Usage(10, 0, 5, 3))
    context = {"id": "easy-1", "scenario": "easy", "question": "2+2?", "answer": "4", "source": {}}
    cot, _ = GENERATION.build(context, line, made_by(submission, "batches/1", line, 0.1))
    assert list(cot) == [f.name for f in COT_FIELDS]
    assert list(cot["generation"]) == list(MADE_BY_KEYS)
    draft = ResultLine("easy-1", "ok", answer=json.dumps({"draft_steps": ["2+2=4"], "final_answer": "4"}))
    context |= {"generation": cot["generation"], "cot_predicted_answer": "4", "thought_numbers": ["2", "4"]}
    cod, _ = SUMMARIZATION.build(context, draft, made_by(submission, "batches/2", draft, 0.01))
    assert list(cod) == [f.name for f in COD_FIELDS]


def test_cotgen_trace_loads_neither_dagster_nor_the_gemini_sdk(tmp_path):
    probe = (
        "import sys; from cotgen_assets import cli\n"
        "code = cli.main(['trace', 'easy-1'])\n"
        "heavy = ('dagster', 'dagster.', 'google.genai')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "COTGEN_DATA_DIR": str(tmp_path)},
        timeout=120,
    )
    assert "unknown id 'easy-1'" in done.stderr  # it ran the trace, on an empty data dir
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_the_raw_batch_read_still_has_its_sdk_path():
    """`backends.developer.raw_get` uses the SDK's private transport because the public
    `batches.get` drops `batchStats` and `error` on the Gemini API (and the Vertex AI backend reads
    and cancels a job by its own resource name through it). If this fails, google-genai changed that
    path: switch `raw_get` to whatever replaced it (or to a public call that now carries the fields)."""
    from google.genai import _api_client
    from google.genai import types as genai_types

    parameters = list(inspect.signature(_api_client.BaseApiClient.request).parameters)
    assert parameters[:5] == ["self", "http_method", "path", "request_dict", "http_options"]
    assert "batch_stats" not in genai_types.BatchJob.model_fields  # still no public field for the counts


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("core/answers.py", "import dagster", "import no dagster"),
        ("publish/report.py", "import cotgen_assets.defs.assets.samples", "Layers"),
        ("backends/resource.py", "import cotgen_assets.publish.report", "Layers"),
        ("core/model_io.py", "import cotgen_assets.backends.developer", "core imports no batch backend"),
    ],
)
def test_a_crossed_layer_fails_lint_imports(tmp_path, module, line, broken):
    """A module takes its folder's rule: planting a forbidden import anywhere in a layer breaks a contract."""
    shutil.copytree(ROOT / "cotgen_assets", tmp_path / "cotgen_assets")
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / "cotgen_assets" / module, "a") as handle:
        handle.write(f"\n{line}  # noqa\n")
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 1, done.stdout
    assert re.search(rf"{broken}.* BROKEN", done.stdout), done.stdout


# The batch APIs' own words: request and response fields, job states, storage fields. They belong
# to a backend (backends/), never to core, which speaks of asks, replies and job ends.
WIRE_WORDS = re.compile(
    r"\b(generationConfig|thinkingConfig|thinkingLevel|includeThoughts|responseJsonSchema|responseMimeType"
    r"|usageMetadata|promptTokenCount|candidatesTokenCount|thoughtsTokenCount|cachedContentTokenCount"
    r"|candidates|promptFeedback|blockReason|finishReason|modelVersion|systemInstruction|contents|parts"
    r"|inputConfig|outputConfig|gcsSource|gcsDestination|batchStats|completionStats|responsesFile"
    r"|custom_id|JOB_STATE_\w*|BATCH_STATE_\w*)\b"
)


def test_core_speaks_no_batch_api_words():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {match.group(0)}"
        for path in sorted((ROOT / "cotgen_assets" / "core").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        for match in WIRE_WORDS.finditer(line)
    ]
    assert found == []


def test_every_file_the_package_reads_is_package_data():
    """`pip install .` (the Dockerfile's) copies only declared data files: an undeclared one, such as
    the dataset card's template, would be missing from the image and fail the export there."""
    import fnmatch
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package_root = ROOT / "cotgen_assets"
    for path in package_root.rglob("*"):
        if not path.is_file() or path.suffix in (".py", ".pyc"):
            continue
        package = ".".join(path.parent.relative_to(ROOT).parts)
        patterns = declared.get(package, [])
        assert any(fnmatch.fnmatch(path.name, p) for p in patterns), (
            f"{path.relative_to(ROOT)} is not in [tool.setuptools.package-data] {package!r}"
        )


def test_no_module_of_the_package_imports_itself_back():
    """No import circle: a module that another imports (type-only imports too) never leads back to
    it, so each can be read, tested and moved with what it imports and nothing that imports it."""
    graph = grimp.build_graph("cotgen_assets", cache_dir=None)
    circles = {
        " -> ".join((importer, *graph.find_shortest_chain(importer=imported, imported=importer)))
        for importer in graph.modules
        for imported in graph.find_modules_directly_imported_by(importer)
        if graph.chain_exists(importer=imported, imported=importer)
    }
    assert not circles, "import circles:\n" + "\n".join(sorted(circles))


MAX_FUNCTION_LINES = 80


def test_no_function_is_longer_than_80_lines():
    """A unit a reader can hold in their head: no function of the package over 80 lines."""
    long = set()
    for path in (ROOT / "cotgen_assets").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    long.add((path.relative_to(ROOT / "cotgen_assets").as_posix(), node.name))
    assert not long, f"longer than {MAX_FUNCTION_LINES} lines: {sorted(long)}"


# A design note, an issue tracker or a wire-protocol file a reader of the repository does not have.
OUTSIDE_POINTER = re.compile(r"DESIGN|§|\b[Ii]ssue \d+|reference/|reference doc|\breference §")


def test_comments_point_inside_the_repository():
    """Comments and docstrings explain themselves or point to the docs, not to files a reader lacks."""
    found = []
    for root in ("cotgen_assets", "cotgen_assets_tests", "bench"):
        for path in sorted((ROOT / root).rglob("*.py")):
            if path.name == "test_architecture.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if OUTSIDE_POINTER.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
