"""The media the rows run on, all synthetic and generated once under `<root>/media`, so a rerun skips making them;
and the items table and views an extraction of them takes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from synth import hdr as synth_hdr
from synth.image import render_image, write_image
from synth.video import encode_mp4, render_source

VIEWS = ("center", "hflip")  # a frame and its mirror: every key frame is seen twice
RENDER_WIDTH = 640  # sources are rendered at most this wide, then upscaled: rendering 1080p directly costs minutes
GRAIN = 3.0  # std of the full-resolution luma grain, in 8-bit levels: camera-like detail the codec must carry
CRF = 23  # libx264's default: 720p comes out near 4 Mbit/s, 1080p near 9, as phone uploads do
UHD_JPEG = 90  # JPEG quality of the 4K still: with grain, a few MB, as UHD-IQA's photos are
AUDIO_RATE = 44_100  # as phone and camera soundtracks are recorded
HDR_RENDER = (480, 270)  # HDR sources are rendered this size, then upscaled: the scene's maths at 1080p costs minutes
HDR_DISTORTED_QP = 32


def bench_clip(folder: Path, width: int, height: int, seconds: int, fps: int, seed: int) -> Path:
    """A synthetic H.264 clip: procedural content rendered small, upscaled and grained at full size."""
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


def bench_image(folder: Path, width: int, height: int, seed: int) -> Path:
    """A grained JPEG (4K in the fingerprint rows)."""
    path = folder / f"{width}x{height}-{seed}.jpg"
    if not path.is_file():
        pixels = render_image(seed, width, height).astype(np.float32)
        pixels += np.random.default_rng(seed).standard_normal(pixels.shape[:2], dtype=np.float32)[..., None] * GRAIN
        folder.mkdir(parents=True, exist_ok=True)
        write_image(np.clip(pixels, 0, 255).round().astype(np.uint8), path, UHD_JPEG)
    return path


def bench_sound(folder: Path, seconds: int, seed: int) -> Path:
    """A soundtrack of `seconds` (stereo AAC at 44.1 kHz: tones over noise); no video needed."""
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


def bench_hdr_pair(folder: Path, width: int, height: int, seed: int) -> tuple[Path, Path]:
    """An HDR10 reference at width x height (lossless 10-bit PQ x265) and its distorted version at half the size and
    a coarse quantiser, from the synthetic HDR scenes (synth.hdr), rendered small and upscaled."""
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
