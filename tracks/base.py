"""What every track declares, and the checks every organiser label file goes through.

The items table (one row per media item, train and test together) is the contract between a track and the rest of
the workbench: columns `ITEM_COLUMNS` plus one float column per target (NaN where unlabelled).
"""

from __future__ import annotations

import abc
import copy
import io
import json
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from common import metrics
from common.atomic import write_bytes
from common.registry import Registry
from features.inputs import MediaInput, Video
from features.views import DEFAULT_FAMILY, FAMILIES, check_time_axis, split_variants

ITEM_COLUMNS = ("item_id", "path", "split", "group")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
TRUTH_FILE = "truth.csv"  # organiser-side truth of a synthetic dataset, under <data>/truth/
WITHHELD_TRUTH = "withheld.csv"  # beside it, the labels a synthetic dataset withheld (Track.withhold_labels)
WITHHELD_DIR = "withheld"  # and the folder of the media they were withheld from, for `unlabelled=withheld`

TRACKS: Registry[type[Track]] = Registry("track")


class LayoutError(ValueError):
    """The organiser's files are not what the track expects; the message names the file and row."""


def register_track(cls: type[Track]) -> type[Track]:
    check_test_views(cls)
    return TRACKS.register(cls.name)(cls)


def check_test_views(track: type[Track]) -> None:
    """A track's declared test-time (and demo) views must each belong to one of its default view families, every family
    must get one, and only video may shift key frames in time: a bad declaration fails when the track is loaded."""
    families = [FAMILIES.get(name) for name in str(track.defaults.get("view", DEFAULT_FAMILY)).split("+")]
    for name in ("tta_views", "demo_views"):
        views = getattr(track, name)
        try:
            split_variants(families, views or track.tta_views)
            check_time_axis(views, track.inputs[0].time_axis, track.inputs[0].decoder)
        except ValueError as error:
            raise ValueError(f"track {track.name}: {name} {', '.join(views)}: {error}") from None


@dataclass(frozen=True)
class SubmissionFormat(abc.ABC):
    """A leaderboard's prediction file, one kind per layout (CSV with or without a header, a JSON list): the file's
    name at the zip root, the id field and one field per target, and the readme beside it where the challenge asks
    for one. Each kind writes its bytes and reads them back as the organisers' scorer will, so every zip is checked
    before it takes its name."""

    filename: str
    id_column: str
    score_columns: tuple[str, ...]
    readme: str | None = None

    @staticmethod
    def readme_text(media: str, runtime: float, cpu: bool, extra_data: bool, other: str) -> bytes:
        """The NTIRE convention: four `key : value` lines, runtime per item in seconds, CPU[1]/GPU[0], extra data
        [1]/[0], a free description."""
        lines = (
            f"runtime per {media} [s] : {runtime:.4f}",
            f"CPU[1] / GPU[0] : {int(cpu)}",
            f"Extra Data [1] / No Extra Data [0] : {int(extra_data)}",
            f"Other description : {other}",
        )
        return ("\n".join(lines) + "\n").encode()

    def encode(self, pred: pd.DataFrame, targets: Sequence[str]) -> bytes:
        """The file's bytes: rows in `pred`'s order, floats with full precision so a re-read gives the same numbers."""
        table = pd.DataFrame({self.id_column: pred.index.astype(str)})
        for column, target in zip(self.score_columns, targets, strict=True):
            table[column] = pred[target].to_numpy(dtype=np.float64)
        return self.write_table(table)

    @abc.abstractmethod
    def write_table(self, table: pd.DataFrame) -> bytes:
        """A table of the id field then the score fields, as this kind's bytes."""

    @abc.abstractmethod
    def read_table(self, raw: bytes, source: str) -> pd.DataFrame:
        """This kind's bytes as a table with the id field and the score fields (cells as read)."""

    def read(self, path: Path, targets: Sequence[str]) -> pd.DataFrame:
        """Reads a prediction file, or the file of this name at the root of a zip, into a frame indexed by id."""
        path = Path(path)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if self.filename not in archive.namelist():
                    raise LayoutError(
                        f"{path}: no {self.filename} at the zip root "
                        f"(found: {', '.join(archive.namelist()) or 'nothing'})"
                    )
                raw = archive.read(self.filename)
            source = f"{path}:{self.filename}"
        else:
            raw = path.read_bytes()
            source = str(path)
        table = require_columns(self.read_table(raw, source), (self.id_column, *self.score_columns), source)
        require_unique(table[self.id_column], source)
        values = {t: numeric_column(table, c, source) for c, t in zip(self.score_columns, targets, strict=True)}
        return pd.DataFrame(values, index=pd.Index(table[self.id_column], name="item_id"))


@dataclass(frozen=True)
class CsvFormat(SubmissionFormat):
    """Comma-separated rows, with a header naming the fields, or without one (then the fields are by position)."""

    header: bool = True

    def write_table(self, table: pd.DataFrame) -> bytes:
        return table.to_csv(index=False, header=self.header).encode()

    def read_table(self, raw: bytes, source: str) -> pd.DataFrame:
        if self.header:
            return pd.read_csv(io.BytesIO(raw), dtype={self.id_column: str})
        fields = [self.id_column, *self.score_columns]
        table = pd.read_csv(io.BytesIO(raw), header=None, dtype={0: str})
        if table.shape[1] != len(fields):
            raise LayoutError(
                f"{source}: {table.shape[1]} field(s) per row, expected {len(fields)} ({', '.join(fields)})"
            )
        return table.set_axis(fields, axis=1)


@dataclass(frozen=True)
class JsonListFormat(SubmissionFormat):
    """A JSON list of objects, one per item, keyed by the id field and the score fields."""

    def write_table(self, table: pd.DataFrame) -> bytes:
        return json.dumps(table.to_dict(orient="records"), ensure_ascii=False, indent=1).encode()

    def read_table(self, raw: bytes, source: str) -> pd.DataFrame:
        try:
            records = json.loads(raw)
        except ValueError as error:
            raise LayoutError(f"{source}: not JSON ({error})") from None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise LayoutError(f"{source}: expected a JSON list of objects")
        table = pd.DataFrame.from_records(records)
        if self.id_column in table:
            table[self.id_column] = table[self.id_column].astype(str)
        return table


# A bounded target's margin, as a fraction of its range's width: the span of the submission's predictions goes onto
# the range shrunk by it at each end. Small, so a prediction already inside moves by at most a millionth of the width
# (the ranks and PLCC the scorers read do not move at all); large against the spacing of doubles, so some 1e10 of them
# lie between the shrunk range and a unit-scale bound for the tail. The tail's scale is the margin itself (slope 1 at
# the joints): a larger margin would lengthen the stretch past the span where later items stay distinct (some 24
# margins, then the last double inside) only by moving every prediction as much.
RANGE_MARGIN = 1e-6


@dataclass(frozen=True)
class TargetRange:
    """One target's map into the open (low, high): one positive affine map takes the span [lowest, highest] (the
    submission's predictions and the range together) onto [low + margin, high - margin]; beyond the span, where only
    items predicted later can be, an exponential tail, continuous with slope 1 at the joints, approaches the bound."""

    low: float
    high: float
    lowest: float
    highest: float
    margin: float

    def apply(self, values: np.ndarray) -> np.ndarray:
        floor, ceiling = self.low + self.margin, self.high - self.margin
        z = floor + (values - self.lowest) * ((ceiling - floor) / (self.highest - self.lowest))
        # (high - m) + m (1 - exp(-t)) written as high - m exp(-t): never below the joint in floating point either.
        above = self.high - self.margin * np.exp(-np.maximum(z - ceiling, 0) / self.margin)
        below = self.low + self.margin * np.exp(np.minimum(z - floor, 0) / self.margin)
        mapped = np.where(z > ceiling, above, np.where(z < floor, below, z))
        # Far out the tail rounds onto the bound itself: the last double inside is as close as it may come.
        return np.clip(mapped, np.nextafter(self.low, self.high), np.nextafter(self.high, self.low))


@dataclass(frozen=True)
class RangeMap:
    """A bounded track's predictions strictly inside its ranges, each row on its own: a frozen map per target, fitted
    once on the submission's predictions (Track.range_map), so the exported predictor scoring one item gives the
    submission's number. Over the submission's span it is affine, so the submission's ranks and linear correlation are
    exactly the raw predictions' (clipping would tie the extremes); it is applied even where every prediction is
    inside (moving none by more than the margin), so one definition serves both. No targets: the identity."""

    targets: dict[str, TargetRange]

    def apply(self, pred: pd.DataFrame) -> pd.DataFrame:
        mapped = pred.copy()
        for target, bounds in self.targets.items():
            mapped[target] = bounds.apply(pred[target].to_numpy(dtype=np.float64))
        return mapped

    def to_json(self) -> dict:
        return {"targets": {target: asdict(bounds) for target, bounds in self.targets.items()}}

    @classmethod
    def from_json(cls, payload: dict) -> RangeMap:
        return cls({target: TargetRange(**fields) for target, fields in payload["targets"].items()})


_BUDGET_UNITS = {"macs": ("GMACs", 1e9), "flops": ("GFLOPs", 1e9), "params": ("M parameters", 1e6)}


@dataclass(frozen=True)
class Budget:
    """A challenge's limit on the submitted model per image or video: MACs, FLOPs, parameters (None: no limit)."""

    macs: float | None = None
    flops: float | None = None
    params: float | None = None

    def check(self, macs: float, flops: float, params: float) -> list[tuple[str, float, float]]:
        """(unit, measured, limit) in display units (GMACs, GFLOPs, M parameters) for each limit the challenge sets."""
        measured = {"macs": macs, "flops": flops, "params": params}
        return [
            (unit, measured[name] / scale, limit / scale)
            for name, (unit, scale) in _BUDGET_UNITS.items()
            if (limit := getattr(self, name)) is not None
        ]


@dataclass(frozen=True)
class StudentDemo:
    """What `just demo-student` runs on a track's synthetic data with most training labels withheld: a teacher, a
    student alone and the student distilled from the teacher's pseudo-labels, each given as the words the commands
    take (the student within the track's budget, the teacher free of it)."""

    teacher: Mapping[str, object]
    student: Mapping[str, object]
    items: int = 600  # the dataset's size: its test truth must be large enough to tell two students apart
    withheld: float = 0.8  # the share of training groups whose labels are withheld, their media declared unlabelled


class Track:
    """A challenge track. Subclasses set the class attributes and implement the four methods."""

    name: ClassVar[str]
    title: ClassVar[str]
    # What an item is made of (features.inputs); the first is the media the frame and clip encoders see.
    inputs: ClassVar[tuple[MediaInput, ...]] = (Video(),)
    targets: ClassVar[tuple[str, ...]] = ("score",)
    # Predictions outside this range are refused at export: it brackets the label scale with half the scale's span
    # beyond each end, room for a regression head's overshoot (heads picked by a scale-blind score such as SRCC and
    # PLCC were seen 36% of the span past the labels), and catches garbage (a wrong scale, an exploded model). One
    # (low, high) for every target, or a dict giving each target its own.
    score_range: ClassVar[tuple[float, float] | dict[str, tuple[float, float]]]
    submission: ClassVar[SubmissionFormat]
    # Per-track configuration defaults (any key of the commands' configs), applied under the user's words.
    defaults: ClassVar[dict[str, object]] = {}
    # Map predictions onto the label scale with a logistic fitted out of fold (none | logistic4 | logistic5), where
    # the scorer is raw PLCC or absolute (RMSE, MAE); `submit calibration=` overrides it.
    calibrate: ClassVar[str] = "none"
    budget: ClassVar[Budget | None] = None  # the challenge's limit on the model, checked at submit
    # The test-time views extraction computes (and profile costs) unless `views=` says otherwise; a run predicts
    # every view it was trained on and a submission averages them (or the subset `tta=` names).
    tta_views: ClassVar[tuple[str, ...]] = ("center", "hflip")
    # The demo's views where they must be fewer than tta_views to keep the demo quick (empty: tta_views); each view
    # costs a backbone pass per frame and adds training rows.
    demo_views: ClassVar[tuple[str, ...]] = ()
    # Whether predictions must lie inside `score_range` (a rate in [0, 1]): they are mapped strictly inside it by the
    # submission's RangeMap (range_map) rather than refused at export.
    bounded: ClassVar[bool] = False
    # Where the organisers' labels may lie when that is wider than what a submission may say (HDR's JOD labels pass
    # 10, its programs answer 0 to 10): what `just check` holds training labels to. None: score_range.
    label_range: ClassVar[tuple[float, float] | None] = None
    # Whether the challenge runs submitted programs as `predict DISTORTED REFERENCE RESULT_FILE` (ICME's HDR track):
    # the exported predictor then takes the reference argument, in that order, a no-reference model ignoring it.
    reference_argument: ClassVar[bool] = False
    # The smallest synthetic dataset (synthesize's items, width, height) that exercises the whole track: what the
    # conformance suite runs every track on.
    smoke: ClassVar[dict[str, int]] = {"items": 12, "width": 64, "height": 48}
    # Whether a group may have items in both splits: the organisers keep a source's versions together in most
    # challenges, but XGC AIGV's test prompts mostly occur in training too.
    groups_cross_splits: ClassVar[bool] = False
    # The teacher and student of `just demo-student`, for a track whose synthetic data can withhold labels
    # (withhold_labels); None: the track has no student demo.
    student_demo: ClassVar[StudentDemo | None] = None

    def ranges(self) -> dict[str, tuple[float, float]]:
        """Each target's (low, high), in the order of `targets`."""
        given = self.score_range
        return {t: tuple(given[t]) if isinstance(given, dict) else tuple(given) for t in self.targets}

    def label_ranges(self) -> dict[str, tuple[float, float]]:
        """Each target's (low, high) for the labels (label_range, else the submission's)."""
        return self.ranges() if self.label_range is None else {t: tuple(self.label_range) for t in self.targets}

    def with_range(self, low: float, high: float) -> Track:
        """This bounded track answering in [low, high] instead (`submit score_range=`): for rules that contradict
        themselves, as ICME's 0 to 10 against its template's 0 to 100."""
        if not self.bounded:
            raise ValueError(f"track {self.name} is not bounded: its predictions are not mapped into a range")
        if not low < high:
            raise ValueError(f"score range [{low}, {high}]: low must be below high")
        track = copy.copy(self)
        track.score_range = (float(low), float(high))
        return track

    @property
    def unit(self) -> str:
        """What a runtime or a cost is per: `video` where the first media input has a time axis, else `image`."""
        return "video" if self.inputs[0].time_axis else "image"

    @property
    def media(self) -> str:
        """The decoder of the track's first media input."""
        return self.inputs[0].decoder

    def test_views(self, asked: Sequence[str]) -> tuple[str, ...]:
        """The views asked for, or the track's declared test-time views when none are."""
        return tuple(asked) or self.tta_views

    def read_items(self, data: Path) -> pd.DataFrame:
        """The items table of the organiser's layout under `data`."""
        raise NotImplementedError

    def group_of(self, name: str) -> str:
        """The group of a media file's name (a source, a photo), for media the lists do not name (`unlabelled=`):
        its own group unless the track's names tell the source."""
        return name

    def selection_score(self, pred: pd.DataFrame, items: pd.DataFrame) -> dict[str, float]:
        """The track's score on labelled items (out-of-fold); key `score` is what checkpoints are selected on."""
        raise NotImplementedError

    def official_score(self, pred: pd.DataFrame, truth: Path) -> dict[str, float | str]:
        """The organiser's score of `pred` against the organiser-side truth folder."""
        raise NotImplementedError

    def read_truth(self, truth: Path) -> pd.DataFrame:
        """The organiser-side truth (indexed by id, a column per target): by default a file in the track's own
        submission format, or a synthetic dataset's `truth/` folder holding one as `truth.csv`."""
        path = Path(truth)
        return self.submission.read(path / TRUTH_FILE if path.is_dir() else path, self.targets)

    def range_map(self, pred: pd.DataFrame) -> RangeMap:
        """The map that keeps a `bounded` track's predictions strictly inside its ranges, fitted once on the
        submission's test predictions (a column per target) and applied to them and, item by item, to any prediction
        made later; the identity where the track is not bounded."""
        if not self.bounded:
            return RangeMap({})
        maps = {}
        for target, (low, high) in self.ranges().items():
            values = pred[target].to_numpy(dtype=np.float64)
            if not np.isfinite(values).all():
                raise ValueError(f"track {self.name}: the range map of {target} needs finite predictions")
            span = float(values.min(initial=low)), float(values.max(initial=high))
            maps[target] = TargetRange(float(low), float(high), *span, RANGE_MARGIN * (high - low))
        return RangeMap(maps)

    def synthesize(self, out: Path, items: int, seed: int, width: int = 0, height: int = 0) -> None:
        """Writes a small dataset in the organiser's exact layout, with organiser-side truth under `out/truth`;
        media of `width` x `height` (0: the track's usual size)."""
        raise NotImplementedError

    def withhold_labels(self, data: Path, share: float, seed: int) -> Path:
        """Takes `share` of a synthetic dataset's training groups out of its lists: their media move to `withheld/`
        (returned, for `unlabelled=`) and their labels to organiser-side truth (`truth/withheld.csv`), so that a
        pseudo-labelling recipe can run on the dataset and its labels be judged."""
        raise ValueError(f"track {self.name}: its synthetic data cannot withhold labels")


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


def media_path(data: Path, item_id: str, source: str) -> str:
    """The media file of `item_id` under `data`, refusing ids that would escape the data folder."""
    candidate = Path(item_id)
    root = data.resolve()
    resolved = (root / candidate).resolve()
    if candidate.is_absolute() or not resolved.is_relative_to(root):
        raise LayoutError(f"{source}: id {item_id!r} points outside the data folder {root}")
    return str(resolved)


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


def find_media(data: Path, item_id: str, folders: Sequence[str], source: str) -> str:
    """The media file of `item_id` in the first of `folders` (under `data`, then `data` itself) that holds it; where
    none does, its path in the first, so a missing file is named where the track expects it."""
    candidates = [media_path(data / folder, item_id, source) for folder in (*folders, ".")]
    return next((path for path in candidates if Path(path).is_file()), candidates[0])


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


UNLABELLED = "unlabelled"  # the split of media declared without labels (`unlabelled=`)
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")


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
        raise LayoutError(f"unlabelled={source}: no {'video' if track.inputs[0].time_axis else 'image'} files in it")
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


class CorrelationTrack(Track):
    """A one-target track ranked by (SRCC + PLCC) / 2, with KRCC, RMSE and MAE reported beside it (or as `parts` says,
    for a challenge that ranks otherwise). The organiser-side truth of a synthetic dataset is `truth/truth.csv` in the
    track's own submission format: ours, since these organisers' scorers are not public."""

    def selection_score(self, pred: pd.DataFrame, items: pd.DataFrame) -> dict[str, float]:
        (target,) = self.targets
        truth = items.set_index("item_id").loc[pred.index, target]
        return self.parts(pred[target].to_numpy(dtype=np.float64), truth.to_numpy(dtype=np.float64))

    def parts(self, pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        """The score (key `score`) and what is reported beside it, for predictions against labels."""
        return correlation_parts(pred, truth)

    def official_score(self, pred: pd.DataFrame, truth: Path) -> dict[str, float | str]:
        """Over the truth's items that were predicted: an organiser's label file, or a synthetic truth, may hold
        both phases' items (validation and test), and a phase's predictions are scored on their own. How many were
        scored is reported, and so are the truth items left without a prediction."""
        (target,) = self.targets
        scored, extra = predicted_truth(self.read_truth(truth), pred, truth)
        predicted = lookup(pred[target], scored.index.to_series(), str(truth))
        return {**self.parts(predicted, scored[target].to_numpy()), **extra}

    def write_truth(self, out: Path, scores: pd.Series, name: str = TRUTH_FILE) -> None:
        """The truth of a synthetic dataset's test items (`scores` indexed by id) where official_score reads it, or
        of the items it withheld (WITHHELD_TRUTH)."""
        (target,) = self.targets
        write_bytes(Path(out) / "truth" / name, self.submission.encode(scores.to_frame(target), self.targets))


def predicted_truth(table: pd.DataFrame, pred: pd.DataFrame, truth: Path) -> tuple[pd.DataFrame, dict]:
    """The truth's items that were predicted, and what to report beside the score: a truth may hold both phases'
    items (validation and test), and a phase's predictions are scored on their own."""
    scored = table[table.index.isin(pred.index)]
    if scored.empty:
        raise LayoutError(f"{truth}: none of its {len(table)} items has a prediction (another phase's list?)")
    extra: dict[str, float | str] = {"items": len(scored)}
    if len(scored) < len(table):
        extra["note"] = f"{len(table) - len(scored)} truth item(s) without a prediction (another phase's?) left out"
    return scored, extra


def correlation_parts(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    parts = {
        "srcc": metrics.srcc(pred, truth),
        "plcc": metrics.plcc(pred, truth),
        "krcc": metrics.krcc(pred, truth),
        "rmse": metrics.rmse(pred, truth),
        "mae": metrics.mae(pred, truth),
    }
    return {"score": (parts["srcc"] + parts["plcc"]) / 2, **parts}
