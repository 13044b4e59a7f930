"""Row 6: the overhead of a trial of our sweep (storage, heartbeats, pruning, bookkeeping) against the trial's own
fold training, with SQLite and with journal storage."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import optuna

from benchmarks.harness import BenchConfig, Progress, Row, Sizes, timed
from benchmarks.training import train_config, training_data
from workbench import studies, sweep
from workbench.data import TrainingData


def sweep_seconds(sizes: Sizes, data: TrainingData, scratch: Path, storage: str) -> tuple[float, float]:
    """Wall seconds of `trials` trials of our sweep, and of the fold training inside them. The sweep is what `just
    sweep` runs once the features are loaded: the storage with a heartbeat thread per trial, the study and its
    default trial, a report and a pruning check per fold, each trial's run folder, its user attributes and its
    pooled out-of-fold summary."""
    base = train_config(sizes, scratch / "runs", "", folds=sizes.trial_folds)
    space = sweep.SearchSpace(base, (sweep.FeatureSet.of(data.feature_key, base),))
    objective = sweep.Objective(space, load=lambda cfg: data)
    with timed() as total:
        study, _ = sweep.open_study(
            studies.open_storage(storage, str(scratch), "kvq", heartbeat=30), "bench", space, seed=0, prune_after=1
        )
        study.optimize(objective, n_trials=sizes.trials)
    return total.wall, objective.training_seconds


def rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    data = training_data(replace(sizes, folds=sizes.trial_folds))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    found = []
    for storage in ("sqlite", "journal"):
        progress(f"our sweep, {storage} storage, {sizes.trials} trial(s)")
        with tempfile.TemporaryDirectory(dir=root) as scratch:
            word = "" if storage == "sqlite" else f"journal:{Path(scratch) / 'sweep.journal'}"  # "": the default
            total, training = sweep_seconds(sizes, data, Path(scratch), word)
        overhead = (total - training) / sizes.trials
        ratio = overhead / (training / sizes.trials)
        found.append(
            Row(
                "6",
                f"sweep trial overhead, {storage} storage",
                f"{overhead * 1000:.0f} ms/trial",
                f"{training / sizes.trials:.1f} s/trial of fold training ({sizes.trial_folds} folds)",
                ratio,
                "< 0.1",
                "workbench.sweep as `just sweep` runs it, features in memory: storage, heartbeats, a report and a "
                "pruning check per fold, run folders and summaries, against the train_fold calls inside its trials",
            )
        )
    return found
