"""Metadata: what a file's container says of it (duration, frame rate, resolution, bitrate, bit depth, sound, a
JPEG's quality from its own quantisation table) and what a track reads from its ids (THQA's generator), one vector
per item.

Raters never see these numbers, but they track what raters do see: a short clip, a low frame rate, an upscaled
small picture, a starved bitrate, a dead soundtrack; and a talking-head generator's name says much of its clips'
quality. The container is only opened, never decoded, and its facts are memoised under the file's fingerprint
(features.memo), so a changed file is read again and an unchanged one costs nothing on the next run.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np

from features.decode import MediaError, open_container
from features.fingerprint import UNREADABLE
from features.memo import memo_path, memoised

CONTAINER_FACTS = (
    "log_duration",  # log1p of seconds
    "fps",
    "log2_width",
    "log2_height",
    "aspect",  # width / height
    "log_kbps",  # log1p of the container's bitrate in kbit/s
    "bit_depth",  # of the first video plane: 8, or 10 for HDR10
    "has_audio",
    "jpeg_quality",  # the quality (1-100) a JPEG file's own luma quantisation table implies; 0 where it is no JPEG
)
CONTAINER_VERSION = 2  # 2: jpeg_quality
# ITU-T T.81 Annex K's luminance quantisation table (natural order), which libjpeg scales by its quality setting.
JPEG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.float64)  # fmt: skip


def jpeg_quality(path: str) -> float:
    """The quality a JPEG file was saved at, read from its own luma table, not guessed from its pixels: libjpeg's
    scale s (the table over Annex K's, in percent, the median over the entries not clamped to 1 or 255) mapped back
    through its rule, quality = (200 - s) / 2 for s <= 100, else 5000 / s. 0 where the file is no JPEG or holds no
    luma table."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            tables = getattr(image, "quantization", None) if image.format == "JPEG" else None
    except (OSError, UnidentifiedImageError):
        return 0.0
    if not tables or len(tables.get(0, ())) != JPEG_LUMA.size:
        return 0.0
    table = np.asarray(tables[0], dtype=np.float64)
    free = (table > 1) & (table < 255)  # entries the clamping left alone
    scale = 100 * float(np.median((table / JPEG_LUMA)[free] if free.any() else table / JPEG_LUMA))
    return float(np.clip((200 - scale) / 2 if scale <= 100 else 5000 / scale, 1, 100))


def container_facts(path: str) -> np.ndarray:
    """[len(CONTAINER_FACTS)] float32 of the first video stream and the container; MediaError where the file cannot
    be opened or holds no video (an image opens as a one-frame video)."""
    with open_container(path) as container:
        if not container.streams.video:
            raise MediaError(path, "no video stream")
        video = container.streams.video[0]
        width, height = video.codec_context.width, video.codec_context.height
        if not width or not height:
            raise MediaError(path, "the video stream declares no size")
        seconds = (
            float(video.duration * video.time_base)
            if video.duration and video.time_base
            else (container.duration or 0) / av.time_base
        )
        fps = float(video.average_rate or video.guessed_rate or 0)
        depth = av.VideoFormat(video.codec_context.pix_fmt).components[0].bits if video.codec_context.pix_fmt else 8
        kbps = (container.bit_rate or 0) / 1000
        return np.array(
            [
                math.log1p(seconds),
                fps,
                math.log2(width),
                math.log2(height),
                width / height,
                math.log1p(kbps),
                depth,
                bool(container.streams.audio),
                jpeg_quality(path),
            ],
            dtype=np.float32,
        )


def container_metadata(paths: Sequence[str], media: Sequence[str], memo_root: str | Path | None) -> np.ndarray:
    """[N, facts] for each path, memoised under its fingerprint; NaN rows for files that cannot be read (the item
    then has no metadata row, as an item that failed extraction has no frame)."""
    width = len(CONTAINER_FACTS)

    def read(rows: list[int]) -> np.ndarray:
        out = np.full((len(rows), width), np.nan, dtype=np.float32)
        for k, row in enumerate(rows):
            with contextlib.suppress(MediaError):
                out[k] = container_facts(paths[row])
        return out

    identity = {"facts": CONTAINER_FACTS, "version": CONTAINER_VERSION}
    memo = memo_path(memo_root, "container", identity) if memo_root is not None else None
    keys = [digest if digest != UNREADABLE else f"{UNREADABLE}:{path}" for digest, path in zip(media, paths)]
    return memoised(memo, keys, width, read)


def training_categories(values: Sequence[str], train: np.ndarray) -> list[str]:
    """The categories the training split shows, sorted: the columns of their one-hot."""
    return sorted({v for v, keep in zip(values, train) if keep})


def one_hot(values: Sequence[str], categories: Sequence[str]) -> np.ndarray:
    """[N, C] over `categories`; a category not among them (one the training split never shows) is all zeros, so a
    test generator the model has not met claims nothing."""
    where = {c: i for i, c in enumerate(categories)}
    out = np.zeros((len(values), len(categories)), dtype=np.float32)
    for row, value in enumerate(values):
        if value in where:
            out[row, where[value]] = 1.0
    return out
