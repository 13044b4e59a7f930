"""`cache` and `cache prune`: what the feature caches hold, and removing versions of items (features.inventory). The
spine's part is reading the data folders a prune keeps, which only tracks can: each `keep=` folder is read as the data
folder of every track whose caches are pruned, and the versions its files are now make that track's keep set."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from rich.table import Table

from features.fingerprint import item_fingerprints
from features.inventory import Freed, list_caches, prune
from tracks import LayoutError, get_track, list_tracks
from workbench.config import CacheConfig, ConfigError, PruneConfig
from workbench.console import table
from workbench.data import with_unlabelled

GB = 1e9


def size_text(count: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(count) >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{int(count)} B"


def when(posix: float | None) -> str:
    return "-" if posix is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(posix))


def cache_table(cfg: CacheConfig) -> tuple[Table, list[str]]:
    """The table of `cache`: a row per cache folder; and notes on the folders of an older schema."""
    caches = list_caches(cfg.cache, cfg.track or None)
    title = f"feature caches in {cfg.cache}" + (f" ({cfg.track})" if cfg.track else "")
    columns = ["track", "key", "settings", "items", "versions", "most of one item", "size", "last read"]
    rows, notes = [], []
    for cache in caches:
        if cache.older:
            rows.append([cache.track, cache.key, cache.settings, "-", "-", "-", size_text(cache.bytes), "never"])
            notes.append(
                f"{cache.folder}: written by an older version of the workbench (schema {cache.schema}), never read: "
                f"delete it to free {size_text(cache.bytes)}"
            )
            continue
        row = [cache.items, len(cache.versions), cache.most_versions, size_text(cache.bytes), when(cache.last_read)]
        rows.append([cache.track, cache.key, cache.settings, *row])
    if not caches:
        notes.append(f"no feature caches in {cfg.cache}")
    return table(title, columns, rows), notes


def keep_sets(
    folders: Sequence[str], tracks: Iterable[str], cache_root: str, unlabelled: str = ""
) -> tuple[dict[str, set[tuple[str, str]]], list[str]]:
    """Per track, the (item id, fingerprint) pairs the `folders` hold now, each folder read as that track's data
    folder (a folder not in its layout holds nothing of it) with the media `unlabelled=` declares beside it, as
    `train` reads them; a track no folder fits is left out, and said so."""
    keep, notes = {}, []
    registered = set(list_tracks())
    for name in tracks:
        if name not in registered:
            notes.append(f"{name}: not a track of this workbench; its caches are left alone by keep=")
            continue
        track, held, fitted = get_track(name), set(), []
        for folder in folders:
            try:
                items = track.read_items(folder)
            except (LayoutError, FileNotFoundError):
                continue
            items = with_unlabelled(items, track, unlabelled, Path(folder))  # as `train` reads the folder
            held |= set(zip(items["item_id"], item_fingerprints(items, cache_root), strict=True))
            fitted.append(folder)
        if fitted:
            keep[name] = held
            notes.append(f"{name}: keeping the {len(held)} versions of items in {', '.join(fitted)}")
        else:
            notes.append(f"{name}: no keep= folder is a {name} data folder; its caches are left alone by keep=")
    return keep, notes


def prune_caches(cfg: PruneConfig) -> tuple[list[Freed], list[str]]:
    """Prunes as `cfg` says; what was freed per folder, and notes on what the keep folders held."""
    if not cfg.keep and cfg.older <= 0 and cfg.size <= 0:
        raise ConfigError(
            "cache prune needs a rule: keep=<data folder>,... (every version those folders do not hold goes), "
            "older=<days> (versions last read longer ago go) or size=<GB> (the least recently read go until it fits)"
        )
    if cfg.older < 0 or cfg.size < 0:
        raise ConfigError(f"older={cfg.older}, size={cfg.size}: a number of days or GB above 0 (0: no such rule)")
    keep, notes = None, []
    if cfg.keep:
        missing = [folder for folder in cfg.keep if not Path(folder).is_dir()]
        if missing:
            raise ConfigError(f"keep={','.join(missing)}: no such folder")
        tracks = sorted({cache.track for cache in list_caches(cfg.cache, cfg.track or None) if not cache.older})
        keep, notes = keep_sets(cfg.keep, tracks, cfg.cache, cfg.unlabelled)
    older = cfg.older if cfg.older > 0 else None
    size = cfg.size * GB if cfg.size > 0 else None
    return prune(cfg.cache, cfg.track or None, keep, older, size), notes


def freed_table(freed: list[Freed], cfg: PruneConfig) -> Table:
    """The table of `cache prune`: a row per folder it removed versions from, and their total."""
    rows = [[f.track, f.key, f.versions, f.rows, size_text(f.bytes)] for f in freed]
    total = ["all", f"{len(freed)} folder(s)", sum(f.versions for f in freed), sum(f.rows for f in freed)]
    rows.append([*total, size_text(sum(f.bytes for f in freed))])
    return table(f"pruned from {cfg.cache}", ["track", "key", "versions", "rows", "freed"], rows)
