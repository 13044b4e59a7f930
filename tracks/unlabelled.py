"""Media declared without labels (`unlabelled=`): items of a split of their own, for pseudo-labelling recipes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tracks.base import Track
from tracks.layout import IMAGE_SUFFIXES, VIDEO_SUFFIXES, LayoutError, require_unique

UNLABELLED = "unlabelled"  # the split of media declared without labels (`unlabelled=`)


def unlabelled_items(track: Track, source: str | Path, data: Path) -> pd.DataFrame:
    """Media declared without labels: every media file directly in a folder, or each path a list file names (one a
    line, relative to the list's folder; `#` comments and blank lines skipped); `source` as given, else under
    `data`. Items `unlabelled/<name>` of a split of their own, grouped by the track's rule (Track.group_of), with
    the track's other columns (categories parsed from the name, texts empty, targets NaN)."""
    path = Path(source)
    path = path if path.exists() or path.is_absolute() else Path(data) / path
    if not path.exists():
        raise LayoutError(f"unlabelled={source}: no such folder or list (looked at {path.resolve()})")
    suffixes = VIDEO_SUFFIXES if track.inputs[0].time_axis else IMAGE_SUFFIXES
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    else:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        files = [path.parent / line for line in lines if line and not line.startswith("#")]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise LayoutError(f"{path}: {len(missing)} listed file(s) not found, e.g. {missing[0]}")
    if not files:
        raise LayoutError(f"unlabelled={source}: no {track.unit} files in it")
    names = [f.name for f in files]
    items = pd.DataFrame(
        {
            "item_id": [f"{UNLABELLED}/{name}" for name in names],
            "path": [str(f.resolve()) for f in files],
            "split": UNLABELLED,
            "group": [track.group_of(name) for name in names],
        }
    )
    require_unique(items["item_id"], f"unlabelled={source}")
    for kind in track.inputs[1:]:
        parse = getattr(kind, "parse", None)
        items[kind.column] = [parse(name) for name in names] if parse else ""
    for target in track.targets:
        items[target] = np.nan
    return items
