"""Answers of synchronous calls saved one file each: whatever a key holds, its file stays in the folder."""

from cotgen_assets.core.answers_store import AnswerStore

HOSTILE_KEYS = ["../escaped", "../../etc/passwd", "/tmp/absolute", "a\0b", "a/b", "..", ".", "", "easy-1#1"]


def test_a_key_with_slashes_dots_or_a_nul_is_saved_inside_the_folder_and_read_back(tmp_path):
    folder = tmp_path / "deep" / "answers"
    store = AnswerStore(folder)
    for n, key in enumerate(HOSTILE_KEYS):
        store.save(key, b'{"n": %d}\n' % n)

    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert {path.parent for path in written} == {folder}, "every file sits in the folder itself"
    assert len(written) == len(HOSTILE_KEYS), "one file per key, none overwriting another"
    assert all(store.has(key) for key in HOSTILE_KEYS)
    assert not store.has("never saved")
    assert sorted(store.lines()) == sorted(b'{"n": %d}' % n for n in range(len(HOSTILE_KEYS)))


def test_saving_a_key_again_replaces_its_answer(tmp_path):
    """A call asked again after a crash keeps one answer, not two."""
    store = AnswerStore(tmp_path)
    store.save("easy-1", b'{"old": 1}')
    store.save("easy-1", b'{"new": 1}\n')
    assert list(store.lines()) == [b'{"new": 1}']
