"""Reading an organiser's files: the checks every label file goes through, and where a listed item's media lie.

Every problem is a LayoutError naming the file (and the line, where there is one), so a wrong download or a changed
format is told apart from a bug.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from pathlib import Path

import numpy as np
import pandas as pd

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")


class LayoutError(ValueError):
    """The organiser's files are not what the track expects; the message names the file and row."""


def require_columns(table: pd.DataFrame, columns: Sequence[str], source: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise LayoutError(
            f"{source}: missing column(s) {', '.join(missing)}; expected {', '.join(columns)}, "
            f"found {', '.join(map(str, table.columns)) or 'no columns'}"
        )
    return table


def numeric_column(
    table: pd.DataFrame, column: str, source: str, allow_empty: bool = False, header: bool = True
) -> np.ndarray:
    """The column as float64; a non-numeric cell is an error naming its line in the file (header, if any, is line 1)."""
    raw = table[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(values) & raw.notna().to_numpy()
    if not allow_empty:
        bad |= raw.isna().to_numpy()
    bad |= np.isinf(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise LayoutError(
            f"{source}, line {row + 1 + header}: {column}={raw.iloc[row]!r} is not a finite number "
            f"({int(bad.sum())} such row(s))"
        )
    return values


def read_csv_list(
    path: Path, id_column: str, score_column: str, labelled: bool, dtype: dict[str, type] | None = None
) -> pd.DataFrame:
    """A list with a header: `id_column` (stripped, unique) and, where `labelled`, `score_column` as numbers; a
    missing file, column or duplicate, or a cell that is no number, is a LayoutError naming the file (and line)."""
    if not path.is_file():
        raise LayoutError(f"{path}: label file not found")
    table = pd.read_csv(path, dtype={id_column: str, **(dtype or {})})
    require_columns(table, (id_column, score_column) if labelled else (id_column,), str(path))
    table[id_column] = table[id_column].str.strip()
    require_unique(table[id_column], str(path))
    if labelled:
        table[score_column] = numeric_column(table, score_column, str(path))
    return table


def require_unique(ids: pd.Series, source: str, header: bool = True) -> None:
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        first = duplicated.iloc[0]
        lines = [int(i) + 1 + header for i in np.flatnonzero((ids == first).to_numpy())]
        raise LayoutError(f"{source}: id {first!r} appears more than once (lines {lines}); ids must be unique")


def media_paths(data: Path, item_ids: Iterable[str], sources: str | Iterable[str]) -> list[str]:
    """The media file of each id under `data`, refusing ids that would escape the data folder (`sources`: the list
    each id was read from, one for all or one per id, for the message). The folder is resolved once and each id
    joined to it as text: resolving every file cost a track of 30,000 videos eight seconds per command, and a media
    file or split folder that is a link elsewhere (a dataset on another disk) is the user's to make."""
    root = os.path.realpath(data)
    inside = root.rstrip(os.sep) + os.sep
    paths = []
    for item_id, source in zip(item_ids, repeat(sources) if isinstance(sources, str) else sources):
        path = os.path.normpath(os.path.join(root, item_id))
        if os.path.isabs(item_id) or not path.startswith(inside):
            raise LayoutError(f"{source}: id {item_id!r} points outside the data folder {root}")
        paths.append(path)
    return paths


def source_groups(mapping_file: Path, item_ids: pd.Series) -> pd.Series:
    """Each item's source from an optional `filename,source` file (ours: the organisers publish none), so that a
    source's versions share a fold; without the file each item is its own group."""
    if not mapping_file.is_file():
        return item_ids.copy()
    mapping = pd.read_csv(mapping_file, dtype=str)
    require_columns(mapping, ("filename", "source"), str(mapping_file))
    require_unique(mapping["filename"], str(mapping_file))
    groups = item_ids.map(dict(zip(mapping["filename"], mapping["source"])))
    if groups.isna().any():
        missing = item_ids[groups.isna()].iloc[0]
        raise LayoutError(f"{mapping_file}: no source for {int(groups.isna().sum())} item(s), e.g. {missing!r}")
    return groups


def find_media(data: Path, item_ids: Sequence[str], folders: Sequence[str], source: str) -> list[str]:
    """The media file of each id in the first of `folders` (under `data`, then `data` itself) that holds it; where
    none does, its path in the first, so a missing file is named where the track expects it."""
    candidates = [media_paths(data / folder, item_ids, source) for folder in (*folders, ".")]
    return [next((path for path in paths if os.path.isfile(path)), paths[0]) for paths in zip(*candidates)]


def phase_list(data: Path, validation: str, test: str) -> Path:
    """The list a challenge with two phases is scored on now: its test list once the download holds it, its
    validation list before."""
    return data / (test if (data / test).is_file() else validation)


def phased_items(
    data: Path, lists: tuple[str, str, str], read: Callable[[Path, bool], pd.DataFrame], id_column: str
) -> tuple[pd.DataFrame, Path]:
    """The training list and the current phase's list (`lists`: train, validation, test; see phase_list), each read
    by `read(path, labelled)`, as one table with a `split` column (the phase's labels NaN); and the phase's list."""
    train = read(data / lists[0], True)
    listed = phase_list(data, *lists[1:])
    test = read(listed, False)
    check_split_overlap(train[id_column], test[id_column], str(data))
    return pd.concat([train.assign(split="train"), test.assign(split="test")], ignore_index=True), listed


def check_split_overlap(train_ids: pd.Series, test_ids: pd.Series, source: str) -> None:
    overlap = sorted(set(train_ids) & set(test_ids))
    if overlap:
        raise LayoutError(
            f"{source}: {len(overlap)} id(s) are in both the training and the test list, e.g. {overlap[0]!r}"
        )


def lookup(pred: pd.Series, ids: pd.Series, source: str) -> np.ndarray:
    """Predicted scores in the order of `ids`; organiser scorers crash on a missing id, we say which."""
    values = pred.reindex(ids.to_numpy()).to_numpy(dtype=np.float64)
    missing = ids[np.isnan(values)]
    if len(missing):
        raise LayoutError(f"{source}: no prediction for {len(missing)} id(s), e.g. {missing.iloc[0]!r}")
    return values


def list_images(folder: Path) -> list[Path]:
    """The image files directly in `folder`, by name; a missing folder is an error naming it."""
    if not folder.is_dir():
        raise LayoutError(f"{folder}: image folder not found")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def folder_items(folder: Path, split: str = "test") -> pd.DataFrame:
    """Every image of `folder` as an item named by its file name: the unlabelled images a challenge ships to score.
    A folder not there yet (a test set released after the training data) gives no items: training and sweeps run
    on the training data alone, `check` reports the empty split and `submit` refuses an empty test list."""
    images = list_images(folder) if folder.is_dir() else []
    paths = [str(p.resolve()) for p in images]
    return pd.DataFrame({"item_id": [p.name for p in images], "path": paths, "split": split})
