"""Row 4: the 10-fold head training of a run against a bare PyTorch loop doing the same work; and the in-memory
track and run configuration the sweep and predictor rows train on too."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.harness import BenchConfig, Progress, Row, Sizes, median, median_ratio, timed
from benchmarks.media import VIEWS
from features.reader import Features, Streams
from tracks import get_track
from workbench.config import TrainConfig
from workbench.data import TrainingData, open_or_create_run
from workbench.folds import grouped_folds
from workbench.heads import create_head, predict_views, stream_tensors
from workbench.losses import CombinedLoss
from workbench.runs import Run
from workbench.train import run_summary, train_fold


def training_data(sizes: Sizes, seed: int = 0) -> TrainingData:
    """A KVQ-like track in memory: sources of six versions, two views of eight frames, labels a noisy function of
    the features, 15% of the sources held out as the test split."""
    rng = np.random.default_rng(seed)
    n, dim = sizes.train_items, sizes.train_dim
    groups = np.arange(n) // 6
    test = np.isin(groups, rng.permutation(groups.max() + 1)[: max(1, round(0.15 * (groups.max() + 1)))])
    x = rng.standard_normal((n, len(VIEWS), 8, dim), dtype=np.float32)
    signal = x.mean(axis=(1, 2)) @ rng.standard_normal(dim).astype(np.float32)
    score = np.clip(3 + signal / signal.std() + rng.normal(0, 0.3, n), 1, 5)
    ids = [f"item{i:05d}" for i in range(n)]
    split = np.where(test, "test", "train")
    items = pd.DataFrame(
        {"item_id": ids, "path": "", "fingerprint": "", "split": split, "group": groups.astype(str), "score": score}
    )  # in memory: no file, no fingerprint
    items.loc[test, "score"] = np.nan
    folds = np.full(n, -1)
    folds[~test] = grouped_folds(items.loc[~test, "group"], sizes.folds, "kvq", seed)
    features = Streams([Features(x=x, mask=np.ones(x.shape[:3], dtype=bool), item_ids=ids, views=list(VIEWS))])
    labels = np.array(items[["score"]], dtype=np.float32)  # writable: torch shares its memory
    return TrainingData(get_track("kvq"), items, features, labels, folds, "bench", [])


def train_config(sizes: Sizes, runs: Path, run: str, **changes: object) -> TrainConfig:
    base = TrainConfig(
        track="kvq", backbone="bench", folds=sizes.folds, epochs=sizes.epochs, runs_dir=str(runs), run=run
    )
    return replace(base, **changes)


def train_ours(cfg: TrainConfig, data: TrainingData, folds: Sequence[int]) -> Run:
    """What `just train` does once the features are loaded; returns the run."""
    run = open_or_create_run(cfg, data)
    for fold in folds:
        train_fold(cfg, data, run, fold)
    if len(folds) == cfg.folds:
        run_summary(run, data, costed=False)  # the bench's features come from no encoder: nothing to cost
    return run


def state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's weights as they are now, kept apart from its training: a bare loop's best epoch."""
    return {k: v.clone() for k, v in module.state_dict().items()}


def train_bare(cfg: TrainConfig, data: TrainingData, folds: Sequence[int]) -> None:
    """The same work as a bare PyTorch loop: the same head, loss, optimiser, schedule, epochs and batches, the same
    validation score after every epoch with the best weights kept, and the same out-of-fold and test predictions;
    nothing written to disk."""
    (x, mask), y = stream_tensors(data.features), torch.from_numpy(data.labels)
    views, targets = x.shape[1], list(data.track.targets)
    for fold in folds:
        torch.manual_seed(cfg.seed * 1000 + fold)
        train_idx, val_idx = data.index(fold)
        head = create_head(cfg.head, x.shape[-1], out=len(targets), hidden=cfg.hidden, dropout=cfg.dropout)
        head.fit_standardization([(x[train_idx].flatten(0, 1), mask[train_idx].flatten(0, 1))], y[train_idx])
        loss_fn = CombinedLoss.from_spec(cfg.loss)
        optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.wd)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
        train_x, train_mask = x[train_idx].flatten(0, 1), mask[train_idx].flatten(0, 1)
        train_y = y[train_idx].repeat_interleave(views, dim=0)
        usable = len(train_x) - len(train_x) % cfg.batch if len(train_x) > cfg.batch else len(train_x)
        val_ids = data.items["item_id"].to_numpy()[val_idx]
        labelled = data.labelled()
        best, best_state = -math.inf, None
        for _ in range(cfg.epochs):
            head.train()
            order = torch.randperm(len(train_x))
            for start in range(0, usable, cfg.batch):
                batch = order[start : start + cfg.batch]
                loss = loss_fn(head(train_x[batch], train_mask[batch]), train_y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            schedule.step()
            pred = predict_views(head, [x[val_idx], mask[val_idx]]).mean(1)
            score = data.track.selection_score(pd.DataFrame(pred, index=val_ids, columns=targets), labelled)["score"]
            if score > best:
                best, best_state = score, state_copy(head)
        head.load_state_dict(best_state)
        predict_views(head, [x[val_idx], mask[val_idx]])
        predict_views(head, [x[data.test_index], mask[data.test_index]])


def rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    data = training_data(sizes)
    ours, theirs = [], []
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        for repeat in range(sizes.repeats):
            progress(f"{sizes.folds}-fold training, repeat {repeat + 1}/{sizes.repeats}")
            train = train_config(sizes, Path(scratch), f"bench-{repeat}")
            order = [("bare", train_bare), ("ours", train_ours)]
            spent = {}
            for name, trainer in order if repeat % 2 == 0 else order[::-1]:  # neither side always goes first
                with timed() as spent[name]:
                    trainer(train, data, range(sizes.folds))
            ours.append(spent["ours"].wall)
            theirs.append(spent["bare"].wall)
    ratio = median_ratio(ours, theirs)
    shape = "x".join(map(str, data.features.parts[0].x.shape))
    return [
        Row(
            "4",
            f"{sizes.folds}-fold head training, features {shape}, {sizes.epochs} epochs",
            f"{median(ours):.1f} s",
            f"{median(theirs):.1f} s (bare PyTorch loop)",
            ratio,
            "<= 1.5",
            "both validate with the track's score after every epoch and keep the best weights; ours also writes "
            "checkpoints, predictions and scores",
        )
    ]
