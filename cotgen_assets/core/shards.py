"""Writing a submission's requests into shards, the files its batch jobs read."""

import hashlib
import sys
from collections.abc import Iterable
from contextlib import ExitStack

import orjson

from cotgen_assets.core.storage import atomic_write
from cotgen_assets.core.submissions import CONTENT_HASH_CHARS, Submission

MAX_SHARD_BYTES = 1_000_000_000  # input files: up to 1 GB on Vertex AI, 2 GB on the Developer Batch API


def write_shards(
    submission: Submission,
    items: Iterable[tuple[bytes, dict]],
    max_requests_per_shard: int,
    max_bytes_per_shard: int,
    first: int = 0,
) -> None:
    """Write request lines and their contexts into shards no larger than the limits.

    `items` yields (request line, context); each context has the request's `id` and `sample`
    (its key, `sample_keys.request_key`). With `first`, the submission's first shards are kept and
    these are written after them.
    """
    kept_names = submission.display_names[:first]
    submission.shards, requests, contexts, hashes = submission.shards[:first], None, None, []
    count = size = 0
    shard_files = ExitStack()  # each shard's two files, written atomically (whole, or not at all)
    try:
        for line, context in items:
            if requests is None or count >= max_requests_per_shard or size + len(line) > max_bytes_per_shard:
                shard_files.close()
                shard = f"shard-{len(submission.shards):03d}"
                submission.shards.append(shard)
                hashes.append(hashlib.sha256())
                requests = shard_files.enter_context(atomic_write(submission.requests_path(shard)))
                contexts = shard_files.enter_context(atomic_write(submission.context_path(shard)))
                count = size = 0
            requests.write(line)
            hashes[-1].update(line)
            contexts.write(orjson.dumps(context) + b"\n")
            count += 1
            size += len(line)
    except BaseException:
        shard_files.__exit__(*sys.exc_info())  # the shard being written is thrown away
        raise
    shard_files.close()
    # A job found by this name later is provably for these very bytes.
    submission.display_names = kept_names + [
        submission.job_name_prefix(shard) + digest.hexdigest()[:CONTENT_HASH_CHARS]
        for shard, digest in zip(submission.shards[first:], hashes)
    ]
