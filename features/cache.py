"""The feature cache: one folder per feature set, Parquet parts of per-frame rows, a manifest, a failures table.

Layout: `<root>/<track>/<backbone>__<view family><side>__<hash>/` holding `manifest.json`, `part-*.parquet` (rows
`item_id, media, view, t, time, feature`) and `failures-*.parquet` (rows `item_id, media, path, reason, time`). The
hash covers everything that changes a vector (`FeatureSpec.identity`), so two configurations never share a folder;
the variants of a view family (`center`, `hflip`, corner crops, fragment draws, temporal offsets) are rows, so asking
for more of them later adds rows to the same set: given the spec, a variant's name fully determines its pixels (see
features.views).

Every row carries `media`, the fingerprint of the file it was made from (features.fingerprint), and is served only
while the item's file has that fingerprint: a reader passes the current ones and is refused, with the stale items
named, where a row was made from other bytes. Before an extraction plans, the rows of items whose file changed are
dropped (`drop_stale`), so the cache holds one row per (item, variant, frame), always of the current file; a failure,
too, applies only to the file it was recorded for.

Parts are only ever written whole (temporary name, then rename), so a killed run leaves at most a stale temporary file,
which no reader globs for. Dropping rows rewrites a part as its next generation (`part-x.g1.parquet` replaces
`part-x.parquet`) before the old one is unlinked; readers take only the newest generation of each part (`live_parts`),
so a kill between the two steps leaves nothing read twice.

A vector is stored as one fixed-size binary value (its float32 or float16 bytes; the field's metadata names the
dtype and dimension), not as Arrow's fixed-size list: Parquet has no fixed-size list and writes one as a nested LIST
with a repetition and a definition level per number, which made reading a track's features about nine times slower
than `np.load` of the same array. The vector column is required (no definition levels), uncompressed, PLAIN, and one
page per row group, so its bytes on disk are the vectors themselves, in row order: a part whose rows fill a block of
the dense array is copied straight from the mapped file into it (one copy, as `np.load` makes), a thread per part.
Through PyArrow's decoder and then into the array, two copies, reading ran at 0.43 of `np.load`; copied straight,
at 0.52 to 0.61 (`just bench rows=cache`): the copy itself runs as fast as `np.load`, and opening each part and
reading its keys cost the rest. Parts of any other layout or order go through PyArrow, with the same result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import mmap
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
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from common.atomic import atomic_path, write_text
from features.decode import DECODERS, FrameSampling
from features.fingerprint import UNREADABLE
from features.hdr import LIGHTS  # noqa: F401 - registers the hdr decoder a spec may name
from features.pairs import PairCrops  # noqa: F401 - registers the pair families a spec may name
from features.views import DEFAULT_FAMILY, FAMILIES, view_family

SCHEMA_VERSION = 3  # 3: rows bound to their media's fingerprint (2: vectors as fixed-size binary; 1: fixed-size lists)
PART_GLOB = "part-*.parquet"
FAILURE_GLOB = "failures-*.parquet"
DTYPES = ("float32", "float16")
KEY_COLUMNS = ["item_id", "view", "t"]
DICTIONARY_COLUMNS = ["item_id", "media", "view"]
DEFAULT_PAGE_BYTES = 1 << 20  # PyArrow's own page size
MAX_PAGE_BYTES = 1 << 30  # a page's size is a 32-bit integer in Parquet; a part larger than this reads through PyArrow


class CacheError(RuntimeError):
    """A feature cache that is missing, or that does not match the configuration asked for."""


class StaleFeatures(CacheError):
    """Cached rows made from other bytes than the items' files hold now."""

    def __init__(self, folder: Path, stale: Sequence[str]):
        shown = ", ".join(stale[:5]) + (f" and {len(stale) - 5} more" if len(stale) > 5 else "")
        super().__init__(
            f"{folder}: {len(stale)} item(s) changed on disk (or went missing) since their features were cached: "
            f"{shown}. Run `just extract` with the same words to re-extract them; nothing was trained on them."
        )
        self.stale = list(stale)


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that changes a cached vector: the backbone and its weights, the media type (its decoder), the frame
    sampling of video, the view family with its geometry, and the stored dtype. A family's variants are rows, not
    part of the key; the geometry fields a family does not use are left out of the key.

    With `clip` > 1 the set is a motion stream: clips of that many consecutive frames from each key frame (view
    family `clip`, their short side decoded at `size`), encoded by a motion encoder (`backbone` names one of
    features.motion), one vector per clip."""

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
    clip: int = 1
    audio_seconds: float = 0.0
    light: str = ""  # what the decoder's pixels hold, where it offers a choice (features.hdr.LIGHTS); "": its own

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}: expected one of {', '.join(DTYPES)}")
        decoder = DECODERS.get(self.media)
        if self.light and self.light not in decoder.lights:
            offered = f"one of {', '.join(decoder.lights)}" if decoder.lights else "none (only the hdr decoder does)"
            raise ValueError(f"light={self.light!r}: {self.media} media offer {offered}")
        family = FAMILIES.get(self.view)
        if family.clips != (self.clip > 1):
            raise ValueError(
                f"view={self.view!r} with clip={self.clip}: clips of consecutive frames (clip >= 2) go with the views "
                f"that take them ({', '.join(n for n in FAMILIES.names() if FAMILIES.get(n).clips)}), and only them"
            )
        if family.audio != (self.audio_seconds > 0):
            raise ValueError(
                f"view={self.view!r} with audio_seconds={self.audio_seconds}: audio windows (audio_seconds > 0) go "
                f"with the views that take them ({', '.join(n for n in FAMILIES.names() if FAMILIES.get(n).audio)})"
            )
        if (family.clips or family.audio) and not decoder.time_axis:
            raise ValueError(f"view={self.view!r}: {self.media} media have no time axis to take clips or audio from")
        view_family(self)

    @property
    def time_axis(self) -> bool:
        return DECODERS.get(self.media).time_axis

    def sampling(self) -> FrameSampling:
        """How the decoder samples the media for this set (clips scaled to the family's size at decode, audio windows
        of `audio_seconds` at the key frames)."""
        side = self.size if self.clip > 1 else 0
        return FrameSampling(self.frames, self.fps, self.phase, self.clip, side, self.audio_seconds, self.light)

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
        if self.time_axis:  # an image is one frame whatever the sampling says
            ident["sampling"] = {"frames": self.frames, "fps": self.fps, "phase": self.phase}
            if self.clip > 1:  # absent for key frames, so their keys stay as they were
                ident["sampling"]["clip"] = self.clip
            if self.audio_seconds > 0:
                ident["sampling"]["audio_seconds"] = self.audio_seconds
        if DECODERS.get(self.media).lights:  # absent for decoders without a choice, so their keys stay as they were
            ident["light"] = self.light or DECODERS.get(self.media).lights[0]
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


def older_caches(folder: Path, spec: FeatureSpec) -> list[Path]:
    """Sibling folders holding the same feature set as written by an older schema: never read, since their rows are
    not bound to their media; named so that a user knows to rebuild them and can free their space."""
    older = []
    for manifest in sorted(folder.parent.glob(f"{folder.name.rsplit('__', 1)[0]}__*/manifest.json")):
        found = json.loads(manifest.read_text()).get("spec", {})
        same = {k: v for k, v in found.items() if k != "schema"} == {
            k: v for k, v in spec.identity().items() if k != "schema"
        }
        if same and found.get("schema", 0) < SCHEMA_VERSION:
            older.append(manifest.parent)
    return older


def read_manifest(folder: Path, spec: FeatureSpec) -> dict:
    """The manifest of a cache that must exist and match `spec`."""
    path = folder / "manifest.json"
    if not path.is_file():
        older = older_caches(folder, spec)
        if older:
            raise CacheError(
                f"no features cached in {folder}; {older[0]} holds them as an older version of the workbench wrote "
                f"them (schema {json.loads((older[0] / 'manifest.json').read_text())['spec'].get('schema')}, rows not "
                f"bound to their media files), which cannot be trusted: run `just extract` with the same settings to "
                f"rebuild them, and delete {older[0]} to free its space"
            )
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
    vector = pa.field(
        "feature",
        pa.binary(dim * np.dtype(dtype).itemsize),
        nullable=False,  # required: the page holds the vectors and nothing else (see _value_runs)
        metadata={"dtype": dtype, "dim": str(dim)},
    )
    return pa.schema(
        [
            ("item_id", pa.string()),
            ("media", pa.string()),
            ("view", pa.string()),
            ("t", pa.int16()),
            ("time", pa.float32()),
            vector,
        ]
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
    final = folder / f"{prefix}-{uuid.uuid4().hex}.parquet"
    return _write_table(pa.Table.from_arrays(arrays, schema=schema), final)


def _write_table(table: pa.Table, final: Path) -> Path:
    # One page for the whole vector column, so its values lie in one run of bytes (see _value_runs).
    page = min(max(table.nbytes + 1, DEFAULT_PAGE_BYTES), MAX_PAGE_BYTES)
    with atomic_path(final) as tmp:
        # Dictionaries and statistics pay off for the short columns only; on vectors they cost time and buy nothing.
        pq.write_table(
            table,
            tmp,
            compression="none",
            use_dictionary=DICTIONARY_COLUMNS,
            write_statistics=KEY_COLUMNS,
            data_page_size=page,
        )
    return final


def _generation(part: Path) -> tuple[str, int]:
    """(the part's name without its generation, the generation): `part-x.g2.parquet` -> (`part-x`, 2)."""
    stem, _, generation = part.name.removesuffix(".parquet").partition(".g")
    return stem, int(generation or 0)


def live_parts(folder: Path, glob: str = PART_GLOB) -> list[Path]:
    """The parts to read: of each part rewritten by drop_stale, its newest generation alone."""
    newest: dict[str, tuple[int, Path]] = {}
    for part in folder.glob(glob):
        stem, generation = _generation(part)
        if stem not in newest or generation > newest[stem][0]:
            newest[stem] = (generation, part)
    return sorted(part for _, part in newest.values())


def drop_stale(folder: Path, media: dict[str, str]) -> set[str]:
    """Removes the rows of the items in `media` (item id -> its file's fingerprint now) that were made from other
    bytes, and returns those items. Only an extraction holding the folder's lock calls it (see features.extract).

    An item whose file cannot be read now (an unmounted disk, a folder moved away) keeps its rows: they are not
    served while it is so (they match no fingerprint), and are again when the same bytes are back."""
    stale: set[str] = set()
    changed = {item: fingerprint for item, fingerprint in media.items() if fingerprint != UNREADABLE}
    for part in live_parts(folder):
        keys = pq.read_table(part, columns=["item_id", "media"]).to_pydict()
        gone = [changed.get(item, had) != had for item, had in zip(keys["item_id"], keys["media"])]
        if not any(gone):
            continue
        stale.update(item for item, drop in zip(keys["item_id"], gone) if drop)
        if not all(gone):
            stem, generation = _generation(part)
            kept = pq.read_table(part).filter(pa.array([not drop for drop in gone]))
            _write_table(kept, part.with_name(f"{stem}.g{generation + 1}.parquet"))
        part.unlink()
    for old in set(folder.glob(PART_GLOB)) - set(live_parts(folder)):  # a kill between writing and unlinking
        old.unlink()
    return stale


def _read(folder: Path, glob: str, columns: list[str] | None = None) -> pa.Table | None:
    files = live_parts(folder, glob)
    if not files:
        return None
    return ds.dataset(files, format="parquet").to_table(columns=columns)


def cached_views(folder: Path, media: dict[str, str] | None = None) -> pd.DataFrame:
    """The (item_id, view) pairs present in the cache; with `media` (item id -> fingerprint now), only those made
    from the items' current files."""
    table = _read(folder, PART_GLOB, ["item_id", "media", "view"])
    if table is None:
        return pd.DataFrame({name: pd.Series(dtype=str) for name in ("item_id", "media", "view")})
    pairs = table.to_pandas().drop_duplicates(ignore_index=True)
    if media is not None:
        pairs = pairs[pairs["item_id"].map(media) == pairs["media"]].reset_index(drop=True)
    return pairs


def write_failures(folder: Path, failures: list[dict], prefix: str = "failures") -> Path:
    columns = {key: [f[key] for f in failures] for key in ("item_id", "media", "path", "reason")}
    columns["time"] = [time.time()] * len(failures)
    schema = pa.schema(
        [
            ("item_id", pa.string()),
            ("media", pa.string()),
            ("path", pa.string()),
            ("reason", pa.string()),
            ("time", pa.float64()),
        ]
    )
    final = folder / f"{prefix}-{uuid.uuid4().hex}.parquet"
    with atomic_path(final) as tmp:
        pq.write_table(pa.Table.from_pydict(columns, schema=schema), tmp)
    return final


def read_failures(folder: Path, media: dict[str, str], views: Sequence[str] | None = None) -> pd.DataFrame:
    """The latest failure of every item in `media` (item id -> fingerprint now) recorded for its file as it is now
    and not cached in all of `views` (in any view when None): an item cached in one view whose file fails when a new
    view is asked for is still a failure; a file repaired since it failed is not."""
    table = _read(folder, FAILURE_GLOB)
    if table is None:
        return pd.DataFrame(columns=["item_id", "media", "path", "reason", "time"])
    failures = table.to_pandas()
    failures = failures[failures["item_id"].map(media) == failures["media"]]
    failures = failures.sort_values("time").drop_duplicates("item_id", keep="last")
    have = cached_views(folder, media)
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


@dataclass(frozen=True)
class _Wanted:
    """Where each wanted row goes, and which media it must have been made from."""

    items: dict[str, int]  # item id -> position
    views: dict[str, int]  # view -> position
    media: dict[str, int]  # fingerprint -> code
    item_media: np.ndarray  # per item position, the code of its fingerprint now


def read_features(
    folder: Path, item_ids: list[str], views: list[str] | None, frames: int, media: Sequence[str]
) -> Features:
    """Every requested item's per-frame features, scattered into a dense array; no Python loop over rows. `media`
    holds each item's fingerprint now (features.fingerprint): a row made from other bytes is refused (StaleFeatures,
    naming the items), never served. With the views named, every part is opened once, its keys and vectors read by
    one thread; with none named, the views cached are gathered from every part first."""
    files = live_parts(folder)
    if not files:
        raise CacheError(f"no features cached in {folder}: run `just extract` first")
    if len(media) != len(item_ids):
        raise ValueError(f"{len(item_ids)} items but {len(media)} fingerprints")
    codes = {fingerprint: k for k, fingerprint in enumerate(dict.fromkeys(media))}
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        views = list(views) if views else sorted(set().union(*pool.map(_part_views, files)))
        dim = vector_layout(pq.read_schema(files[0]).field("feature"))[1]
        x = np.empty((len(item_ids), len(views), frames, dim), dtype=np.float32)
        mask = np.zeros((len(item_ids), len(views), frames), dtype=bool)
        where = _Wanted(
            {item: k for k, item in enumerate(item_ids)},
            {view: k for k, view in enumerate(views)},
            codes,
            np.array([codes[fingerprint] for fingerprint in media], dtype=np.intp),
        )
        held, stale = zip(*pool.map(lambda file: _scatter_part(file, where, x, mask), files))
    stale = np.unique(np.concatenate(stale))
    if len(stale):
        raise StaleFeatures(folder, [item_ids[k] for k in stale])
    available = set().union(*held)
    unknown = [v for v in views if v not in available]
    if unknown:
        raise CacheError(f"{folder}: view(s) {', '.join(unknown)} not cached (cached: {', '.join(sorted(available))})")
    x[~mask] = 0.0
    return Features(x=x, mask=mask, item_ids=list(item_ids), views=views)


def _part_views(file: Path) -> set[str]:
    column = pq.read_table(file, columns=["view"], read_dictionary=["view"])["view"]
    return set(pc.unique(column).to_pylist())


def _page_sizes(header: bytes) -> tuple[int, int] | None:
    """(uncompressed, compressed) size of a data page, from the start of its Thrift-compact header: fields 1 (page
    type), 2 and 3 (the sizes), each an i32 as a zigzag varint after the field byte 0x15. None if it is not so."""
    fields, at = [], 0
    for _ in range(3):
        if at >= len(header) or header[at] != 0x15:
            return None
        value, shift, at = 0, 0, at + 1
        while True:
            if at >= len(header) or shift > 35:
                return None
            byte, at = header[at], at + 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        fields.append((value >> 1) ^ -(value & 1))
    page_type, uncompressed, compressed = fields
    return (uncompressed, compressed) if page_type in (0, 3) else None  # DATA_PAGE or DATA_PAGE_V2


def _value_runs(handle, part: pq.ParquetFile, width: int) -> list[tuple[int, int]] | None:
    """Per row group, the file offset of the vector column's values and its row count, where each row group holds
    them as one uncompressed PLAIN page of a required column (as write_part writes): that page is its header followed
    by the vectors' bytes and nothing else, so they end where the column chunk ends. None for any other layout."""
    column = part.schema_arrow.get_field_index("feature")
    if part.schema.column(column).max_definition_level != 0:
        return None
    runs = []
    for group in range(part.metadata.num_row_groups):
        chunk, rows = part.metadata.row_group(group).column(column), part.metadata.row_group(group).num_rows
        if chunk.compression != "UNCOMPRESSED" or chunk.has_dictionary_page or "PLAIN" not in chunk.encodings:
            return None
        handle.seek(chunk.data_page_offset)
        if _page_sizes(handle.read(32)) != (rows * width, rows * width):  # one page holding every value
            return None
        runs.append((chunk.data_page_offset + chunk.total_compressed_size - rows * width, rows))
    return runs


def _read_into(file: Path, part: pq.ParquetFile, block: np.ndarray) -> bool:
    """Copies the part's vectors straight from the file into `block` (its rows, of the stored dtype), if the part's
    layout allows (see _value_runs); False if it does not.

    The file is mapped with its pages populated up front, so the copy is one pass over the page cache with no page
    fault per 4 KiB. (`os.preadv` into the array copied as fast, except where the vectors' offset in the file sat
    just below the array's within a page: the kernel's copy then ran at half speed, and neither offset is ours.)"""
    with open(file, "rb") as handle:
        runs = _value_runs(handle, part, block.shape[1] * block.itemsize)
        if runs is None:
            return False
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # Linux only; elsewhere pages fault in as read
        with mmap.mmap(handle.fileno(), 0, flags=flags, prot=mmap.PROT_READ) as mapped:
            start = 0
            for offset, rows in runs:
                values = np.frombuffer(mapped, dtype=block.dtype, count=rows * block.shape[1], offset=offset)
                block[start : start + rows] = values.reshape(rows, -1)  # a plain copy: numpy releases the GIL
                start += rows
                del values  # the map cannot close while an array still points into it
    return True


def _scatter_part(file: Path, where: _Wanted, x: np.ndarray, mask: np.ndarray) -> tuple[set[str], np.ndarray]:
    """Reads one part, copies its wanted rows into x and mask, and returns the views it holds and the positions of
    the wanted items it holds rows of made from other media (stale, and not copied). Parts share no rows, so threads
    writing at once cannot disagree.

    A part's rows are usually one run of consecutive rows of x (items in the order asked, every frame present):
    the vectors are then read from the file straight into that block (see _read_into), or else decoded by PyArrow
    and block-copied, which releases the GIL, where a fancy-indexed copy holds it and serialises the threads.
    """
    part = pq.ParquetFile(file, memory_map=True, read_dictionary=DICTIONARY_COLUMNS)
    table = part.read(columns=[*KEY_COLUMNS, "media"], use_threads=False)
    views, frames = x.shape[1:3]
    item, view = _positions(table["item_id"], where.items), _positions(table["view"], where.views)
    asked = item >= 0
    stale = asked & (_positions(table["media"], where.media) != where.item_media[np.where(asked, item, 0)])
    t = table["t"].to_numpy()
    keep = asked & ~stale & (view >= 0) & (t < frames)
    rows = (item * views + view) * frames + t
    mask.reshape(-1)[rows[keep]] = True
    flat, field = x.reshape(-1, x.shape[-1]), part.schema_arrow.field("feature")
    one_block = len(rows) and keep.all() and (np.diff(rows) == 1).all()
    held = set(pc.unique(table["view"]).to_pylist())
    stale_items = np.unique(item[stale])
    if one_block and vector_layout(field)[0] == x.dtype and _read_into(file, part, flat[rows[0] : rows[-1] + 1]):
        return held, stale_items
    start = 0
    for chunk in part.read(columns=["feature"], use_threads=False)["feature"].chunks:
        span = slice(start, start + len(chunk))
        start += len(chunk)
        values, wanted, target = vectors(chunk, field), keep[span], rows[span]
        if len(target) and wanted.all() and (np.diff(target) == 1).all():
            flat[target[0] : target[0] + len(target)] = values
        else:
            flat[target[wanted]] = values[wanted]
    return held, stale_items


def _pairing(view_lists: Sequence[list[str]]) -> tuple[list[np.ndarray], list[str]]:
    """Variants of several feature sets paired by index, the shorter lists cycling (aesthetic center,hflip with
    fragments s0..s3 gives center+s0, hflip+s1, center+s2, hflip+s3): every pair is a training sample and a test-time
    view, and each set's variants appear equally often when the counts divide. Returns each set's pick of its views
    and the paired names."""
    count = max(len(views) for views in view_lists)
    picks = [np.arange(count) % len(views) for views in view_lists]
    names = ["+".join(views[pick[k]] for views, pick in zip(view_lists, picks, strict=True)) for k in range(count)]
    return picks, names


def concat_features(sets: Sequence[Features]) -> Features:
    """Several feature sets of the same items and frames side by side on the feature axis, for a head reading several
    view families of one stream, variants paired (see _pairing). A frame is present where it is in every set."""
    if len(sets) == 1:
        return sets[0]
    first = sets[0]
    for other in sets[1:]:
        if other.item_ids != first.item_ids or other.x.shape[2] != first.x.shape[2]:
            raise ValueError("feature sets to concatenate must hold the same items and frames")
    picks, views = _pairing([s.views for s in sets])
    x = np.concatenate([s.x[:, pick] for s, pick in zip(sets, picks, strict=True)], axis=-1)
    mask = np.logical_and.reduce([s.mask[:, pick] for s, pick in zip(sets, picks, strict=True)])
    return Features(x=x, mask=mask, item_ids=first.item_ids, views=views)


@dataclass
class Streams:
    """The feature streams a head reads, for the same items and the same paired views: each its own Features, with
    its own time axis and width (key frames of a backbone's view families; clips of a motion encoder)."""

    parts: list[Features]

    @classmethod
    def pair(cls, streams: Sequence[Features]) -> Streams:
        """Streams of the same items, their views paired as feature sets are (see _pairing)."""
        for other in streams[1:]:
            if other.item_ids != streams[0].item_ids:
                raise ValueError("feature streams to pair must hold the same items")
        picks, views = _pairing([s.views for s in streams])
        return cls([Features(s.x[:, p], s.mask[:, p], s.item_ids, views) for s, p in zip(streams, picks, strict=True)])

    @property
    def item_ids(self) -> list[str]:
        return self.parts[0].item_ids

    @property
    def views(self) -> list[str]:
        return self.parts[0].views

    @property
    def dims(self) -> list[int]:
        return [part.x.shape[-1] for part in self.parts]

    def present(self) -> np.ndarray:
        """Items with a frame in some stream and view."""
        return np.logical_or.reduce([part.mask.any(axis=(1, 2)) for part in self.parts])

    def take(self, index: np.ndarray) -> Streams:
        """The items at `index` (positions, or a boolean mask)."""
        ids = [self.item_ids[k] for k in (np.flatnonzero(index) if index.dtype == bool else index)]
        return Streams([Features(p.x[index], p.mask[index], ids, p.views) for p in self.parts])


def family_variants(views: Sequence[str], families: int) -> list[tuple[str, ...]]:
    """Per family, the variants named in paired view names (`center+s0` -> center for the first, s0 for the second)."""
    parts = [view.split("+") for view in views]
    return [tuple(dict.fromkeys(p[i] for p in parts)) for i in range(families)]
