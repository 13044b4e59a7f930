"""Rows 12 and 13: the full-reference metrics of HDR10 pairs against decoding the pairs alone, and HDR key frames as
perceptual ICtCp against the video decoder's RGB of the same frames."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pandas as pd

from benchmarks.harness import BenchConfig, Progress, Row, Sizes, median, median_ratio, timed
from benchmarks.media import VIEWS, bench_hdr_pair
from features.decode import DECODERS, FrameSampling, sample_video
from features.extract import extract
from features.fingerprint import REFERENCE
from features.fr import FR_METRICS
from features.pairs import read_pair
from features.spec import FeatureSpec
from features.views import view_family

HDR_SAMPLING = FrameSampling(frames=3)  # the synthetic clips last 3 s: a key frame each second, every one used
FR_SPEC = FeatureSpec("ffmpeg", decoder="hdr", view="fr", frames=HDR_SAMPLING.frames)


def rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    """Row 12: the full-reference metrics' extraction of a 1080p HDR10 pair (both decoded at native depth on the same
    key frames, FFmpeg's metrics in two domains, written to the cache) against decoding the pair alone. Row 13:
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
    fr_ratio = median_ratio(decoded, extracted)
    view_ratio = median_ratio(sdr_views, hdr_views)
    clip = f"{len(pairs)} HDR10 pair(s) of 3 s, reference {height}p, distorted at half size"
    return [
        Row(
            "12",
            f"full-reference metrics (fr=ffmpeg: {', '.join(FR_METRICS)}; code values and PU) of {clip}",
            f"{median(extracted):.2f} s/pair",
            f"{median(decoded):.2f} s/pair (decoding the pair alone)",
            fr_ratio,
            ">= 0.2",
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
            "float64 PQ and ICtCp per pixel in numpy, our chroma upsampling: what swscale's RGB never gives, the "
            "light the pixels stand for",
        ),
    ]
