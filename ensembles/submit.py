"""Submitting runs: blend them (one run is its own blend), calibrate on the blend's out-of-fold predictions, write
the zip in the track's format, the calibration and a report beside it, and return the tables to show.

It works on what the runs predicted, not on run folders: the command line finds the runs, checks them against the
data as it is now, and prints what this returns. Files the zip carries beside the predictions (a readme with a
measured runtime) come from the caller, which knows the runs' pipelines.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.atomic import write_text
from common.tables import Table
from ensembles.blend import BLENDS, BestRun, Blended, Pick, Score, Stack, blend, gain, pick
from ensembles.calibrate import CALIBRATION, Calibration
from ensembles.combine import fold_ensemble, mean_over_views
from ensembles.export import write_zip
from ensembles.report import write_report
from tracks import Track
from tracks.ranges import RangeMap

# (the decision, each run's views, the blend's description) -> (files beside the predictions, the runtime to show)
Extras = Callable[["Decision", dict[str, list[str]], str], tuple[dict[str, bytes], str]]


@dataclass(frozen=True)
class RunPredictions:
    """What a run predicted: out-of-fold and test predictions (long: item_id, view, fold, targets) and its folds."""

    id: str
    oof: pd.DataFrame
    test: pd.DataFrame
    folds: pd.Series


@dataclass(frozen=True)
class Choice:
    """The user's choices: the blend (auto: the best single run unless a blend's nested estimate beats it by more than
    noise, see ensembles.blend.pick), the calibration, the test-time views."""

    blend: str
    calibration: str
    tta: tuple[str, ...]


@dataclass
class Submission:
    path: Path
    tables: list[Table]
    runs: list[str]  # the runs it runs
    local: float  # its score out of fold, as chosen: what the leaderboard's is set against


@dataclass
class Decision:
    """What a submission of runs is: the blends tried and the one picked, the calibration fitted on its out-of-fold
    predictions, the map into the track's range, and the runs it runs (the best run alone, or every run of a
    blend); with the calibrated out-of-fold and the final test predictions."""

    stack: Stack
    blends: list[Blended]
    picked: Pick
    calibration: Calibration
    range_map: RangeMap
    used: list[RunPredictions]
    oof: pd.DataFrame
    test: pd.DataFrame


def decide(track: Track, runs: Sequence[RunPredictions], items: pd.DataFrame, choice: Choice) -> Decision:
    """Blends (one run is its own blend), calibrates and maps into range, as `submit` writes and `export` packs."""
    labelled = items[items["split"] == "train"]
    truth = labelled.set_index("item_id")
    targets = list(track.targets)
    stack = Stack.of(
        {r.id: mean_over_views(r.oof, targets, choice.tta).set_index("item_id")[targets] for r in runs},
        {r.id: fold_ensemble(r.test, targets, choice.tta) for r in runs},
        {r.id: r.folds for r in runs},
        truth,
        targets,
    )

    def score(pred: pd.DataFrame) -> float:
        return track.selection_score(pred, labelled)["score"]

    blends = [blend(stack, name, score) for name in (BLENDS if len(runs) > 1 else ["best"])]  # one run: itself
    picked = pick(blends, choice.blend)
    chosen = picked.chosen
    calibration = Calibration.fit(choice.calibration, stack.frame(chosen.oof), truth, targets)
    oof = calibration.apply(stack.frame(chosen.oof))
    calibrated = calibration.apply(pd.DataFrame(chosen.test, index=stack.test_ids, columns=targets))
    range_map = track.range_map(calibrated)
    used = [runs[chosen.blender.run_]] if isinstance(chosen.blender, BestRun) else list(runs)
    return Decision(stack, blends, picked, calibration, range_map, used, oof, range_map.apply(calibrated))


def submit_runs(
    track: Track, runs: Sequence[RunPredictions], items: pd.DataFrame, choice: Choice, out: Path, extras: Extras
) -> Submission:
    """Writes `out/<name>/<name>.zip` of the decision (see decide) with `calibration.json`, `report.png` and
    `report.md`."""
    test, truth = items[items["split"] == "test"], items[items["split"] == "train"].set_index("item_id")
    decision = decide(track, runs, items, choice)
    stack, chosen, kind = decision.stack, decision.picked.chosen, choice.calibration

    def score(pred: pd.DataFrame) -> float:
        return track.selection_score(pred, items[items["split"] == "train"])["score"]

    views = {r.id: list(choice.tta) or sorted(r.test["view"].unique()) for r in decision.used}
    what = "The best single run" if chosen.name == "best" else f"A {chosen.name} blend"
    about = f"{what} ({chosen.blender.describe(stack.runs)}) of: " if len(runs) > 1 else ""
    files, runtime = extras(decision, views, about)
    name = f"{track.name}-{runs[0].id}" if len(runs) == 1 else f"{track.name}-{chosen.name}-{runs_digest(stack.runs)}"
    folder = out / name
    path = write_zip(
        decision.test, track.submission, test["item_id"].tolist(), track.ranges(), folder / f"{name}.zip", files
    )
    write_text(folder / CALIBRATION, json.dumps(decision.calibration.to_json(), indent=2))
    scores = score_table(stack, decision.blends, decision.picked, kind, score(decision.oof), score)
    submission = (
        "submission",
        ["runs", "blend", "folds", "views", "calibration", f"runtime/{track.unit} (CPU)", "test items", "zip"],
        [
            [
                "\n".join(stack.runs),
                chosen.name if len(runs) > 1 else "none (one run)",
                len(np.unique(stack.folds)),
                "\n".join(sorted({v for vs in views.values() for v in vs})),
                kind,
                runtime,
                len(test),
                path,
            ]
        ],
    )
    title = f"submission {name}" + (f", {kind} calibrated (in sample)" if kind != "none" else "")
    oof = decision.oof
    write_report(folder, title, oof, truth, stack.fold_scores(oof.to_numpy(), score), score(oof), [scores, submission])
    return Submission(path, [scores, submission], [r.id for r in decision.used], score(oof))


def runs_digest(run_ids: Sequence[str]) -> str:
    """A short name for a set of runs, whatever their order."""
    return hashlib.sha256(",".join(sorted(run_ids)).encode()).hexdigest()[:8]


def score_table(
    stack: Stack, blends: Sequence[Blended], picked: Pick, kind: str, calibrated: float, score: Score
) -> Table:
    """Each run's out-of-fold score; with several runs, each blend's, in sample and nested, how far its nested
    estimate is from the best single run's and why the pick was picked; the pick's nested predictions after the
    calibration, which is fitted on them (in sample for its few parameters)."""
    chosen, several = picked.chosen, len(stack.runs) > 1
    columns = ["", "score (in sample for a fitted blend)", "nested estimate"]
    columns += ["against best (± 1 s.e.)", "blend"] if several else ["blend"]
    blank = [""] * (len(columns) - 2)
    rows: list[list[object]] = [
        [f"run {run_id}", score(stack.frame(stack.oof[i])), *blank] for i, run_id in enumerate(stack.runs)
    ]
    if several:
        best = next(b for b in blends if b.name == "best")

        def against(b: Blended) -> str:
            return "" if b is best else "{:+.4f} ± {:.4f}".format(*gain(b, best))

        rows += [
            [
                f"blend {b.name}" + (" (picked)" if b is chosen else ""),
                b.in_sample,
                b.nested,
                against(b),
                b.blender.describe(stack.runs),
            ]
            for b in blends
        ]
        rows.append([f"why {chosen.name}", "", "", "", picked.why])
    if kind != "none":
        label = f"blend {chosen.name}, nested," if several else "run"
        rows.append([f"{label} then {kind} fitted on it (in sample)", calibrated, *blank])
    return f"out-of-fold scores: {len(stack.ids)} items, {len(np.unique(stack.folds))} folds", columns, rows
