"""What the export and report tests check against: the ids an export must hold, a dataset loaded as
a trainer would load it, a markdown table's rows."""

from pathlib import Path

import pyarrow.parquet as pq

from cotgen_assets_tests.harness.pipeline import read_jsonl

FAKE_TOKEN = "hf_FAKEtoken0123456789abcdefSECRET"


def expected_ids(data: Path, scenario: str, include_incorrect: bool = False) -> list[str]:
    """The ids the export must hold, from the files and the rules alone."""
    cot = {r["id"]: r for r in read_jsonl(data / f"cot_{scenario}.jsonl")}
    cod = {r["id"]: r for r in read_jsonl(data / f"cod_{scenario}.jsonl")}
    clean = set(pq.read_table(data / scenario / "source_problems.parquet")["problem_id"].to_pylist())
    ids = [
        i
        for i in cot
        if i in clean
        and i in cod
        and (include_incorrect or (cot[i]["correct"] and cod[i]["correct"] and cod[i]["agrees_with_cot"]))
    ]
    return sorted(ids, key=lambda i: int(i.rsplit("-", 1)[1]))


def load(folder: Path, config: str, split: str, cache: Path):
    import datasets

    return datasets.load_dataset(str(folder), config, split=split, cache_dir=str(cache))


def table_rows(markdown: str) -> dict[str, list[str]]:
    """Label -> cells of a markdown table; the header row under the key "header"."""
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines()]
    return {"header": lines[0][1:]} | {cells[0]: cells[1:] for cells in lines[2:]}
