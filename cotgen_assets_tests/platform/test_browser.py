"""The Dagster UI in a real browser (the last test layer): what a person sees and clicks.

Debian's chromium, driven headless by Playwright, against `dagster dev` and the emulator started
here. The run is launched through the UI (Materialize → partition → config editor → Launch), the
sensor carries it to CoD, and the pages are checked for what a person would look for. Screenshots
land in `test-artifacts/browser/` (git-ignored) for people to look at.
"""

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from cotgen_assets_tests.harness.dagster import CHAIN, ROOT, start_dagster_dev, wait_for
from cotgen_assets_tests.harness.emulator import start_emulator

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
LIMIT = 5

MATERIALIZATIONS = """
query($key: AssetKeyInput!, $partitions: [String!]) { assetOrError(assetKey: $key) { ... on Asset {
  assetMaterializations(partitions: $partitions, limit: 1) { runId metadataEntries { label
    ... on IntMetadataEntry { intValue } ... on FloatMetadataEntry { floatValue } } } } } }"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    """The emulator, `dagster dev` (webserver + daemon + sensor every 2 s), and a headless browser."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: `sudo apt-get install chromium` (scripts/test.sh does it)")
    from playwright.sync_api import sync_playwright

    base = tmp_path_factory.mktemp("browser")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    emulator = start_emulator(base / "emulator", latency=2.0)
    env = {
        "COTGEN_DATA_DIR": str(base / "data"),
        "COTGEN_GEMINI_BASE_URL": emulator.base_url,
        "COTGEN_SENSOR_INTERVAL_SECONDS": "2",
    }
    saved_key = os.environ.pop("GEMINI_API_KEY", None)  # offline, whatever the caller's shell has
    try:
        dev = start_dagster_dev(base / "home", env=env)
    except Exception:
        emulator.stop()
        raise
    finally:
        if saved_key is not None:
            os.environ["GEMINI_API_KEY"] = saved_key
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            # The "Join the Dagster community" dialog: dismissed as a person's "Skip" would.
            context.add_init_script("window.localStorage.setItem('communityNux', JSON.stringify('1'))")
            page = context.new_page()
            page.set_default_timeout(30_000)
            yield dev, page, base / "data"
            browser.close()
    finally:
        dev.stop()
        emulator.stop()


def shot(page, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def latest(dev, asset: str, partition: str | None) -> dict | None:
    """Numbers of the newest materialization (of a partition), read over GraphQL; None if none yet."""
    data = dev.graphql(
        MATERIALIZATIONS, {"key": {"path": [asset]}, "partitions": [partition] if partition else None}
    )
    found = data["assetOrError"].get("assetMaterializations") or []
    if not found:
        return None
    entries = found[0]["metadataEntries"]
    return {"runId": found[0]["runId"]} | {
        e["label"]: e.get("intValue", e.get("floatValue")) for e in entries
    }


def launch_from_asset_page(
    page, url: str, asset: str, partition: str | None = None, config: str | None = None
):
    """What a person does: asset page → Materialize → pick the partition → add config → Launch."""
    page.goto(f"{url}/assets/{asset}")
    page.get_by_role("button", name="Materialize").first.click()
    if partition is None:
        page.get_by_text("Launched run").wait_for()
        return
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    dialog.wait_for()
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_placeholder("Filter partitions").fill(partition)
    page.locator("label", has_text=partition).first.click()
    dialog.get_by_text("Launch runs to materialize").click()  # closes the partition list
    if config:
        dialog.get_by_text("Config", exact=True).click()
        dialog.get_by_role("button", name="Add config").click()
        editor = page.get_by_role("dialog").filter(has_text="Config Editor")
        editor.wait_for()
        editor.locator(".CodeMirror").click()
        page.keyboard.insert_text(config)
        editor.get_by_text("No errors").wait_for()
        shot(page, f"launch-{asset}-config")
        editor.get_by_role("button", name="Save config").click()
        dialog.get_by_text("Config saved").wait_for()
        editor.wait_for(state="hidden")
    shot(page, f"launch-{asset}-dialog")
    dialog.get_by_role("button", name="Launch 1 run").click()
    page.get_by_text("Launched run").wait_for()


def metadata_value(page, label: str) -> str:
    """The value cell beside a metadata label on an asset's events page."""
    row = page.locator("tr", has=page.locator("td", has_text=re.compile(f"^{re.escape(label)}$"))).first
    row.wait_for()
    return row.locator("td").nth(1).inner_text().strip()


def test_asset_graph_shows_the_chain_in_lineage_order(platform):
    dev, page, _ = platform
    page.goto(f"{dev.url}/asset-groups/cotgen")
    page.locator("foreignObject").first.wait_for()
    wait_for(
        lambda: page.locator("foreignObject").count() >= len(CHAIN) + 1,
        20,
        message="the asset graph to draw every node",
    )
    nodes = page.evaluate(
        "() => [...document.querySelectorAll('foreignObject')]"
        ".map(f => [f.textContent.trim(), Number(f.getAttribute('x'))])"
    )
    shot(page, "01-asset-graph")

    def x_of(name: str) -> float:
        # Zoomed out, long names are cut in the middle: "summarizati…_batch".
        for label, x in nodes:
            head, _, tail = label.partition("…")
            if label == name or ("…" in label and name.startswith(head) and name.endswith(tail)):
                return x
        raise AssertionError(f"{name} is not in the asset graph: {nodes}")

    positions = [x_of(name) for name in CHAIN]
    assert positions == sorted(positions) and len(set(positions)) == len(CHAIN), (
        f"the graph does not draw {CHAIN} left to right, one after another: {nodes}"
    )
    assert x_of("dataset_report") > x_of("cod_samples"), "dataset_report is drawn downstream of cod_samples"

    page.locator("foreignObject", has_text="generation_batch").click()
    page.get_by_text("OFFLINE: GEMINI_API_KEY is not set").first.wait_for()
    shot(page, "02-offline-in-the-sidebar")


def test_a_person_launches_easy_from_the_ui_and_the_sensor_carries_it_to_cod(platform):
    from playwright.sync_api import expect

    dev, page, data = platform
    url = dev.url

    launch_from_asset_page(page, url, "source_problems", "easy")
    wait_for(lambda: latest(dev, "source_problems", "easy"), 120, message="source_problems[easy]")

    launch_from_asset_page(
        page,
        url,
        "generation_batch",
        "easy",
        config=f"ops: {{generation_batch: {{config: {{limit: {LIMIT}, ask: missing}}}}}}",
    )
    batch = wait_for(lambda: latest(dev, "generation_batch", "easy"), 120, message="generation_batch[easy]")
    assert batch["num_requests"] == LIMIT, "the limit typed into the config editor reached the asset"

    cod = wait_for(
        lambda: latest(dev, "cod_samples", "easy"),
        240,
        interval=2,
        message="batch_completion_sensor to carry easy through to cod_samples",
    )
    records = [json.loads(line) for line in (data / "cod_easy.jsonl").read_text().splitlines()]
    assert cod["num_samples"] == len(records) == LIMIT

    # What a person sees on cod_samples' latest materialization of easy.
    page.goto(f"{url}/assets/cod_samples?view=events&partition=easy")
    assert int(metadata_value(page, "num_samples")) == LIMIT
    for label in ("input_tokens", "thinking_tokens", "output_tokens"):
        assert int(metadata_value(page, label)) > 0, label
    cost = float(metadata_value(page, "cost_usd"))
    assert cost == pytest.approx(sum(r["summarization"]["cost_usd"] for r in records), rel=1e-6)
    assert 0 < float(metadata_value(page, "draft_to_thought_token_ratio")) < 1
    assert "OFFLINE" in metadata_value(page, "gemini_endpoint")
    shot(page, "03-cod-samples-easy-metadata")

    preview = page.locator("tr", has=page.locator("td", has_text=re.compile("^preview$"))).first
    preview.scroll_into_view_if_needed()
    table = preview.locator("table")
    expect(table.locator("th", has_text="draft (excerpt)")).to_be_visible(timeout=30_000)
    first = table.locator("tbody tr").first
    first.wait_for()
    cells = first.locator("td").all_inner_texts()
    headers = [h.strip() for h in table.locator("th").all_inner_texts()]
    assert cells[0].replace("\n", "") == records[0]["id"]
    assert cells[headers.index("sample")].strip() == str(records[0]["sample"])
    draft_cell = cells[headers.index("draft (excerpt)")]
    assert "<draft>" not in draft_cell and len(draft_cell) <= 160, "an excerpt, not the whole text"
    first_step = records[0]["cod"].removeprefix("<draft>").split("\n")[0]
    assert " ".join(first_step.split()[:2]) in " ".join(draft_cell.split())
    shot(page, "04-cod-samples-preview")

    # The record fields, documented on the asset's overview.
    page.goto(f"{url}/assets/cod_samples?partition=easy")
    column = page.locator("tr", has=page.locator("td", has_text=re.compile("^agrees_with_cot$"))).first
    expect(column).to_contain_text("CoT sample's predicted_answer")  # descriptions render a moment later
    expect(page.get_by_text("cotgen/gemini: offline-emulator").first).to_be_visible()
    shot(page, "05-cod-samples-columns")

    # The report, materialized with one click, and its picture.
    launch_from_asset_page(page, url, "dataset_report")
    wait_for(lambda: latest(dev, "dataset_report", None), 120, message="dataset_report")
    page.goto(f"{url}/assets/dataset_report?view=events")
    assert int(metadata_value(page, "num_cod_samples")) == LIMIT
    report = page.locator("tr", has=page.locator("td", has_text=re.compile("^report$"))).first
    expect(report).to_contain_text(
        "CoD-to-CoT token ratio", timeout=30_000
    )  # inline: markdown renders after the row
    expect(report).to_contain_text("pass@k")
    shot(page, "06-dataset-report")
    picture_row = page.locator("tr", has=page.locator("td", has_text=re.compile("^picture$"))).first
    picture_row.get_by_text("[Show Markdown]").click()
    picture = page.locator("img[src^='data:image/png;base64,']")
    picture.wait_for()
    width = wait_for(
        lambda: picture.evaluate("img => img.complete && img.naturalWidth"),
        10,
        message="the report picture to load",
    )
    assert width >= 800, "the PNG decoded in the browser"
    shot(page, "07-dataset-report-picture")

    page.goto(f"{url}/runs")
    page.get_by_text("cotgen/submission_id").first.wait_for()
    shot(page, "08-runs-with-submission-tags")


def test_hf_dataset_shows_its_card(platform):
    """After easy reached CoD (above): one click exports it, and the events page shows the card."""
    from playwright.sync_api import expect

    dev, page, data = platform
    launch_from_asset_page(page, dev.url, "hf_dataset")
    wait_for(lambda: latest(dev, "hf_dataset", None), 120, message="hf_dataset")
    page.goto(f"{dev.url}/assets/hf_dataset?view=events")
    assert int(metadata_value(page, "num_rows_cot_easy")) == LIMIT
    card = page.locator("tr", has=page.locator("td", has_text=re.compile("^card$"))).first
    card.get_by_text("[Show Markdown]").click()  # a long markdown value opens in a dialog
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading", name=re.compile("^OFFLINE"))).to_be_visible(timeout=30_000)
    expect(dialog.get_by_role("heading", name="How to load")).to_be_visible()
    expect(dialog.locator("img[src^='data:image/png;base64,']")).to_be_visible()
    shot(page, "09-hf-dataset-card")
    assert (data / "export" / "data" / "cod" / "easy.parquet").exists()
