"""Speed we can prove: every figure beside its bound or baseline, both measured in the same run, as a ratio.

The machine is shared and noisy, so bare seconds prove little. Each row times ours and its reference interleaved,
`repeats` times, and reports the median of the per-repeat ratios: a neighbour's burst of load slows both sides of
one repeat, not one side of the comparison. The rows, numbered as in BENCHMARKS.md:

1. extraction against its bounds: the decode stage alone (what a DataLoader worker does) and the backbone alone on
   already-made view images at the same batch size, on 10 s clips at 720p and 1080p;
2. extraction against the way winners' scripts do it: every frame to RGB, key frames through PNG files, one
   image per forward pass;
3. reading a track's features from the cache against `np.load` of the same array from an `.npy` file;
4. the 10-fold head training of a run against a bare PyTorch loop doing the same work;
5. peak resident memory of a large extraction against a small one, each in a process of its own;
6. the overhead of a trial of our sweep (storage, pruning, bookkeeping) against the trial's own fold training;
7. fingerprinting a file's content (what binds the cache to its media) against decoding the same file as extraction
   does, on a 4K JPEG, a 1080p clip and a long 1080p clip;
8. extracting a motion stream (clips of consecutive frames from each key frame, weight-free temporal statistics)
   against decoding the same clips alone;
9. the audio stream's work per video (its soundtrack to 16 kHz mono, a window at each key frame, log-mel statistics)
   against PyAV decoding the same soundtrack alone.

Media are synthetic (synth.video) and kept under `<root>/media`, so a rerun skips generating them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import av
import numpy as np
import optuna
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from features.audio import attach_audio, create_audio_encoder
from features.backbones import Backbone, create_backbone
from features.cache import Features, FeatureSpec, Streams, part_schema, read_features, write_part
from features.decode import DECODERS, Clip, FrameSampling, read_image, sample_video, upright
from features.extract import extract
from features.fingerprint import REFERENCE, file_digest, fingerprints, item_fingerprints
from features.fr import FR_METRICS
from features.pairs import read_pair
from features.text import text_features
from features.views import ViewFamily, view_family
from synth import hdr as synth_hdr
from synth.image import render_image, write_image
from synth.video import encode_mp4, render_source
from synth.xgc_aigv import random_prompt
from tracks import get_track
from workbench import finetune, sweep
from workbench.config import BenchConfig, ExtractConfig, TrainConfig
from workbench.folds import grouped_folds
from workbench.heads import create_head
from workbench.losses import CombinedLoss
from workbench.predictor import fold_heads
from workbench.runs import Run
from workbench.train import (
    TrainingData,
    load_training_data,
    open_or_create_run,
    predict,
    read_streams,
    run_summary,
    stream_tensors,
    train_fold,
)

Progress = Callable[[str], None]
VIEWS = ("center", "hflip")  # a frame and its mirror: every key frame is seen twice
BATCH_ITEMS = 1  # clips per batch: a 10 s clip's 16 images keep a CPU busy, and the pipeline fills in one clip
WORKERS = ExtractConfig.workers  # DataLoader workers decoding while the model runs, as `just extract` has them
PART_ITEMS = 256  # items per cache part, as the extraction writer flushes them


@dataclass(frozen=True)
class Sizes:
    """How much work each row does. `full` is what BENCHMARKS.md reports; `quick` runs the same code on less."""

    resolutions: tuple[tuple[int, int], ...] = ((1280, 720), (1920, 1080))
    clips: int = 3  # distinct clips per resolution
    extraction_items: int = 16  # items of the extraction rows, cycling over the clips
    seconds: int = 10
    fps: int = 25
    repeats: int = 3
    cache_items: int = 5000
    cache_frames: int = 8
    cache_dim: int = 1024
    train_items: int = 1200
    train_dim: int = 768
    folds: int = 10
    epochs: int = 20
    memory_items: tuple[int, int] = (50, 500)
    trials: int = 3
    trial_folds: int = 2
    long_seconds: int = 60
    texts: int = 2000  # distinct prompts of the text rows


SIZES = {
    "full": Sizes(),
    "quick": Sizes(
        clips=1, extraction_items=8, seconds=3, repeats=1, train_items=500, epochs=4, memory_items=(10, 50), trials=2,
        trial_folds=2, long_seconds=6, texts=200,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Row:
    """One line of the table: our figure, the reference it is held against, their ratio and the target."""

    number: str
    what: str
    ours: str
    reference: str
    ratio: float
    target: str
    met: bool
    note: str = ""


# --- timing -----------------------------------------------------------------------------------------------------------


@dataclass
class Timed:
    """Wall and CPU seconds (this process and its finished children) of one measured call."""

    wall: float
    cpu: float


@contextlib.contextmanager
def timed() -> Iterator[Timed]:
    result = Timed(0.0, 0.0)

    def cpu() -> float:
        usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        return sum(u.ru_utime + u.ru_stime for u in usage)

    wall, start = time.perf_counter(), cpu()
    yield result
    result.wall, result.cpu = time.perf_counter() - wall, cpu() - start


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# --- media ------------------------------------------------------------------------------------------------------------

RENDER_WIDTH = 640  # sources are rendered at most this wide, then upscaled: rendering 1080p directly costs minutes
GRAIN = 3.0  # std of the full-resolution luma grain, in 8-bit levels: camera-like detail the codec must carry
CRF = 23  # libx264's default: 720p comes out near 4 Mbit/s, 1080p near 9, as phone uploads do


def bench_clip(folder: Path, width: int, height: int, seconds: int, fps: int, seed: int) -> Path:
    """A synthetic H.264 clip, generated once: procedural content rendered small, upscaled and grained at full size."""
    path = folder / f"{width}x{height}-{seconds}s-{fps}fps-{seed}.mp4"
    if path.is_file():
        return path
    scale = max(1, math.ceil(width / RENDER_WIDTH))
    small = render_source(seed, width // scale, height // scale, seconds * fps)
    rng = np.random.default_rng(seed)
    grain = torch.from_numpy(rng.standard_normal((8, 1, height, width), dtype=np.float32)).mul_(GRAIN)
    frames = np.empty((len(small), height, width, 3), dtype=np.uint8)
    for start in range(0, len(small), len(grain)):  # chunks bound the float copies to a few hundred MB
        chunk = torch.from_numpy(small[start : start + len(grain)]).permute(0, 3, 1, 2).float()
        big = F.interpolate(chunk, size=(height, width), mode="bilinear", align_corners=False)
        big += grain[: len(chunk)]
        frames[start : start + len(chunk)] = big.clamp_(0, 255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    folder.mkdir(parents=True, exist_ok=True)
    encode_mp4(frames, path, fps=fps, crf=CRF)
    return path


def clip_items(paths: Sequence[Path], count: int | None = None) -> pd.DataFrame:
    """The items table an extraction takes; with `count`, that many items cycling over the clips."""
    count = len(paths) if count is None else count
    return pd.DataFrame(
        {"item_id": [f"item{i:05d}" for i in range(count)], "path": [str(paths[i % len(paths)]) for i in range(count)]}
    )


def run_extraction(items: pd.DataFrame, spec: FeatureSpec, cache_root: str | Path) -> None:
    extract(items, "bench", spec, VIEWS, cache_root=cache_root, batch_size=BATCH_ITEMS, workers=WORKERS, progress=False)


# --- 1 and 2: extraction ----------------------------------------------------------------------------------------------


def decode_stage(paths: Sequence[Path], sampling: FrameSampling, family: ViewFamily) -> list[torch.Tensor]:
    """What a DataLoader worker does for each clip (sample its key frames or clips, render the views), no model."""
    return [family.render(getattr(sample_video(str(p), sampling), family.source), VIEWS).flatten(0, 1) for p in paths]


def model_stage(backbone: Backbone, pixels: Sequence[torch.Tensor], chunk: int = 64) -> None:
    """The backbone on already-made view images, batched as the extraction batches them."""
    for start in range(0, len(pixels), BATCH_ITEMS):
        for part in torch.cat(list(pixels[start : start + BATCH_ITEMS])).split(chunk):
            backbone(part)


def winners_script(
    paths: Sequence[Path], backbone: Backbone, sampling: FrameSampling, family: ViewFamily, scratch: Path
) -> None:
    """The baseline: decode every frame to RGB, save the key frames as PNG, read them back, one image per forward.

    Same clips, key frames, views and backbone as ours, and FFmpeg's threads on, so the difference is the way of
    working alone: RGB for every frame, the PNG round trip, and batches of one.
    """
    targets = sampling.targets()
    for clip, path in enumerate(paths):
        saved = []
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                rgb = frame.to_ndarray(format="rgb24")
                if len(saved) < len(targets) and frame.time + 1e-6 >= targets[len(saved)]:
                    saved.append(scratch / f"{clip}-{len(saved)}.png")
                    Image.fromarray(upright(rgb[None], frame.rotation)[0]).save(saved[-1])
        with torch.no_grad():
            for png in saved:
                image = np.array(Image.open(png).convert("RGB"))
                for view in family.render(image[None], VIEWS).flatten(0, 1):
                    backbone(view[None])


def extraction_rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    """Ours runs `extraction_items` items cycling over the clips, so the pipeline has batches to overlap (its start-up
    included); the winners' script has no pipeline to fill, so its time per clip is measured on the distinct clips."""
    spec = FeatureSpec(backbone=cfg.backbone, frames=min(8, sizes.seconds))
    sampling = FrameSampling(frames=spec.frames)
    family = view_family(spec)
    backbone = create_backbone(spec.backbone, weights=spec.weights)
    rows_1, rows_2 = [], []
    for width, height in sizes.resolutions:
        label = f"{height}p"
        progress(f"{label} media")
        media = root / "media"
        paths = [bench_clip(media, width, height, sizes.seconds, sizes.fps, seed) for seed in range(sizes.clips)]
        items = clip_items(paths, sizes.extraction_items)
        item_paths = [Path(path) for path in items["path"]]
        names = ("decode", "model", "cpu", "full", "full_cpu", "baseline")
        per_item: dict[str, list[float]] = {name: [] for name in names}
        for repeat in range(sizes.repeats):
            progress(f"{label} extraction, repeat {repeat + 1}/{sizes.repeats}")
            with timed() as decode:
                pixels = decode_stage(item_paths, sampling, family)
            with timed() as model:
                model_stage(backbone, pixels)
            del pixels
            with tempfile.TemporaryDirectory(dir=root) as scratch, timed() as full:
                run_extraction(items, spec, scratch)
            with tempfile.TemporaryDirectory(dir=root) as scratch, timed() as baseline:
                winners_script(paths, backbone, sampling, family, Path(scratch))
            spent = {
                "decode": decode.wall,
                "model": model.wall,
                "cpu": decode.cpu + model.cpu,
                "full": full.wall,
                "full_cpu": full.cpu,
            }
            for name, seconds in spent.items():
                per_item[name].append(seconds / len(items))
            per_item["baseline"].append(baseline.wall / len(paths))
        bound = [max(d, m) / f for d, m, f in zip(per_item["decode"], per_item["model"], per_item["full"])]
        speedup = [b / f for b, f in zip(per_item["baseline"], per_item["full"])]
        decode_s, model_s, cpu_s, full_s, full_cpu_s, base_s = (median(per_item[name]) for name in per_item)
        slower = max(decode_s, model_s)
        ratio = median(bound)
        rows_1.append(
            Row(
                "1",
                f"extraction of {len(items)} clips of {sizes.seconds} s at {label}, {spec.backbone}",
                f"{full_s:.2f} s/clip",
                f"{slower:.2f} s/clip ({'decode' if decode_s >= model_s else 'model'} alone)",
                ratio,
                ">= 0.8",
                ratio >= 0.8,
                f"decode alone {decode_s:.2f} s/clip, model alone {model_s:.2f} s/clip, each on every core "
                f"({cpu_s:.2f} CPU-s/clip between them: overlapped that way, {os.cpu_count()} cores would allow "
                f"{min(1.0, slower * os.cpu_count() / cpu_s):.2f}); the extraction used {full_cpu_s:.2f} CPU-s/clip",
            )
        )
        ratio = median(speedup)
        rows_2.append(
            Row(
                "2",
                f"extraction against the winners' script, {label}",
                f"{full_s:.2f} s/clip",
                f"{base_s:.2f} s/clip",
                ratio,
                ">= 5",
                ratio >= 5,
                "baseline: every frame to RGB, key frames saved as PNG and read back, one image per forward",
            )
        )
    return rows_1 + rows_2


# --- 3: cache reading -------------------------------------------------------------------------------------------------


def cache_rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    n, frames, dim = sizes.cache_items, sizes.cache_frames, sizes.cache_dim
    progress(f"cache of {n} items x {frames} frames x {dim} dims")
    x = np.random.default_rng(0).standard_normal((n, 1, frames, dim), dtype=np.float32)
    ids = [f"item{i:05d}" for i in range(n)]
    media = np.array([hashlib.sha256(item.encode()).hexdigest() for item in ids])  # as long as a file's fingerprint
    ours, theirs = [], []
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        folder = Path(scratch)
        schema = part_schema(dim, "float32")
        for start in range(0, n, PART_ITEMS):  # parts as an extraction writes them
            block = slice(start, start + PART_ITEMS)
            count = len(ids[block])
            columns = {
                "item_id": np.repeat(ids[block], frames),
                "media": np.repeat(media[block], frames),
                "view": np.full(count * frames, "center"),
                "t": np.tile(np.arange(frames), count),
                "time": np.tile(np.arange(frames, dtype=np.float32), count),
                "feature": x[block, 0].reshape(-1, dim),
            }
            write_part(folder, columns, schema)
        npy = folder / "features.npy"
        np.save(npy, x)
        if not np.array_equal(read_features(folder, ids, ["center"], frames, media).x, x):
            raise AssertionError(f"{folder}: the cache read back differs from what was written")
        for repeat in range(sizes.repeats * 3):  # reads take tenths of a second: more repeats, same cost
            progress(f"cache read, repeat {repeat + 1}/{sizes.repeats * 3}")
            with timed() as baseline:
                np.load(npy)
            with timed() as read:
                read_features(folder, ids, ["center"], frames, media)
            theirs.append(baseline.wall)
            ours.append(read.wall)
    gigabytes = x.nbytes / 1e9
    ratio = median([t / o for t, o in zip(theirs, ours)])
    return [
        Row(
            "3",
            f"cache read, {n} items x {frames} frames x {dim} dims float32 ({gigabytes:.2f} GB)",
            f"{gigabytes / median(ours):.2f} GB/s",
            f"{gigabytes / median(theirs):.2f} GB/s (np.load)",
            ratio,
            ">= 0.5",
            ratio >= 0.5,
            "both from the page cache; ours from Parquet parts of 256 items into a dense [items, views, frames, dims]",
        )
    ]


# --- 4 and 6: training ------------------------------------------------------------------------------------------------


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
        {"item_id": ids, "path": "", "media": "", "split": split, "group": groups.astype(str), "score": score}
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


def train_ours(cfg: TrainConfig, data: TrainingData, folds: Sequence[int]) -> None:
    """What `just train` does once the features are loaded."""
    run = open_or_create_run(cfg, data)
    for fold in folds:
        train_fold(cfg, data, run, fold)
    if len(folds) == cfg.folds:
        run_summary(run, data)


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
            pred = predict(head, [x[val_idx], mask[val_idx]]).mean(1)
            score = data.track.selection_score(pd.DataFrame(pred, index=val_ids, columns=targets), labelled)["score"]
            if score > best:
                best, best_state = score, {k: v.clone() for k, v in head.state_dict().items()}
        head.load_state_dict(best_state)
        predict(head, [x[val_idx], mask[val_idx]])
        predict(head, [x[data.test_index], mask[data.test_index]])


def training_rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    data = training_data(sizes)
    ratios, ours, theirs = [], [], []
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        for repeat in range(sizes.repeats):
            progress(f"{sizes.folds}-fold training, repeat {repeat + 1}/{sizes.repeats}")
            train = train_config(sizes, Path(scratch), f"bench-{repeat}")
            order = [("bare", train_bare), ("ours", train_ours)]
            spent = {}
            for name, trainer in order if repeat % 2 == 0 else order[::-1]:  # neither side always goes first
                with timed() as spent[name]:
                    trainer(train, data, range(sizes.folds))
            run, bare = spent["ours"], spent["bare"]
            ratios.append(run.wall / bare.wall)
            ours.append(run.wall)
            theirs.append(bare.wall)
    ratio = median(ratios)
    shape = "x".join(map(str, data.features.parts[0].x.shape))
    return [
        Row(
            "4",
            f"{sizes.folds}-fold head training, features {shape}, {sizes.epochs} epochs",
            f"{median(ours):.1f} s",
            f"{median(theirs):.1f} s (bare PyTorch loop)",
            ratio,
            "<= 1.5",
            ratio <= 1.5,
            "both validate with the track's score after every epoch and keep the best weights; ours also writes "
            "checkpoints, predictions and scores",
        )
    ]


def sweep_seconds(sizes: Sizes, data: TrainingData, scratch: Path, storage: str) -> tuple[float, float]:
    """Wall seconds of `trials` trials of our sweep, and of the fold training inside them. The sweep is what `just
    sweep` runs once the features are loaded: the storage with a heartbeat thread per trial, the study and its
    default trial, a report and a pruning check per fold, each trial's run folder, its user attributes and its
    pooled out-of-fold summary."""
    base = train_config(sizes, scratch / "runs", "", folds=sizes.trial_folds)
    space = sweep.SearchSpace(base, (sweep.FeatureSet.of(data.feature_key, base),))
    objective = sweep.Objective(space, load=lambda cfg: data)
    with timed() as total:
        study, _ = sweep.open_study(
            sweep.open_storage(storage, str(scratch), "kvq", heartbeat=30), "bench", space, seed=0, prune_after=1
        )
        study.optimize(objective, n_trials=sizes.trials)
    return total.wall, objective.training_seconds


def sweep_rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    data = training_data(replace(sizes, folds=sizes.trial_folds))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    for storage in ("sqlite", "journal"):
        progress(f"our sweep, {storage} storage, {sizes.trials} trial(s)")
        with tempfile.TemporaryDirectory(dir=root) as scratch:
            word = "" if storage == "sqlite" else f"journal:{Path(scratch) / 'sweep.journal'}"  # "": the default
            total, training = sweep_seconds(sizes, data, Path(scratch), word)
        overhead = (total - training) / sizes.trials
        ratio = overhead / (training / sizes.trials)
        rows.append(
            Row(
                "6",
                f"sweep trial overhead, {storage} storage",
                f"{overhead * 1000:.0f} ms/trial",
                f"{training / sizes.trials:.1f} s/trial of fold training ({sizes.trial_folds} folds)",
                ratio,
                "< 0.1",
                ratio < 0.1,
                "workbench.sweep as `just sweep` runs it, features in memory: storage, heartbeats, a report and a "
                "pruning check per fold, run folders and summaries, against the train_fold calls inside its trials",
            )
        )
    return rows


# --- 5: memory --------------------------------------------------------------------------------------------------------

MEMORY_CLIP = (320, 240, 2)  # small clips: the point is what accumulates per item, not the cost of one


def memory_child(arguments: str) -> None:
    """Runs one extraction and prints the peak resident memory of this process and of its largest worker (kB)."""
    job = json.loads(arguments)
    items = clip_items([Path(p) for p in job["paths"]], job["items"])
    spec = FeatureSpec(backbone=job["backbone"], frames=MEMORY_CLIP[2])
    run_extraction(items, spec, job["cache"])
    kinds = {"self": resource.RUSAGE_SELF, "children": resource.RUSAGE_CHILDREN}
    peaks = {who: resource.getrusage(kind).ru_maxrss for who, kind in kinds.items()}
    print(json.dumps(peaks))


def peak_rss(paths: Sequence[Path], items: int, backbone: str, cache: Path) -> dict[str, int]:
    job = json.dumps({"paths": [str(p) for p in paths], "items": items, "backbone": backbone, "cache": str(cache)})
    code = "import sys; from workbench.bench import memory_child; memory_child(sys.argv[1])"
    # The child imports this very checkout, wherever it runs from and whatever is installed.
    path = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run([sys.executable, "-c", code, job], capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        raise RuntimeError(f"the memory benchmark's extraction of {items} items failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    width, height, seconds = MEMORY_CLIP
    progress("memory media")
    paths = [bench_clip(root / "media", width, height, seconds, sizes.fps, seed) for seed in range(10)]
    small, large = sizes.memory_items
    peaks = {}
    for count in (small, large):
        progress(f"peak memory of an extraction of {count} clips (own process)")
        with tempfile.TemporaryDirectory(dir=root) as scratch:
            peaks[count] = peak_rss(paths, count, cfg.backbone, Path(scratch))
    mb = {count: {who: kb / 1024 for who, kb in peak.items()} for count, peak in peaks.items()}
    total = {count: peak["self"] + peak["children"] for count, peak in mb.items()}
    ratio = total[large] / total[small]
    return [
        Row(
            "5",
            f"peak RSS of an extraction, {large} against {small} clips ({width}x{height}, {seconds} s)",
            f"{total[large]:.0f} MB",
            f"{total[small]:.0f} MB",
            ratio,
            "<= 1.1",
            ratio <= 1.1,
            "the main process's peak plus its largest decoding worker's: "
            + " against ".join(f"{mb[n]['self']:.0f} + {mb[n]['children']:.0f} MB" for n in (large, small)),
        )
    ]


# --- 7: fingerprints -------------------------------------------------------------------------------------------------

UHD_JPEG = 90  # JPEG quality of the 4K still: with grain, a few MB, as UHD-IQA's photos are


def bench_image(folder: Path, width: int, height: int, seed: int) -> Path:
    """A grained 4K JPEG, generated once."""
    path = folder / f"{width}x{height}-{seed}.jpg"
    if not path.is_file():
        pixels = render_image(seed, width, height).astype(np.float32)
        pixels += np.random.default_rng(seed).standard_normal(pixels.shape[:2], dtype=np.float32)[..., None] * GRAIN
        folder.mkdir(parents=True, exist_ok=True)
        write_image(np.clip(pixels, 0, 255).round().astype(np.uint8), path, UHD_JPEG)
    return path


def fingerprint_rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    """The whole file hashed (no memo) against its decode as an extraction does it (KVQ's key frames for clips):
    decoding is only part of extraction, so the ratio bounds the fingerprint's share of extraction from above."""
    media = root / "media"
    sampling = FrameSampling(**{k: get_track("kvq").defaults.get(k, v) for k, v in (("frames", 8), ("fps", 1.0))})
    progress("fingerprint media")
    cases = [
        ("4K JPEG", bench_image(media, 3840, 2160, 0), read_image),
        (f"1080p clip, {sizes.seconds} s", bench_clip(media, 1920, 1080, sizes.seconds, sizes.fps, 0), None),
        (f"1080p clip, {sizes.long_seconds} s", bench_clip(media, 1920, 1080, sizes.long_seconds, sizes.fps, 0), None),
    ]
    rows = []
    for what, path, decode in cases:
        decode = decode or (lambda file: sample_video(file, sampling))
        hashed, decoded = [], []
        for repeat in range(sizes.repeats * 3):
            progress(f"fingerprint of a {what}, repeat {repeat + 1}/{sizes.repeats * 3}")
            with timed() as digest:
                file_digest(path)
            with timed() as decoding:
                decode(str(path))
            hashed.append(digest.wall)
            decoded.append(decoding.wall)
        with tempfile.TemporaryDirectory(dir=root) as memo:
            fingerprints([str(path)], memo)
            with timed() as hit:
                fingerprints([str(path)], memo)
        ratio = median([h / d for h, d in zip(hashed, decoded)])
        megabytes = path.stat().st_size / 1e6
        rows.append(
            Row(
                "7",
                f"content fingerprint (XXH3-128) of a {what} ({megabytes:.1f} MB) against decoding it",
                f"{median(hashed) * 1e3:.1f} ms ({megabytes / median(hashed) / 1e3:.2f} GB/s)",
                f"{median(decoded) * 1e3:.0f} ms (decode)",
                ratio,
                "< 0.05",
                ratio < 0.05,
                f"from the page cache; a rerun finds the digest in the memo by one stat ({hit.wall * 1e3:.1f} ms "
                f"with the memo's read and write)"
                + (
                    ""
                    if decode is read_image
                    else f"; decoded: {sampling.frames} key frames at {sampling.fps:g} fps, as KVQ samples"
                ),
            )
        )
    return rows


# --- 8: the motion stream ---------------------------------------------------------------------------------------------

MOTION = FeatureSpec("temporal_stats", view="clip", size=112, clip=8)  # 8 consecutive frames from each key frame


def motion_rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    """The motion stream's extraction (decode with clips, render, encode, write) against its decode stage alone,
    each clip's frames scaled at decode as the extraction scales them; per resolution, interleaved."""
    rows = []
    for width, height in sizes.resolutions:
        label = f"{height}p"
        paths = [
            bench_clip(root / "media", width, height, sizes.seconds, sizes.fps, seed) for seed in range(sizes.clips)
        ]
        items = clip_items(paths, sizes.extraction_items)
        decoded, extracted = [], []
        for repeat in range(sizes.repeats):
            progress(f"{label} motion stream, repeat {repeat + 1}/{sizes.repeats}")
            with timed() as decode:
                decode_stage([Path(p) for p in items["path"]], MOTION.sampling(), view_family(MOTION))
            with tempfile.TemporaryDirectory(dir=root) as scratch, timed() as full:
                run_extraction(items, MOTION, scratch)
            decoded.append(decode.wall / len(items))
            extracted.append(full.wall / len(items))
        ratio = median([d / f for d, f in zip(decoded, extracted)])
        rows.append(
            Row(
                "8",
                f"motion stream ({MOTION.backbone}, {MOTION.clip}-frame clips at {MOTION.size}) of {len(items)} clips "
                f"of {sizes.seconds} s at {label}",
                f"{median(extracted):.2f} s/clip",
                f"{median(decoded):.2f} s/clip (decode alone)",
                ratio,
                ">= 0.8",
                ratio >= 0.8,
                f"{MOTION.frames} key frames a clip, each starting a clip decoded in the same pass, scaled by FFmpeg",
            )
        )
    return rows


# --- 9: the audio stream ----------------------------------------------------------------------------------------------

AUDIO = FeatureSpec("logmel_stats", view="audio", audio_seconds=1.0)
AUDIO_RATE = 44_100  # as phone and camera soundtracks are recorded


def bench_sound(folder: Path, seconds: int, seed: int) -> Path:
    """A soundtrack of `seconds` (stereo AAC at 44.1 kHz: tones over noise), generated once; no video needed."""
    path = folder / f"sound-{seconds}s-{seed}.m4a"
    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    t = np.arange(seconds * AUDIO_RATE) / AUDIO_RATE
    wave = 0.2 * np.sin(2 * np.pi * rng.uniform(150, 900) * t) + 0.05 * rng.standard_normal((2, len(t)))
    folder.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        for start in range(0, len(t), 1024):
            frame = av.AudioFrame.from_ndarray(wave[:, start : start + 1024].astype(np.float32), "fltp", "stereo")
            frame.sample_rate, frame.pts = AUDIO_RATE, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def audio_rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    paths = [bench_sound(root / "media", sizes.seconds, seed) for seed in range(sizes.clips)]
    times = np.arange(8, dtype=np.float32)  # KVQ's key frames: one a second
    encoder, ours, theirs = create_audio_encoder(AUDIO.backbone), [], []
    for repeat in range(sizes.repeats * 3):  # tens of milliseconds a file: more repeats, same cost
        progress(f"audio stream, repeat {repeat + 1}/{sizes.repeats * 3}")
        with timed() as baseline:
            for path in paths:
                with av.open(str(path)) as container:
                    for _ in container.decode(audio=0):
                        pass
        with timed() as full:
            for path in paths:
                clip = attach_audio(Clip(np.empty(0), times), str(path), AUDIO.audio_seconds)
                encoder(torch.from_numpy(clip.audio))
        theirs.append(baseline.wall / len(paths))
        ours.append(full.wall / len(paths))
    ratio = median([t / o for t, o in zip(theirs, ours)])
    return [
        Row(
            "9",
            f"audio stream ({AUDIO.backbone}, {len(times)} windows of {AUDIO.audio_seconds:g} s) of a "
            f"{sizes.seconds} s stereo AAC soundtrack",
            f"{median(ours) * 1e3:.1f} ms/file",
            f"{median(theirs) * 1e3:.1f} ms/file (PyAV decode alone)",
            ratio,
            ">= 0.5",
            ratio >= 0.5,
            "ours decodes up to the last window, turns each frame into an array, resamples to 16 kHz mono and runs "
            "the STFT features; the baseline only decodes the whole soundtrack at 44.1 kHz stereo and keeps nothing",
        )
    ]


TEXT_TOWER = "open_clip:ViT-B-32"  # its architecture with random weights: pretrained ones cost the same
TEXT_DEFAULT = "hashed_ngrams"
TEXT_KEY_FRAMES = 4  # AIGV's key frames per video (tracks.xgc_aigv)


def text_rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    rng = np.random.default_rng(0)
    texts = list(dict.fromkeys(f"{random_prompt(rng)}, take {k}" for k in range(sizes.texts)))
    train = np.ones(len(texts), dtype=bool)
    images = create_backbone(TEXT_TOWER, "random")
    frames = torch.rand(TEXT_KEY_FRAMES, 3, 224, 224)
    hashed, first, again, pictures = [], [], [], []
    for repeat in range(sizes.repeats):
        progress(f"text stream, repeat {repeat + 1}/{sizes.repeats}")
        memo = root / "text" / f"memo-{repeat}"
        shutil.rmtree(memo, ignore_errors=True)
        with timed() as default:
            text_features(TEXT_DEFAULT, texts, train)
        with timed() as tower:
            text_features(TEXT_TOWER, texts, train, memo_root=memo)
        with timed() as memoised:
            text_features(TEXT_TOWER, texts, train, memo_root=memo)
        with timed() as image:
            for _ in range(max(1, len(texts) // 50)):
                images(frames)
        hashed.append(default.wall / len(texts))
        first.append(tower.wall / len(texts))
        again.append(memoised.wall / len(texts))
        pictures.append(image.wall / max(1, len(texts) // 50))
    per_item = median([p / f for p, f in zip(pictures, first)])
    memo_ratio = median([h / a for h, a in zip(hashed, again)])
    default_rate = f"{1 / median(hashed):.0f} texts/s ({TEXT_DEFAULT}, fitted and applied)"
    return [
        Row(
            "10",
            f"text stream, first encoding: {TEXT_TOWER}'s text tower on {len(texts)} distinct prompts, against its "
            f"image tower on an item's {TEXT_KEY_FRAMES} key frames",
            f"{1 / median(first):.1f} texts/s",
            f"{1 / median(pictures):.1f} items/s (image tower); {default_rate}",
            per_item,
            ">= 1",
            per_item >= 1,
            f"the prompt costs less than the key frames it is aligned with; the hashing default is "
            f"{median(first) / median(hashed):.0f} times faster still, and a pretrained tower's cost is paid once per "
            f"distinct text (AIGV's 23,820 training videos have 3,762 prompts)",
        ),
        Row(
            "10",
            f"text stream, again: the same prompts from {TEXT_TOWER}'s memo",
            f"{1 / median(again):.0f} texts/s",
            default_rate,
            memo_ratio,
            ">= 1",
            memo_ratio >= 1,
            "a rerun, sweep trial or submit reads the memoised vectors under each text's digest (no model is built) "
            "and so costs no more than the hashing default",
        ),
    ]


PREDICTOR_TRACK = "kvq"


def predictor_rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    """`predict --list` of an exported KVQ run on its test items against the workbench's own path for the same items:
    their extraction into a fresh cache (the run's views, workers and batches) and the fold heads on the cached
    features."""
    from workbench.cli import main as cli
    from workbench.predictor import main as predict_list

    width, height = sizes.resolutions[0]
    data, runs = root / "predictor" / "data", root / "predictor" / "runs"
    shutil.rmtree(root / "predictor", ignore_errors=True)
    where = [f"track={PREDICTOR_TRACK}", f"data={data}", f"cache={root / 'predictor' / 'cache'}"]
    progress("predictor: a KVQ run and its export")
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        cli(["synth", *where[:1], f"out={data}", f"items={max(4 * sizes.extraction_items, 24)}", f"width={width}",
             f"height={height}"])  # fmt: skip
        cli(["extract", *where])
        cli(["train", *where, f"runs_dir={runs}", "folds=2", "epochs=2"])
        cli(["export", *where[:2], f"runs_dir={runs}", "calibration=none", f"out={root / 'predictor' / 'exports'}"])
    folder = next(p for p in (root / "predictor" / "exports").iterdir() if p.is_dir())
    track = get_track(PREDICTOR_TRACK)
    items = track.read_items(data)
    test = items[items["split"] == "test"]
    listed = root / "predictor" / "items.csv"
    test[["item_id", "path"]].to_csv(listed, index=False)
    (run,) = (p for p in (runs / PREDICTOR_TRACK).iterdir() if p.is_dir())
    train_cfg = TrainConfig(**{k: v for k, v in Run(run).config.items() if k in TrainConfig.__dataclass_fields__})
    theirs, ours = [], []
    for repeat in range(sizes.repeats):
        progress(f"predictor, repeat {repeat + 1}/{sizes.repeats}")
        cache = root / "predictor" / f"cache-{repeat}"
        with timed() as workbench:
            extract(test[["item_id", "path"]], track.name, train_cfg.all_specs(track.media), list(track.tta_views),
                    cache, batch_size=ExtractConfig.batch, workers=ExtractConfig.workers, progress=False)  # fmt: skip
            media = test.assign(media=item_fingerprints(test, cache))
            tensors = stream_tensors(read_streams(replace(train_cfg, cache=str(cache)), track, media)[0])
            for head in fold_heads(Run(run), train_cfg, len(track.targets)):
                predict(head, tensors)
        with timed() as exported:
            predict_list(["--list", str(listed), str(root / "predictor" / f"out-{repeat}.csv")], folder)
        theirs.append(workbench.wall / len(test))
        ours.append(exported.wall / len(test))
    ratio = median([o / t for o, t in zip(ours, theirs)])
    return [
        Row(
            "11",
            f"exported predictor, `predict --list` of {len(test)} KVQ test clips at {height}p (loading included)",
            f"{median(ours):.3f} s/clip",
            f"{median(theirs):.3f} s/clip (the workbench: extraction into a fresh cache, then the fold heads)",
            ratio,
            "<= 1.2",
            ratio <= 1.2,
            "the predictor runs the extraction's own dataset, workers, batches and encoder streams, with no cache to "
            "write or read; it loads its manifest and heads once per list",
        )
    ]


# --- 12 and 13: HDR pairs and views ----------------------------------------------------------------------------------

HDR_RENDER = (480, 270)  # HDR sources are rendered this size, then upscaled: the scene's maths at 1080p costs minutes
HDR_DISTORTED_QP = 32
HDR_SAMPLING = FrameSampling(frames=3)  # the synthetic clips last 3 s: a key frame each second, every one used
FR_SPEC = FeatureSpec("ffmpeg", media="hdr", view="fr", frames=HDR_SAMPLING.frames)


def bench_hdr_pair(folder: Path, width: int, height: int, seed: int) -> tuple[Path, Path]:
    """An HDR10 reference at width x height (lossless 10-bit PQ x265) and its distorted version at half the size and
    a coarse quantiser, generated once from the synthetic HDR scenes (synth.hdr), rendered small and upscaled."""
    reference = folder / f"hdr10-{width}x{height}-{seed}-ref.mp4"
    distorted = folder / f"hdr10-{width}x{height}-{seed}-qp{HDR_DISTORTED_QP}.mp4"
    if reference.is_file() and distorted.is_file():
        return distorted, reference
    folder.mkdir(parents=True, exist_ok=True)
    nits = synth_hdr.render_scene(synth_hdr.Scene.draw(np.random.default_rng(seed)), *HDR_RENDER)
    big = F.interpolate(torch.from_numpy(nits).float(), size=(height, width), mode="bilinear", align_corners=False)
    signal = synth_hdr.hdr10_signal(big.numpy().astype(np.float64))
    synth_hdr.encode_hevc(reference, signal, synth_hdr.SIGNALS["HDR10"], qp=None)
    half = F.interpolate(torch.from_numpy(signal), size=(height // 2, width // 2), mode="area").numpy()
    synth_hdr.encode_hevc(distorted, half, synth_hdr.SIGNALS["HDR10"], qp=HDR_DISTORTED_QP)
    return distorted, reference


def hdr_rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    """Row 12: the full-reference metrics' extraction of a 1080p HDR10 pair (both decoded at native depth on the same
    key frames, FFmpeg's five metrics in two domains, written to the cache) against decoding the pair alone. Row 13:
    the same clip's key frames as the backbone sees them, through our HDR decode into perceptual ICtCp, against the
    video decoder's RGB (PyAV's swscale conversion of the code values); the same `resize` views, interleaved."""
    width, height = sizes.resolutions[-1]
    pairs = [bench_hdr_pair(root / "media", width, height, seed) for seed in range(sizes.clips)]
    items = pd.DataFrame({"item_id": [f"pair{i}" for i in range(len(pairs))], "path": [str(d) for d, _ in pairs]})
    items[REFERENCE] = [str(r) for _, r in pairs]
    hdr = DECODERS.get("hdr")
    perceptual = dataclasses.replace(HDR_SAMPLING, light="perceptual")
    family = view_family(FeatureSpec("quality_stats", size=224))
    decoded, extracted, hdr_views, sdr_views = [], [], [], []
    for repeat in range(sizes.repeats):
        progress(f"{height}p HDR10 pairs and views, repeat {repeat + 1}/{sizes.repeats}")
        with timed() as decode:
            for distorted, reference in pairs:
                read_pair(hdr, str(distorted), str(reference), HDR_SAMPLING)
        with tempfile.TemporaryDirectory(dir=root) as scratch, timed() as full:
            extract(items, "bench", FR_SPEC, ["center"], cache_root=scratch, workers=0, progress=False)
        with timed() as ours:
            for _, reference in pairs:
                family.render(hdr.read(str(reference), perceptual, 0).frames, VIEWS)
        with timed() as theirs:
            for _, reference in pairs:
                family.render(sample_video(str(reference), HDR_SAMPLING).frames, VIEWS)
        decoded.append(decode.wall / len(pairs))
        extracted.append(full.wall / len(pairs))
        hdr_views.append(ours.wall / len(pairs))
        sdr_views.append(theirs.wall / len(pairs))
    fr_ratio = median([d / e for d, e in zip(decoded, extracted)])
    view_ratio = median([s / h for s, h in zip(sdr_views, hdr_views)])
    clip = f"{len(pairs)} HDR10 pair(s) of 3 s, reference {height}p, distorted at half size"
    return [
        Row(
            "12",
            f"full-reference metrics (fr=ffmpeg: {', '.join(FR_METRICS)}; code values and PU) of {clip}",
            f"{median(extracted):.2f} s/pair",
            f"{median(decoded):.2f} s/pair (decoding the pair alone)",
            fr_ratio,
            ">= 0.2",
            fr_ratio >= 0.2,
            f"{HDR_SAMPLING.frames} key-frame pairs a video; the distorted one scaled to the reference by Lanczos in "
            "FFmpeg; vif is most of the metrics' cost",
        ),
        Row(
            "13",
            f"HDR views: key frames of the {height}p HDR10 reference as perceptual ICtCp (our 10-bit decode and "
            "colour maths), resize views",
            f"{median(hdr_views):.2f} s/clip",
            f"{median(sdr_views):.2f} s/clip (the video decoder: swscale RGB, no transfer function)",
            view_ratio,
            ">= 0.25",
            view_ratio >= 0.25,
            "float64 PQ and ICtCp per pixel in numpy, our chroma upsampling: what swscale's RGB never gives, the "
            "light the pixels stand for",
        ),
    ]


# --- 14: fine-tuning a student end to end ----------------------------------------------------------------------------

TUNE_ITEMS, TUNE_SIZE, TUNE_EPOCHS, TUNE_BATCH = 48, 96, 2, 8


def tune_data(root: Path, backbone: str, sizes: Sizes) -> tuple[TrainConfig, TrainingData]:
    """A synthetic FIQA set (generated and extracted once), loaded as `just train finetune=true` loads it."""
    data_dir, cache = root / "finetune" / "data", root / "finetune" / "cache"
    track = get_track("fiqa")
    if not (data_dir / "truth").is_dir():
        track.synthesize(data_dir, items=TUNE_ITEMS, seed=0, width=128, height=128)
    epochs = TUNE_EPOCHS if sizes.repeats > 1 else 1
    cfg = TrainConfig(
        track="fiqa", data=str(data_dir), cache=str(cache), backbone=backbone, frames=1, size=TUNE_SIZE, folds=2,
        epochs=epochs, batch=TUNE_BATCH, finetune=True, runs_dir=str(root / "finetune"),
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
    decoder, family = DECODERS.get(spec.media), view_family(spec)
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
            best, best_state = score, {"net": clone(net), "head": clone(head)}
    net.load_state_dict(best_state["net"]), head.load_state_dict(best_state["head"])
    predicted(val_idx), predicted(data.test_index)


def clone(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def tune_rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    """Row 14: one fold of `train finetune=true` (a Lightning fit over the media datamodule, checkpoints, predictions
    and the tuned backbone written) against the bare loop on the same model and data, in training images a second."""
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
    ratio = median([o / t for o, t in zip(ours, theirs)])
    return [
        Row(
            "14",
            f"fine-tuning a student end to end ({cfg.backbone} at {TUNE_SIZE}, {len(train_idx)} FIQA images x "
            f"{len(data.features.views)} views, {tune_cfg.epochs} epoch(s), batch {tune_cfg.batch})",
            f"{median(ours):.1f} images/s",
            f"{median(theirs):.1f} images/s (bare PyTorch loop, same model, media workers and data)",
            ratio,
            ">= 0.8",
            ratio >= 0.8,
            "both decode and cut every view each epoch in 2 workers and validate after every epoch; ours also "
            "checkpoints, writes predictions and saves the tuned backbone",
        )
    ]


# --- the suite --------------------------------------------------------------------------------------------------------

GROUPS: dict[str, Callable[[Sizes, BenchConfig, Path, Progress], list[Row]]] = {
    "extraction": extraction_rows,
    "cache": cache_rows,
    "training": training_rows,
    "memory": memory_rows,
    "sweep": sweep_rows,
    "fingerprint": fingerprint_rows,
    "motion": motion_rows,
    "audio": audio_rows,
    "text": text_rows,
    "predictor": predictor_rows,
    "hdr": hdr_rows,
    "finetune": tune_rows,
}


@dataclass
class Report:
    rows: list[Row]
    seconds: float
    load: tuple[float, float]  # the machine's 1-minute load average at the start and at the end: how shared it was


def run_suite(cfg: BenchConfig, sizes: Sizes, progress: Progress = lambda message: None) -> Report:
    unknown = [g for g in cfg.rows if g not in GROUPS]
    if unknown:
        raise ValueError(f"rows={','.join(unknown)}: unknown; expected some of {', '.join(GROUPS)}")
    root = Path(cfg.root)
    root.mkdir(parents=True, exist_ok=True)
    started, load = time.monotonic(), os.getloadavg()[0]
    chosen = [group for name, group in GROUPS.items() if not cfg.rows or name in cfg.rows]
    rows = sorted(
        (row for group in chosen for row in group(sizes, cfg, root, progress)), key=lambda row: int(row.number)
    )
    return Report(rows, time.monotonic() - started, (load, os.getloadavg()[0]))


def markdown(report: Report) -> str:
    columns = ("#", "what", "ours", "bound or baseline", "ratio", "target", "met")
    cells = [
        (r.number, r.what, r.ours, r.reference, f"{r.ratio:.2f}", r.target, "yes" if r.met else "**no**")
        for r in report.rows
    ]
    lines = ["| " + " | ".join(row) + " |" for row in [columns, ("---",) * len(columns), *cells]]
    notes = [f"- {r.number}, {r.what}: {r.note}" for r in report.rows if r.note]
    start, end = report.load
    context = f"{report.seconds:.0f} s in all; 1-minute load average {start:.1f} at the start, {end:.1f} at the end"
    return "\n".join([*lines, "", *notes, "", context])


def machine() -> str:
    """CPU model, cores, memory, torch threads and the library versions that the figures depend on."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next(iter(re.findall(r"model name\s*:\s*(.+)", cpuinfo)), platform.processor() or "unknown CPU")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    libraries = ("torch", "timm", "lightning", "av", "numpy", "pyarrow", "optuna")
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in libraries)
    ffmpeg = getattr(av, "ffmpeg_version_info", "?")
    return (
        f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, torch threads {torch.get_num_threads()}; "
        f"Python {platform.python_version()}, {versions}, FFmpeg {ffmpeg}"
    )


BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def write_report(path: Path, report: Report, command: str) -> None:
    """Replaces the generated block of `path` (between the bench markers), keeping the notes written around it."""
    block = "\n".join([BEGIN, f"`{command}` on {time.strftime('%Y-%m-%d')}, {machine()}", "", markdown(report), END])
    text = path.read_text() if path.is_file() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path}: no {BEGIN} ... {END} block to replace")
    head, rest = text.split(BEGIN, 1)
    path.write_text(head + block + rest.split(END, 1)[1])
