"""The feature cache: one folder per feature set, Parquet parts of per-frame rows, a manifest, a failures table.

Layout: `<root>/<track>/<backbone>__<view family><side>__<hash>/` holding `manifest.json`, `part-*.parquet` (rows
`item_id, view, t, time, feature`) and `failures-*.parquet` (rows `item_id, path, reason, time`). The hash covers
everything that changes a vector (`FeatureSpec.identity`), so two configurations never share a folder; the variants of
a view family (`center`, `hflip`, corner crops, fragment draws, temporal offsets) are rows, so asking for more of them
later adds rows to the same set: given the spec, a variant's name fully determines its pixels (see features.views).

Parts are only ever written whole (temporary name, then rename) and never rewritten, so a killed run leaves at most
a stale temporary file, which no reader globs for.

A vector is stored as one fixed-size binary value (its float32 or float16 bytes; the field's metadata names the
dtype and dimension), not as Arrow's fixed-size list: Parquet has no fixed-size list and writes one as a nested LIST
with a repetition and a definition level per number, which made reading a track's features about nine times slower
than `np.load` of the same array. Plain, uncompressed fixed-size binary pages decode at memory speed; each part is
memory-mapped, decoded and copied into the dense array by a thread of its own, so reading stays within about 1.5
times `np.load` (`just bench rows=cache`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from features.decode import DECODERS
from features.views import DEFAULT_FAMILY, view_family
from workbench.atomic import atomic_path, write_text

SCHEMA_VERSION = 2  # 2: vectors as fixed-size binary (1: Arrow fixed-size lists)
PART_GLOB = "part-*.parquet"
FAILURE_GLOB = "failures-*.parquet"
DTYPES = ("float32", "float16")
KEY_COLUMNS = ["item_id", "view", "t"]


class CacheError(RuntimeError):
    """A feature cache that is missing, or that does not match the configuration asked for."""


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that changes a cached vector: the backbone and its weights, the media type (its decoder), the frame
    sampling of video, the view family with its geometry, and the stored dtype. A family's variants are rows, not
    part of the key; the geometry fields a family does not use are left out of the key."""

    backbone: str
    weights: str = "random"
    media: str = "video"
    frames: int = 8
    fps: float = 1.0
    phase: float = 0.0
    view: str = DEFAULT_FAMILY
    size: int = 224
    grid: int = 7
    patch: int = 32
    fragment_seed: int = 0
    dtype: str = "float32"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}: expected one of {', '.join(DTYPES)}")
        DECODERS.get(self.media)
        view_family(self)

    def identity(self) -> dict:
        """The hashed description; a weights file is identified by its content, not its path."""
        weights = self.weights
        if weights not in ("random", "hub", "none") and Path(weights).is_file():
            weights = f"sha256:{file_sha256(Path(weights))}"
        ident = {
            "backbone": self.backbone,
            "weights": weights,
            "media": self.media,
            "decode": DECODERS.get(self.media).identity,
            "view": self.view,
            "geometry": dataclasses.asdict(view_family(self)),
            "dtype": self.dtype,
            "schema": SCHEMA_VERSION,
        }
        if self.media == "video":  # an image is one frame whatever the sampling says
            ident["sampling"] = {"frames": self.frames, "fps": self.fps, "phase": self.phase}
        return ident

    def key(self) -> str:
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:10]
        backbone = re.sub(r"[^A-Za-z0-9._-]+", "-", self.backbone)
        return f"{backbone}__{self.view}{view_family(self).side}__{digest}"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_dir(root: str | Path, track: str, spec: FeatureSpec) -> Path:
    return Path(root) / track / spec.key()


@contextlib.contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """An exclusive lock on a cache folder for one extraction: a second process on the same key waits, then finds
    the first one's work cached instead of computing it again. The kernel releases it when a holder dies."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logging.getLogger(__name__).warning("%s: another extraction holds this cache; waiting for it", folder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- manifest ---------------------------------------------------------------------------------------------------------


def _differences(expected: dict, found: dict, prefix: str = "") -> list[str]:
    lines = []
    for key in sorted(set(expected) | set(found)):
        a, b = expected.get(key), found.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            lines += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            lines.append(f"{prefix}{key}: asked {a!r}, cached {b!r}")
    return lines


def ensure_manifest(folder: Path, spec: FeatureSpec, backbone_identity: dict, dim: int, versions: dict) -> dict:
    """Creates the manifest, or checks an existing one against this configuration and backbone."""
    manifest = {
        "key": folder.name,
        "spec": spec.identity(),
        "backbone": backbone_identity,
        "dim": dim,
        "versions": versions,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = folder / "manifest.json"
    if path.is_file():
        found = json.loads(path.read_text())
        wanted = {k: manifest[k] for k in ("spec", "backbone", "dim")}
        diff = _differences(wanted, {k: found.get(k) for k in wanted})
        if diff:
            raise CacheError(f"{path} does not match this configuration:\n  " + "\n  ".join(diff))
        return found
    folder.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def read_manifest(folder: Path, spec: FeatureSpec) -> dict:
    """The manifest of a cache that must exist and match `spec`."""
    path = folder / "manifest.json"
    if not path.is_file():
        raise CacheError(
            f"no features cached in {folder} (no manifest.json): run `just extract` with the same settings first"
        )
    found = json.loads(path.read_text())
    diff = _differences(spec.identity(), found.get("spec", {}))
    if diff:
        raise CacheError(f"{path} does not match this configuration:\n  " + "\n  ".join(diff))
    return found


# --- parts ------------------------------------------------------------------------------------------------------------


def part_schema(dim: int, dtype: str) -> pa.Schema:
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {', '.join(DTYPES)}")
    vector = pa.field("feature", pa.binary(dim * np.dtype(dtype).itemsize), metadata={"dtype": dtype, "dim": str(dim)})
    return pa.schema(
        [("item_id", pa.string()), ("view", pa.string()), ("t", pa.int16()), ("time", pa.float32()), vector]
    )


def vector_layout(field: pa.Field) -> tuple[np.dtype, int]:
    """The numpy dtype and dimension of a feature column, from its metadata."""
    metadata = field.metadata or {}
    if not pa.types.is_fixed_size_binary(field.type) or b"dtype" not in metadata or b"dim" not in metadata:
        raise CacheError(
            f"column {field.name!r} is {field.type} without dtype and dim: not a schema-{SCHEMA_VERSION} feature column"
        )
    return np.dtype(metadata[b"dtype"].decode()), int(metadata[b"dim"])


def vectors(column: pa.Array, field: pa.Field) -> np.ndarray:
    """[rows, dim] view (no copy) of a fixed-size binary feature column without nulls."""
    dtype, dim = vector_layout(field)
    return np.frombuffer(
        column.buffers()[1], dtype=dtype, count=len(column) * dim, offset=column.offset * dim * dtype.itemsize
    ).reshape(-1, dim)


def write_part(folder: Path, columns: dict[str, np.ndarray], schema: pa.Schema, prefix: str = "part") -> Path:
    """One Parquet part, atomically; `columns['feature']` is a 2-D array [rows, dim]."""
    arrays = []
    for field in schema:
        if pa.types.is_fixed_size_binary(field.type):
            dtype, dim = vector_layout(field)
            values = np.ascontiguousarray(columns[field.name], dtype=dtype).reshape(-1, dim)
            arrays.append(pa.FixedSizeBinaryArray.from_buffers(field.type, len(values), [None, pa.py_buffer(values)]))
        else:
            arrays.append(pa.array(columns[field.name], type=field.type))
    table = pa.Table.from_arrays(arrays, schema=schema)
    final = folder / f"{prefix}-{uuid.uuid4().hex}.parquet"
    with atomic_path(final) as tmp:
        # Dictionaries and statistics pay off for the short columns only; on vectors they cost time and buy nothing.
        pq.write_table(table, tmp, compression="none", use_dictionary=["item_id", "view"], write_statistics=KEY_COLUMNS)
    return final


def _read(folder: Path, glob: str, columns: list[str] | None = None) -> pa.Table | None:
    files = sorted(folder.glob(glob))
    if not files:
        return None
    return ds.dataset(files, format="parquet").to_table(columns=columns)


def cached_views(folder: Path) -> pd.DataFrame:
    """The (item_id, view) pairs present in the cache."""
    table = _read(folder, PART_GLOB, ["item_id", "view"])
    if table is None:
        return pd.DataFrame({"item_id": pd.Series(dtype=str), "view": pd.Series(dtype=str)})
    return table.to_pandas().drop_duplicates(ignore_index=True)


def write_failures(folder: Path, failures: list[dict], prefix: str = "failures") -> Path:
    columns = {key: [f[key] for f in failures] for key in ("item_id", "path", "reason")}
    columns["time"] = [time.time()] * len(failures)
    schema = pa.schema(
        [("item_id", pa.string()), ("path", pa.string()), ("reason", pa.string()), ("time", pa.float64())]
    )
    final = folder / f"{prefix}-{uuid.uuid4().hex}.parquet"
    with atomic_path(final) as tmp:
        pq.write_table(pa.Table.from_pydict(columns, schema=schema), tmp)
    return final


def read_failures(folder: Path, views: Sequence[str] | None = None) -> pd.DataFrame:
    """The latest failure of every item not cached in all of `views` (in any view when None): an item cached in
    one view whose file fails when a new view is asked for is still a failure."""
    table = _read(folder, FAILURE_GLOB)
    if table is None:
        return pd.DataFrame(columns=["item_id", "path", "reason", "time"])
    failures = table.to_pandas().sort_values("time").drop_duplicates("item_id", keep="last")
    have = cached_views(folder)
    if views is None:
        cached = have["item_id"].unique()
    else:
        covered = have[have["view"].isin(views)].groupby("item_id")["view"].nunique()
        cached = covered.index[covered == len(set(views))]
    return failures[~failures["item_id"].isin(cached)].reset_index(drop=True)


# --- reading features for training ------------------------------------------------------------------------------------


@dataclass
class Features:
    """x [N, V, T, D] float32 with mask [N, V, T] (True where a frame exists), in the order of the ids asked for."""

    x: np.ndarray
    mask: np.ndarray
    item_ids: list[str]
    views: list[str]


def _positions(column: pa.ChunkedArray, where: dict[str, int]) -> np.ndarray:
    """Position of each row's value (-1 when absent): one lookup per distinct value of a chunk, none per row."""
    positions = []
    for chunk in column.chunks:
        chunk = chunk if pa.types.is_dictionary(chunk.type) else chunk.dictionary_encode()
        lookup = np.array([where.get(value, -1) for value in chunk.dictionary.to_pylist()], dtype=np.intp)
        positions.append(lookup[chunk.indices.to_numpy()])
    return np.concatenate(positions) if positions else np.empty(0, dtype=np.intp)


def read_features(folder: Path, item_ids: list[str], views: list[str] | None, frames: int) -> Features:
    """Every requested item's per-frame features, scattered into a dense array; no Python loop over rows."""
    files = sorted(folder.glob(PART_GLOB))
    if not files:
        raise CacheError(f"no features cached in {folder}: run `just extract` first")
    available = sorted(set(ds.dataset(files, format="parquet").to_table(columns=["view"])["view"].unique().to_pylist()))
    views = list(views) if views else available
    unknown = [v for v in views if v not in available]
    if unknown:
        raise CacheError(f"{folder}: view(s) {', '.join(unknown)} not cached (cached: {', '.join(available)})")
    dim = vector_layout(pq.read_schema(files[0]).field("feature"))[1]
    x = np.empty((len(item_ids), len(views), frames, dim), dtype=np.float32)
    mask = np.zeros((len(item_ids), len(views), frames), dtype=bool)
    where = {item: k for k, item in enumerate(item_ids)}, {view: k for k, view in enumerate(views)}
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(lambda file: _scatter_part(file, where, x, mask), files))
    x[~mask] = 0.0
    return Features(x=x, mask=mask, item_ids=list(item_ids), views=views)


def _scatter_part(file: Path, where: tuple[dict[str, int], dict[str, int]], x: np.ndarray, mask: np.ndarray) -> None:
    """Reads one part and copies its wanted rows into x and mask. Parts share no rows except the duplicates of
    distributed padding, whose vectors agree, so threads writing at once cannot disagree.

    A part's rows are usually one run of consecutive rows of x (items in the order asked, every frame present):
    that is one block copy, which releases the GIL, where a fancy-indexed copy holds it and serialises the threads.
    """
    part = pq.ParquetFile(file, memory_map=True, read_dictionary=["item_id", "view"])
    table = part.read(columns=[*KEY_COLUMNS, "feature"], use_threads=False)
    views, frames = x.shape[1:3]
    item, view = (_positions(table[name], lookup) for name, lookup in zip(("item_id", "view"), where))
    t = table["t"].to_numpy()
    keep = (item >= 0) & (view >= 0) & (t < frames)
    rows = (item * views + view) * frames + t
    mask.reshape(-1)[rows[keep]] = True
    flat, field, start = x.reshape(-1, x.shape[-1]), table.schema.field("feature"), 0
    for chunk in table["feature"].chunks:
        span = slice(start, start + len(chunk))
        start += len(chunk)
        values, wanted, target = vectors(chunk, field), keep[span], rows[span]
        if len(target) and wanted.all() and (np.diff(target) == 1).all():
            flat[target[0] : target[0] + len(target)] = values
        else:
            flat[target[wanted]] = values[wanted]


def concat_features(sets: Sequence[Features]) -> Features:
    """Several feature sets of the same items side by side on the feature axis, for a head reading several view
    families. Variants are paired by index, the shorter lists cycling (aesthetic center,hflip with fragments s0..s3
    gives center+s0, hflip+s1, center+s2, hflip+s3): every pair is a training sample and a test-time view, and each
    family's variants appear equally often when the counts divide. A frame is present where it is in every set."""
    if len(sets) == 1:
        return sets[0]
    first = sets[0]
    for other in sets[1:]:
        if other.item_ids != first.item_ids or other.x.shape[2] != first.x.shape[2]:
            raise ValueError("feature sets to concatenate must hold the same items and frames")
    count = max(len(s.views) for s in sets)
    picks = [np.arange(count) % len(s.views) for s in sets]
    x = np.concatenate([s.x[:, pick] for s, pick in zip(sets, picks, strict=True)], axis=-1)
    mask = np.logical_and.reduce([s.mask[:, pick] for s, pick in zip(sets, picks, strict=True)])
    views = ["+".join(s.views[pick[k]] for s, pick in zip(sets, picks, strict=True)) for k in range(count)]
    return Features(x=x, mask=mask, item_ids=first.item_ids, views=views)


def family_variants(views: Sequence[str], families: int) -> list[tuple[str, ...]]:
    """Per family, the variants named in paired view names (`center+s0` -> center for the first, s0 for the second)."""
    parts = [view.split("+") for view in views]
    return [tuple(dict.fromkeys(p[i] for p in parts)) for i in range(families)]
