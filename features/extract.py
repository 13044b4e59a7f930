"""The extraction run: Lightning `Trainer.predict` over a media datamodule, a frozen backbone as the module, and a
prediction-writer callback that streams Parquet parts into the cache.

DataLoader workers decode and build views while the model runs; the writer flushes a part every `part_items` items
or `flush_seconds`, whichever comes first, so memory stays flat and a kill loses at most that much work. A rerun
computes only the (item, view) pairs the cache lacks; media that cannot be read are recorded with their reason in
the failures table and the run goes on.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, RichProgressBar
from torch.utils.data import DataLoader, Dataset

from features.backbones import Backbone, create_backbone
from features.cache import (
    FeatureSpec,
    cache_dir,
    cached_views,
    ensure_manifest,
    exclusive,
    part_schema,
    read_failures,
    write_failures,
    write_part,
)
from features.decode import FrameSampling, MediaError, sample_video
from features.views import check_views, make_views
from workbench.atomic import remove_stale_temporaries


@dataclass(frozen=True)
class Job:
    item_id: str
    path: str
    views: tuple[str, ...]


class MediaDataset(Dataset):
    """One item per index: its sampled frames in every view it still lacks, or the reason it cannot be read."""

    def __init__(self, jobs: Sequence[Job], sampling: FrameSampling, size: int):
        self.jobs = list(jobs)
        self.sampling = sampling
        self.size = size

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> dict:
        job = self.jobs[index]
        try:
            clip = sample_video(job.path, self.sampling)
            pixels = make_views(clip.frames, job.views, self.size)
        except MediaError as error:
            return {"job": job, "error": error.reason}
        except Exception as error:  # a decoder crash on one file must not end a run of thousands
            return {"job": job, "error": f"{type(error).__name__}: {error}"}
        return {"job": job, "pixels": pixels, "times": clip.times, "error": None}


def collate(samples: list[dict]) -> dict:
    """Frames of every view of every readable item in one tensor; per-item row bookkeeping beside it."""
    ok = [s for s in samples if s["error"] is None]
    rows = {"item_id": [], "view": [], "t": [], "time": []}
    for sample in ok:
        views, frames = sample["pixels"].shape[:2]
        rows["item_id"] += [sample["job"].item_id] * (views * frames)
        rows["view"] += [v for v in sample["job"].views for _ in range(frames)]
        rows["t"] += list(range(frames)) * views
        rows["time"] += sample["times"].tolist() * views
    pixels = torch.cat([s["pixels"].flatten(0, 1) for s in ok]) if ok else torch.empty(0)
    failures = [{"item_id": s["job"].item_id, "path": s["job"].path, "reason": s["error"]} for s in samples if s["error"]]
    return {"pixels": pixels, "rows": rows, "failures": failures}


class MediaDataModule(pl.LightningDataModule):
    def __init__(self, dataset: MediaDataset, batch_size: int, workers: int):
        super().__init__()
        self.dataset = dataset
        self.batch_size = batch_size
        self.workers = workers

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            num_workers=self.workers,
            collate_fn=collate,
            pin_memory=torch.cuda.is_available(),
            prefetch_factor=2 if self.workers else None,
        )


class FeatureExtractor(pl.LightningModule):
    """The recipe around a frozen backbone: run it on a batch's frames in chunks, hand rows to the writer."""

    def __init__(self, backbone: Backbone, chunk: int = 64):
        super().__init__()
        self.backbone = backbone
        self.chunk = chunk

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        pixels = batch["pixels"]
        outputs = [self.backbone(part) for part in pixels.split(self.chunk)] if len(pixels) else []
        features = torch.cat(outputs).float().cpu().numpy() if outputs else np.empty((0, self.backbone.dim), np.float32)
        return {"rows": batch["rows"], "features": features, "failures": batch["failures"]}


class ParquetPartWriter(BasePredictionWriter):
    """Buffers rows and writes whole Parquet parts; an item id is written once per process even when a
    distributed sampler hands it out twice."""

    def __init__(self, folder: Path, schema, part_items: int = 256, flush_seconds: float = 10.0):
        super().__init__(write_interval="batch")
        self.folder = folder
        self.schema = schema
        self.part_items = part_items
        self.flush_seconds = flush_seconds
        self.buffer: list[dict] = []
        self.failures: list[dict] = []
        self.written: set[str] = set()
        self.last_flush = time.monotonic()

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        rows = prediction["rows"]
        fresh = np.array([i not in self.written for i in rows["item_id"]], dtype=bool)
        if fresh.any():
            self.buffer.append({**{k: np.asarray(v)[fresh] for k, v in rows.items()}, "feature": prediction["features"][fresh]})
            self.written.update(np.asarray(rows["item_id"])[fresh].tolist())
        self.failures += [f for f in prediction["failures"] if f["item_id"] not in self.written]
        buffered_items = len({i for part in self.buffer for i in part["item_id"]})
        if buffered_items >= self.part_items or time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def on_predict_epoch_end(self, trainer, pl_module):
        self.flush()

    def flush(self) -> None:
        if self.buffer:
            columns = {key: np.concatenate([part[key] for part in self.buffer]) for key in self.buffer[0]}
            write_part(self.folder, columns, self.schema)
        if self.failures:
            write_failures(self.folder, self.failures)
        self.buffer, self.failures = [], []
        self.last_flush = time.monotonic()


@dataclass
class ExtractionSummary:
    folder: Path
    items: int
    already_cached: int
    extracted: int
    failures: pd.DataFrame = field(repr=False)
    seconds: float


def library_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in ("torch", "timm", "av", "numpy", "pyarrow")}


def distributed_rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def plan_jobs(items: pd.DataFrame, views: Sequence[str], folder: Path) -> list[Job]:
    """Each item with the views the cache still lacks for it."""
    have = cached_views(folder).groupby("item_id")["view"].agg(set).to_dict()
    jobs = []
    for item_id, path in zip(items["item_id"], items["path"]):
        missing = tuple(v for v in views if v not in have.get(item_id, ()))
        if missing:
            jobs.append(Job(item_id, path, missing))
    return jobs


def extract(
    items: pd.DataFrame,
    track: str,
    spec: FeatureSpec,
    views: Sequence[str],
    cache_root: str | Path = "cache",
    batch_size: int = 4,
    workers: int = 1,
    accelerator: str = "auto",
    devices: int = 1,
    strategy: str = "auto",
    progress: bool = True,
    part_items: int = 256,
    flush_seconds: float = 10.0,
) -> ExtractionSummary:
    """Fills the cache of `spec` for `items` (columns item_id, path) in the given views."""
    started = time.monotonic()
    views = check_views(views)
    folder = cache_dir(cache_root, track, spec)
    backbone = create_backbone(spec.backbone, weights=spec.weights)
    # Under DDP every rank runs this function; rank 0 holds the lock and tidies up for the group.
    leader = distributed_rank() == 0
    with exclusive(folder) if leader else contextlib.nullcontext():
        ensure_manifest(folder, spec, backbone.identity(), backbone.dim, library_versions())
        if leader:
            remove_stale_temporaries(folder)
        jobs = plan_jobs(items, views, folder)
        if jobs:
            sampling = FrameSampling(frames=spec.frames, fps=spec.fps, phase=spec.phase)
            datamodule = MediaDataModule(MediaDataset(jobs, sampling, spec.size), batch_size, workers)
            writer = ParquetPartWriter(folder, part_schema(backbone.dim, spec.dtype), part_items, flush_seconds)
            trainer = pl.Trainer(
                accelerator=accelerator,
                devices=devices,
                strategy=strategy,
                logger=False,
                enable_checkpointing=False,
                enable_model_summary=False,
                enable_progress_bar=progress,
                callbacks=[writer] + ([RichProgressBar()] if progress else []),
            )
            trainer.predict(FeatureExtractor(backbone), datamodule=datamodule, return_predictions=False)
    failures = read_failures(folder, views)
    failures = failures[failures["item_id"].isin(items["item_id"])].reset_index(drop=True)
    return ExtractionSummary(
        folder=folder,
        items=len(items),
        already_cached=len(items) - len(jobs),
        extracted=len(jobs) - len(failures),
        failures=failures,
        seconds=time.monotonic() - started,
    )
