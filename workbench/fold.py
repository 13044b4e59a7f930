"""The fold machinery every recipe shares: the head's Lightning recipe, one fold's in-memory datamodule, the fit of a
fold's model with its checkpoint chosen on the fold, the pair of models pseudo-labels call for, and writing a fold.

`HeadRegressor` is the Lightning recipe (loss, optimiser, validation by the track's own score) around a plain
`StreamHead`; `CachedFeatures` serves one fold's tensors (an x and a mask per feature stream), already in memory.
A step of a head on cached features takes about a millisecond, so anything the framework does per step shows:
batches are gathered from the in-memory tensors in one indexing call each (not sample by sample and stacked), and
the training loss is summed on the side and logged once per epoch, not through Lightning's per-step logging. Each
fit's curves (training loss, validation score, learning rate) go to the logger `logger=` names (workbench.loggers).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from tracks.unlabelled import UNLABELLED
from workbench.config import TrainConfig
from workbench.data import UNLABELLED_FOLD, TrainingData, view_mean
from workbench.heads import StreamHead, create_head, load_state
from workbench.loggers import fold_logger
from workbench.losses import CombinedLoss
from workbench.runs import FOLD_SCORE, Run

Scorer = Callable[[np.ndarray], dict[str, float]]
SELECTIONS = ("best", "last")


def quiet_lightning() -> None:
    """Lightning's per-Trainer banners (accelerator found, etc.) drown the tables users read."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # A fold's folder holds its out-of-fold and test-time checkpoints under pseudo-labels, and its outputs: by design.
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    # Curves are logged per epoch (HeadRegressor), so Lightning's per-step logging interval does not apply.
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")


class HeadRegressor(pl.LightningModule):
    """Trains a head with a combined loss; validation averages each item's views and applies the track's score."""

    def __init__(
        self,
        head: StreamHead,
        loss: CombinedLoss,
        lr: float,
        wd: float,
        epochs: int,
        views: int,
        scorer: Scorer,
        pseudo_weight: float = 1.0,
    ):
        super().__init__()
        self.head = head
        self.loss = loss
        self.lr = lr
        self.wd = wd
        self.epochs = epochs
        self.views = views
        self.scorer = scorer
        self.pseudo_weight = pseudo_weight
        self._val: list[torch.Tensor] = []
        self._loss_sum, self._loss_count = torch.zeros(()), 0

    def forward(self, *streams: torch.Tensor) -> torch.Tensor:
        return self.head(*streams)

    def training_step(self, batch, batch_idx):
        *streams, y, pseudo = batch
        pred = self(*streams)
        if not bool(pseudo.any()):
            loss = self.loss(pred, y)
        else:  # the labels' loss and the pseudo-labels', weighted; a part of fewer than 2 rows has no correlation
            parts = [(m, w) for m, w in ((~pseudo, 1.0), (pseudo, self.pseudo_weight)) if int(m.sum()) >= 2]
            loss = sum(w * self.loss(pred[m], y[m]) for m, w in parts) / sum(w for _, w in parts)
        self._loss_sum, self._loss_count = self._loss_sum + loss.detach(), self._loss_count + 1
        return loss

    def on_train_epoch_start(self) -> None:
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"])  # the head's, this epoch's (before its step)

    def on_train_epoch_end(self) -> None:
        self.log("train_loss", self._loss_sum / max(self._loss_count, 1))
        self._loss_sum, self._loss_count = torch.zeros(()), 0

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch, batch_idx):
        *streams, _, _ = batch
        self._val.append(self(*streams).detach().cpu())

    def on_validation_epoch_end(self) -> None:
        pred = torch.cat(self._val).numpy()
        pred = pred.reshape(-1, self.views, pred.shape[-1]).mean(1)
        parts = self.scorer(pred)
        self.log("val_score", float(parts["score"]), prog_bar=True)

    def parameter_groups(self) -> list[dict]:
        return [{"params": list(self.head.parameters())}]

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=self.lr, weight_decay=self.wd)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(self.epochs, 1))
        return {"optimizer": optimizer, "lr_scheduler": schedule}


class TensorBatches(Dataset):
    """Tensors indexed a whole batch at a time (by a BatchSampler): one gather per tensor instead of one
    `__getitem__` per sample and a stack."""

    def __init__(self, *tensors: torch.Tensor):
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: list[int]) -> tuple[torch.Tensor, ...]:
        return tuple(tensor[index] for tensor in self.tensors)


def batches(dataset: TensorBatches, batch_size: int, shuffle: bool = False, drop_last: bool = False) -> DataLoader:
    sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, sampler=BatchSampler(sampler, batch_size, drop_last), batch_size=None)


class CachedFeatures(pl.LightningDataModule):
    """One fold's tensors (see stream_tensors). Training samples are (item, view) pairs, so cached views double as
    augmentation; evaluation keeps items whole, views in a fixed order, so predictions reshape to [items, views].
    `pseudo` marks the rows whose labels are a teacher's, which the recipe weighs apart."""

    def __init__(
        self,
        tensors: list[torch.Tensor],
        y: torch.Tensor,
        train: np.ndarray,
        val: np.ndarray,
        batch_size: int,
        pseudo: np.ndarray | None = None,
    ):
        super().__init__()
        self.tensors, self.y = tensors, y
        self.train_index, self.val_index = train, val
        self.batch_size = batch_size
        self.pseudo = torch.zeros(len(y), dtype=torch.bool) if pseudo is None else torch.from_numpy(pseudo)

    def flat(self, index: np.ndarray) -> TensorBatches:
        views = self.tensors[0].shape[1]
        flat = [tensor[index].flatten(0, 1) for tensor in self.tensors]
        rows = (self.y[index], self.pseudo[index])
        return TensorBatches(*flat, *(row.repeat_interleave(views, dim=0) for row in rows))

    def train_dataloader(self) -> DataLoader:
        data = self.flat(self.train_index)
        return batches(data, self.batch_size, shuffle=True, drop_last=len(data) > self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return batches(self.flat(self.val_index), 4096)


def fold_streams(tensors: list[torch.Tensor], index: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per stream, (x [N*views, T, D], mask [N*views, T]) of the items in `index`: what standardisation is fitted on."""
    pairs = zip(tensors[::2], tensors[1::2], strict=True)
    return [(x[index].flatten(0, 1), mask[index].flatten(0, 1)) for x, mask in pairs]


def fold_models(data: TrainingData, fold: int, y: torch.Tensor, fit: Callable) -> tuple:
    """The fold's out-of-fold and test-time models from `fit(rows, labels, checkpoint name)`: one model, or with
    pseudo-labels one on the teacher's fold-k labels (honest on fold k) and one on its full blend (the checkpoint
    submit and export use), both on the labelled rows plus the pseudo-labelled ones fold k may take."""
    train_idx, _ = data.index(fold)
    if data.pseudo is None:
        model = fit(train_idx, y, "best")
        return model, model
    rows, fold_labels, full_labels = data.pseudo_rows(fold)
    everything = np.concatenate([train_idx, rows])
    oof_model = fit(everything, with_labels(y, rows, fold_labels), "best-oof")
    return oof_model, fit(everything, with_labels(y, rows, full_labels), "best")


def write_fold(
    run: Run, fold: int, data: TrainingData, fit: FoldFit, predicted: Callable, oof_model, test_model
) -> dict[str, float]:
    """A fold's outputs from `predicted(model, index) -> long predictions`: out of fold (the out-of-fold model),
    test (the test-time one), unlabelled (what a teacher's fold-k model says of them, workbench.pseudo), and last
    its scores, which mark the fold finished."""
    _, val_idx = data.index(fold)
    oof = predicted(oof_model, val_idx)
    run.write_parquet(f"fold-{fold}/oof.parquet", oof)
    run.write_parquet(f"fold-{fold}/test.parquet", predicted(test_model, data.test_index))
    if len(data.unlabelled_index):
        run.write_parquet(f"fold-{fold}/{UNLABELLED}.parquet", predicted(oof_model, data.unlabelled_index))
    targets = data.track.targets
    parts = fit.scorer(data.labels)(view_mean(oof, targets).loc[fit.val_ids].to_numpy())
    parts["items"] = len(val_idx)
    run.write_json(f"fold-{fold}/{FOLD_SCORE}", parts)
    return parts


def fold_checkpoint(cfg: TrainConfig, run: Run, fold: int, name: str) -> ModelCheckpoint:
    """The weights a fold keeps: its epoch scoring best on the fold (`select=best`), or its last (`select=last`), for
    a teacher: a student learning its fold-k model's predictions is scored on fold k again, and would inherit an
    epoch chosen on fold k's labels."""
    if cfg.select not in SELECTIONS:
        raise ValueError(f"select={cfg.select!r}: expected one of {', '.join(SELECTIONS)}")
    chosen = {"monitor": "val_score", "mode": "max"} if cfg.select == "best" else {}  # no monitor: the latest epoch
    return ModelCheckpoint(
        dirpath=run.fold_dir(fold), filename=name, save_weights_only=True, enable_version_counter=False, **chosen
    )


def with_labels(y: torch.Tensor, rows: np.ndarray, labels: np.ndarray) -> torch.Tensor:
    """The labels with `rows` set to `labels` (the pseudo-labelled items, unlabelled until now)."""
    y = y.clone()
    y[rows] = torch.from_numpy(labels)
    return y


@dataclass
class FoldFit:
    """What every fit of a fold shares, frozen or fine-tuned: the random state of the run's seed and the fold, a new
    head standardised on the training rows' cached vectors, HeadRegressor's loss and optimiser, one Lightning fit on
    the CPU, and the checkpoint selected on the fold's own labels."""

    cfg: TrainConfig
    data: TrainingData
    run: Run
    fold: int
    tensors: list[torch.Tensor]
    val_ids: np.ndarray
    accelerator: str = "cpu"  # a head trains on the CPU; an LMM's adapters on a GPU where there is one
    precision: str = "32-true"  # Lightning's: an LMM tuned on a GPU in its own dtype ("bf16-mixed")

    def scorer(self, labels: np.ndarray) -> Scorer:
        labelled = self.data.labelled(labels)
        targets = list(self.data.track.targets)
        return lambda pred: self.data.track.selection_score(
            pd.DataFrame(pred, index=self.val_ids, columns=targets), labelled
        )

    def seed(self) -> None:
        """Every fit of the fold starts from the same random state, whatever ran before it."""
        pl.seed_everything(self.cfg.seed * 1000 + self.fold, verbose=False)

    def head(self, dims: list[int], rows: np.ndarray, labels: torch.Tensor) -> StreamHead:
        """A new head on streams of `dims`, standardised on the cached vectors and the labels of `rows`."""
        cfg = self.cfg
        head = create_head(cfg.head, dims, out=len(self.data.track.targets), hidden=cfg.hidden, dropout=cfg.dropout)
        head.fit_standardization(fold_streams(self.tensors, rows), labels[rows])
        return head

    def recipe(self, labels: torch.Tensor) -> dict:
        """HeadRegressor's arguments beside the head: the run's loss and optimiser, checkpoints scored on `labels`."""
        cfg = self.cfg
        return {
            "loss": CombinedLoss.from_spec(cfg.loss),
            "lr": cfg.lr,
            "wd": cfg.wd,
            "epochs": cfg.epochs,
            "views": len(self.data.features.views),
            "scorer": self.scorer(labels.numpy()),
            "pseudo_weight": self.data.pseudo_weight,
        }

    def train(self, module: HeadRegressor, datamodule: pl.LightningDataModule, name: str) -> HeadRegressor:
        """`module` fitted for the run's epochs, quietly, then holding the weights of the epoch the fold keeps
        (fold_checkpoint, saved as `name`); its curves go to the run's logger (workbench.loggers.fold_logger)."""
        checkpoint = fold_checkpoint(self.cfg, self.run, self.fold, name)
        trainer = pl.Trainer(
            max_epochs=self.cfg.epochs,
            accelerator=self.accelerator,
            devices=1,
            precision=self.precision,
            logger=fold_logger(self.cfg, self.run, self.fold, name),
            callbacks=[checkpoint],
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            deterministic=True if self.accelerator == "cpu" else "warn",  # some CUDA kernels have no deterministic form
        )
        trainer.fit(module, datamodule=datamodule)
        module.load_state_dict(load_state(Path(checkpoint.best_model_path)))
        return module

    def __call__(self, train_idx: np.ndarray, val_idx: np.ndarray, y: torch.Tensor, name: str) -> StreamHead:
        """The frozen recipe's head. Checkpoints are selected on the labels the head was trained on (permuted ones
        for the control), so the control never sees the truth; the fold's reported score is always against the true
        labels."""
        self.seed()
        head = self.head(self.data.features.dims, train_idx, y)
        module = HeadRegressor(head, **self.recipe(y))
        pseudo = self.data.folds == UNLABELLED_FOLD
        self.train(module, CachedFeatures(self.tensors, y, train_idx, val_idx, self.cfg.batch, pseudo), name)
        return head
