"""What the feature cache holds, and pruning it: the cache keeps every version of an item it has seen (features.cache)
until the user removes versions here.

A version is an item's rows (and failures) made from one file: an (item id, fingerprint) pair. `list_caches` reads
each cache folder's key columns (never its vectors) and says per folder what it holds: items, versions, the most
versions of one item, its size on disk and when it was last read. A reader touches the parts it served rows from
(features.reader), so a version's last read is the newest modification time of the live parts holding its rows; a
version never read since it was written counts from its writing.

`prune` removes whole versions by three rules, a version going where any rule says so: `keep`, per track, the versions
the user's data folders hold now (every other version of that track's folders goes; a track without a keep set is
left alone by this rule); `older`, versions last read more than that many days ago; `size`, across the folders
pruned, the least recently read versions until the total fits. Each folder is pruned under its extraction lock
(features.cache.exclusive), so never beside an extraction, by features.cache.drop_rows: parts rewritten whole as their
next generation, then the old ones unlinked, so a kill at any point leaves every part whole and every row not being
pruned present, and a reader beside it lists the parts again when one it listed is gone.

Folders written by an older schema are never read (features.cache.older_caches); they are listed, with their size,
so a user can delete them, and a prune leaves them alone.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from common.atomic import remove_stale_temporaries
from features.cache import (
    FAILURE_GLOB,
    PART_GLOB,
    RENAMED_KEYS,
    drop_rows,
    exclusive,
    live_parts,
    remove_superseded,
)
from features.fingerprint import file_part
from features.spec import SCHEMA_VERSION

VERSION = ["item_id", "fingerprint"]
DAY = 86400.0


@dataclass
class CacheFolder:
    """One feature set's folder: what it holds, per version (`versions`: item_id, fingerprint, rows, bytes, last_read,
    the bytes being its share of the files holding it), and its size on disk."""

    folder: Path
    track: str
    key: str
    settings: str
    schema: int
    bytes: int
    versions: pd.DataFrame = field(repr=False)

    @property
    def older(self) -> bool:
        """Written by an older schema: never read; only deleting it frees its space."""
        return self.schema < SCHEMA_VERSION

    @property
    def items(self) -> int:
        return self.versions["item_id"].nunique()

    @property
    def most_versions(self) -> int:
        """The most versions of one item."""
        return int(self.versions.groupby("item_id").size().max()) if len(self.versions) else 0

    @property
    def last_read(self) -> float | None:
        """When a row of it was last read (or written), as a POSIX time; None for a folder without rows."""
        read = self.versions.loc[self.versions["rows"] > 0, "last_read"]
        return float(read.max()) if len(read) else None


@dataclass(frozen=True)
class Freed:
    """What a prune removed from one folder."""

    track: str
    key: str
    folder: Path
    versions: int
    rows: int
    bytes: int


def folder_bytes(folder: Path) -> int:
    """Bytes of the folder's files."""
    total = 0
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):  # a temporary renamed or a part unlinked while we look
            total += path.stat().st_size if path.is_file() else 0
    return total


def settings(spec: dict) -> str:
    """A short description of a feature set from its manifest's spec: the encoder, the view family and its geometry,
    the media and sampling, the stored dtype."""
    spec = {RENAMED_KEYS.get(k, k): v for k, v in spec.items()}
    words = [str(spec.get("backbone", "?"))]
    if spec.get("weights") not in (None, "random", "none"):
        words[0] += f" ({str(spec['weights'])[:19]})"
    geometry = " ".join(f"{k}={v}" for k, v in (spec.get("geometry") or {}).items())
    words.append(f"{spec.get('view', '?')} {geometry}".strip())
    sampling = spec.get("sampling") or {}
    media = str(spec.get("decoder", "?"))
    if sampling:
        media += f", {sampling.get('frames')} frames at {sampling.get('fps')} fps"
        media += f", clips of {sampling['clip']}" if "clip" in sampling else ""
        media += f", {sampling['audio_seconds']} s audio" if "audio_seconds" in sampling else ""
    if spec.get("light"):
        media += f", {spec['light']} light"
    words += [media, str(spec.get("dtype", "?"))]
    return "; ".join(words)


def _tables_versions(folder: Path, glob: str, counted: bool) -> pd.DataFrame:
    """Per version held in the live tables matching `glob`: rows (0 where not `counted`: failures), its share of
    the tables' bytes, and the newest modification time of a table holding it."""
    frames = []
    for part in live_parts(folder, glob):
        try:
            status = part.stat()
            keys = pq.read_table(part, columns=VERSION).to_pandas()
        except FileNotFoundError:  # replaced by a prune beside us; its successor is listed by the next look
            continue
        counts = keys.groupby(VERSION, observed=True).size().rename("rows").reset_index()
        counts["bytes"] = status.st_size * counts["rows"] / max(len(keys), 1)
        counts["last_read"] = status.st_mtime
        if not counted:
            counts["rows"] = 0
        frames.append(counts)
    return pd.concat(frames, ignore_index=True) if frames else _no_versions()


def _no_versions() -> pd.DataFrame:
    columns = {"item_id": str, "fingerprint": str, "rows": np.int64, "bytes": float, "last_read": float}
    return pd.DataFrame({name: pd.Series(dtype=kind) for name, kind in columns.items()})


def folder_versions(folder: Path) -> pd.DataFrame:
    """Every version a (current-schema) cache folder holds: item_id, fingerprint, rows, bytes, last_read. A version
    with failures alone has no rows, and is last read when its failure was recorded."""
    with_rows, failed = (
        _tables_versions(folder, glob, counted=glob == PART_GLOB)
        .groupby(VERSION)
        .agg(rows=("rows", "sum"), bytes=("bytes", "sum"), last_read=("last_read", "max"))
        for glob in (PART_GLOB, FAILURE_GLOB)
    )
    versions = with_rows.add(failed[["rows", "bytes"]], fill_value=0)
    versions["last_read"] = with_rows["last_read"].combine_first(failed["last_read"])
    versions = versions.reset_index()
    versions["rows"] = versions["rows"].astype(np.int64)
    return versions[[*VERSION, "rows", "bytes", "last_read"]].sort_values(VERSION, ignore_index=True)


def _folders(root: Path, track: str | None) -> list[Path]:
    tracks = [root / track] if track else sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    return [manifest.parent for folder in tracks for manifest in sorted(folder.glob("*/manifest.json"))]


def describe(folder: Path) -> CacheFolder | None:
    """What one cache folder holds; None where its manifest cannot be read (not a cache folder)."""
    try:
        spec = json.loads((folder / "manifest.json").read_text()).get("spec", {})
    except (OSError, ValueError):
        return None
    schema = int(spec.get("schema", 0))
    versions = folder_versions(folder) if schema >= SCHEMA_VERSION else _no_versions()  # other columns: not read
    return CacheFolder(folder, folder.parent.name, folder.name, settings(spec), schema, folder_bytes(folder), versions)


def list_caches(root: str | Path, track: str | None = None) -> list[CacheFolder]:
    """Every cache folder under `root` (`<root>/<track>/<key>/` with a manifest), of one track or of all, in order of
    track and key; folders of an older schema included (`older`), their versions not read."""
    return [found for folder in _folders(Path(root), track) if (found := describe(folder)) is not None]


def _condemned(
    caches: list[CacheFolder],
    keep: Mapping[str, set[tuple[str, str]]] | None,
    older: float | None,
    size: float | None,
    now: float,
) -> pd.DataFrame:
    """The versions the rules remove, with their folder (`folder`: index into caches)."""
    versions = pd.concat(
        [cache.versions.assign(folder=k, track=cache.track) for k, cache in enumerate(caches)], ignore_index=True
    )
    if versions.empty:
        return versions
    gone = np.zeros(len(versions), dtype=bool)
    for track, kept in (keep or {}).items():  # a version bound to texts too is kept while its file is
        pairs = pd.MultiIndex.from_arrays([versions["item_id"], versions["fingerprint"].map(file_part)])
        gone |= (versions["track"] == track).to_numpy() & ~pairs.isin(list(kept))
    if older is not None:
        gone |= (versions["last_read"] < now - older * DAY).to_numpy()
    if size is not None:
        excess = sum(cache.bytes for cache in caches) - versions.loc[gone, "bytes"].sum() - size
        if excess > 0:
            left = versions[~gone].sort_values(["last_read", "track", "folder", *VERSION])
            freed = left["bytes"].cumsum()
            upto = int(np.searchsorted(freed.to_numpy(), excess)) + 1  # the fewest oldest whose bytes cover it
            gone[versions.index.get_indexer(left.index[:upto])] = True
    return versions[gone]


def prune(
    root: str | Path,
    track: str | None = None,
    keep: Mapping[str, set[tuple[str, str]]] | None = None,
    older: float | None = None,
    size: float | None = None,
    now: float | None = None,
) -> list[Freed]:
    """Removes the versions the rules name (see the module's docstring) from the current-schema cache folders under
    `root` (of `track`, or of every track); `keep` maps a track to the (item id, fingerprint) pairs its data folders
    hold now, `older` is in days and `size` in bytes. Every folder is locked (in path order, as extractions lock them)
    before its versions are read, and stays locked until it is pruned. Returns what was freed, per folder."""
    if keep is None and older is None and size is None:
        raise ValueError("prune needs a rule: keep, older or size")
    now = time.time() if now is None else now
    folders = [cache.folder for cache in list_caches(root, track) if not cache.older]
    with contextlib.ExitStack() as locks:
        for folder in sorted(folders):
            locks.enter_context(exclusive(folder))
        for folder in folders:
            remove_stale_temporaries(folder)
            remove_superseded(folder)
        caches = [describe(folder) for folder in folders]
        condemned = _condemned(caches, keep, older, size, now)
        freed = []
        for k, cache in enumerate(caches):
            doomed = condemned[condemned["folder"] == k]
            if doomed.empty:
                continue
            pairs = list(doomed[VERSION].itertuples(index=False, name=None))

            def matches(item_ids: np.ndarray, fingerprints: np.ndarray, pairs: list = pairs) -> np.ndarray:
                return pd.MultiIndex.from_arrays([item_ids, fingerprints]).isin(pairs)

            before = folder_bytes(cache.folder)
            rows = drop_rows(cache.folder, matches)
            drop_rows(cache.folder, matches, FAILURE_GLOB)
            freed.append(
                Freed(cache.track, cache.key, cache.folder, len(pairs), rows, before - folder_bytes(cache.folder))
            )
    return freed
