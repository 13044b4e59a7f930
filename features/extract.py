"""The extraction run: Lightning `Trainer.predict` over a media datamodule, a frozen backbone as the module, and a
prediction-writer callback that writes Parquet parts into the cache.

One run fills one or several feature sets that share their decoding (the media and the key-frame sampling): the view
families of one backbone (aesthetic + fragments + native of a 4K image, say) and other encoders' sets beside them (a
motion encoder on clips of consecutive frames from the same key frames). Each item is decoded once (once per
temporal offset its variants ask for) and every set cuts its views from that decode and runs its own encoder.
DataLoader workers decode and build views while the model runs; the writer flushes a part every `part_items` items
or `flush_seconds`, whichever comes first, so memory stays flat and a kill loses at most that much work. On the CPU
the backbone runs on several threads of single-threaded ops beside the workers (`single_threaded_ops`, `cpu_threads`).
A rerun computes only the (item, variant) pairs each set lacks; media that cannot be read are recorded with their
reason in the failures table of every set that asked for them, and the run goes on. One extraction at a time holds a
cache folder (see features.cache.exclusive). Every item's file is fingerprinted first (features.fingerprint): rows and
failures are written with it, and an item whose file has changed since is extracted again beside the rows of its
other versions, which stay until a prune (features.inventory) removes them.

With `devices=<n> strategy=ddp` Lightning starts n-1 more processes that re-run the same command; every rank plans,
rank 0 alone holds the locks, the jobs come from rank 0's plan and each rank writes its own parts (see `extract`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import BasePredictionWriter, RichProgressBar
from torch.utils.data import DataLoader

from common.atomic import atomic_path, remove_stale_temporaries
from features.backbones import FrozenEncoder
from features.cache import (
    cache_dir,
    cached_views,
    ensure_manifest,
    exclusive,
    other_versions,
    part_schema,
    read_failures,
    remove_superseded,
    write_failures,
    write_part,
)
from features.decode import DECODERS
from features.encoding import (
    EncoderPool,
    Job,
    MediaDataset,
    collate,
    create_encoders,
    decode_threads,
    encoder_threads,
    shared_sampling,
    single_threaded_ops,
)
from features.fingerprint import REFERENCE, item_fingerprints
from features.spec import FeatureSpec
from features.views import check_time_axis, split_variants, view_family


class MediaDataModule(pl.LightningDataModule):
    def __init__(self, dataset: MediaDataset, batch_size: int, workers: int):
        super().__init__()
        self.dataset = dataset
        self.batch_size = batch_size
        self.workers = workers

    def setup(self, stage: str) -> None:
        """Under DDP, every rank takes rank 0's jobs, so the shards come from one plan whatever each rank saw of the
        cache. Lightning's predict sampler (UnrepeatedDistributedSampler) deals job k to rank k mod n without padding,
        so no job is done twice, but it refuses a rank without a job: fewer jobs than ranks are topped up with idle
        ones."""
        jobs = self.trainer.strategy.broadcast(self.dataset.jobs, src=0)
        idle = Job(item_id="", path="", fingerprint="", views=tuple(() for _ in self.dataset.families))
        self.dataset.jobs = jobs + [idle] * (self.trainer.world_size - len(jobs))

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
    """The recipe around the encoders (features.encoding.EncoderPool): encode each batch's sets and hand the rows to
    the writer, the pool's threads running for the prediction's length."""

    def __init__(self, encoders: Sequence[FrozenEncoder], chunk: int = 64, threads: int = 1):
        super().__init__()
        self.pool = EncoderPool(encoders, chunk, threads)

    def on_predict_start(self) -> None:
        self.pool.start()

    def on_predict_end(self) -> None:
        self.pool.stop()

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        sets = [
            {"rows": part["rows"], "features": self.pool.encode(part["pixels"], s, part["texts"])}
            for s, part in enumerate(batch["sets"])
        ]
        return {"sets": sets, "failures": batch["failures"]}


class ParquetPartWriter(BasePredictionWriter):
    """Buffers rows per feature set and writes whole Parquet parts named after the rank; an item id is written once
    per set and rank even when a sampler hands it out twice. Ranks never share an item (MediaDataModule.setup)."""

    def __init__(self, folders: Sequence[Path], schemas: Sequence, part_items: int = 256, flush_seconds: float = 10.0):
        super().__init__(write_interval="batch")
        self.folders = list(folders)
        self.schemas = list(schemas)
        self.part_items = part_items
        self.flush_seconds = flush_seconds
        self.buffers: list[list[dict]] = [[] for _ in self.folders]
        self.failures: list[list[dict]] = [[] for _ in self.folders]
        self.written: list[set[str]] = [set() for _ in self.folders]
        self.last_flush = time.monotonic()
        self.rank = 0

    def setup(self, trainer, pl_module, stage):
        super().setup(trainer, pl_module, stage)
        self.rank = trainer.global_rank

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        for buffer, written, part in zip(self.buffers, self.written, prediction["sets"], strict=True):
            rows = part["rows"]
            fresh = np.array([i not in written for i in rows["item_id"]], dtype=bool)
            if fresh.any():
                kept = {k: np.asarray(v)[fresh] for k, v in rows.items()}
                buffer.append({**kept, "feature": part["features"][fresh]})
                written.update(np.asarray(rows["item_id"])[fresh].tolist())
        for failure in prediction["failures"]:
            for s in failure["sets"]:
                if failure["item_id"] not in self.written[s]:
                    self.failures[s].append({**failure, "fingerprint": failure["fingerprints"][s]})
        buffered_items = max(len({i for part in buffer for i in part["item_id"]}) for buffer in self.buffers)
        if buffered_items >= self.part_items or time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def on_predict_epoch_end(self, trainer, pl_module):
        """Waits for every rank's last part, so rank 0 holds the lock over the group's writing and counts it all."""
        self.flush()
        trainer.strategy.barrier("parts written")

    def flush(self) -> None:
        for folder, schema, buffer, failures in zip(
            self.folders, self.schemas, self.buffers, self.failures, strict=True
        ):
            if buffer:
                columns = {key: np.concatenate([part[key] for part in buffer]) for key in buffer[0]}
                write_part(folder, columns, schema, prefix=f"part-r{self.rank}")
            if failures:
                write_failures(folder, failures, prefix=f"failures-r{self.rank}")
        self.buffers = [[] for _ in self.folders]
        self.failures = [[] for _ in self.folders]
        self.last_flush = time.monotonic()


@dataclass
class ExtractionSummary:
    folders: list[Path]  # one per feature set, in the order of the specs
    items: int
    already_cached: int
    extracted: int
    changed: int  # of those extracted, items the cache held another version of (re-downloaded, repaired, ...)
    failures: pd.DataFrame = field(repr=False)
    seconds: float
    facts: pd.DataFrame | None = field(default=None, repr=False)  # the decoder's per-file facts (Decoder.facts)

    @property
    def folder(self) -> Path:
        """The folder of an extraction of one feature set, as most are."""
        if len(self.folders) != 1:
            raise ValueError(f"this extraction filled {len(self.folders)} feature sets: use .folders")
        return self.folders[0]


def library_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in ("torch", "timm", "av", "pillow", "numpy", "pyarrow")}


def cpu_threads(trainer: pl.Trainer) -> int:
    """Encoder threads per model process of the trainer (features.encoding.encoder_threads)."""
    return encoder_threads(isinstance(trainer.accelerator, CPUAccelerator), trainer.num_devices)


def group_leader() -> bool:
    """Whether this process is rank 0 of its DDP group (or runs alone), known before any process group exists from
    what launchers set: torchrun sets RANK; Lightning's launcher sets NODE_RANK and LOCAL_RANK for the ranks it
    starts (and for itself, after it has started them)."""
    if "RANK" in os.environ:
        return os.environ["RANK"] == "0"
    return os.environ.get("NODE_RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"


def plan_jobs(
    items: pd.DataFrame, variants: Sequence[tuple[str, ...]], folders: Sequence[Path], specs: Sequence[FeatureSpec]
) -> list[Job]:
    """Each item with, per feature set, the variants the cache still lacks for its file as it is now (`fingerprint`),
    bound to the texts the set reads where it reads any (FeatureSpec.bound)."""
    bound = [spec.bound(items, items["fingerprint"].tolist()) for spec in specs]
    have = [
        cached_views(folder, dict(zip(items["item_id"], fingerprints))).groupby("item_id")["view"].agg(set).to_dict()
        for folder, fingerprints in zip(folders, bound, strict=True)
    ]
    references = items[REFERENCE] if REFERENCE in items else [""] * len(items)
    columns = list(dict.fromkeys(column for spec in specs for column in spec.binds))
    texts = zip(*(items[c].fillna("").astype(str) for c in columns)) if columns else itertools.repeat(())
    jobs = []
    rows = zip(items["item_id"], items["path"], items["fingerprint"], references, zip(*bound), texts)
    for item_id, path, fingerprint, reference, fingerprints, text in rows:
        missing = tuple(
            tuple(v for v in views if v not in cached.get(item_id, ()))
            for views, cached in zip(variants, have, strict=True)
        )
        if any(missing):
            jobs.append(Job(item_id, path, fingerprint, missing, reference, fingerprints, tuple(zip(columns, text))))
    return jobs


FACTS = "media-facts.parquet"  # the decoder's per-file facts (Decoder.facts) as the last extraction read them


def extract(
    items: pd.DataFrame,
    track: str,
    specs: FeatureSpec | Sequence[FeatureSpec],
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
    """Fills the caches of `specs` (one feature set, or several sharing their decoding, see shared_sampling) for
    `items` (columns item_id, path); each set takes the variants of `views` its family accepts. The files'
    fingerprints are memoised in `cache_root` (features.fingerprint).

    Under DDP every rank runs this function. Rank 0 holds the locks from before it plans until every rank's parts are
    on disk (the writer's barrier), and starts the other ranks only inside `trainer.predict`, after its plan: they
    plan under its lock, before the group forms and so before anyone writes, and find the same jobs. Their own plan
    only tells them whether to join; the jobs they run are rank 0's (MediaDataModule.setup). The summary is counted
    from the cache after the run, so it covers every rank's work.
    """
    started = time.monotonic()
    specs = (specs,) if isinstance(specs, FeatureSpec) else tuple(specs)
    sampling = shared_sampling(specs)
    families = [view_family(spec) for spec in specs]
    variants = split_variants(families, views)
    check_time_axis(views, specs[0].time_axis, specs[0].decoder)
    folders = [cache_dir(cache_root, track, spec) for spec in specs]
    encoders = create_encoders(specs)
    leader = group_leader()
    items = items.assign(fingerprint=item_fingerprints(items, cache_root))
    fingerprints = [dict(zip(items["item_id"], spec.bound(items, items["fingerprint"].tolist()))) for spec in specs]
    decoder = DECODERS.get(specs[0].decoder)
    facts = None
    if decoder.facts is not None and leader:
        members = items["path"].tolist() + (items[REFERENCE].dropna().tolist() if REFERENCE in items else [])
        facts = decoder.facts(list(dict.fromkeys(members)))
    changed: set[str] = set()
    with contextlib.ExitStack() as locks:
        if leader:  # in path order, so two runs sharing some of their sets cannot deadlock
            for folder in sorted(folders):
                locks.enter_context(exclusive(folder))
        for folder, spec, encoder, bound in zip(folders, specs, encoders, fingerprints, strict=True):
            ensure_manifest(folder, spec, encoder.identity(), encoder.dim, library_versions())
            if leader:
                remove_stale_temporaries(folder)
                remove_superseded(folder)
                changed |= other_versions(folder, bound)
                if facts is not None:
                    with atomic_path(folder / FACTS) as tmp:
                        facts.to_parquet(tmp, index=False)
        jobs = plan_jobs(items, variants, folders, specs)
        if jobs:
            dataset = MediaDataset(jobs, decoder, sampling, families, decode_threads(workers))
            schemas = [part_schema(encoder.dim, spec.dtype) for encoder, spec in zip(encoders, specs, strict=True)]
            writer = ParquetPartWriter(folders, schemas, part_items, flush_seconds)
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
            datamodule = MediaDataModule(dataset, batch_size, workers)
            with single_threaded_ops():
                extractor = FeatureExtractor(encoders, threads=cpu_threads(trainer))
                trainer.predict(extractor, datamodule=datamodule, return_predictions=False)
        unfinished = plan_jobs(items, variants, folders, specs)
    failures = pd.concat([read_failures(*found) for found in zip(folders, fingerprints, variants, strict=True)])
    failures = failures[failures["item_id"].isin(items["item_id"])].drop_duplicates("item_id")
    position = pd.Series(np.arange(len(items)), index=items["item_id"])  # the label file's order, run after run
    failures = failures.sort_values("item_id", key=lambda ids: ids.map(position)).reset_index(drop=True)
    return ExtractionSummary(
        folders=folders,
        items=len(items),
        already_cached=len(items) - len(jobs),
        extracted=len(jobs) - len(unfinished),
        changed=len(changed - {job.item_id for job in unfinished}),
        failures=failures,
        seconds=time.monotonic() - started,
        facts=facts,
    )
