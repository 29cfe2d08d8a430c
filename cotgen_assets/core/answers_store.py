"""Answers to synchronous calls, saved one file each as they arrive: a run that dies half-way keeps
every answer it paid for, on a local disk or an object store alike (no appends, which a bucket lacks)."""

import hashlib
from collections.abc import Iterator

from cotgen_assets.core.storage import atomic_write


class AnswerStore:
    """Output lines by key under `folder` (`<hash of key>.jsonl`: a key may hold any character)."""

    def __init__(self, folder):
        self.folder = folder

    def _path(self, key: str):
        return self.folder / (hashlib.blake2b(key.encode(), digest_size=16).hexdigest() + ".jsonl")

    def save(self, key: str, output_line: bytes) -> None:
        with atomic_write(self._path(key)) as handle:
            handle.write(output_line.rstrip(b"\n") + b"\n")

    def has(self, key: str) -> bool:
        return self._path(key).exists()

    def lines(self) -> Iterator[bytes]:
        """Every saved output line (in no particular order)."""
        if self.folder.exists():
            for path in sorted(self.folder.glob("*.jsonl")):
                yield path.read_bytes().rstrip(b"\n")
