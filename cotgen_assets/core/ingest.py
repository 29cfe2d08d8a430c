"""Ingestion: batch results turned into graded records, merged into the samples JSONL files.

Ingestion streams: results are read line by line, joined by key with their context through an
on-disk index (`RequestIndex`), graded in chunks, and written to a temporary file; the merge
then streams the old samples file once and puts the result in its place atomically (a rename
beside it locally, one upload on an object store). The index, and on an object store local
copies of the contexts and results, live in a local scratch folder made for each ingestion.
Memory holds one grading chunk and one status byte per request, whatever the size of a shard or
of the samples file (see bench/ingest.py).
"""

import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from cotgen_assets.core.batch_output import REQUEST_MISMATCH, iter_result_lines
from cotgen_assets.core.grading import grade_many
from cotgen_assets.core.model_io import ANSWERED_ENDS, SUCCEEDED, Usage, wire_for
from cotgen_assets.core.online_round import is_online, tier_of
from cotgen_assets.core.pricing import cost_usd, load_prices, online_cost_usd
from cotgen_assets.core.records import made_by, usage_dict
from cotgen_assets.core.sample_keys import request_key, sample_key
from cotgen_assets.core.stages import Stage
from cotgen_assets.core.storage import (
    MAX_LINES_NAMED,
    atomic_write,
    is_local,
    local_copy,
    make_parents,
    read_jsonl,
    remove_tree,
    samples_lines,
    scratch_dir,
    writing,
)
from cotgen_assets.core.submissions import NOT_RUN, Submission

GRADE_CHUNK = 1000
IO_BUFFER = 1 << 20  # records are a few KB: an 8 KB buffer meant about one system call per record
MISSING = "missing"  # a request with no line in the results file
ECHO_DIFFERS = (
    "the request this answer line carries is not the request sent under this key (another question): "
    "the answer is not used"
)
BAD_DRAFT = "bad_draft"  # a summarization answer that is not the draft JSON asked for


@dataclass
class IngestStats:
    """What one ingestion saw; every requested key ends in exactly one status."""

    statuses: Counter = field(default_factory=Counter)
    usage: Usage = Usage()
    cost_usd: float = 0.0
    num_new: int = 0
    unknown_keys: int = 0  # lines without a key, or with one never asked
    duplicate_keys: int = 0  # lines for a key answered before in the file (the first one counts)
    unused_cost_usd: float = 0.0  # what the answers on those lines cost; they stay in the results file
    repeated_lines: int = 0  # lines of the old samples file that repeated a line word for word
    repeated_ids: list[str] = field(default_factory=list)  # their ids, the first MAX_LINES_NAMED

    def repeated_line(self, sample_id: str) -> None:
        self.repeated_lines += 1
        if len(self.repeated_ids) < MAX_LINES_NAMED and sample_id not in self.repeated_ids:
            self.repeated_ids.append(sample_id)

    @property
    def num_failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != "ok")


class MissingResults(ValueError):
    """A results file that was downloaded (or must have been) is gone: ingesting without it
    would wipe its outcomes, costs and tries."""


def refuse_missing_results(submission: Submission) -> None:
    """Refuse to ingest when a shard's results file is missing although its job succeeded, or an
    earlier ingestion of this submission read answers from it."""
    answered_before = {
        outcome["batch"]
        for outcome in read_jsonl(submission.folder / "outcomes.jsonl", ("batch", "status"))
        if outcome["status"] != NOT_RUN
    }
    states = dict(zip(submission.shards, submission.job_states))
    ends = {shard: wire_for(submission.backend).job_end(state) for shard, state in states.items()}
    for shard, batch in zip(submission.shards, submission.batch_names):
        path = submission.results_path(shard)
        if not path.exists() and (ends.get(shard) in ANSWERED_ENDS or batch in answered_before):
            raise MissingResults(
                f"the results file {path} of batch {batch} ({states.get(shard) or 'state unknown'}) is "
                "missing, so this submission was not ingested again (its outcomes, costs and tries are "
                f"untouched). Download it again: materialize {submission.stage.results_asset} (the API keeps "
                "result files for 48 hours after the job ends); if the API no longer has it, its answers "
                "are lost."
            )


def _lines(handle) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of each non-blank line of a file."""
    offset = 0
    for raw in handle:
        if raw.strip():
            yield offset, raw
        offset += len(raw)


class RequestIndex:
    """Every requested key of a submission's ingested shards -> where its context line and its
    request line are.

    Kept in a SQLite file in a local `scratch` folder (with the context and request files, copied
    there when the data is in a bucket: `os.pread` needs a local file), so that joining results
    to contexts by key takes the same memory for ten requests or ten million, in any order of the
    results file. Built anew by each ingestion. In memory: one status byte per request (`UNSEEN`,
    `FAILED`, `NEW`).
    """

    UNSEEN, FAILED, NEW = 0, 1, 2

    def __init__(self, submission: Submission, shards: list[str], scratch: Path):
        self.path = scratch / "requests.sqlite"
        self.path.unlink(missing_ok=True)
        self.db = sqlite3.connect(self.path)
        self.db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-16000;"
            "CREATE TABLE request (n INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE,"
            " shard INTEGER, offset INTEGER, size INTEGER, request_offset INTEGER, request_size INTEGER);"
        )
        self.files, self.request_files, self.first, n = [], [], [], 0
        insert = "INSERT OR IGNORE INTO request VALUES (?, ?, ?, ?, ?, ?, ?)"
        for number, shard in enumerate(shards):
            self.files.append(open(local_copy(submission.context_path(shard), scratch), "rb"))
            self.request_files.append(open(local_copy(submission.requests_path(shard), scratch), "rb"))
            self.first.append(n)
            rows = []
            # a shard's request and context files are written in step: line i of one is line i of the other
            for (offset, raw), request in zip(_lines(self.files[-1]), _lines(self.request_files[-1])):
                key = request_key(orjson.loads(raw))  # the context's (id, sample) is its request's key
                rows.append((n, key, number, offset, len(raw), request[0], len(request[1])))
                n += 1
                if len(rows) >= 10_000:
                    self.db.executemany(insert, rows)
                    rows.clear()
            self.db.executemany(insert, rows)
        self.first.append(n)
        self.status = bytearray(n)

    def find(self, key: str) -> tuple[int, ...] | None:
        """(request number, shard number, then where its context and request lines are) of a key,
        or None if never asked."""
        return self.db.execute(
            "SELECT n, shard, offset, size, request_offset, request_size FROM request WHERE key = ?", (key,)
        ).fetchone()

    def context(self, found: tuple[int, ...]) -> dict:
        _, shard, offset, size, _, _ = found
        return orjson.loads(os.pread(self.files[shard].fileno(), size, offset))

    def sent_line(self, found: tuple[int, ...]) -> bytes:
        """The input line sent under the key (read only for a line that echoes its request)."""
        _, shard, _, _, offset, size = found
        return os.pread(self.request_files[shard].fileno(), size, offset)

    def unseen(self, shard_number: int):
        """Keys of one shard that no results line answered."""
        n, end = self.first[shard_number], self.first[shard_number + 1]
        while (n := self.status.find(b"\0", n, end)) >= 0:
            row = self.db.execute("SELECT key FROM request WHERE n = ?", (n,)).fetchone()
            if row:
                yield row[0]
            n += 1

    def is_new(self, key: str) -> bool:
        found = self.find(key)
        return found is not None and self.status[found[0]] == self.NEW

    def close(self) -> None:
        for handle in self.files + self.request_files:
            handle.close()
        self.db.close()
        self.path.unlink(missing_ok=True)


def ingest_submission(
    submission: Submission,
    samples_file: Path,
    observe: Callable[[dict], None] = lambda record: None,
    lock: AbstractContextManager | None = None,
) -> IngestStats:
    """Turn a submission's downloaded results into records merged into `samples_file`.

    Shards without a results file (their job failed) are skipped: their problems get no
    outcome, so the next `fill` asks for them again without counting a try. A results file
    that should be there and is not is refused (MissingResults), so history is never wiped. Writes the
    submission's `outcomes.jsonl` and `summary.json`. Safe to repeat: the same records
    replace themselves and the outcomes are rewritten, not appended.
    `observe` sees every record of the merged file once (for file-wide statistics): the new
    ones as they are written, then the old ones that stay. One ingestion per samples file at
    a time: a second one waits for `lock`, then merges onto the first's result.

    `lock` must exclude every other ingestion into `samples_file`: the Dagster assets pass one
    held in the Dagster storage (`defs/locks.samples_lock`), shared by every process of a deployment.
    Without one, `machine_lock(samples_file)`: enough for plain callers on one machine (bench,
    unit tests), not for two machines sharing a bucket.
    """
    refuse_missing_results(submission)
    with lock if lock is not None else machine_lock(samples_file), writing(samples_file):
        return _ingest(submission, samples_file, observe)


@contextmanager
def machine_lock(samples_file: Path):
    """Two merges at once would each start from the old file, and the last write would drop the
    other's new records. This one holds between processes of one machine only: an `fcntl` lock
    on a file in the local temporary folder named after `samples_file` (local or a URL)."""
    name = hashlib.sha256(str(samples_file).encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / "cotgen-locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{samples_file.name}-{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the handle closes, or the process dies
        yield


def _ingest(submission: Submission, samples_file: Path, observe: Callable[[dict], None]) -> IngestStats:
    stats = IngestStats()
    prices = load_prices(backend=submission.backend)  # once: per line it cost more than the parse
    answered = [  # (shard number among those answered, shard, batch)
        (number, shard, batch)
        for number, (shard, batch) in enumerate(
            (s, b)
            for s, b in zip(submission.shards, submission.batch_names)
            if submission.results_path(s).exists()
        )
    ]
    make_parents(samples_file)
    _remove_leftovers(submission, samples_file)
    scratch = scratch_dir("cotgen-ingest-")
    index = RequestIndex(submission, [shard for _, shard, _ in answered], scratch)
    # Beside the samples file when local (the merge may rename it in place), else in the scratch.
    new_path = (
        samples_file.with_name(f".{samples_file.name}.new-{os.getpid()}")
        if is_local(samples_file)
        else scratch / f"{samples_file.name}.new"
    )
    try:
        with (
            atomic_write(submission.folder / "outcomes.jsonl") as outcomes,
            open(new_path, "wb", buffering=IO_BUFFER) as new,
        ):
            output = _Output(outcomes, new, stats, observe)
            for number, shard, batch in answered:
                results = local_copy(submission.results_path(shard), scratch)
                _ingest_shard(submission, number, shard, batch, results, index, output, prices)
        merge_samples(submission.stage, samples_file, new_path, index.is_new, observe, stats.repeated_line)
    finally:
        index.close()
        new_path.unlink(missing_ok=True)
        remove_tree(scratch)
    _write_summary(submission, stats)
    return stats


def _remove_leftovers(submission: Submission, samples_file: Path) -> None:
    """What a killed ingestion left (it held the lock we hold now): several GB at a million lines."""
    if is_local(samples_file):
        for stale in [
            *samples_file.parent.glob(f".{samples_file.name}.new-*"),
            *submission.folder.glob(".requests-*.sqlite"),  # where the index was kept before
        ]:
            stale.unlink(missing_ok=True)


class _Output:
    """Where one ingestion writes: an outcome line per request, and its new records once graded."""

    def __init__(self, outcomes, new, stats: IngestStats, observe: Callable[[dict], None]):
        self.outcomes, self.new, self.stats, self.observe = outcomes, new, stats, observe
        self.pending: list[tuple[dict, list]] = []  # records awaiting their grades

    def outcome(self, key: str, batch: str, status: str, reason: str | None, cost: float) -> None:
        self.stats.statuses[status] += 1
        line = {"id": key, "batch": batch, "status": status, "reason": reason, "cost_usd": cost}
        self.outcomes.write(orjson.dumps(line) + b"\n")

    def flush(self) -> None:
        """Grade the pending records in one go, then write and observe them."""
        pairs = [(pred, ref) for _, gradings in self.pending for _, pred, ref in gradings]
        verdicts = iter(grade_many(pairs))
        for record, gradings in self.pending:
            for name, _, _ in gradings:
                record[name] = next(verdicts)
            self.new.write(orjson.dumps(record) + b"\n")
            self.observe(record)
        self.pending.clear()


def _ingest_shard(
    submission: Submission,
    number: int,
    shard: str,
    batch: str,
    results: Path,
    index: RequestIndex,
    output: _Output,
    prices,
) -> None:
    """One outcome per line of a shard's results (and a record for a good one), joined to its
    request by key; then an outcome for each request the results did not answer."""
    stats = output.stats
    wire = wire_for(submission.backend)
    for line in iter_result_lines(results, wire, require_thoughts=submission.stage.needs_thoughts):
        found = index.find(line.key) if line.key is not None else None
        cost = (
            online_cost_usd(submission.model, line.usage, tier_of(batch), prices=prices)
            if is_online(batch)
            else cost_usd(submission.model, line.usage, batch=True, prices=prices)
        )
        if found is None or found[1] != number:
            stats.unknown_keys += 1  # unparsable without a key, or a key we never sent
            stats.unused_cost_usd += cost
            continue
        n = found[0]
        if index.status[n] != index.UNSEEN:
            stats.duplicate_keys += 1  # the first answer for a key counts
            stats.unused_cost_usd += cost
            continue
        index.status[n] = index.FAILED
        stats.usage += line.usage
        stats.cost_usd += cost
        if not line.ok:
            output.outcome(line.key, batch, line.status, line.reason, cost)
            continue
        if line.request_digest is not None and line.request_digest != wire.sent_digest(
            index.sent_line(found)
        ):
            output.outcome(line.key, batch, REQUEST_MISMATCH, ECHO_DIFFERS, cost)
            continue
        try:
            built = submission.stage.build(index.context(found), line, made_by(submission, batch, line, cost))
        except ValueError as error:
            output.outcome(line.key, batch, BAD_DRAFT, str(error), cost)
            continue
        output.pending.append(built)
        output.outcome(line.key, batch, "ok", None, cost)
        index.status[n] = index.NEW
        stats.num_new += 1
        if len(output.pending) >= GRADE_CHUNK:
            output.flush()
    output.flush()
    state = dict(zip(submission.shards, submission.job_states)).get(shard)
    if state is None or wire.job_end(state) == SUCCEEDED:
        status, reason = MISSING, "no line for this request in the results file"
    else:  # cancelled or partially succeeded: the rest was never run (nor paid), so no try
        status, reason = NOT_RUN, f"its batch job ended {state} before answering it"
    for key in index.unseen(number):
        output.outcome(key, batch, status, reason, 0.0)


def _write_summary(submission: Submission, stats: IngestStats) -> None:
    with atomic_write(submission.folder / "summary.json", "w") as handle:
        json.dump(
            {
                "batch_names": submission.batch_names,  # which jobs' answers these are
                "cost_usd": stats.cost_usd,
                "statuses": dict(stats.statuses),
                "num_new": stats.num_new,
                **usage_dict(stats.usage),
            },
            handle,
        )


def merge_samples(
    stage: Stage,
    samples_file: Path,
    new_path: Path,
    is_new: Callable[[str], bool],
    observe: Callable[[dict], None],
    repeated: Callable[[str], None] = lambda sample_id: None,
) -> None:
    """The old records not replaced by a new one (observed here), then the new ones (observed
    when written); atomically in place of `samples_file`. `new_path` is a local file, beside
    `samples_file` when that is local. The old file is read as every samples file is
    (`storage.samples_lines`): a damaged one is refused, a repeated line is written once (and its
    id told to `repeated`)."""
    if is_local(samples_file) and not samples_file.exists():
        with open(new_path, "rb+") as new:
            os.fsync(new.fileno())
        os.replace(new_path, samples_file)  # nothing to merge with: no copy
        return
    with atomic_write(samples_file) as out:
        for raw, record in samples_lines(
            stage, samples_file, skip=lambda key: is_new(sample_key(*key)), repeated=repeated
        ):
            out.write(raw if raw.endswith(b"\n") else raw + b"\n")
            observe(record)
        with open(new_path, "rb") as new:
            shutil.copyfileobj(new, out, IO_BUFFER)
