"""Row 9: the audio stream's work per video (its soundtrack to 16 kHz mono, a window at each key frame, log-mel
statistics) against PyAV decoding the same soundtrack alone."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch

from benchmarks.harness import BenchConfig, Progress, Row, Sizes, median, median_ratio, timed
from benchmarks.media import bench_sound
from features.audio import attach_audio, create_audio_encoder
from features.decode import Clip
from features.spec import FeatureSpec

AUDIO = FeatureSpec("logmel_stats", view="audio", audio_seconds=1.0)


def rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
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
    ratio = median_ratio(theirs, ours)
    return [
        Row(
            "9",
            f"audio stream ({AUDIO.backbone}, {len(times)} windows of {AUDIO.audio_seconds:g} s) of a "
            f"{sizes.seconds} s stereo AAC soundtrack",
            f"{median(ours) * 1e3:.1f} ms/file",
            f"{median(theirs) * 1e3:.1f} ms/file (PyAV decode alone)",
            ratio,
            ">= 0.5",
            "ours decodes up to the last window, turns each frame into an array, resamples to 16 kHz mono and runs "
            "the STFT features; the baseline only decodes the whole soundtrack at 44.1 kHz stereo and keeps nothing",
        )
    ]
