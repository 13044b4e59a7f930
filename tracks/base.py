"""What every track declares, and the checks every organiser label file goes through.

The items table (one row per media item, train and test together) is the contract between a track and the rest of
the workbench: columns `ITEM_COLUMNS` plus one float column per target (NaN where unlabelled).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from workbench.registry import Registry

ITEM_COLUMNS = ("item_id", "path", "split", "group")

TRACKS: Registry[type[Track]] = Registry("track")


class LayoutError(ValueError):
    """The organiser's files are not what the track expects; the message names the file and row."""


def register_track(cls: type[Track]) -> type[Track]:
    return TRACKS.register(cls.name)(cls)


@dataclass(frozen=True)
class SubmissionFormat:
    """A leaderboard's CSV: the file's name at the zip root, its id column and one column per target."""

    filename: str
    id_column: str
    score_columns: tuple[str, ...]

    def to_csv(self, pred: pd.DataFrame, targets: Sequence[str]) -> bytes:
        """Rows in `pred`'s order; floats written with full precision so a re-read gives the same numbers."""
        table = pd.DataFrame({self.id_column: pred.index.astype(str)})
        for column, target in zip(self.score_columns, targets, strict=True):
            table[column] = pred[target].to_numpy(dtype=np.float64)
        return table.to_csv(index=False).encode()

    def read(self, path: Path, targets: Sequence[str]) -> pd.DataFrame:
        """Reads a prediction file, or the file of this name at the root of a zip, into a frame indexed by id."""
        path = Path(path)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if self.filename not in archive.namelist():
                    raise LayoutError(
                        f"{path}: no {self.filename} at the zip root (found: {', '.join(archive.namelist()) or 'nothing'})"
                    )
                raw = archive.read(self.filename)
            source = f"{path}:{self.filename}"
        else:
            raw = path.read_bytes()
            source = str(path)
        table = pd.read_csv(io.BytesIO(raw), dtype={self.id_column: str})
        table = require_columns(table, (self.id_column, *self.score_columns), source)
        require_unique(table[self.id_column], source)
        values = {t: numeric_column(table, c, source) for c, t in zip(self.score_columns, targets, strict=True)}
        return pd.DataFrame(values, index=pd.Index(table[self.id_column], name="item_id"))


class Track:
    """A challenge track. Subclasses set the class attributes and implement the four methods."""

    name: ClassVar[str]
    title: ClassVar[str]
    media: ClassVar[str] = "video"
    targets: ClassVar[tuple[str, ...]] = ("score",)
    # Predictions outside this range are refused at export: it brackets the label scale with room for a
    # regression head's overshoot, and catches garbage (a wrong scale, an exploded model).
    score_range: ClassVar[tuple[float, float]]
    submission: ClassVar[SubmissionFormat]
    # Per-track configuration defaults (any key of the commands' configs), applied under the user's words.
    defaults: ClassVar[dict[str, object]] = {}

    def read_items(self, data: Path) -> pd.DataFrame:
        """The items table of the organiser's layout under `data`."""
        raise NotImplementedError

    def selection_score(self, pred: pd.DataFrame, items: pd.DataFrame) -> dict[str, float]:
        """The track's score on labelled items (out-of-fold); key `score` is what checkpoints are selected on."""
        raise NotImplementedError

    def official_score(self, pred: pd.DataFrame, truth: Path) -> dict[str, float | str]:
        """The organiser's score of `pred` against the organiser-side truth folder."""
        raise NotImplementedError

    def synthesize(self, out: Path, items: int, seed: int, width: int = 0, height: int = 0) -> None:
        """Writes a small dataset in the organiser's exact layout, with organiser-side truth under `out/truth`;
        media of `width` x `height` (0: the track's usual size)."""
        raise NotImplementedError


def require_columns(table: pd.DataFrame, columns: Sequence[str], source: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise LayoutError(
            f"{source}: missing column(s) {', '.join(missing)}; expected {', '.join(columns)}, "
            f"found {', '.join(map(str, table.columns)) or 'no columns'}"
        )
    return table


def numeric_column(table: pd.DataFrame, column: str, source: str, allow_empty: bool = False) -> np.ndarray:
    """The column as float64; a non-numeric cell is an error naming its line (header is line 1)."""
    raw = table[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(values) & raw.notna().to_numpy()
    if not allow_empty:
        bad |= raw.isna().to_numpy()
    bad |= np.isinf(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise LayoutError(
            f"{source}, line {row + 2}: {column}={raw.iloc[row]!r} is not a finite number "
            f"({int(bad.sum())} such row(s))"
        )
    return values


def require_unique(ids: pd.Series, source: str) -> None:
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        first = duplicated.iloc[0]
        lines = [int(i) + 2 for i in np.flatnonzero((ids == first).to_numpy())]
        raise LayoutError(f"{source}: id {first!r} appears more than once (lines {lines}); ids must be unique")


def media_path(data: Path, item_id: str, source: str) -> str:
    """The media file of `item_id` under `data`, refusing ids that would escape the data folder."""
    candidate = Path(item_id)
    root = data.resolve()
    resolved = (root / candidate).resolve()
    if candidate.is_absolute() or not resolved.is_relative_to(root):
        raise LayoutError(f"{source}: id {item_id!r} points outside the data folder {root}")
    return str(resolved)


def check_split_overlap(train_ids: pd.Series, test_ids: pd.Series, source: str) -> None:
    overlap = sorted(set(train_ids) & set(test_ids))
    if overlap:
        raise LayoutError(f"{source}: {len(overlap)} id(s) are in both the training and the test list, e.g. {overlap[0]!r}")
