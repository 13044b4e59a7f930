"""Row 3: reading a track's features from the cache against `np.load` of the same array from an `.npy` file; and
reading them with a second version of every item beside them (another dataset with the same ids, as a cache keeps
every version it has seen) against reading them alone."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.harness import BenchConfig, Progress, Row, Sizes, median, median_ratio, timed
from features.cache import part_schema, write_part
from features.reader import read_features

PART_ITEMS = 256  # items per cache part, as the extraction writer flushes them


def write_version(folder: Path, ids: list[str], media: np.ndarray, x: np.ndarray) -> None:
    """One version of every item, in parts as an extraction writes them."""
    n, _, frames, dim = x.shape
    schema = part_schema(dim, "float32")
    for start in range(0, n, PART_ITEMS):
        block = slice(start, start + PART_ITEMS)
        count = len(ids[block])
        columns = {
            "item_id": np.repeat(ids[block], frames),
            "fingerprint": np.repeat(media[block], frames),
            "view": np.full(count * frames, "center"),
            "t": np.tile(np.arange(frames), count),
            "time": np.tile(np.arange(frames, dtype=np.float32), count),
            "feature": x[block, 0].reshape(-1, dim),
        }
        write_part(folder, columns, schema)


def fingerprints_of(ids: list[str], salt: str) -> np.ndarray:
    return np.array([hashlib.sha256(f"{salt}{item}".encode()).hexdigest() for item in ids])  # a fingerprint's length


def rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    n, frames, dim = sizes.cache_items, sizes.cache_frames, sizes.cache_dim
    progress(f"cache of {n} items x {frames} frames x {dim} dims")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 1, frames, dim), dtype=np.float32)
    ids = [f"item{i:05d}" for i in range(n)]
    media, other = fingerprints_of(ids, ""), fingerprints_of(ids, "other:")
    ours, theirs, beside = [], [], []
    repeats = sizes.repeats * 3  # reads take tenths of a second: more repeats, same cost
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        one, two = Path(scratch) / "one", Path(scratch) / "two"
        one.mkdir()
        two.mkdir()
        write_version(one, ids, media, x)
        write_version(two, ids, other, rng.standard_normal(x.shape, dtype=np.float32))  # the other dataset first
        write_version(two, ids, media, x)
        npy = one / "features.npy"
        np.save(npy, x)
        for folder in (one, two):
            if not np.array_equal(read_features(folder, ids, ["center"], frames, media).x, x):
                raise AssertionError(f"{folder}: the cache read back differs from what was written")
        for repeat in range(repeats):
            progress(f"cache read, repeat {repeat + 1}/{repeats}")
            with timed() as baseline:
                np.load(npy)
            with timed() as read:
                read_features(one, ids, ["center"], frames, media)
            with timed() as versions:
                read_features(two, ids, ["center"], frames, media)
            theirs.append(baseline.wall)
            ours.append(read.wall)
            beside.append(versions.wall)
    gigabytes = x.nbytes / 1e9
    shape = f"{n} items x {frames} frames x {dim} dims float32 ({gigabytes:.2f} GB)"
    return [
        Row(
            "3",
            f"cache read, {shape}",
            f"{gigabytes / median(ours):.2f} GB/s",
            f"{gigabytes / median(theirs):.2f} GB/s (np.load)",
            median_ratio(theirs, ours),
            ">= 0.5",
            f"both from the page cache; ours from Parquet parts of {PART_ITEMS} items into a dense "
            "[items, views, frames, dims]",
        ),
        Row(
            "3",
            f"cache read beside a second version of every item, {shape}",
            f"{gigabytes / median(beside):.2f} GB/s",
            f"{gigabytes / median(ours):.2f} GB/s (one version)",
            median_ratio(ours, beside),
            ">= 0.8",
            "the same items and vectors read; the other version's parts (another dataset with the same ids) are "
            "skipped by the fingerprints their footers name: opened, neither keys nor vectors read",
        ),
    ]
