"""The frozen recipe: a head trained on a fold's cached feature vectors (the backbone frozen when they were cached)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from workbench.config import TrainConfig
from workbench.data import TrainingData, long_predictions
from workbench.fold import FoldFit, fold_models, write_fold
from workbench.heads import StreamHead, predict_views, stream_tensors
from workbench.runs import Run


def frozen_fold(cfg: TrainConfig, data: TrainingData, run: Run, fold: int) -> dict[str, float]:
    """Trains one fold's head, keeps its checkpoint as `select=` says, writes its predictions. With
    pseudo-labels, two heads: the out-of-fold one learns the teacher's fold-k labels (honest on fold k), the test-time
    one (the fold's checkpoint, what submit and export use) the teacher's full blend."""
    train_idx, val_idx = data.index(fold)
    y = torch.from_numpy(data.labels)
    if cfg.shuffle_labels:  # the control: same pipeline, labels permuted among training items
        rng = np.random.default_rng(cfg.seed)
        y = y.clone()
        labelled = np.flatnonzero(data.folds >= 0)
        y[labelled] = y[rng.permutation(labelled)]
    tensors = stream_tensors(data.features)
    targets, views = data.track.targets, data.features.views
    val_ids = data.items["item_id"].to_numpy()[val_idx]
    fit = FoldFit(cfg, data, run, fold, tensors, val_ids)
    oof_head, test_head = fold_models(data, fold, y, lambda rows, labels, name: fit(rows, val_idx, labels, name))
    ids = data.items["item_id"].to_numpy()

    def predicted(head: StreamHead, index: np.ndarray) -> pd.DataFrame:
        return long_predictions(predict_views(head, [t[index] for t in tensors]), ids[index], views, targets)

    return write_fold(run, fold, data, fit, predicted, oof_head, test_head)
