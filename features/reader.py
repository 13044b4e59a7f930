"""Reading cached features for training: every item's per-frame vectors scattered into one dense array
(`Features`), feature sets side by side (`concat_features`) and streams paired by view (`Streams`).

A row is served only while the item's file has the fingerprint it was made from (features.fingerprint): a reader
passes the current ones and gets the rows of those versions alone; rows of other versions of the same items (a second
dataset with the same ids, a file since re-downloaded) are skipped, and an item with rows of other versions but none
of its file as it is now is refused, with the items named (StaleFeatures). A part holding no row to serve has its
key columns read and nothing else, so other versions in the folder cost a read of their keys. A read records when it
was made on the parts it served rows from (their modification time, `os.utime`: no content is written), which is
what a prune by age or size goes by (features.inventory); a prune beside a reader replaces parts, and a reader that
finds a listed part gone lists them again.

Reading is one pass over the live parts (features.cache.live_parts), a thread per part, with no Python loop per
row: a part's keys map to positions by one lookup per distinct value. A part whose rows fill a block of the dense
array (items in the order asked, every frame present) has its vectors copied straight from the mapped file into that
block (one copy, as `np.load` makes), which the store's layout allows (one uncompressed PLAIN page per row group,
holding the vectors and nothing else: see features.cache). Through PyArrow's decoder and then into the array, two
copies, reading ran at 0.43 of `np.load`; copied straight, at 0.52 to 0.61 (`just bench rows=cache`): the copy
itself runs as fast as `np.load`, and opening each part and reading its keys cost the rest. Parts of any other layout
or order go through PyArrow, with the same result.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common.tables import examples
from features.cache import (
    DICTIONARY_COLUMNS,
    KEY_COLUMNS,
    CacheError,
    held_fingerprints,
    live_parts,
    vector_layout,
    vectors,
)
from features.fingerprint import BOUND


class StaleFeatures(CacheError):
    """Cached rows made from other bytes than the items' files hold now (or other text, for a set bound to it)."""

    def __init__(self, folder: Path, stale: Sequence[str], bound: bool = False):
        changed = "or went missing, or the text they were made from changed" if bound else "or went missing"
        super().__init__(
            f"{folder}: {len(stale)} item(s) changed on disk ({changed}) since their features were cached: "
            f"{examples(stale, 5)}. Run `just extract` with the same words to re-extract them; nothing was trained on "
            "them."
        )
        self.stale = list(stale)


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
    """Where each wanted row goes, and which file it must have been made from."""

    items: dict[str, int]  # item id -> position
    fingerprints: dict[str, int]  # fingerprint -> code
    item_fingerprints: np.ndarray  # per item position, the code of its fingerprint now
    views: dict[str, int] | None = None  # view -> position; None while the views are being gathered


@dataclass
class _Keys:
    """A part's key columns, each row placed: its item's position (-1: not asked), whether it is of the asked item's
    file as it is now (`current`) or of another version of it (`other`)."""

    table: pa.Table
    item: np.ndarray
    current: np.ndarray
    other: np.ndarray

    @classmethod
    def read(cls, part: pq.ParquetFile, where: _Wanted) -> _Keys:
        table = part.read(columns=[*KEY_COLUMNS, "fingerprint"], use_threads=False)
        item = _positions(table["item_id"], where.items)
        asked = item >= 0
        same = _positions(table["fingerprint"], where.fingerprints) == where.item_fingerprints[np.where(asked, item, 0)]
        return cls(table, item, asked & same, asked & ~same)

    def views(self) -> set[str]:
        """The views of the rows that may be served: those of the asked items' files as they are now. One look at
        each distinct value of a chunk (the column is dictionary-encoded), none per row."""
        views, start = set(), 0
        for chunk in self.table["view"].chunks:
            chunk = chunk if pa.types.is_dictionary(chunk.type) else chunk.dictionary_encode()
            indices = chunk.indices.to_numpy()[self.current[start : start + len(chunk)]]
            start += len(chunk)
            views.update(chunk.dictionary.take(pa.array(np.unique(indices))).to_pylist())
        return views


def _open(file: Path, where: _Wanted) -> tuple[pq.ParquetFile, bool]:
    """The part, and whether its footer says it holds no row of any fingerprint asked for (a part of other versions
    or other items alone, whose keys then need not be read; a part written before footers said so is read)."""
    part = pq.ParquetFile(file, memory_map=True, read_dictionary=DICTIONARY_COLUMNS)
    held = held_fingerprints(part)
    return part, held is not None and not any(fingerprint in where.fingerprints for fingerprint in held)


MAX_RELISTS = 5  # a prune beside a reader rewrites parts; each time a listed one vanishes, the reader lists again


def read_features(
    folder: Path, item_ids: list[str], views: list[str] | None, frames: int, fingerprints: Sequence[str]
) -> Features:
    """Every requested item's per-frame features, scattered into a dense array; no Python loop over rows.
    `fingerprints` holds each item's fingerprint now (features.fingerprint): only rows made from those files are
    served; an item with rows of other versions but none of its file now is refused (StaleFeatures, naming the
    items). With the views named, every part is opened once, its keys and vectors read by one thread; with none
    named, the views cached for these files are gathered from every part first. A part of other versions alone is
    skipped by its footer (its keys read only if an asked item has no row of its file now, to name it); the parts
    that served rows get their modification time set to now, when the versions they hold were last read
    (features.inventory)."""
    if len(fingerprints) != len(item_ids):
        raise ValueError(f"{len(item_ids)} items but {len(fingerprints)} fingerprints")
    codes = {fingerprint: k for k, fingerprint in enumerate(dict.fromkeys(fingerprints))}
    where = _Wanted(
        {item: k for k, item in enumerate(item_ids)},
        codes,
        np.array([codes[fingerprint] for fingerprint in fingerprints], dtype=np.intp),
    )
    for _ in range(MAX_RELISTS):  # a listed part gone: replaced by its next generation, or emptied, by a prune
        with contextlib.suppress(FileNotFoundError):
            return _read(folder, list(item_ids), views, frames, where)
    return _read(folder, list(item_ids), views, frames, where)  # the last try: a vanished part is an error now


@dataclass
class _Found:
    """What the parts held, gathered across threads (each writes True only, so they cannot disagree): per asked item,
    whether a part holds rows of its file as it is now, or of another version of it; per view, whether it is cached
    for these files."""

    current: np.ndarray
    other: np.ndarray
    views: np.ndarray


def _read(folder: Path, item_ids: list[str], views: list[str] | None, frames: int, where: _Wanted) -> Features:
    files = live_parts(folder)
    if not files:
        raise CacheError(f"no features cached in {folder}: run `just extract` first")
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        views = list(views) if views else sorted(set().union(*pool.map(lambda file: _part_views(file, where), files)))
        dim = vector_layout(pq.read_schema(files[0]).field("feature"))[1]
        x = np.empty((len(item_ids), len(views), frames, dim), dtype=np.float32)
        mask = np.zeros((len(item_ids), len(views), frames), dtype=bool)
        where = replace(where, views={view: k for k, view in enumerate(views)})
        found = _Found(*(np.zeros(n, dtype=bool) for n in (len(item_ids), len(item_ids), len(views))))
        served = list(pool.map(lambda file: _scatter_part(file, where, x, mask, found), files))
        skipped = [file for file, read in zip(files, served, strict=True) if read is None]
        if skipped and not found.current.all():  # an item without a row of its file now: are others held?
            for items in pool.map(lambda file: _asked(file, where), skipped):
                found.other[items] = True
        stale = np.flatnonzero(found.other & ~found.current)
        if len(stale):
            bound = any(BOUND in fingerprint for fingerprint in where.fingerprints)
            raise StaleFeatures(folder, [item_ids[k] for k in stale], bound)
        if not found.views.all():
            available = set().union(*pool.map(lambda file: _part_views(file, where), files))
            unknown = [v for v, cached in zip(views, found.views, strict=True) if not cached]
            raise CacheError(
                f"{folder}: view(s) {', '.join(unknown)} not cached (cached: {', '.join(sorted(available))})"
            )
    for file, read in zip(files, served, strict=True):
        if read:
            with contextlib.suppress(OSError):  # a read-only cache, or a part a prune has since replaced
                os.utime(file)
    x[~mask] = 0.0
    return Features(x=x, mask=mask, item_ids=item_ids, views=views)


def _part_views(file: Path, where: _Wanted) -> set[str]:
    part, foreign = _open(file, where)
    return set() if foreign else _Keys.read(part, where).views()


def _asked(file: Path, where: _Wanted) -> np.ndarray:
    """The positions of the asked items a part of other versions alone holds rows of."""
    items = _positions(pq.read_table(file, columns=["item_id"], read_dictionary=["item_id"])["item_id"], where.items)
    return items[items >= 0]


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
    them as one uncompressed PLAIN page of a required column (as features.cache.write_part writes): that page is its
    header followed by the vectors' bytes and nothing else, so they end where the column chunk ends. None for any
    other layout."""
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


def _read_into(file: Path, part: pq.ParquetFile, flat: np.ndarray, rows: np.ndarray, keep: np.ndarray) -> bool:
    """Copies the part's kept vectors straight from the file into their rows of `flat` ([rows, dim] of x), if the
    part's layout allows (see _value_runs); False if it does not. A run of rows filling a block of `flat` in order is
    one plain copy (numpy releases the GIL); other rows are copied one by one, and rows not kept not at all.

    The file is mapped with its pages populated up front, so the copy is one pass over the page cache with no page
    fault per 4 KiB. (`os.preadv` into the array copied as fast, except where the vectors' offset in the file sat
    just below the array's within a page: the kernel's copy then ran at half speed, and neither offset is ours.)"""
    dtype = vector_layout(part.schema_arrow.field("feature"))[0]
    with open(file, "rb") as handle:
        runs = _value_runs(handle, part, flat.shape[1] * dtype.itemsize)
        if runs is None:
            return False
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # Linux only; elsewhere pages fault in as read
        with mmap.mmap(handle.fileno(), 0, flags=flags, prot=mmap.PROT_READ) as mapped:
            start = 0
            for offset, count in runs:
                values = np.frombuffer(mapped, dtype=dtype, count=count * flat.shape[1], offset=offset)
                _copy(values.reshape(count, -1), flat, rows[start : start + count], keep[start : start + count])
                start += count
                del values  # the map cannot close while an array still points into it
    return True


def _copy(values: np.ndarray, flat: np.ndarray, target: np.ndarray, wanted: np.ndarray) -> None:
    """values[k] into flat[target[k]] where wanted[k]: a block copy where they are all wanted and in order."""
    if len(target) and wanted.all() and (np.diff(target) == 1).all():
        flat[target[0] : target[0] + len(target)] = values
    elif wanted.any():
        flat[target[wanted]] = values[wanted]


def _scatter_part(file: Path, where: _Wanted, x: np.ndarray, mask: np.ndarray, found: _Found) -> bool | None:
    """Reads one part, copies its wanted rows into x and mask, notes in `found` what it holds, and returns whether
    it served a row; None for a part skipped by its footer (other versions alone, see _open). Rows of other versions
    are never copied. Parts share no rows, so threads writing at once cannot disagree.

    A part holding no wanted row (another dataset's versions, other items) has its vectors neither read nor copied.
    A part's rows are usually one run of consecutive rows of x (items in the order asked, every frame present): the
    vectors are then read from the file straight into that block (see _read_into), or else decoded by PyArrow and
    block-copied, which releases the GIL, where a fancy-indexed copy holds it and serialises the threads.
    """
    part, foreign = _open(file, where)
    if foreign:
        return None
    keys = _Keys.read(part, where)
    found.current[keys.item[keys.current]] = True
    found.other[keys.item[keys.other]] = True
    views, frames = x.shape[1:3]
    view, t = _positions(keys.table["view"], where.views), keys.table["t"].to_numpy()
    found.views[view[keys.current & (view >= 0)]] = True
    keep = keys.current & (view >= 0) & (t < frames)
    if not keep.any():
        return False
    rows = (keys.item * views + view) * frames + t
    mask.reshape(-1)[rows[keep]] = True
    flat = x.reshape(-1, x.shape[-1])
    if not _read_into(file, part, flat, rows, keep):
        start, field = 0, part.schema_arrow.field("feature")
        for chunk in part.read(columns=["feature"], use_threads=False)["feature"].chunks:
            span = slice(start, start + len(chunk))
            start += len(chunk)
            _copy(vectors(chunk, field), flat, rows[span], keep[span])
    return True


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
    def paired(cls, streams: Sequence[Features]) -> Streams:
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
