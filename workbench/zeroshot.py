"""`just zero-shot`: what a large multimodal model knows of a track before anything is trained on it.

Each target is read off the LMM's own answer: the expected level score (Q-Align's readout, features.lmm) of the prompt
asking about that target's aspect (xgc_ugc's colour, noise, ...), or of the overall quality prompt. Its rank
correlation with the labels needs nothing fitted; the track's own score, which may be scaled (an RMSE, a PLCC after
a logistic fit), is taken out of fold: on each fold of the run's grouped folds, the answer mapped to the label scale
by the least-squares line of the other folds' training items, so no label is used to predict itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from common.metrics import srcc
from features.cache import cache_dir
from features.extract import extract
from features.fingerprint import item_fingerprints
from features.reader import read_features
from features.spec import FeatureSpec
from features.streams.lmm import asked_aspects, lmm_options, lmm_spec
from tracks import Track, get_track
from workbench.config import ConfigError, ZeroShotConfig
from workbench.data import items_of
from workbench.folds import grouped_folds, media_groups

VIEW = "center"


@dataclass(frozen=True)
class ZeroShot:
    """Per target the prompt read and the answers' scores, and the track's score of the out-of-fold predictions."""

    model: str
    rows: list[dict]
    score: dict[str, float]
    items: int


def scored_spec(cfg: ZeroShotConfig, track: Track) -> FeatureSpec:
    spec = lmm_spec(cfg, track.decoder)
    if spec is None:
        raise ConfigError("zero-shot needs lmm=<model id or folder>: the model whose answers are scored")
    return spec


def prompt_of(target: str, aspects: list[str]) -> int:
    """The prompt asking about `target` (its aspect named alike), else the overall quality prompt, else the first."""
    for wanted in (target, "overall", "quality"):
        if wanted in aspects:
            return aspects.index(wanted)
    return 0


def answers(spec: FeatureSpec, vectors: np.ndarray) -> np.ndarray:
    """[items, prompts]: the expected level score of each prompt, read by the encoder's column layout."""
    from features.lmm import hidden_width, layout

    options = lmm_options(spec.options)
    columns = layout(options, hidden_width(options, vectors.shape[1]))
    return np.stack([vectors[:, columns[f"p{k}.expected"]][:, 0] for k in range(len(options.prompts))], axis=1)


def out_of_fold(answer: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Each fold's answers on the label scale by the line fitted on the other folds' items."""
    mapped = np.empty_like(labels)
    for fold in np.unique(folds):
        rest = (folds != fold) & np.isfinite(labels)
        slope, intercept = np.polyfit(answer[rest], labels[rest], 1)
        mapped[folds == fold] = slope * answer[folds == fold] + intercept
    return mapped


def zero_shot(cfg: ZeroShotConfig) -> ZeroShot:
    """Extracts the LMM's answers for the labelled training items where the cache lacks them, then scores them."""
    track = get_track(cfg.track)
    spec = scored_spec(cfg, track)
    items = items_of(cfg, track)
    items = items[items["split"] == "train"].reset_index(drop=True)
    extract(items, track.name, [spec], [VIEW], cache_root=cfg.cache, batch_size=cfg.batch, workers=cfg.workers,
            accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.strategy)  # fmt: skip
    fingerprints = spec.bound(items, item_fingerprints(items, cfg.cache))
    found = read_features(cache_dir(cfg.cache, track.name, spec), items["item_id"].tolist(), [VIEW], 1, fingerprints)
    present = found.mask.any(axis=(1, 2))
    if not present.any():
        raise ConfigError(f"no item of {track.name} could be read by {spec.backbone}: see the extraction's failures")
    items, vectors = items[present].reset_index(drop=True), found.x[present][:, 0, 0]  # [N, V, T, D]: one view, one row
    table = answers(spec, vectors.astype(np.float64))
    aspects = asked_aspects(cfg)
    folds = grouped_folds(media_groups(items, track.decoder, cfg.cache), cfg.folds, track.name, cfg.seed)
    predicted, rows = pd.DataFrame(index=items["item_id"]), []
    for target in track.targets:
        k = prompt_of(target, aspects)
        labels = items[target].to_numpy(dtype=np.float64)
        predicted[target] = out_of_fold(table[:, k], labels, folds)
        asked = json.loads(spec.options)["prompts"][k][0].splitlines()[-1]
        rows.append({"target": target, "prompt": asked, "srcc": srcc(table[:, k], labels)})
    return ZeroShot(spec.backbone, rows, track.selection_score(predicted, items), len(items))
