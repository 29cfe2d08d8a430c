"""Files a user edits (the price table, the scenarios file) refused with one line naming the file and
the place at fault, where a user meets them: `dagster asset materialize`, as the README shows it."""

import pytest

from cotgen_assets.backends.resource import GeminiBatchResource
from cotgen_assets.core.pricing import default_prices_path
from cotgen_assets.core.scenarios import DEFAULT_SCENARIOS_FILE
from cotgen_assets_tests.harness.cli import dagster_materialize


@pytest.mark.parametrize("price", ["nan", "-5"])
def test_a_price_that_is_not_a_price_is_refused_and_nothing_is_submitted(
    tmp_path, emulator, sources, data_dir, price
):
    sources("easy")
    prices = tmp_path / "prices.csv"
    lines = default_prices_path().read_text().splitlines(keepends=True)
    header = lines[0].split(",")
    row = lines[1].split(",")  # gemini-3.1-pro-preview on the Developer API
    row[header.index("batch_output_usd_per_1m")] = price
    prices.write_text(lines[0] + ",".join(row) + "".join(lines[2:]))

    run = dagster_materialize(
        tmp_path / "home",
        "generation_batch",
        "easy",
        {"limit": 5, "max_cost_usd": 1},
        COTGEN_PRICES_FILE=str(prices),
        COTGEN_GEMINI_BASE_URL=emulator.base_url,
        GEMINI_API_KEY="",
    )
    assert run.returncode != 0, run.stdout[-2000:]
    output = run.stdout + run.stderr
    assert "projected cost $nan" not in output
    assert (
        f"price file {prices}, line 2 (gemini-3.1-pro-preview): column 'batch_output_usd_per_1m' is "
        f"{price!r}, which is no price: write a number of at least 0" in output
    ), output[-3000:]
    assert list(GeminiBatchResource(base_url=emulator.base_url).list_batches()) == [], "nothing submitted"
    assert not (data_dir / "easy" / "submissions").exists(), "nothing written"


def scenarios_with(tmp_path, text: str) -> dict:
    path = tmp_path / "scenarios.yaml"
    path.write_text(text)
    return {"COTGEN_SCENARIOS_FILE": str(path)}


def test_an_unknown_top_level_key_stops_the_code_location_naming_it(tmp_path):
    """`benchmark:` for `benchmarks:` would leave its benchmarks silently unchecked."""
    text = DEFAULT_SCENARIOS_FILE.read_text().replace("\nbenchmarks:", "\nbenchmark:")
    env = scenarios_with(tmp_path, text)
    run = dagster_materialize(
        tmp_path / "home", "source_problems", "easy", COTGEN_DATA_DIR=str(tmp_path / "d"), **env
    )
    assert run.returncode != 0
    assert (
        f"scenarios file {env['COTGEN_SCENARIOS_FILE']} has unknown top-level key(s) ['benchmark']; "
        "known keys: ['benchmarks', 'scenarios']" in run.stderr
    ), run.stderr[-3000:]
    assert not (tmp_path / "d").exists(), "nothing written"


def alias_bomb(levels: int = 7) -> str:
    """A scenarios file under 1 KB whose aliases expand to 9**7 strings when read (the probe's had 9
    levels; 7 keep the old code's error to some 30 MB)."""
    lines = [
        "scenarios:",
        "  easy:",
        "    dataset: gsm8k",
        "    split: train",
        "    question_column: question",
    ]
    lines += ["    solution_column: answer", "    answer_format: gsm8k", "    anchors:"]
    lines.append('      - &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]')
    for level in range(1, levels):
        lines.append(f"      - &a{level} [" + ",".join([f"*a{level - 1}"] * 9) + "]")
    lines.append(f"    config: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_in_one_short_line(tmp_path):
    env = scenarios_with(tmp_path, alias_bomb())
    assert len(alias_bomb()) < 1200
    run = dagster_materialize(
        tmp_path / "home", "source_problems", "easy", COTGEN_DATA_DIR=str(tmp_path / "d"), **env
    )
    assert run.returncode != 0
    assert len(run.stdout) + len(run.stderr) < 50_000, f"{len(run.stderr):,} characters of error"
    assert (
        f"scenarios file {env['COTGEN_SCENARIOS_FILE']}: line 10 uses the YAML alias *a0; aliases (and "
        "nesting deeper than 10 levels) are not allowed: write each value out" in run.stderr
    ), run.stderr[-3000:]
