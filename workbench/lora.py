"""LoRA adapters of a run's LMM tuned end to end with its head (`train finetune=lmm`), fold by fold.

The frozen recipe reads an LMM's answers and hidden states from the cache; the UGC and AIGV winners of NTIRE 2025
tuned theirs with LoRA instead (rank 16, alpha 64, about 1e-4, one epoch). This recipe does that on the fold
machinery of every run (workbench.fold): the same folds, views, losses and pseudo-labels (fold k's out-of-fold model
on the teacher's fold-k labels, its test-time model on the full blend), and the same outputs (out-of-fold, test and
unlabelled predictions per view, a checkpoint per fold), so `submit`, blends and `pseudo-label` take it as any run.

The model: the run's LMM stream's model (features.lmm.load_lmm, the set's own weights and options, seeded by the
run's seed) with peft LoRA adapters, rank RANK and alpha ALPHA (fixed here, not configuration words), dropout
DROPOUT, on the attention projections (q_proj, k_proj, v_proj, o_proj) of its language model only: the target is a
pattern anchored at the language model's module (`get_decoder()`), so a vision tower whose attention uses the same
names (SigLIP's, InternViT's) keeps its weights. Everything else stays frozen.

The output: the run's head (the fold machinery's StreamHead, standardised on the cached vectors' same columns, `p0.
last`) on the pooled state, which is the final layer's hidden state at the last real token of the FIRST prompt (the
overall question with its answer stem, where Q-Align reads its levels; rows are left-padded), in float32. The other
prompts, the level readout and the streams beside the LMM (the key frames included: they are always extracted) are
not read by this recipe.

Training: the media are decoded and cut as extraction cuts them (features.encoding.render_item with the set's
ItemFrames family) in decoding workers, each row an (item, view) pair with the item's texts (the columns its prompts
read, FeatureSpec.binds), and the batch goes through the processor (LmmEncoder.model_inputs) in the forward. AdamW
trains the head at `lr` and the adapters at `lr * ADAPTER_LR`. On CUDA the model runs in the LMM stream's dtype
(`lmm_dtype`, bfloat16 by default) under Lightning's matching mixed precision, with gradient checkpointing; on the CPU
in float32 (workbench.tuned_lmm.tuned_dtype). A fold's checkpoint keeps the head and the adapters only, never the
frozen base weights.

Saving: each fold's test-time adapters go to `fold-<k>/adapters/` (peft's save_pretrained), written to a temporary
folder beside it and renamed into place before the fold's scores, which mark it finished; the head is in the fold's
checkpoint, where workbench.predictor.fold_heads reads every run's. The exported predictor loads the base LMM once
and runs each fold's head on its own fold's adapters (workbench.tuned_lmm.TunedLmm).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from common.atomic import atomic_folder
from features.decode import DECODERS, Decoder, FrameSampling
from features.encoding import render_item
from features.lmm import LmmEncoder, LmmOptions, hidden_width, layout
from features.spec import FeatureSpec
from features.streams.lmm import lmm_options
from features.views import ViewFamily, view_family
from workbench.config import TrainConfig
from workbench.data import UNLABELLED_FOLD, TrainingData, long_predictions
from workbench.fold import FoldFit, HeadRegressor, fold_models, write_fold
from workbench.heads import StreamHead, stream_tensors
from workbench.runs import ADAPTERS_DIR, TUNED_LMM, Run
from workbench.tuned_lmm import last_token_state, lmm_set, load_lmm_of, tuned_dtype

RANK = 16  # LoRA rank, as the NTIRE 2025 UGC and AIGV winners (SLCV) tuned InternVL2.5
ALPHA = 64  # LoRA alpha: the adapters' update is scaled by ALPHA / RANK
DROPOUT = 0.05
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")  # the language model's attention projections
ADAPTER_LR = 0.1  # the adapters' learning rate against the head's: 1e-4 at the default lr=1e-3, as SLCV tuned
WORKERS = 2  # decoding processes ahead of the model, as extraction has them
PRECISION = {"bfloat16": "bf16-mixed", "float16": "16-mixed", "float32": "32-true"}  # Lightning's, on CUDA


class LmmViews(Dataset):
    """(item, view) pairs of `index`, each decoded and cut as extraction cuts the LMM set: its frames [T, 3, S, S],
    the item's texts (column -> text), its labels and whether they are a teacher's. `views` are the run's paired view
    names; `position` picks the LMM set's part of each."""

    def __init__(
        self,
        paths: Sequence[str],
        texts: Sequence[dict[str, str]],
        index: np.ndarray,
        views: Sequence[str],
        position: int,
        decoder: Decoder,
        sampling: FrameSampling,
        family: ViewFamily,
        y: torch.Tensor,
        pseudo: torch.Tensor,
    ):
        self.paths, self.texts = list(paths), list(texts)
        self.rows = [(int(i), view.split("+")[position]) for i in index for view in views]
        self.decoder, self.sampling, self.family = decoder, sampling, family
        self.y, self.pseudo = y, pseudo

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int) -> tuple:
        item, view = self.rows[k]
        ((_, pixels, _),) = render_item(self.decoder, self.paths[item], self.sampling, [self.family], [(view,)])[0]
        return pixels[0], self.texts[item], self.y[item], self.pseudo[item]  # ItemFrames: [1, T, 3, S, S] a view


def collate(rows: list[tuple]) -> tuple:
    """Frames stacked [B, T, 3, S, S], the texts kept a list of dicts, labels and pseudo flags stacked."""
    frames, texts, y, pseudo = zip(*rows)
    return torch.stack(frames), list(texts), torch.stack(y), torch.stack(pseudo)


def loader(dataset: LmmViews, batch_size: int, shuffle: bool = False) -> DataLoader:
    """Batches of `dataset` decoded in WORKERS processes; shuffled for training, where a last short batch is dropped
    (as the frozen recipe drops it: a correlation loss on a row or two is noise)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=shuffle and len(dataset) > batch_size,
        num_workers=WORKERS,
        persistent_workers=WORKERS > 0,
        collate_fn=collate,
    )


class LmmData(pl.LightningDataModule):
    def __init__(self, train: LmmViews, val: LmmViews, batch_size: int):
        super().__init__()
        self.train, self.val, self.batch_size = train, val, batch_size

    def train_dataloader(self) -> DataLoader:
        return loader(self.train, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return loader(self.val, self.batch_size)


def language_attention(model: nn.Module) -> str:
    """peft's `target_modules` pattern (matched whole against module names) for the attention projections of the
    model's language model alone: anchored at the language model's own module, so the vision tower's attention is
    never matched, whatever its projections are called."""
    decoder = model.get_decoder()
    prefix = next((name for name, module in model.named_modules() if module is decoder), "")
    if not prefix:
        raise ValueError(f"{type(model).__name__}: no language model apart from the vision tower to put adapters on")
    found = [n for n, m in decoder.named_modules() if n.rpartition(".")[2] in PROJECTIONS and isinstance(m, nn.Linear)]
    if not found:
        raise ValueError(f"{type(model).__name__}'s language model has no {', '.join(PROJECTIONS)} projections")
    return rf"{re.escape(prefix)}\..*\.({'|'.join(PROJECTIONS)})"


@dataclass
class TunedModel:
    """The LMM with adapters: the frozen encoder (processor, prompts) and the peft model wrapping its model."""

    encoder: LmmEncoder
    net: nn.Module


def lora_model(spec: FeatureSpec, seed: int) -> TunedModel:
    """The set's LMM (seeded by `seed` where its weights are random) with new LoRA adapters, on CUDA with gradient
    checkpointing. Call under the fold's seed: the adapters' initialisation draws from the global generator."""
    from peft import LoraConfig, get_peft_model

    encoder = load_lmm_of(spec, seed)
    model = encoder.model
    if torch.cuda.is_available() and getattr(model, "supports_gradient_checkpointing", False):
        checkpoint_activations(model)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=DROPOUT, target_modules=language_attention(model))
    with warnings.catch_warnings():  # peft asks transformers' deprecated `is_gradient_checkpointing`
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        net = get_peft_model(model, config)
    return TunedModel(encoder, net)


def checkpoint_activations(model: nn.Module) -> None:
    """Gradient (activation) checkpointing of a transformers model, under its name before and after transformers 5.
    Non-reentrant: the frozen embeddings' outputs need not require grad for the adapters' gradients to flow."""
    options = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


class LoraRegressor(HeadRegressor):
    """HeadRegressor's recipe (loss, pseudo-label weighting, validation by the track's score) over the LMM with its
    adapters and the head: frames [B, T, 3, S, S] and each row's texts in. Its state (what a checkpoint holds) is
    the head's and the adapters', never the frozen base model's."""

    def __init__(self, tuned: TunedModel, head: StreamHead, *recipe, **options):
        super().__init__(head, *recipe, **options)
        # The LMM comes frozen and in eval mode, and Lightning keeps each submodule's mode through a fit: train mode
        # turns the adapters' dropout on (and the model's gradient checkpointing, which runs in train mode only).
        self.net = tuned.net.train()
        self._inputs = tuned.encoder.model_inputs  # a bound method: the encoder is not a submodule of the recipe
        self._prompt = tuned.encoder.options.prompts[0]

    def forward(self, frames: torch.Tensor, texts: list[dict[str, str]]) -> torch.Tensor:
        state = last_token_state(self.net, self._inputs(frames, texts, self._prompt))
        with torch.autocast(state.device.type, enabled=False):  # the head in float32 under mixed precision
            return self.head(state[:, None], torch.ones(len(state), 1, dtype=torch.bool, device=state.device))

    def adapters(self) -> list[nn.Parameter]:
        return [p for p in self.net.parameters() if p.requires_grad]

    def parameter_groups(self) -> list[dict]:
        return [{"params": list(self.head.parameters())}, {"params": self.adapters(), "lr": self.lr * ADAPTER_LR}]

    def tuned_keys(self) -> set[str]:
        return {f"net.{name}" for name, p in self.net.named_parameters() if p.requires_grad}

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        keep = {prefix + key for key in self.tuned_keys()}
        for key in [key for key in state if key not in keep and not key.startswith(f"{prefix}head.")]:
            del state[key]
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        lost = sorted(set(result.missing_keys) & self.tuned_keys()) + [
            key for key in result.missing_keys if key.startswith("head.")
        ]
        if strict and (lost or result.unexpected_keys):
            raise RuntimeError(f"LoraRegressor: missing {lost[:3]}, unexpected {result.unexpected_keys[:3]}")
        return result


def lora_spec(cfg: TrainConfig, data: TrainingData) -> tuple[FeatureSpec, int, int]:
    """The LMM feature set the run tunes, its position among the sets and its stream; what cannot be tuned is
    refused, saying why."""
    spec, position, stream = lmm_set(cfg, data.track.decoder)
    if cfg.shuffle_labels:
        raise ValueError(f"finetune={TUNED_LMM} has no shuffled-label control: train the control frozen")
    return spec, position, stream


def pooled_columns(options: LmmOptions, width: int) -> tuple[slice, int]:
    """The cached columns of the pooled state (the first prompt's final-layer state at its last token, `p0.last`) in
    a set `width` wide, and the LMM's hidden size, which the layout's widths give."""
    hidden = hidden_width(options, width)
    return layout(options, hidden)["p0.last"], hidden


@torch.no_grad()
def predict_lmm(module: LoraRegressor, dataset: LmmViews, views: int, batch_size: int) -> np.ndarray:
    """[items, views, targets] of the dataset's (item, view) rows, in order, in the model's own dtype."""
    module.eval().to("cuda" if torch.cuda.is_available() else "cpu")
    out = [module(frames, texts).float().cpu() for frames, texts, _, _ in loader(dataset, batch_size)]
    return torch.cat(out).reshape(-1, views, out[0].shape[-1]).numpy()


def lora_fold(cfg: TrainConfig, data: TrainingData, run: Run, fold: int) -> dict:
    """One fold of a LoRA-tuned run (see the module docstring); returns the fold's scores as the other recipes do."""
    spec, position, stream = lora_spec(cfg, data)
    decoder, family, sampling = DECODERS.get(spec.decoder), view_family(spec), spec.sampling()
    views = data.features.views
    paths = data.items["path"].astype(str).tolist()
    bound = [data.items[column].fillna("").astype(str).tolist() for column in spec.binds]
    texts = [dict(zip(spec.binds, row)) for row in zip(*bound)] if spec.binds else [{}] * len(paths)
    ids = data.items["item_id"].to_numpy()
    _, val_idx = data.index(fold)
    y = torch.from_numpy(data.labels)
    pseudo = torch.from_numpy(data.folds == UNLABELLED_FOLD)
    cached, mask = stream_tensors(data.features)[2 * stream : 2 * stream + 2]
    options = lmm_options(spec.options)
    columns, hidden = pooled_columns(options, cached.shape[-1])
    on_gpu = torch.cuda.is_available()
    device = {"accelerator": "gpu", "precision": PRECISION[tuned_dtype(options.dtype)]} if on_gpu else {}
    fit = FoldFit(cfg, data, run, fold, [cached[..., columns].contiguous(), mask], ids[val_idx], **device)

    def media(index: np.ndarray, labels: torch.Tensor) -> LmmViews:
        return LmmViews(paths, texts, index, views, position, decoder, sampling, family, labels, pseudo)

    def tune(rows: np.ndarray, labels: torch.Tensor, name: str) -> LoraRegressor:
        fit.seed()
        tuned = lora_model(spec, cfg.seed)
        if tuned.encoder.hidden != hidden:
            raise ValueError(f"{spec.backbone}: hidden size {tuned.encoder.hidden}, its cached vectors say {hidden}")
        module = LoraRegressor(tuned, fit.head([hidden], rows, labels), **fit.recipe(labels))
        return fit.train(module, LmmData(media(rows, labels), media(val_idx, labels), cfg.batch), name)

    oof_model, test_model = fold_models(data, fold, y, tune)
    targets = data.track.targets

    def predicted(model: LoraRegressor, index: np.ndarray):
        return long_predictions(predict_lmm(model, media(index, y), len(views), cfg.batch), ids[index], views, targets)

    with atomic_folder(run.fold_dir(fold) / ADAPTERS_DIR) as tmp:  # before the scores, which mark the fold finished
        test_model.net.save_pretrained(str(tmp))
    return write_fold(run, fold, data, fit, predicted, oof_model, test_model)
