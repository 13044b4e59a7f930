"""The extraction run: Lightning `Trainer.predict` over a media datamodule, a frozen backbone as the module, and a
prediction-writer callback that streams Parquet parts into the cache.

One run fills one or several feature sets that share their decoding (the media and the key-frame sampling): the view
families of one backbone (aesthetic + fragments + native of a 4K image, say) and other encoders' sets beside them (a
motion encoder on clips of consecutive frames from the same key frames). Each item is decoded once (once per
temporal offset its variants ask for) and every set cuts its views from that decode and runs its own encoder.
DataLoader workers decode and build views while the model runs; the writer flushes a part every `part_items` items
or `flush_seconds`, whichever comes first, so memory stays flat and a kill loses at most that much work. On the CPU
the backbone runs as several single-threaded streams beside the workers (`single_threaded_ops`, `cpu_streams`). A rerun
computes only the (item, variant) pairs each set lacks; media that cannot be read are recorded with their reason in
the failures table of every set that asked for them, and the run goes on. One extraction at a time holds a cache
folder (see features.cache.exclusive). Every item's file is fingerprinted first (features.fingerprint): rows and
failures are written with it, and the rows of an item whose file has changed since are dropped and extracted again.

With `devices=<n> strategy=ddp` Lightning starts n-1 more processes that re-run the same command; every rank plans,
rank 0 alone holds the locks, the jobs come from rank 0's plan and each rank writes its own parts (see `extract`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import BasePredictionWriter, RichProgressBar
from torch import nn
from torch.utils.data import DataLoader, Dataset

from common.atomic import atomic_path, remove_stale_temporaries
from features.audio import attach_audio, create_audio_encoder
from features.backbones import FrozenEncoder, create_backbone
from features.cache import (
    FeatureSpec,
    cache_dir,
    cached_views,
    drop_stale,
    ensure_manifest,
    exclusive,
    part_schema,
    read_failures,
    write_failures,
    write_part,
)
from features.decode import DECODERS, Decoder, FrameSampling, MediaError
from features.fingerprint import REFERENCE, item_fingerprints
from features.motion import create_motion_encoder
from features.pairs import create_fr_encoder, create_pair_encoder, read_pair
from features.sync import create_sync_encoder
from features.views import FAMILIES, Variant, ViewFamily, check_time_axis, split_variants, view_family


@dataclass(frozen=True)
class Job:
    item_id: str
    path: str
    media: str  # the file's fingerprint when the run planned: rows and failures are bound to it
    views: tuple[tuple[str, ...], ...]  # per feature set, the variants it still lacks (empty: none)
    reference: str = ""  # the reference of a full-reference pair (features.pairs), decoded on the same frames

    @property
    def sets(self) -> list[int]:
        return [s for s, views in enumerate(self.views) if views]


# per feature set: (variant, pixels [T, 3, S, S] or clips [C, L, 3, S, S], their key frames' times)
Rendered = list[list[tuple[str, torch.Tensor, np.ndarray]]]


def render_item(
    decoder: Decoder,
    path: str,
    sampling: FrameSampling,
    families: Sequence[ViewFamily],
    variants: Sequence[tuple[str, ...]],
    threads: int = 0,
    reference: str = "",
) -> Rendered:
    """Per feature set, each of its variants' frames with their times. The media are decoded (on `threads` decoder
    threads, 0 for the library's choice) once per distinct temporal offset among the variants asked for (once, when
    none is shifted), with the `reference` of a pair beside them, and each family renders its geometries from the
    frames of their offset."""
    parsed = [[Variant.parse(name) for name in names] for names in variants]
    offsets = sorted({v.offset for views in parsed for v in views})
    if reference:
        clips = {offset: read_pair(decoder, path, reference, sampling.shifted(offset), threads) for offset in offsets}
    else:
        clips = {offset: decoder.read(path, sampling.shifted(offset), threads) for offset in offsets}
    if sampling.audio_seconds:
        clips = {offset: attach_audio(clip, path, sampling.audio_seconds) for offset, clip in clips.items()}
    rendered = []
    for family, names, views in zip(families, variants, parsed, strict=True):
        out = {}
        for offset, clip in clips.items():
            here = [(name, v.geometry) for name, v in zip(names, views) if v.offset == offset]
            if here:
                source = clip if family.source is None else getattr(clip, family.source)
                pixels = family.render(source, [geometry for _, geometry in here])
                out.update({name: (frames, clip.times[: len(frames)]) for (name, _), frames in zip(here, pixels)})
        rendered.append([(name, *out[name]) for name in names])
    return rendered


class MediaDataset(Dataset):
    """One item per index: every variant each feature set still lacks (see render_item); or the reason the item
    cannot be read."""

    def __init__(
        self,
        jobs: Sequence[Job],
        decoder: Decoder,
        sampling: FrameSampling,
        families: Sequence[ViewFamily],
        decode_threads: int = 0,
    ):
        self.jobs = list(jobs)
        self.decoder = decoder
        self.sampling = sampling
        self.families = list(families)
        self.decode_threads = decode_threads

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> dict:
        job = self.jobs[index]
        try:
            views = render_item(
                self.decoder, job.path, self.sampling, self.families, job.views, self.decode_threads, job.reference
            )
        except MediaError as error:
            return {"job": job, "error": error.reason}
        except Exception as error:  # a decoder crash on one file must not end a run of thousands
            return {"job": job, "error": f"{type(error).__name__}: {error}"}
        return {"job": job, "views": views, "error": None}


def collate(samples: list[dict]) -> dict:
    """Per feature set, the frames of every variant of every readable item in one tensor, with per-row bookkeeping
    beside it (sets differ in image size, so they cannot share a tensor; variants of another temporal offset may
    have fewer frames near a clip's end)."""
    ok = [s for s in samples if s["error"] is None]
    sets = []
    for index in range(len(samples[0]["job"].views)):
        rows = {"item_id": [], "media": [], "view": [], "t": [], "time": []}
        pixels = []
        for sample in ok:
            for view, frames, times in sample["views"][index]:
                rows["item_id"] += [sample["job"].item_id] * len(frames)
                rows["media"] += [sample["job"].media] * len(frames)
                rows["view"] += [view] * len(frames)
                rows["t"] += range(len(frames))
                rows["time"] += times.tolist()
                pixels.append(frames)
        sets.append({"pixels": torch.cat(pixels) if pixels else torch.empty(0), "rows": rows})
    failures = [
        {
            "item_id": s["job"].item_id,
            "media": s["job"].media,
            "path": s["job"].path,
            "reason": s["error"],
            "sets": s["job"].sets,
        }
        for s in samples
        if s["error"]
    ]
    return {"sets": sets, "failures": failures}


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
        idle = Job(item_id="", path="", media="", views=tuple(() for _ in self.dataset.families))
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
    """The recipe around frozen encoders, one per feature set (sets of one backbone share it): run each set's encoder
    on its frames or clips, at most `chunk` to a forward pass, and hand rows to the writer. With `streams` > 1 (on
    the CPU, see cpu_streams) the inputs are shared among that many threads, each running the encoder on its share."""

    def __init__(self, encoders: Sequence[FrozenEncoder], chunk: int = 64, streams: int = 1):
        super().__init__()
        distinct = list({id(encoder): encoder for encoder in encoders}.values())
        self.encoders = nn.ModuleList(distinct)
        self.uses = [next(k for k, e in enumerate(distinct) if e is encoder) for encoder in encoders]
        self.chunk = chunk
        self.streams = streams
        self._pool: ThreadPoolExecutor | None = None

    def on_predict_start(self) -> None:
        if self.streams > 1:
            self._pool = ThreadPoolExecutor(self.streams, thread_name_prefix="backbone")

    def on_predict_end(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def forward(self, pixels: torch.Tensor, encoder: int = 0) -> torch.Tensor:
        with torch.inference_mode():  # grad mode is per thread: the stream threads do not inherit Lightning's
            return self.encoders[encoder](pixels)

    def encode(self, pixels: torch.Tensor, feature_set: int) -> np.ndarray:
        encoder = self.uses[feature_set]
        if not len(pixels):
            return np.empty((0, self.encoders[encoder].dim), np.float32)
        if self._pool is None:
            return torch.cat([self(part, encoder) for part in pixels.split(self.chunk)]).float().cpu().numpy()
        share = min(self.chunk, -(-len(pixels) // self.streams))
        parts = self._pool.map(lambda part: self(part, encoder), pixels.split(share))
        return torch.cat(list(parts)).float().cpu().numpy()

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        sets = [
            {"rows": part["rows"], "features": self.encode(part["pixels"], s)} for s, part in enumerate(batch["sets"])
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
                    self.failures[s].append(failure)
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
    changed: int  # of those extracted, items whose cached rows were of another file (re-downloaded, repaired, ...)
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


@contextlib.contextmanager
def single_threaded_ops() -> Iterator[None]:
    """Torch ops on one thread each for the run's duration; the backbone's parallelism on the CPU is its streams
    (cpu_streams) instead.

    The decoding workers and the model share the cores. OpenMP threads spin at their barriers, so a model on 2 threads
    beside a decoding worker made extraction 1.8 times slower than on 1 thread (2 cores, 1080p); single-threaded ops
    in several Python threads (torch releases the GIL) never wait for each other, and the OS gives each side the cores
    it can use. OMP_NUM_THREADS is set too: Lightning's DDP launcher otherwise resets the count to cores / processes,
    and the ranks it starts inherit the variable.
    """
    before, variable = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if variable is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = variable


def cpu_streams(trainer: pl.Trainer) -> int:
    """Backbone streams per model process: its share of the cores on the CPU (10 s clips, resnet18, 2 cores, 2
    decoding workers: 0.71 s a clip at 720p against 0.89 with the backbone on one stream), one on an accelerator."""
    if not isinstance(trainer.accelerator, CPUAccelerator):
        return 1
    return max(1, len(os.sched_getaffinity(0)) // trainer.num_devices)


def decode_threads(workers: int) -> int:
    """Decoder threads per DataLoader worker: one where several workers decode, FFmpeg's own count otherwise.

    Parallel over items is cheaper than parallel within one: frame threads cost FFmpeg 14-18% more CPU for the same
    frames (10 s H.264 clips at 720p and 1080p), CPU the model could use. A lone worker keeps them, since they borrow
    the cores the model leaves idle when decoding is the slower side (1080p on 2 cores)."""
    return 1 if workers > 1 else 0


def group_leader() -> bool:
    """Whether this process is rank 0 of its DDP group (or runs alone), known before any process group exists from
    what launchers set: torchrun sets RANK; Lightning's launcher sets NODE_RANK and LOCAL_RANK for the ranks it
    starts (and for itself, after it has started them)."""
    if "RANK" in os.environ:
        return os.environ["RANK"] == "0"
    return os.environ.get("NODE_RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"


def plan_jobs(items: pd.DataFrame, variants: Sequence[tuple[str, ...]], folders: Sequence[Path]) -> list[Job]:
    """Each item with, per feature set, the variants the cache still lacks for its file as it is now (`media`)."""
    media = dict(zip(items["item_id"], items["media"]))
    have = [cached_views(folder, media).groupby("item_id")["view"].agg(set).to_dict() for folder in folders]
    references = items[REFERENCE] if REFERENCE in items else [""] * len(items)
    jobs = []
    for item_id, path, fingerprint, reference in zip(items["item_id"], items["path"], items["media"], references):
        missing = tuple(
            tuple(v for v in views if v not in cached.get(item_id, ()))
            for views, cached in zip(variants, have, strict=True)
        )
        if any(missing):
            jobs.append(Job(item_id, path, fingerprint, missing, reference))
    return jobs


FACTS = "media-facts.parquet"  # the decoder's per-file facts (Decoder.facts) as the last extraction read them
SHARED_DECODE = ("media", "frames", "fps", "phase", "dtype", "light")


def shared_sampling(specs: Sequence[FeatureSpec]) -> FrameSampling:
    """The one decode of feature sets extracted together: they share the media, the key-frame sampling and the dtype
    (encoders and views may differ), and at most one clip geometry, which the key frames' decode also yields."""
    for spec in specs[1:]:
        differ = [name for name in SHARED_DECODE if getattr(spec, name) != getattr(specs[0], name)]
        if differ:
            raise ValueError(
                f"feature sets extracted together share their decoding; {', '.join(differ)} differ: "
                f"{specs[0]} vs {spec}"
            )
    clips = {(spec.clip, spec.size) for spec in specs if spec.clip > 1}
    if len(clips) > 1:
        raise ValueError(f"feature sets extracted together take one clip geometry (clip, size), not {sorted(clips)}")
    windows = {spec.audio_seconds for spec in specs if spec.audio_seconds > 0}
    if len(windows) > 1:
        raise ValueError(f"feature sets extracted together take one audio window length, not {sorted(windows)}")
    clip, side = next(iter(clips), (1, 0))
    common = specs[0]
    return FrameSampling(common.frames, common.fps, common.phase, clip, side, next(iter(windows), 0.0), common.light)


# The encoder family of each kind of view (ViewFamily.encodes): key frames, clips, audio windows, sync series.
ENCODERS = {
    "image": create_backbone,
    "motion": create_motion_encoder,
    "audio": create_audio_encoder,
    "sync": create_sync_encoder,
    "pair": create_pair_encoder,
    "fr": create_fr_encoder,
}


def create_encoders(specs: Sequence[FeatureSpec]) -> list[FrozenEncoder]:
    """Each set's frozen encoder, of the family its view feeds; sets of the same encoder and weights share one."""
    built: dict[tuple[str, str, str], FrozenEncoder] = {}
    keys = [(FAMILIES.get(spec.view).encodes, spec.backbone, spec.weights) for spec in specs]
    for family, name, weights in keys:
        if (family, name, weights) not in built:
            built[family, name, weights] = ENCODERS[family](name, weights=weights)
    return [built[key] for key in keys]


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
    check_time_axis(views, specs[0].time_axis, specs[0].media)
    folders = [cache_dir(cache_root, track, spec) for spec in specs]
    encoders = create_encoders(specs)
    leader = group_leader()
    items = items.assign(media=item_fingerprints(items, cache_root))
    media = dict(zip(items["item_id"], items["media"]))
    decoder = DECODERS.get(specs[0].media)
    facts = None
    if decoder.facts is not None and leader:
        members = items["path"].tolist() + (items[REFERENCE].dropna().tolist() if REFERENCE in items else [])
        facts = decoder.facts(list(dict.fromkeys(members)))
    changed: set[str] = set()
    with contextlib.ExitStack() as locks:
        if leader:  # in path order, so two runs sharing some of their sets cannot deadlock
            for folder in sorted(folders):
                locks.enter_context(exclusive(folder))
        for folder, spec, encoder in zip(folders, specs, encoders, strict=True):
            ensure_manifest(folder, spec, encoder.identity(), encoder.dim, library_versions())
            if leader:
                remove_stale_temporaries(folder)
                changed |= drop_stale(folder, media)
                if facts is not None:
                    with atomic_path(folder / FACTS) as tmp:
                        facts.to_parquet(tmp, index=False)
        jobs = plan_jobs(items, variants, folders)
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
                extractor = FeatureExtractor(encoders, streams=cpu_streams(trainer))
                trainer.predict(extractor, datamodule=datamodule, return_predictions=False)
        unfinished = plan_jobs(items, variants, folders)
    failures = pd.concat([read_failures(folder, media, views) for folder, views in zip(folders, variants, strict=True)])
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
