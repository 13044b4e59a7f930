"""Media fingerprints: what binds every cached vector to the very file it was made from.

A fingerprint is the 128-bit XXH3 hash of the file's whole content. Content, not path or time, because identical
bytes at another path (a copied or moved data folder, another machine's mount, a DDP rank) must hit the cache, and
other bytes under the same name (a re-download, a repaired file, a second dataset with the same ids) must miss it.
The whole content, not a sample of it: a sampled hash (the size and a few blocks) costs nothing, but misses a repair
that keeps the size (a bit-flip fixed, a metadata edit in the middle of a file). XXH3 because the hash guards
against accidents, not an adversary, and speed decides: over a mapped file it hashes 7.5 GB/s on one core here,
against 1.6 for SHA-256 (with the CPU's SHA instructions), 5.8 for BLAKE3 and 1.1 for BLAKE2b. Extraction reads
only the sampled seconds of a clip but the hash reads all of it, so the long clip is the costly case: a 60 s 1080p
clip cost 8% of decoding its 8 key frames with SHA-256, 1.4% with XXH3 (a 4K JPEG 0.6%, a 10 s clip 0.3%:
`just bench rows=fingerprint`).

A memo beside the cache (`media-fingerprints.parquet`) keeps each file's digest under what `stat` says of it
(device, inode, size, modification and change times in nanoseconds), so `train`, `sweep` and `submit` check
thousands of files by one `stat` each instead of reading them again. Any write to a file moves its change time,
which no user call can set back, so a stale memo entry is never taken for the file's digest; a copy or another
mount has another inode or device and is hashed afresh.

A weights file is identified by its SHA-256 instead (`file_sha256`, in a feature set's key and an encoder's
identity): the digest model hubs publish for their files, over a few files, where speed does not decide.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from common.atomic import atomic_path

MEMO = "media-fingerprints.parquet"
UNREADABLE = "unreadable"  # the fingerprint of a path that cannot be read (missing, a folder, no permission)
STAT_FIELDS = ("st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")
MEMO_SCHEMA = pa.schema([("path", pa.string()), *((name, pa.int64()) for name in STAT_FIELDS), ("digest", pa.string())])


def file_digest(path: str | os.PathLike) -> str:
    """The XXH3-128 of the file's content, in hex, hashed straight from the page cache (a mapped file: no copy into
    Python); xxhash releases the GIL while it hashes, so threads scale."""
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return xxhash.xxh3_128_hexdigest(b"")
        with mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ) as mapped:
            return xxhash.xxh3_128_hexdigest(mapped)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of the file's content, in hex: the identity of a weights file."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _stat_key(path: str) -> tuple[int, ...] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return tuple(getattr(status, name) for name in STAT_FIELDS)


def _read_memo(memo: Path) -> dict[tuple, str]:
    try:
        table = pq.read_table(memo, schema=MEMO_SCHEMA).to_pydict()
    except (OSError, pa.ArrowInvalid):  # absent, or not ours: it only saves work, so start afresh
        return {}
    keys = zip(table["path"], *(table[name] for name in STAT_FIELDS))
    return {(path, *stat): digest for (path, *stat), digest in zip(keys, table["digest"])}


def _write_memo(memo: Path, entries: dict[tuple, str]) -> None:
    """Writes the memo whole; where it cannot be (a read-only cache, a full disk) the digests are hashed again next
    time, and nothing else is lost."""
    rows = list(entries.items())
    columns = {"path": [key[0] for key, _ in rows], "digest": [digest for _, digest in rows]}
    columns.update({name: [key[1 + k] for key, _ in rows] for k, name in enumerate(STAT_FIELDS)})
    try:
        with atomic_path(memo) as tmp:
            pq.write_table(pa.Table.from_pydict(columns, schema=MEMO_SCHEMA), tmp)
    except OSError as error:
        logging.getLogger(__name__).warning("%s: fingerprints not memoised (%s)", memo, error)


def fingerprints(paths: Sequence[str], memo_dir: str | Path | None = None, threads: int = 4) -> list[str]:
    """Each path's content digest (`UNREADABLE` where it cannot be read), in order. With `memo_dir`, digests of files
    unchanged since they were last hashed come from its memo, and the new ones are added to it (written whole; two
    processes writing at once lose at most each other's new entries, which are then hashed again)."""
    memo = Path(memo_dir) / MEMO if memo_dir is not None else None
    known = _read_memo(memo) if memo is not None else {}
    keys = [(os.path.abspath(path), *stat) if (stat := _stat_key(path)) else None for path in paths]
    todo = sorted({key for key in keys if key is not None and key not in known})

    def digest(key: tuple) -> str:
        try:
            return file_digest(key[0])
        except OSError:
            return UNREADABLE

    with ThreadPoolExecutor(max(1, min(threads, len(todo)))) as pool:
        fresh = dict(zip(todo, pool.map(digest, todo)))
    found = {**known, **fresh}
    if memo is not None and fresh:
        live = {key for key in keys if key is not None}
        seen = {key[0] for key in live}  # a path asked for keeps only its current entry: the memo does not grow
        kept = {k: v for k, v in found.items() if v != UNREADABLE and (k in live or k[0] not in seen)}
        _write_memo(memo, kept)
    return [found[key] if key is not None else UNREADABLE for key in keys]


REFERENCE = "reference"  # the items table's column of full-reference pairs' references (features.pairs)


def item_fingerprints(items, memo_dir: str | Path | None = None) -> list[str]:
    """Each item's fingerprint, in order: its file's, or for a full-reference pair (a non-empty `reference`) the
    XXH3 of both members' digests, so a vector made from the pair is served only while both files are the ones it
    was made from. A member that cannot be read makes the pair UNREADABLE."""
    paths = items["path"].astype(str).tolist()
    if REFERENCE not in items:
        return fingerprints(paths, memo_dir)
    references = items[REFERENCE].fillna("").astype(str).tolist()
    digests = fingerprints(paths + [r for r in references if r], memo_dir)
    members = iter(digests[len(paths) :])
    pairs = []
    for digest, reference in zip(digests[: len(paths)], references):
        if not reference:
            pairs.append(digest)
            continue
        other = next(members)
        unreadable = UNREADABLE in (digest, other)
        pairs.append(UNREADABLE if unreadable else "pair-" + xxhash.xxh3_128_hexdigest(f"{digest}:{other}".encode()))
    return pairs


BOUND = "+"  # joins a file's fingerprint and the digest of the item texts a row was also made from


def bound_fingerprints(items, fingerprints: Sequence[str], columns: Sequence[str]) -> list[str]:
    """Each item's fingerprint bound to its texts in `columns` as well (an LMM's prompt holding an AIGV prompt or a
    video's title): `<file's>+<XXH3-64 of the texts>`, so a row made from one text is not served for another. The
    file's own where `columns` is empty, and an unreadable file stays UNREADABLE."""
    if not columns:
        return list(fingerprints)
    texts = zip(*(items[column].fillna("").astype(str) for column in columns))
    digests = (xxhash.xxh3_64_hexdigest(repr(t).encode()) for t in texts)
    return [f if f == UNREADABLE else f"{f}{BOUND}{digest}" for f, digest in zip(fingerprints, digests)]


def file_part(fingerprint: str) -> str:
    """The file's fingerprint within a bound one (the fingerprint itself where it is not bound)."""
    return fingerprint.partition(BOUND)[0]
