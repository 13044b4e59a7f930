"""Procedural still images with known distortions, for the image tracks' demos and tests.

The content must render quickly at 4K (the UHD-IQA demo writes real 3840-wide images): a smooth two-colour gradient,
a periodic band-limited texture tile repeated over the frame, which carries the native-resolution detail that blur,
downscaling and JPEG destroy, and flat shapes with sharp edges drawn by Pillow. Distortions go through Pillow as
well (Gaussian blur, downscale and restore, JPEG quality) plus luma grain, so a 4K version costs well under a second.
A source is rendered once and may give several versions, each a crop of it (faces cut from one photo) with its own
distortion, written atomically in the format its file name says.
"""

from __future__ import annotations

import io
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from common.atomic import atomic_path
from synth.impairment import Sampler, combined_quality, sample_distortions
from synth.video import to_uint8

PRISTINE_JPEG = 95  # JPEG quality at which compression is not perceived
TILE = 512  # side of the periodic texture tile


@dataclass(frozen=True)
class ImageDistortion:
    """What was done to a source to make a version; all neutral = pristine."""

    jpeg: int = PRISTINE_JPEG  # JPEG quality 1..100 the version is compressed at
    blur: float = 0.0  # Gaussian sigma in pixels
    noise: float = 0.0  # std of luma grain in 8-bit levels
    downscale: float = 1.0  # >= 1: shrunk by this factor and restored (detail loss)

    def __post_init__(self) -> None:
        checks = {
            "jpeg": (isinstance(self.jpeg, int | np.integer) and 1 <= self.jpeg <= 100, "an integer in 1..100"),
            "blur": (math.isfinite(self.blur) and self.blur >= 0, "a finite sigma >= 0"),
            "noise": (math.isfinite(self.noise) and self.noise >= 0, "a finite std >= 0"),
            "downscale": (math.isfinite(self.downscale) and self.downscale >= 1, "a finite factor >= 1"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"ImageDistortion.{name}={getattr(self, name)!r}: expected {expected}")


# Severity at which a distortion on its own halves perceived quality.
HALF_QUALITY: dict[str, float] = {
    "jpeg": 50.0,  # quality points below PRISTINE_JPEG: quality 45 shows clear blocking
    "blur": 2.0,  # Gaussian sigma in px
    "noise": 15.0,  # std in 8-bit levels
    "downscale": 1.5,  # log2 of the factor (about 2.8x)
}

_SAMPLERS: dict[str, Sampler] = {
    "jpeg": lambda rng: int(rng.integers(15, 91)),
    "blur": lambda rng: float(rng.uniform(0.0, 3.0)),
    "noise": lambda rng: float(rng.uniform(0.0, 20.0)),
    "downscale": lambda rng: float(rng.uniform(1.0, 4.0)),
}


def quality(d: ImageDistortion) -> float:
    """Perceived quality in [0, 1] (1 = pristine); see synth.impairment.combined_quality."""
    severities = {
        "jpeg": float(max(PRISTINE_JPEG - d.jpeg, 0)),
        "blur": d.blur,
        "noise": d.noise,
        "downscale": math.log2(d.downscale),
    }
    return combined_quality(severities, HALF_QUALITY)


def random_distortion(rng: np.random.Generator) -> ImageDistortion:
    """One or two distortions of random severity (JPEG quality 15..90, blur 0..3, noise 0..20, downscale 1..4)."""
    return ImageDistortion(**sample_distortions(rng, _SAMPLERS))


# --- content ----------------------------------------------------------------------------------------------------------


def _texture_tile(rng: np.random.Generator) -> np.ndarray:
    """[TILE, TILE] zero-mean band-limited noise in 8-bit levels, periodic so that tiling shows no seams."""
    cutoff = rng.uniform(0.15, 0.3)  # cycles/pixel where the spectrum has fallen to exp(-1/2): fine to very fine
    radius2 = np.fft.fftfreq(TILE)[:, None] ** 2 + np.fft.rfftfreq(TILE)[None, :] ** 2
    spectrum = np.fft.rfft2(rng.standard_normal((TILE, TILE))) * np.exp(-radius2 / (2 * cutoff**2))
    tile = np.fft.irfft2(spectrum, s=(TILE, TILE))
    return (tile * rng.uniform(12.0, 24.0) / (tile.std() + 1e-12)).astype(np.float32)


def render_image(seed: int, width: int, height: int) -> np.ndarray:
    """uint8 [height, width, 3] procedural still content, deterministic in `seed`."""
    if min(width, height) < 1:
        raise ValueError(f"render_image: width and height must be >= 1, got {width}x{height}")
    rng = np.random.default_rng(seed)
    start, end = rng.uniform(30.0, 225.0, size=(2, 3)).astype(np.float32)
    angle = rng.uniform(0.0, 2 * np.pi)
    y = np.arange(height, dtype=np.float32)[:, None] - height / 2
    x = np.arange(width, dtype=np.float32)[None, :] - width / 2
    along = (x * np.float32(np.cos(angle)) + y * np.float32(np.sin(angle))) / np.float32(math.hypot(width, height))
    along += 0.5
    canvas = start + (end - start) * along[..., None]
    tile = _texture_tile(rng)
    reps = (math.ceil(height / TILE), math.ceil(width / TILE))
    canvas += np.tile(tile, reps)[:height, :width, None] * rng.uniform(0.6, 1.0, size=3).astype(np.float32)
    image = Image.fromarray(to_uint8(canvas))
    draw = ImageDraw.Draw(image)
    short = min(width, height)
    for _ in range(int(rng.integers(3, 9))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        half_w = rng.uniform(0.04, 0.2) * short
        half_h = half_w * rng.uniform(0.5, 1.5)
        box = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return np.array(image)


# --- distortions and files -------------------------------------------------------------------------------------------


def distort(pixels: np.ndarray, d: ImageDistortion, seed: int) -> np.ndarray:
    """Blur, downscale-and-restore and grain, in a camera's order (optics and resampling, then sensor noise); JPEG is
    applied when the version is written."""
    image = Image.fromarray(pixels)
    if d.blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(d.blur))
    if d.downscale > 1:
        small = (max(1, round(image.width / d.downscale)), max(1, round(image.height / d.downscale)))
        image = image.resize(small, Image.Resampling.BOX).resize(image.size, Image.Resampling.BICUBIC)
    out = np.asarray(image)
    if d.noise > 0:
        grain = np.random.default_rng(seed).standard_normal(out.shape[:2], dtype=np.float32) * np.float32(d.noise)
        out = to_uint8(out + grain[..., None])
    return out


def write_image(pixels: np.ndarray, path: Path, jpeg: int, mode: str = "RGB") -> None:
    """A JPEG file is saved at quality `jpeg`; any other format gets the same JPEG artefacts from an in-memory round
    trip, then is stored losslessly in `mode` (L for greyscale, RGBA with opaque alpha)."""
    path = Path(path)
    image = Image.fromarray(pixels)
    kind = Image.registered_extensions().get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: no image format for the suffix {path.suffix!r}")
    if kind != "JPEG":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=jpeg)
        image = Image.open(buffer).convert(mode)
    with atomic_path(path) as tmp:
        image.save(tmp, format=kind, **({"quality": jpeg} if kind == "JPEG" else {}))


@dataclass(frozen=True)
class Version:
    """One file made from a source: its distortion, the crop of the source it shows (left, top, width, height; None
    for the whole) and the colour mode it is stored in."""

    path: Path
    distortion: ImageDistortion
    box: tuple[int, int, int, int] | None = None
    mode: str = "RGB"


@dataclass(frozen=True)
class Source:
    seed: int
    width: int
    height: int
    versions: tuple[Version, ...]


def make_source(source: Source) -> None:
    clean = render_image(source.seed, source.width, source.height)
    for k, version in enumerate(source.versions):
        pixels = clean
        if version.box is not None:
            left, top, width, height = version.box
            pixels = clean[top : top + height, left : left + width]
        distorted = distort(pixels, version.distortion, seed=source.seed * 100 + k)
        write_image(distorted, version.path, version.distortion.jpeg, version.mode)


def make_sources(sources: list[Source], workers: int = 2) -> None:
    for folder in {v.path.parent for s in sources for v in s.versions}:
        folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(make_source, sources))
