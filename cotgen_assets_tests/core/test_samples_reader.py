"""The one reader of samples files keeps 8-byte digests per id, not the ids (on disk past a size):
still exact. A repeat counts once, another record under an id read before is damage naming both
lines, at any size and even when two ids' digests collide."""

import pytest

from cotgen_assets.core import storage
from cotgen_assets.core.stages import GENERATION
from cotgen_assets.core.storage import DamagedFile, samples_lines
from cotgen_assets_tests.harness.samples import cot_record, write_jsonl

RECORDS = [cot_record(f"easy-{row}") for row in range(5000)]  # past the digest table's first sizes


@pytest.fixture(autouse=True, params=["in memory", "on disk"])
def digests(request, monkeypatch):
    """Every test twice: the digests in memory, and spilled to disk (as past 65,536 ids) after 1,000."""
    if request.param == "on disk":
        monkeypatch.setattr(storage, "DIGESTS_IN_MEMORY", 1_000)


def ids_read(path) -> tuple[list[str], list[str]]:
    repeated = []
    ids = [record["id"] for _, record in samples_lines(GENERATION, path, repeated=repeated.append)]
    return ids, repeated


def test_repeated_lines_count_once_and_are_told(tmp_path):
    path = write_jsonl(tmp_path / "cot_easy.jsonl", RECORDS + RECORDS[10:12] + RECORDS[4000:4001])
    ids, repeated = ids_read(path)
    assert ids == [record["id"] for record in RECORDS]
    assert repeated == ["easy-10", "easy-11", "easy-4000"]


def test_another_record_under_an_id_read_before_names_both_lines(tmp_path):
    path = write_jsonl(tmp_path / "cot_easy.jsonl", RECORDS + [cot_record("easy-4321", correct=False)])
    with pytest.raises(
        DamagedFile, match="line 5001 holds another record of id 'easy-4321' sample 0, already on line 4322"
    ):
        ids_read(path)


def test_ids_whose_digests_collide_are_told_apart(tmp_path, monkeypatch):
    line_digest = storage._digest
    monkeypatch.setattr(storage, "_digest", lambda data: 7 if isinstance(data, str) else line_digest(data))
    records = RECORDS[:50]
    path = write_jsonl(tmp_path / "cot_easy.jsonl", records + [records[20]])
    ids, repeated = ids_read(path)
    assert ids == [record["id"] for record in records]
    assert repeated == ["easy-20"]

    write_jsonl(path, records + [cot_record("easy-30", correct=False)])
    with pytest.raises(
        DamagedFile, match="line 51 holds another record of id 'easy-30' sample 0, already on line 31"
    ):
        ids_read(path)
