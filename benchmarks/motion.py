"""Row 8: extracting a motion stream (clips of consecutive frames from each key frame, weight-free temporal
statistics) against decoding the same clips alone."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.extraction import decode_stage, run_extraction
from benchmarks.harness import BenchConfig, Progress, Row, Sizes, median, median_ratio, timed
from benchmarks.media import bench_clip, clip_items
from features.spec import FeatureSpec
from features.views import view_family

MOTION = FeatureSpec("temporal_stats", view="clip", size=112, clip=8)  # 8 consecutive frames from each key frame


def against_decode(
    spec: FeatureSpec, sizes: Sizes, root: Path, progress: Progress, what: str
) -> list[tuple[str, int, list[float], list[float]]]:
    """Per resolution: its label, the clips timed, and the seconds a clip of decoding alone and of the whole
    extraction of `spec` (decode, render, encode, write), interleaved repeat by repeat."""
    found = []
    for width, height in sizes.resolutions:
        label = f"{height}p"
        paths = [
            bench_clip(root / "media", width, height, sizes.seconds, sizes.fps, seed) for seed in range(sizes.clips)
        ]
        items = clip_items(paths, sizes.extraction_items)
        decoded, extracted = [], []
        for repeat in range(sizes.repeats):
            progress(f"{label} {what}, repeat {repeat + 1}/{sizes.repeats}")
            with timed() as decode:
                decode_stage([Path(p) for p in items["path"]], spec.sampling(), view_family(spec))
            with tempfile.TemporaryDirectory(dir=root) as scratch, timed() as full:
                run_extraction(items, spec, scratch)
            decoded.append(decode.wall / len(items))
            extracted.append(full.wall / len(items))
        found.append((label, len(items), decoded, extracted))
    return found


def rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    """The motion stream's extraction (decode with clips, render, encode, write) against its decode stage alone,
    each clip's frames scaled at decode as the extraction scales them; per resolution, interleaved."""
    return [
        Row(
            "8",
            f"motion stream ({MOTION.backbone}, {MOTION.clip}-frame clips at {MOTION.size}) of {clips} clips "
            f"of {sizes.seconds} s at {label}",
            f"{median(extracted):.2f} s/clip",
            f"{median(decoded):.2f} s/clip (decode alone)",
            median_ratio(decoded, extracted),
            ">= 0.8",
            f"{MOTION.frames} key frames a clip, each starting a clip decoded in the same pass, scaled by FFmpeg",
        )
        for label, clips, decoded, extracted in against_decode(MOTION, sizes, root, progress, "motion stream")
    ]
