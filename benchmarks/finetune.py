"""Row 14: one fold of `train finetune=true` (the backbone tuned end to end with the head, from the media) against a
bare PyTorch loop on the same model and data, in training images a second."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.extraction import WORKERS
from benchmarks.harness import BenchConfig, Progress, Row, Sizes, median, median_ratio, timed
from benchmarks.training import state_copy
from features.backbones import create_backbone
from features.decode import DECODERS
from features.extract import extract
from features.views import view_family
from synth import synthesize
from synth.dataset import TRUTH_DIR
from tracks import get_track
from workbench import finetune
from workbench.config import TrainConfig
from workbench.data import TrainingData, load_training_data
from workbench.heads import create_head, stream_tensors
from workbench.losses import CombinedLoss
from workbench.runs import Run

TUNE_SIZE, TUNE_EPOCHS, TUNE_BATCH = 96, 2, 8


def tune_data(root: Path, backbone: str, sizes: Sizes) -> tuple[TrainConfig, TrainingData]:
    """A synthetic FIQA set (generated and extracted once), loaded as `just train finetune=true` loads it."""
    data_dir, cache = root / "finetune" / "data", root / "finetune" / "cache"
    track = get_track("fiqa")
    if not (data_dir / TRUTH_DIR).is_dir():
        synthesize(track, data_dir, sizes.tune_items, 0, 128, 128)
    epochs = TUNE_EPOCHS if sizes.repeats > 1 else 1
    cfg = TrainConfig(
        track="fiqa", data=str(data_dir), cache=str(cache), backbone=backbone, frames=1, size=TUNE_SIZE, folds=2,
        epochs=epochs, batch=TUNE_BATCH, finetune="true", runs_dir=str(root / "finetune"),
    )  # fmt: skip
    views = list(track.tta_views)
    items = track.read_items(data_dir)
    extract(items, "fiqa", cfg.all_specs("image"), views, cache_root=cache, workers=WORKERS, progress=False)
    return cfg, load_training_data(cfg)


def tune_bare(cfg: TrainConfig, data: TrainingData, fold: int) -> None:
    """The same fold as a bare PyTorch loop: the same tunable backbone and head, media views and workers, loss,
    optimiser groups, schedule and epochs, the fold's score after every epoch with the best weights kept, the
    out-of-fold and test predictions; nothing written."""
    spec = cfg.all_specs("image")[0]
    decoder, family = DECODERS.get(spec.decoder), view_family(spec)
    views, targets = data.features.views, list(data.track.targets)
    paths = data.items["path"].astype(str).tolist()
    y, pseudo = torch.from_numpy(data.labels), torch.zeros(len(data.items), dtype=torch.bool)
    train_idx, val_idx = data.index(fold)
    torch.manual_seed(cfg.seed * 1000 + fold)
    backbone = create_backbone(spec.backbone, spec.weights, cfg.seed)
    net = finetune.Tunable(backbone)
    (x, mask) = stream_tensors(data.features)
    head = create_head(cfg.head, backbone.dim, out=len(targets), hidden=cfg.hidden, dropout=cfg.dropout)
    head.fit_standardization([(x[train_idx].flatten(0, 1), mask[train_idx].flatten(0, 1))], y[train_idx])
    groups = [
        {"params": list(head.parameters())},
        {"params": list(net.parameters()), "lr": cfg.lr * finetune.BACKBONE_LR},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.wd)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
    loss_fn = CombinedLoss.from_spec(cfg.loss)

    def media(index: np.ndarray) -> finetune.MediaViews:
        return finetune.MediaViews(paths, index, views, decoder, spec.sampling(), family, y, pseudo)

    def run(frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        return head(net(frames.flatten(0, 1)).unflatten(0, frame_mask.shape), frame_mask)

    @torch.no_grad()
    def predicted(index: np.ndarray) -> np.ndarray:
        net.eval(), head.eval()
        out = torch.cat([run(f, m) for f, m, _, _ in finetune.loader(media(index), cfg.batch)])
        return out.reshape(-1, len(views), len(targets)).mean(1).numpy()

    train_loader = finetune.loader(media(train_idx), cfg.batch, shuffle=True)
    labelled, val_ids = data.labelled(), data.items["item_id"].to_numpy()[val_idx]
    best, best_state = -math.inf, {}
    for _ in range(cfg.epochs):
        net.train(), head.train()
        for frames, frame_mask, labels, _ in train_loader:
            loss = loss_fn(run(frames, frame_mask), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
        pred = pd.DataFrame(predicted(val_idx), index=val_ids, columns=targets)
        score = data.track.selection_score(pred, labelled)["score"]
        if score > best:
            best, best_state = score, {"net": state_copy(net), "head": state_copy(head)}
    net.load_state_dict(best_state["net"]), head.load_state_dict(best_state["head"])
    predicted(val_idx), predicted(data.test_index)


def rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    """One fold of `train finetune=true` (a Lightning fit over the media datamodule, checkpoints, predictions and the
    tuned backbone written) against the bare loop on the same model and data."""
    tune_cfg, data = tune_data(root, cfg.backbone, sizes)
    train_idx, _ = data.index(0)
    images = len(train_idx) * len(data.features.views) * tune_cfg.epochs
    ours, theirs = [], []
    for repeat in range(sizes.repeats):
        progress(f"fine-tuning, repeat {repeat + 1}/{sizes.repeats}")
        with tempfile.TemporaryDirectory(dir=root) as scratch:
            run = Run(Path(scratch) / "run")
            run.path.mkdir()
            with timed() as lightning:
                finetune.finetune_fold(tune_cfg, data, run, 0)
        with timed() as bare:
            tune_bare(tune_cfg, data, 0)
        ours.append(images / lightning.wall)
        theirs.append(images / bare.wall)
    ratio = median_ratio(ours, theirs)
    return [
        Row(
            "14",
            f"fine-tuning a student end to end ({cfg.backbone} at {TUNE_SIZE}, {len(train_idx)} FIQA images x "
            f"{len(data.features.views)} views, {tune_cfg.epochs} epoch(s), batch {tune_cfg.batch})",
            f"{median(ours):.1f} images/s",
            f"{median(theirs):.1f} images/s (bare PyTorch loop, same model, media workers and data)",
            ratio,
            ">= 0.8",
            f"both decode and cut every view each epoch in {finetune.WORKERS} workers and validate after every epoch; "
            "ours also checkpoints, writes predictions and saves the tuned backbone",
        )
    ]
