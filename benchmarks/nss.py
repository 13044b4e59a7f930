"""Row 18: the weight-free image family (quality_stats: BRISQUE at two scales, GM-LOG, sharpness, noise, colour) on
the key frames, extracted, against decoding and rendering the same key frames alone. The video family's row is 8."""

from __future__ import annotations

from pathlib import Path

from benchmarks.harness import BenchConfig, Progress, Row, Sizes, median, median_ratio
from benchmarks.motion import against_decode
from features.spec import FeatureSpec

KEY_FRAMES = FeatureSpec("quality_stats", frames=8)  # the default backbone at the default view and size


def rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    """The key-frame stream's extraction with the weight-free statistics (decode, render, encode, write) against its
    decode stage alone; per resolution, interleaved."""
    spec = FeatureSpec(KEY_FRAMES.backbone, frames=min(KEY_FRAMES.frames, sizes.seconds))
    return [
        Row(
            "18",
            f"weight-free image statistics ({spec.backbone}, {spec.view} {spec.size}) on {spec.frames} key frames "
            f"of {clips} clips of {sizes.seconds} s at {label}",
            f"{median(extracted):.2f} s/clip",
            f"{median(decoded):.2f} s/clip (decode alone)",
            median_ratio(decoded, extracted),
            ">= 0.8",
            "BRISQUE's fits at two scales, GM-LOG, sharpness, noise floor and colour casts on every view image",
        )
        for label, clips, decoded, extracted in against_decode(spec, sizes, root, progress, "quality_stats key frames")
    ]
