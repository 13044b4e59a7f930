"""Pseudo-labels: a teacher's predictions on unlabelled media, written as a label set a student run trains on.

A label set (`runs/<track>/pseudo/<name>/`) holds, per unlabelled item, two kinds of label:
  * `<target>`: the teacher's full blend, blended, calibrated and mapped as `submit` would submit it: what the
    student's test-time models learn from;
  * `<target>@<k>`: the mean over the teacher runs of their fold-k models alone, views averaged, nothing fitted: the
    fold-k models never saw fold k's labels, so a student's fold k that learns from these is still scored honestly
    on fold k. The full blend has seen every label (and its blend and calibration were fitted on them): fold k's
    out-of-fold score would read the held-out labels back through it.
`provenance.json` says which runs, which blend and calibration, when, the unlabelled source, and each labelled
item's fold: a student whose folds differ is refused, since fold k of the teacher is then not fold k of the student.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from common.atomic import atomic_path, write_text
from ensembles.submit import Choice, RunPredictions, decide
from tracks import Track
from tracks.unlabelled import UNLABELLED

LABELS, PROVENANCE = "labels.parquet", "provenance.json"


def label_set_dir(runs_dir: str | Path, track: str, name: str) -> Path:
    return Path(runs_dir) / track / "pseudo" / name


def fold_column(target: str, fold: int) -> str:
    return f"{target}@{fold}"


def write_label_set(
    folder: Path, track: Track, runs: list, items: pd.DataFrame, choice: Choice, source: str
) -> pd.DataFrame:
    """The label set of `runs` (workbench.runs.Run, finished, trained with the unlabelled items) for the items of
    split `unlabelled` in `items`; returns its labels."""
    targets = list(track.targets)
    unlabelled = items[items["split"] == UNLABELLED]
    predicted = []
    for run in runs:
        try:
            pred = run.predictions(UNLABELLED)
        except FileNotFoundError:
            pred = pd.DataFrame(columns=["item_id"])
        missing = sorted(set(unlabelled["item_id"]) - set(pred["item_id"]))
        if missing:
            raise ValueError(
                f"run {run.id} has no prediction for {len(missing)} unlabelled item(s), e.g. {missing[0]}: train the "
                f"teacher with the same unlabelled= (every fold model predicts those items)"
            )
        predicted.append(RunPredictions(run.id, run.predictions("oof"), pred, run.folds()))
    decision = decide(track, predicted, items, choice)
    labels = decision.test.reindex(unlabelled["item_id"]).reset_index().rename(columns={"index": "item_id"})
    labels.insert(1, "group", unlabelled["group"].to_numpy())
    folds = sorted(int(k) for k in predicted[0].folds.unique())
    per_view = [p.test.groupby(["item_id", "fold"])[targets].mean() for p in predicted]
    per_fold = sum(per_view) / len(per_view)
    for k in folds:
        fold = per_fold.xs(k, level="fold").reindex(labels["item_id"])
        for target in targets:
            labels[fold_column(target, k)] = fold[target].to_numpy()
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / LABELS) as tmp:
        labels.to_parquet(tmp, index=False)
    teacher_folds = predicted[0].folds
    provenance = {
        "track": track.name,
        "runs": [run.id for run in runs],
        "blend": decision.picked.chosen.name,
        "calibration": decision.calibration.to_json(),
        "made": datetime.now(UTC).isoformat(timespec="seconds"),
        "unlabelled": source,
        "items": len(labels),
        "folds": {item: int(fold) for item, fold in teacher_folds.items()},
        "teacher_config": {k: runs[0].config[k] for k in ("folds", "seed")},
    }
    write_text(folder / PROVENANCE, json.dumps(provenance, indent=2, sort_keys=True))  # written last: the set is whole
    return labels


@dataclass(frozen=True)
class PseudoLabels:
    """A label set as a student reads it: per unlabelled item, its group, the full blend's labels and each fold's."""

    name: str
    weight: float
    labels: pd.DataFrame  # indexed by item_id: group, <target>, <target>@<k>
    folds: dict[str, int]  # the teacher's fold of each labelled item
    digest: str

    @classmethod
    def read(cls, spec: str, runs_dir: str | Path, track: str) -> PseudoLabels:
        """`<name>[:weight]` (weight 1 by default)."""
        name, _, weight = spec.partition(":")
        folder = label_set_dir(runs_dir, track, name)
        if not (folder / PROVENANCE).is_file():
            raise FileNotFoundError(f"pseudo={spec}: no label set {folder} (make it with `just pseudo-label`)")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"pseudo={spec}: the weight after ':' must be a number") from None
        if not value > 0:
            raise ValueError(f"pseudo={spec}: the weight must be above 0")
        provenance = json.loads((folder / PROVENANCE).read_text())
        labels = pd.read_parquet(folder / LABELS).set_index("item_id")
        digest = f"{name}:{value:g}:{provenance['made']}"
        return cls(name, value, labels, provenance["folds"], digest)

    def check_folds(self, folds: pd.Series) -> None:
        """Refuses a student whose labelled items are not in the teacher's folds (`folds`: item -> fold)."""
        teacher = pd.Series(self.folds)
        shared = folds.index.intersection(teacher.index)
        differ = shared[folds.loc[shared].to_numpy() != teacher.loc[shared].to_numpy()]
        if len(differ) or len(shared) < len(folds):
            example = differ[0] if len(differ) else sorted(set(folds.index) - set(teacher.index))[0]
            raise ValueError(
                f"pseudo={self.name}: its teacher was trained on other folds ({example!r} is in fold "
                f"{self.folds.get(example, 'none')} there, {int(folds.loc[example])} here): fold k's pseudo-labels "
                "are honest only for the same fold k; train the student with the teacher's folds= and seed="
            )

    def targets(self, item_ids: np.ndarray, targets: tuple[str, ...], fold: int | None) -> np.ndarray:
        """[items, targets] labels of `item_ids`: fold `fold`'s (None: the full blend's); NaN where none."""
        columns = [t if fold is None else fold_column(t, fold) for t in targets]
        return self.labels.reindex(item_ids)[columns].to_numpy(dtype=np.float32)


def eligible(labels_group: np.ndarray, pseudo_group: np.ndarray, held_out: np.ndarray) -> np.ndarray:
    """Which pseudo-labelled items fold k may train on: none of a group that has labelled items in fold k (`held_out`
    marks those labelled items), whose near-copies would carry the held-out labels in."""
    return ~np.isin(pseudo_group, labels_group[held_out])


def label_rows(labels: pd.DataFrame, track: Track) -> list[list[object]]:
    """Rows of the label set's table: per target, the full blend's spread and the folds' disagreement."""
    rows = []
    for target in track.targets:
        full = labels[target].to_numpy(dtype=np.float64)
        folds = labels[[c for c in labels.columns if c.startswith(f"{target}@")]].to_numpy(dtype=np.float64)
        rows.append([target, len(full), float(full.min()), float(full.max()), float(np.nanstd(folds, axis=1).mean())])
    return rows
