"""A memo of vectors under content digests: what load-time features (a text encoder's, a file's container facts)
keep so that a run, a sweep trial or a submit computes each of them once.

A key is the digest of exactly what the vector was made from (a text's UTF-8 bytes, a media file's fingerprint), and
a memo file belongs to one encoder identity, so an entry can only be served for the very input it was made from:
an edited prompt or a re-encoded file has another key and is computed afresh. The memo is written whole and
atomically; where it cannot be written, the vectors are computed again next time and nothing else is lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common.atomic import atomic_path


def memo_path(root: str | Path, kind: str, identity: dict[str, Any]) -> Path:
    """`<root>/<kind>-memo/<digest of the identity>.parquet`: one file per encoder identity."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return Path(root) / f"{kind}-memo" / f"{digest}.parquet"


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _read_memo(path: Path, width: int) -> dict[str, np.ndarray]:
    try:
        table = pq.read_table(path)
        keys = table.column("key").to_pylist()
        vectors = np.asarray(table.column("vector").combine_chunks().flatten(), dtype=np.float32)
    except (OSError, KeyError, pa.ArrowInvalid):  # absent, or not ours: it only saves work
        return {}
    if vectors.size != len(keys) * width:
        return {}
    return dict(zip(keys, vectors.reshape(len(keys), width)))


def _write_memo(path: Path, entries: dict[str, np.ndarray], width: int) -> None:
    keys = list(entries)
    flat = np.stack([entries[k] for k in keys]).astype(np.float32).ravel() if keys else np.zeros(0, np.float32)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(flat), width)
    try:
        with atomic_path(path) as tmp:
            pq.write_table(pa.table({"key": pa.array(keys, pa.string()), "vector": vectors}), tmp)
    except OSError as error:
        logging.getLogger(__name__).warning("%s: vectors not memoised (%s)", path, error)


def memoised(
    path: Path | None, keys: Sequence[str], width: int, compute: Callable[[list[int]], np.ndarray]
) -> np.ndarray:
    """[len(keys), width] float32: each key's vector from the memo at `path`, the others from `compute(positions)`
    (called once, with the first position of each missing key; it returns their rows in that order) and added to
    the memo. Without a path nothing is kept."""
    known = _read_memo(path, width) if path is not None else {}
    first: dict[str, int] = {}
    for position, key in enumerate(keys):
        if key not in known:
            first.setdefault(key, position)
    if first:
        rows = np.asarray(compute(list(first.values())), dtype=np.float32).reshape(len(first), width)
        known.update(zip(first, rows))
        if path is not None:
            _write_memo(path, known, width)
    out = np.zeros((len(keys), width), dtype=np.float32)
    for position, key in enumerate(keys):
        out[position] = known[key]
    return out
