"""What every track declares: the Track, the registry of tracks, a challenge's budget and student demo, and the
track ranked by correlation that most challenges are.

The items table (one row per media item, train and test together) is the contract between a track and the rest of
the workbench: columns `ITEM_COLUMNS` plus one float column per target (NaN where unlabelled).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from common import bootstrap, metrics
from common.registry import Registry
from features.inputs import MediaInput, Video
from features.views import DEFAULT_FAMILY, FAMILIES, check_time_axis, split_variants
from tracks.formats import SubmissionFormat
from tracks.layout import LayoutError, lookup
from tracks.ranges import RANGE_MARGIN, RangeMap, TargetRange

ITEM_COLUMNS = ("item_id", "path", "split", "group")

TRACKS: Registry[type[Track]] = Registry("track")


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
    """A challenge track. Subclasses set the class attributes (`name`, `title`, `score_range` and `submission` have no
    default) and implement `read_items`, `selection_score` and `official_score` (CorrelationTrack implements the
    last two for a one-target track ranked by correlation)."""

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
    # The smallest synthetic dataset (synth.synthesize's items, width, height) that exercises the whole track: what
    # the conformance suite runs every track on.
    smoke: ClassVar[dict[str, int]] = {"items": 12, "width": 64, "height": 48}
    # Whether a group may have items in both splits: the organisers keep a source's versions together in most
    # challenges, but XGC AIGV's test prompts mostly occur in training too.
    groups_cross_splits: ClassVar[bool] = False
    # The teacher and student of `just demo-student`, for a track whose synthetic data can withhold labels
    # (synth.withhold_labels); None: the track has no student demo.
    student_demo: ClassVar[StudentDemo | None] = None
    # The organiser-side truth of a synthetic dataset, in its `truth/` folder: what official_score reads there.
    truth_file: ClassVar[str] = "truth.csv"

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
    def decoder(self) -> str:
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

    def resampled_scores(self, pred: pd.DataFrame, items: pd.DataFrame, weights: np.ndarray) -> dict[str, np.ndarray]:
        """The selection score (and, with several targets, each target's) of every resample of the labelled items,
        rows of `weights` [resamples, len(pred)] counting each item of `pred` in it (common.bootstrap). This one
        scores each expanded resample with `selection_score`, which is right for any track and slow; a track whose
        score has weighted kernels overrides it."""
        labelled = items.set_index("item_id").loc[pred.index]
        names = ["score", *(self.targets if len(self.targets) > 1 else ())]
        rows = []
        for counts in np.asarray(weights, dtype=np.int64):
            drawn = np.repeat(np.arange(len(pred)), counts)
            ids = [f"{k}:{item}" for k, item in enumerate(pred.index[drawn])]
            sample = labelled.iloc[drawn].reset_index().assign(item_id=ids)
            scored = self.selection_score(pred.iloc[drawn].set_axis(ids), sample)
            rows.append([scored[name] for name in names])
        return dict(zip(names, np.asarray(rows, dtype=np.float64).T))

    def read_truth(self, truth: Path) -> pd.DataFrame:
        """The organiser-side truth (indexed by id, a column per target): by default a file in the track's own
        submission format, or a synthetic dataset's `truth/` folder holding one as `truth_file`."""
        path = Path(truth)
        return self.submission.read(path / self.truth_file if path.is_dir() else path, self.targets)

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

    def resampled_scores(self, pred: pd.DataFrame, items: pd.DataFrame, weights: np.ndarray) -> dict[str, np.ndarray]:
        (target,) = self.targets
        return {"score": self.resampled_score(*target_arrays(pred, items, target), weights)}

    def resampled_score(self, pred: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """`parts`' score of each weighted resample: (SRCC + PLCC) / 2."""
        return (bootstrap.weighted_srcc(pred, truth, weights) + bootstrap.weighted_plcc(pred, truth, weights)) / 2

    def official_score(self, pred: pd.DataFrame, truth: Path) -> dict[str, float | str]:
        """Over the truth's items that were predicted: an organiser's label file, or a synthetic truth, may hold
        both phases' items (validation and test), and a phase's predictions are scored on their own. How many were
        scored is reported, and so are the truth items left without a prediction."""
        (target,) = self.targets
        scored, extra = predicted_truth(self.read_truth(truth), pred, truth)
        predicted = lookup(pred[target], scored.index.to_series(), str(truth))
        return {**self.parts(predicted, scored[target].to_numpy()), **extra}


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


def target_arrays(pred: pd.DataFrame, items: pd.DataFrame, target: str) -> tuple[np.ndarray, np.ndarray]:
    """One target's predictions and the labels of the same items, in the predictions' order."""
    truth = items.set_index("item_id").loc[pred.index, target]
    return pred[target].to_numpy(dtype=np.float64), truth.to_numpy(dtype=np.float64)


def correlation_parts(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    parts = {
        "srcc": metrics.srcc(pred, truth),
        "plcc": metrics.plcc(pred, truth),
        "krcc": metrics.krcc(pred, truth),
        "rmse": metrics.rmse(pred, truth),
        "mae": metrics.mae(pred, truth),
    }
    return {"score": (parts["srcc"] + parts["plcc"]) / 2, **parts}
