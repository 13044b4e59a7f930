"""Rows 1 and 2: extraction against its bounds (the decode stage alone, the backbone alone) and against the way
winners' scripts do it; and the extraction and decode stage the motion and memory rows run too."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import pandas as pd
import torch
from PIL import Image

from benchmarks.harness import BenchConfig, Progress, Row, Sizes, median, median_ratio, timed
from benchmarks.media import VIEWS, bench_clip, clip_items
from features.backbones import Backbone, create_backbone
from features.decode import FrameSampling, sample_video, upright
from features.extract import extract
from features.spec import FeatureSpec
from features.views import ViewFamily, view_family
from workbench.config import ExtractConfig

BATCH_ITEMS = 1  # clips per batch: a 10 s clip's 16 images keep a CPU busy, and the pipeline fills in one clip
WORKERS = ExtractConfig.workers  # DataLoader workers decoding while the model runs, as `just extract` has them


def run_extraction(items: pd.DataFrame, spec: FeatureSpec, cache_root: str | Path) -> None:
    extract(items, "bench", spec, VIEWS, cache_root=cache_root, batch_size=BATCH_ITEMS, workers=WORKERS, progress=False)


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


def rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
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
        slower_stage = [max(d, m) for d, m in zip(per_item["decode"], per_item["model"])]
        decode_s, model_s, cpu_s, full_s, full_cpu_s, base_s = (median(per_item[name]) for name in per_item)
        slower = max(decode_s, model_s)
        ratio = median_ratio(slower_stage, per_item["full"])
        rows_1.append(
            Row(
                "1",
                f"extraction of {len(items)} clips of {sizes.seconds} s at {label}, {spec.backbone}",
                f"{full_s:.2f} s/clip",
                f"{slower:.2f} s/clip ({'decode' if decode_s >= model_s else 'model'} alone)",
                ratio,
                ">= 0.8",
                f"decode alone {decode_s:.2f} s/clip, model alone {model_s:.2f} s/clip, each on every core "
                f"({cpu_s:.2f} CPU-s/clip between them: overlapped that way, {os.cpu_count()} cores would allow "
                f"{min(1.0, slower * os.cpu_count() / cpu_s):.2f}); the extraction used {full_cpu_s:.2f} CPU-s/clip",
            )
        )
        ratio = median_ratio(per_item["baseline"], per_item["full"])
        rows_2.append(
            Row(
                "2",
                f"extraction against the winners' script, {label}",
                f"{full_s:.2f} s/clip",
                f"{base_s:.2f} s/clip",
                ratio,
                ">= 5",
                "baseline: every frame to RGB, key frames saved as PNG and read back, one image per forward",
            )
        )
    return rows_1 + rows_2
