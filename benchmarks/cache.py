"""Row 3: reading a track's features from the cache against `np.load` of the same array from an `.npy` file."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.harness import BenchConfig, Progress, Row, Sizes, median, median_ratio, timed
from features.cache import part_schema, write_part
from features.reader import read_features

PART_ITEMS = 256  # items per cache part, as the extraction writer flushes them


def rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    n, frames, dim = sizes.cache_items, sizes.cache_frames, sizes.cache_dim
    progress(f"cache of {n} items x {frames} frames x {dim} dims")
    x = np.random.default_rng(0).standard_normal((n, 1, frames, dim), dtype=np.float32)
    ids = [f"item{i:05d}" for i in range(n)]
    media = np.array([hashlib.sha256(item.encode()).hexdigest() for item in ids])  # as long as a file's fingerprint
    ours, theirs = [], []
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        folder = Path(scratch)
        schema = part_schema(dim, "float32")
        for start in range(0, n, PART_ITEMS):  # parts as an extraction writes them
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
        npy = folder / "features.npy"
        np.save(npy, x)
        if not np.array_equal(read_features(folder, ids, ["center"], frames, media).x, x):
            raise AssertionError(f"{folder}: the cache read back differs from what was written")
        for repeat in range(sizes.repeats * 3):  # reads take tenths of a second: more repeats, same cost
            progress(f"cache read, repeat {repeat + 1}/{sizes.repeats * 3}")
            with timed() as baseline:
                np.load(npy)
            with timed() as read:
                read_features(folder, ids, ["center"], frames, media)
            theirs.append(baseline.wall)
            ours.append(read.wall)
    gigabytes = x.nbytes / 1e9
    ratio = median_ratio(theirs, ours)
    return [
        Row(
            "3",
            f"cache read, {n} items x {frames} frames x {dim} dims float32 ({gigabytes:.2f} GB)",
            f"{gigabytes / median(ours):.2f} GB/s",
            f"{gigabytes / median(theirs):.2f} GB/s (np.load)",
            ratio,
            ">= 0.5",
            f"both from the page cache; ours from Parquet parts of {PART_ITEMS} items into a dense "
            "[items, views, frames, dims]",
        )
    ]
