"""Near-duplicate media: a perceptual hash of each file's key frames, and the clusters of files that look alike.

Identical bytes under two ids are found by the files' content fingerprints (features.fingerprint); a re-encode, a
resized or recompressed copy has other bytes but the same picture. For those, each of a few key frames (an image is
one) is reduced to a perceptual hash as pHash makes one, with more bits: its luma averaged down to 48x48, the 2-D
DCT, and one bit per coefficient of the lowest quarter of frequencies on each axis (12x12, 144 bits), set where it
exceeds their median. Compression, scaling and mild filtering move the high frequencies and leave those signs;
another scene flips about half of them. Two files are near-duplicates where the median over their matched key frames
(same index, both with a hash) of the Hamming distance is at most NEAR bits: a median, so one frame that happens to
match (a black intro) or not (a re-encode's glitch) decides nothing. Clusters are the connected components of that
graph. Why 144 bits rather than pHash's 64: with 64, the demo sets' templated faces (talking_head) and smooth
gradients (fiqa) came as near to other scenes (6 to 8 bits) as a small clip's re-encode at CRF 40 to its original
(up to 10); NEAR says what 144 measured.

A frame of one flat colour has no low frequencies to order, so its bits are noise: it gets no hash.

Hashes are memoised under each file's content fingerprint and the decoder that read it (MEMO, beside the caches),
so a train or a check after the first decodes nothing again, and a file whose bytes changed is hashed afresh: a
hash is served only for the very file it was made from.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from common.atomic import atomic_path
from features.decode import DECODERS, FrameSampling, MediaError
from features.fingerprint import UNREADABLE, fingerprints

KEY_FRAMES = FrameSampling(frames=4, fps=1.0, phase=0.5)  # mid-second key frames of the first four seconds
SIDE, LOW = 48, 12  # luma averaged to SIDE x SIDE; the LOW x LOW lowest DCT frequencies are the bits
BITS = LOW * LOW
# At most this many of 144 bits apart (median over key frames): near-duplicates. Re-encodes at another CRF or JPEG
# quality and copies at 1/2 to 3/4 size measured 0 to 9 bits from their originals, the synthetic generators'
# processed versions (blur, noise, CRF 51 among them) at most 11; distinct scenes at least 22, the nearest being two
# drawn talking heads of one template (tests/test_duplicates.py, and the demo sets). 15 sits between.
NEAR = 15
FLAT = 0.005  # a frame whose luma spreads less than this share of its mean (black, one colour) has no hash
METHOD = f"phash{BITS}-dct{SIDE}-median/v1"  # in the memo's key: another hash is another entry
MEMO = "media-phashes.parquet"
MEMO_SCHEMA = pa.schema([("digest", pa.string()), ("method", pa.string()), ("hashes", pa.list_(pa.binary()))])
_COSINES = np.cos(np.pi * np.outer(np.arange(LOW), 2 * np.arange(SIDE) + 1) / (2 * SIDE)).astype(np.float32)


class Hashes(NamedTuple):
    """Key-frame hashes of N files: `bits` [N, K, BITS] and `valid` [N, K], false where the file has no such key frame,
    a flat one, or cannot be decoded."""

    bits: np.ndarray
    valid: np.ndarray


def thumbnails(frames: np.ndarray) -> np.ndarray:
    """[T, H, W, 3] frames (any depth) -> [T, SIDE, SIDE] float32 luma, each pixel the mean of its area (a frame
    smaller than that is repeated instead)."""
    luma = torch.from_numpy(np.asarray(frames, np.float32)) @ torch.tensor([0.299, 0.587, 0.114])
    return torch.nn.functional.adaptive_avg_pool2d(luma[:, None], SIDE)[:, 0].numpy()


def phashes(thumbs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[F, SIDE, SIDE] thumbnails -> each one's bits [F, BITS] and whether it has a hash (it is not flat)."""
    low = (_COSINES @ thumbs @ _COSINES.T).reshape(len(thumbs), -1)  # the separable DCT-II, lowest frequencies only
    bits = low > np.median(low, axis=1, keepdims=True)
    return bits, thumbs.std(axis=(1, 2)) > FLAT * thumbs.mean(axis=(1, 2))


def _thumbnails_of(path: str, decoder: str) -> np.ndarray | None:
    try:
        return thumbnails(DECODERS.get(decoder).read(path, KEY_FRAMES, 1).frames)
    except MediaError:
        return None


def _read_memo(memo: Path) -> dict[tuple[str, str], list]:
    try:
        table = pq.read_table(memo, schema=MEMO_SCHEMA).to_pydict()
    except (OSError, pa.ArrowException):  # absent, or not ours (another layout): it only saves work
        return {}
    return {(d, m): h for d, m, h in zip(table["digest"], table["method"], table["hashes"])}


def _write_memo(memo: Path, entries: dict[tuple[str, str], list]) -> None:
    columns = {"digest": [d for d, _ in entries], "method": [m for _, m in entries], "hashes": list(entries.values())}
    try:
        with atomic_path(memo) as tmp:
            pq.write_table(pa.Table.from_pydict(columns, schema=MEMO_SCHEMA), tmp)
    except OSError as error:
        logging.getLogger(__name__).warning("%s: key-frame hashes not memoised (%s)", memo, error)


def media_hashes(
    paths: Sequence[str], decoder: str, memo_dir: str | Path | None = None, threads: int = 4
) -> tuple[Hashes, list[str]]:
    """Each file's key-frame hashes and content fingerprint. Files hashed before under the same fingerprint come from
    the memo in `memo_dir`; the others are decoded on `threads` threads and added to it."""
    digests = fingerprints(paths, memo_dir, threads)
    method = f"{METHOD} {DECODERS.get(decoder).identity}"
    memo = Path(memo_dir) / MEMO if memo_dir is not None else None
    known = _read_memo(memo) if memo is not None else {}
    todo = sorted({d: p for d, p in zip(digests, paths) if d != UNREADABLE and (d, method) not in known}.items())
    with ThreadPoolExecutor(max(1, min(threads, len(todo)))) as pool:
        thumbs = list(pool.map(lambda job: _thumbnails_of(job[1], decoder), todo))
    decoded = [(job[0], t) for job, t in zip(todo, thumbs) if t is not None]
    if decoded:
        bits, varied = phashes(np.concatenate([t for _, t in decoded]))
        packed = np.packbits(bits, axis=1)
        ends = np.cumsum([len(t) for _, t in decoded])[:-1]
        for (digest, _), frames, kept in zip(decoded, np.split(packed, ends), np.split(varied, ends)):
            known[(digest, method)] = [f.tobytes() if k else None for f, k in zip(frames, kept)]
        if memo is not None:
            _write_memo(memo, known)
    frames = KEY_FRAMES.frames
    hashes = Hashes(np.zeros((len(paths), frames, BITS), bool), np.zeros((len(paths), frames), bool))
    for row, digest in enumerate(digests):
        for k, value in enumerate(known.get((digest, method), [])[:frames]):
            if value is not None:
                hashes.bits[row, k] = np.unpackbits(np.frombuffer(value, np.uint8))[:BITS]
                hashes.valid[row, k] = True
    return hashes, digests


def near_pairs(hashes: Hashes, near: int = NEAR) -> tuple[np.ndarray, ...]:
    """The pairs (i < j) of files at most `near` bits apart, median over their matched key frames, and that median:
    (i, j, bits). Only files with a hash take part; they are compared a block at a time, each frame index one matrix
    product of +-1 bit vectors, and the median is taken only where the nearest matched frame is near enough."""
    rows = np.flatnonzero(hashes.valid.any(axis=1))
    n, frames = len(rows), hashes.valid.shape[1]
    valid = hashes.valid[rows].T  # [K, n]
    signs = hashes.bits[rows].transpose(1, 0, 2).astype(np.float32) * 2 - 1  # [K, n, BITS]
    columns = np.ascontiguousarray(signs.transpose(0, 2, 1))  # [K, BITS, n], laid out for the products
    block = max(1, 2**22 // max(1, n * frames))  # rows per block: a few million distances at a time
    found = []
    for start in range(0, n, block):
        stop = min(start + block, n)
        # [K, b, n - start]: bits differing between these rows and every row from `start` on (the product counts
        # bits agreeing minus bits differing)
        bits = (BITS - signs[:, start:stop] @ columns[:, :, start:]) / 2
        both = valid[:, start:stop, None] & valid[:, None, start:]
        bits[~both] = np.inf
        later = np.arange(start, stop)[:, None] < np.arange(start, n)
        i, j = np.nonzero(later & (bits.min(axis=0) <= near))  # the median is no nearer than the nearest frame
        median = _masked_median(bits[:, i, j], both[:, i, j].sum(axis=0))
        keep = median <= near
        found.append((rows[i[keep] + start], rows[j[keep] + start], median[keep]))
    if not found:
        return np.empty(0, int), np.empty(0, int), np.empty(0)
    return tuple(np.concatenate(parts) for parts in zip(*found))


def _masked_median(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Median over axis 0 of each column's `counts` finite values (the rest are inf, sorted last); inf where none."""
    ordered = np.sort(values, axis=0)
    low = np.take_along_axis(ordered, (np.maximum(counts, 1) - 1)[None] // 2, axis=0)[0]
    high = np.take_along_axis(ordered, counts[None] // 2, axis=0)[0]
    return (low + high) / 2


def clusters(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Each of `n` rows' cluster number: the connected components of the graph whose edges are the pairs (i, j)."""
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def near_duplicate_clusters(paths: Sequence[str], decoder: str, memo_dir: str | Path | None = None) -> np.ndarray:
    """Each file's cluster of near-duplicates (a file alike to no other is alone in its own)."""
    hashes, _ = media_hashes(paths, decoder, memo_dir)
    i, j, _ = near_pairs(hashes)
    return clusters(len(paths), i, j)
