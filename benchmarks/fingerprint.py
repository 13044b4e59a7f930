"""Row 7: fingerprinting a file's content (what binds the cache to its media) against decoding the same file as
extraction does, on a 4K JPEG, a 1080p clip and a long 1080p clip."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.harness import BenchConfig, Progress, Row, Sizes, median, median_ratio, timed
from benchmarks.media import bench_clip, bench_image
from features.decode import FrameSampling, read_image, sample_video
from features.fingerprint import file_digest, fingerprints
from tracks import get_track


def rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    """The whole file hashed (no memo) against its decode as an extraction does it (KVQ's key frames for clips):
    decoding is only part of extraction, so the ratio bounds the fingerprint's share of extraction from above."""
    media = root / "media"
    sampling = FrameSampling(**{k: get_track("kvq").defaults.get(k, v) for k, v in (("frames", 8), ("fps", 1.0))})
    progress("fingerprint media")
    (width, height), (image_width, image_height) = sizes.resolutions[-1], sizes.image
    cases = [
        (f"{image_width}x{image_height} JPEG", bench_image(media, image_width, image_height, 0), read_image),
        (f"{height}p clip, {sizes.seconds} s", bench_clip(media, width, height, sizes.seconds, sizes.fps, 0), None),
        (
            f"{height}p clip, {sizes.long_seconds} s",
            bench_clip(media, width, height, sizes.long_seconds, sizes.fps, 0),
            None,
        ),
    ]
    found = []
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
        ratio = median_ratio(hashed, decoded)
        megabytes = path.stat().st_size / 1e6
        found.append(
            Row(
                "7",
                f"content fingerprint (XXH3-128) of a {what} ({megabytes:.1f} MB) against decoding it",
                f"{median(hashed) * 1e3:.1f} ms ({megabytes / median(hashed) / 1e3:.2f} GB/s)",
                f"{median(decoded) * 1e3:.0f} ms (decode)",
                ratio,
                "< 0.05",
                f"from the page cache; a rerun finds the digest in the memo by one stat ({hit.wall * 1e3:.1f} ms "
                f"with the memo's read and write)"
                + (
                    ""
                    if decode is read_image
                    else f"; decoded: {sampling.frames} key frames at {sampling.fps:g} fps, as KVQ samples"
                ),
            )
        )
    return found
