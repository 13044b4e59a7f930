"""Fine-tuning a run's key-frame backbone end to end with its head (`train finetune=true`), fold by fold.

A frozen run trains a head on cached vectors; a student small enough for a budget does better fine-tuned whole, as
the FIQA winner's was. A fine-tuned run keeps everything else a run has: the same folds, views, losses and
pseudo-labels (fold k's out-of-fold model on the teacher's fold-k labels, its test-time model on the full blend), and
the same outputs (out-of-fold, test and unlabelled predictions per view, a checkpoint per fold), so `submit`, blends
and `pseudo-label` take it as any run. It learns from the raw media: a Lightning fit over a media datamodule whose
workers decode each item and cut its view as extraction does (features.encoding.render_item), every epoch. The head
starts standardised on the backbone's own cached vectors (so `just extract` comes first, as for any run). Each
fold's tuned backbone is saved as `fold-<k>/backbone.safetensors`, a timm state dict: the exported predictor runs
each fold's head on its own fold's backbone.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset

from common.atomic import atomic_path
from features.backbones import TimmBackbone, at_input_size, create_backbone
from features.decode import DECODERS, Decoder, FrameSampling
from features.encoding import render_item
from features.spec import FeatureSpec
from features.views import ViewFamily, view_family
from workbench.config import TrainConfig
from workbench.data import UNLABELLED_FOLD, TrainingData, long_predictions
from workbench.fold import FoldFit, HeadRegressor, fold_models, write_fold
from workbench.heads import StreamHead, stream_tensors
from workbench.runs import BACKBONE_FILE, Run

BACKBONE_LR = 0.1  # the backbone's learning rate against the head's: pretrained stages move less than a new head
WORKERS = 2  # decoding processes ahead of the model, as extraction has them


class Tunable(nn.Module):
    """A timm backbone as it is fine-tuned: resized to its input size and normalised as its weights expect, trainable
    and in train mode (a FrozenEncoder stays frozen and in eval mode whatever it is asked)."""

    def __init__(self, backbone: TimmBackbone):
        super().__init__()
        # A backbone comes frozen and in eval mode, and Lightning keeps each submodule's mode through a fit.
        self.model = backbone.model.train().requires_grad_(True)
        self.register_buffer("mean", backbone.mean.clone(), persistent=False)
        self.register_buffer("std", backbone.std.clone(), persistent=False)
        self.input_size, self.interpolation = backbone.input_size, backbone.interpolation

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((at_input_size(images, self) - self.mean) / self.std)


class MediaViews(Dataset):
    """(item, view) pairs of `index`, each decoded and cut as extraction cuts it: frames [T, 3, S, S] zero-padded to
    `frames` with their mask, the item's labels and whether they are a teacher's."""

    def __init__(
        self,
        paths: Sequence[str],
        index: np.ndarray,
        views: Sequence[str],
        decoder: Decoder,
        sampling: FrameSampling,
        family: ViewFamily,
        y: torch.Tensor,
        pseudo: torch.Tensor,
    ):
        self.paths, self.rows = list(paths), [(int(i), view) for i in index for view in views]
        self.decoder, self.sampling, self.family = decoder, sampling, family
        self.y, self.pseudo = y, pseudo

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, ...]:
        item, view = self.rows[k]
        ((_, pixels, _),) = render_item(self.decoder, self.paths[item], self.sampling, [self.family], [(view,)])[0]
        side = self.family.side
        frames = torch.zeros(self.sampling.frames, 3, side, side)
        mask = torch.zeros(self.sampling.frames, dtype=torch.bool)
        count = min(len(pixels), self.sampling.frames)
        frames[:count], mask[:count] = pixels[:count], True
        return frames, mask, self.y[item], self.pseudo[item]


class FinetuneRegressor(HeadRegressor):
    """HeadRegressor's recipe (loss, pseudo-label weighting, validation by the track's score) over a tunable backbone
    and the head: frames [B, T, 3, S, S] with their mask in."""

    def __init__(self, net: Tunable, head: StreamHead, *recipe, **options):
        super().__init__(head, *recipe, **options)
        self.net = net

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        vectors = self.net(frames.flatten(0, 1)).unflatten(0, mask.shape)
        return self.head(vectors, mask)

    def parameter_groups(self) -> list[dict]:
        return [
            {"params": list(self.head.parameters())},
            {"params": list(self.net.parameters()), "lr": self.lr * BACKBONE_LR},
        ]


class MediaData(pl.LightningDataModule):
    def __init__(self, train: MediaViews, val: MediaViews, batch_size: int):
        super().__init__()
        self.train, self.val, self.batch_size = train, val, batch_size

    def train_dataloader(self) -> DataLoader:
        return loader(self.train, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return loader(self.val, self.batch_size)


def loader(dataset: MediaViews, batch_size: int, shuffle: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=WORKERS, persistent_workers=True)


def tunable_spec(cfg: TrainConfig, data: TrainingData) -> FeatureSpec:
    """The one key-frame feature set a fine-tuned run tunes; anything else is refused, saying why."""
    specs = cfg.all_specs(data.track.decoder)
    if len(specs) != 1 or cfg.extra_streams():
        raise ValueError(
            "finetune=true tunes one backbone on one view family: drop the '+' views and the streams beside the key "
            f"frames ({', '.join(cfg.extra_streams()) or 'none here'})"
        )
    if cfg.shuffle_labels:
        raise ValueError("finetune=true has no shuffled-label control: train the control frozen")
    return specs[0]


@torch.no_grad()
def predict_media(module: FinetuneRegressor, dataset: MediaViews, views: int, batch_size: int) -> np.ndarray:
    """[items, views, targets] of the dataset's (item, view) rows, in order."""
    module.eval()
    out = [module(frames, mask) for frames, mask, _, _ in loader(dataset, batch_size)]
    return torch.cat(out).reshape(-1, views, out[0].shape[-1]).numpy()


def finetune_fold(cfg: TrainConfig, data: TrainingData, run: Run, fold: int) -> dict:
    """One fold of a fine-tuned run (see the module docstring); returns the fold's scores as the frozen recipe does."""
    spec = tunable_spec(cfg, data)
    decoder, family, sampling = DECODERS.get(spec.decoder), view_family(spec), spec.sampling()
    views = data.features.views
    paths = data.items["path"].astype(str).tolist()
    ids = data.items["item_id"].to_numpy()
    _, val_idx = data.index(fold)
    y = torch.from_numpy(data.labels)
    pseudo = torch.from_numpy(data.folds == UNLABELLED_FOLD)
    tensors = stream_tensors(data.features)
    fit = FoldFit(cfg, data, run, fold, tensors, ids[val_idx])

    def media(index: np.ndarray, labels: torch.Tensor) -> MediaViews:
        return MediaViews(paths, index, views, decoder, sampling, family, labels, pseudo)

    def tune(rows: np.ndarray, labels: torch.Tensor, name: str) -> FinetuneRegressor:
        fit.seed()
        backbone = create_backbone(spec.backbone, spec.weights, cfg.seed)
        if not isinstance(backbone, TimmBackbone):
            raise ValueError(f"finetune=true tunes a timm backbone; {spec.backbone} is not one")
        module = FinetuneRegressor(Tunable(backbone), fit.head([backbone.dim], rows, labels), **fit.recipe(labels))
        return fit.train(module, MediaData(media(rows, labels), media(val_idx, labels), cfg.batch), name)

    oof_model, test_model = fold_models(data, fold, y, tune)
    targets = data.track.targets

    def predicted(model: FinetuneRegressor, index: np.ndarray):
        return long_predictions(
            predict_media(model, media(index, y), len(views), cfg.batch), ids[index], views, targets
        )

    state = {key: value.contiguous() for key, value in test_model.net.model.state_dict().items()}
    with atomic_path(run.fold_dir(fold) / BACKBONE_FILE) as tmp:  # before the scores, which mark the fold finished
        save_file(state, str(tmp))
    return write_fold(run, fold, data, fit, predicted, oof_model, test_model)
