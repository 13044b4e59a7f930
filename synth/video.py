"""Procedural short-form videos with known distortions.

The demo and the tests need a dataset whose quality ordering is known by construction and that costs no download:
each source is procedural moving content, each processed version a known `Distortion` of it, and `quality` turns
the distortion into the ground truth that a track maps to its MOS scale. Everything is vectorised over frames so a
320x240, 64-frame clip is rendered, distorted and encoded in a fraction of a second on one core.
"""

from __future__ import annotations

import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from synth.impairment import Sampler, combined_quality, sample_distortions

PRISTINE_CRF = 18  # libx264 at this crf is visually lossless: the codec adds no perceived loss
MAX_CRF = 51
X264_PRESET = "veryfast"  # ~3x faster than libx264's default "medium" at a similar size on these clips
# Macroblock-tree rate control off: with it, libx264 as PyAV bundles it encoded the same frames to different bytes
# from run to run (even on one thread), so the demo's data and scores changed between identical runs.
X264_PARAMS = "mbtree=0"


@dataclass(frozen=True)
class Distortion:
    """What was done to a source to make a processed version; all zero/neutral = pristine."""

    crf: int = PRISTINE_CRF  # libx264 constant rate factor used when encoding (18 ≈ visually lossless, 51 worst)
    blur: float = 0.0  # gaussian blur sigma in pixels applied before encoding
    noise: float = 0.0  # std of additive gaussian noise in 8-bit levels, before encoding
    downscale: float = 1.0  # >=1: frames shrunk by this factor then scaled back up to the original size (detail loss)
    drop: int = 0  # 0 = none; n>=2: every n-th frame is replaced by the previous one (judder)

    def __post_init__(self) -> None:
        checks = {
            "crf": (_is_int(self.crf) and 0 <= self.crf <= MAX_CRF, f"an integer in 0..{MAX_CRF}"),
            "blur": (math.isfinite(self.blur) and self.blur >= 0, "a finite sigma >= 0"),
            "noise": (math.isfinite(self.noise) and self.noise >= 0, "a finite std >= 0"),
            "downscale": (math.isfinite(self.downscale) and self.downscale >= 1, "a finite factor >= 1"),
            "drop": (_is_int(self.drop) and (self.drop == 0 or self.drop >= 2), "0 (none) or an integer >= 2"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"Distortion.{name}={getattr(self, name)!r}: expected {expected}")


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------------------- sources


def render_source(seed: int, width: int = 320, height: int = 240, frames: int = 64) -> np.ndarray:
    """uint8 array [frames, height, width, 3]: procedural moving content (deterministic in seed).

    A gradient background, a panning texture and bouncing flat shapes: the texture carries the fine detail that
    blur, downscaling and the codec destroy, the shapes the sharp moving edges. `detail` and `speed` vary per seed
    so sources differ in how much each distortion hurts them, as real UGC does.
    """
    if min(width, height, frames) < 1:
        raise ValueError(f"render_source: width, height and frames must be >= 1, got {width}x{height}x{frames}")
    rng = np.random.default_rng(seed)
    t = np.arange(frames, dtype=np.float32)[:, None, None]
    y = np.arange(height, dtype=np.float32)[None, :, None]
    x = np.arange(width, dtype=np.float32)[None, None, :]
    speed = rng.uniform(0.5, 3.0)  # px/frame for all motion: calm and busy sources
    detail = rng.uniform(0.0, 1.0)  # 0 = only coarse texture, 1 = texture near the pixel scale
    tint = rng.uniform(0.6, 1.0, size=3).astype(np.float32)
    video = _texture(rng, t, y, x, speed, detail)[..., None] * tint
    video += background(rng, y, x)
    _draw_shapes(video, rng, t, y, x, speed)
    return to_uint8(video)


def background(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Static two-colour linear gradient [height, width, 3] along a random axis: large smooth regions."""
    start, end = rng.uniform(20.0, 235.0, size=(2, 3)).astype(np.float32)
    angle = rng.uniform(0.0, 2 * np.pi)
    height, width = y.shape[1], x.shape[2]
    along = ((x - width / 2) * np.cos(angle) + (y - height / 2) * np.sin(angle)) / math.hypot(width, height) + 0.5
    return start + (end - start) * along[0, ..., None]


def _texture(
    rng: np.random.Generator, t: np.ndarray, y: np.ndarray, x: np.ndarray, speed: float, detail: float
) -> np.ndarray:
    """Zero-mean luminance texture [frames, height, width] in 8-bit levels, panning at `speed`.

    Two drifting gratings (sub-pixel motion) plus a periodic band-limited noise tile shifted by whole pixels
    (cheap, and periodic so the wrap-around is seamless); `detail` sets both their spatial frequencies.
    """
    height, width = y.shape[1], x.shape[2]
    contrast = rng.uniform(15.0, 40.0)
    mix = rng.uniform(0.2, 0.8)  # share of the gratings against the noise tile

    texture = np.zeros((t.shape[0], height, width), dtype=np.float32)
    for frequency, angle, phase in zip(
        (0.02 + 0.2 * detail) * rng.uniform(0.7, 1.3, size=2),
        rng.uniform(0.0, 2 * np.pi, size=2),
        rng.uniform(0.0, 2 * np.pi, size=2),
        strict=True,
    ):
        radians_per_px = np.float32(2 * np.pi * frequency)
        still = radians_per_px * (x * np.float32(np.cos(angle)) + y * np.float32(np.sin(angle))) + np.float32(phase)
        texture += np.sin(still - radians_per_px * speed * t)
    texture *= contrast * mix / 2

    cutoff = 0.03 + 0.2 * detail  # cycles/pixel where the noise spectrum has fallen to exp(-1/2)
    radius2 = np.fft.fftfreq(height)[:, None] ** 2 + np.fft.rfftfreq(width)[None, :] ** 2
    spectrum = np.fft.rfft2(rng.standard_normal((height, width))) * np.exp(-radius2 / (2 * cutoff**2))
    tile = np.fft.irfft2(spectrum, s=(height, width))
    tile *= contrast * (1 - mix) / (tile.std() + 1e-12)
    # Every whole-pixel shift of a periodic tile is a window of the tile repeated 2x2: one copy per frame.
    windows = sliding_window_view(np.tile(tile.astype(np.float32), (2, 2)), (height, width))
    heading = rng.uniform(0.0, 2 * np.pi)
    shift_y = np.rint(speed * np.sin(heading) * t[:, 0, 0]).astype(np.intp) % height
    shift_x = np.rint(speed * np.cos(heading) * t[:, 0, 0]).astype(np.intp) % width
    texture += windows[shift_y, shift_x]
    return texture


def _draw_shapes(
    video: np.ndarray, rng: np.random.Generator, t: np.ndarray, y: np.ndarray, x: np.ndarray, speed: float
) -> None:
    """Paints flat discs and rectangles bouncing off the borders (sharp moving edges) into `video` in place."""
    height, width = video.shape[1:3]
    for _ in range(rng.integers(2, 6)):
        half_w = rng.uniform(0.05, 0.15) * min(height, width)
        half_h = half_w * rng.uniform(0.5, 1.5)
        heading = rng.uniform(0.0, 2 * np.pi)
        velocity = speed * rng.uniform(0.5, 1.5)
        cx = _bounce(rng.uniform(0, width) + np.float32(velocity * np.cos(heading)) * t, half_w, width - half_w)
        cy = _bounce(rng.uniform(0, height) + np.float32(velocity * np.sin(heading)) * t, half_h, height - half_h)
        if rng.random() < 0.5:
            mask = ((x - cx) / half_w) ** 2 + ((y - cy) / half_h) ** 2 <= 1
        else:
            mask = (np.abs(x - cx) <= half_w) & (np.abs(y - cy) <= half_h)
        video.reshape(-1, 3)[np.flatnonzero(mask)] = rng.uniform(0.0, 255.0, size=3)  # ~2x faster than video[mask]


def _bounce(position: np.ndarray, low: float, high: float) -> np.ndarray:
    """Folds an unbounded straight-line path into [low, high], as if reflecting off the walls."""
    span = high - low
    return low + span - np.abs((position - low) % (2 * span) - span)


# ------------------------------------------------------------------------------------------------------ distortions


def distort(frames: np.ndarray, d: Distortion, seed: int) -> np.ndarray:
    """Applies blur, downscale, noise and frame drops (the codec part, crf, is applied by encode_mp4).

    Order follows a real pipeline: optics and resampling first, grain on top (so it is not smoothed away), drops
    last (so a dropped frame is an exact repeat of the one shown before it). The grain is one draw shared by the
    three channels, i.e. luma grain, as camera noise mostly is after in-camera chroma denoising.
    """
    _check_video(frames, "distort: frames")
    video = frames.transpose(0, 3, 1, 2).astype(np.float32, order="C")  # planar [F, 3, H, W]: BLAS-friendly lines
    if d.blur > 0 or d.downscale > 1:
        for axis in (2, 3):
            video = _apply_banded(video, _spatial_matrix(video.shape[axis], d), axis)
    if d.noise > 0:
        grain = np.random.default_rng(seed).standard_normal((len(video), 1, *video.shape[2:]), dtype=np.float32)
        grain *= d.noise
        video += grain
    out = np.ascontiguousarray(to_uint8(video).transpose(0, 2, 3, 1))
    return out[_shown_frames(len(out), d.drop)] if d.drop else out


def _spatial_matrix(size: int, d: Distortion) -> np.ndarray:
    """[size, size] linear map along one spatial axis: blur, then shrink by d.downscale and restore the size.

    Blur and resampling are both separable and linear, so composing them into one small matrix per axis makes
    any mix of the two cost one pass per axis over the video.
    """
    matrix = _gaussian_matrix(size, d.blur) if d.blur > 0 else np.eye(size, dtype=np.float32)
    if d.downscale > 1:
        small = max(1, round(size / d.downscale))
        matrix = _linear_matrix(size, small) @ area_matrix(small, size) @ matrix
    return matrix


_BAND_BLOCK = 48  # output lines per matmul in _apply_banded: smaller skips more zeros, larger makes fewer calls


def _apply_banded(video: np.ndarray, matrix: np.ndarray, axis: int) -> np.ndarray:
    """`matrix` [n, n] applied along `axis` of `video`, one block of output lines at a time.

    Blur and resampling matrices are banded (a few % nonzero when downscaling), so giving each block only the
    input lines inside its band skips most of the zeros a dense product would multiply.
    """
    out = np.empty_like(video)
    source, target = np.moveaxis(video, axis, -1), np.moveaxis(out, axis, -1)
    for start in range(0, len(matrix), _BAND_BLOCK):
        block = matrix[start : start + _BAND_BLOCK]
        used = np.flatnonzero(block.any(axis=0))
        band = slice(used[0], used[-1] + 1)
        target[..., start : start + _BAND_BLOCK] = source[..., band] @ block[:, band].T
    return out


def _gaussian_matrix(size: int, sigma: float) -> np.ndarray:
    """[size, size] gaussian blur truncated at 4 sigma; rows renormalised so the borders keep their brightness.

    Exact zeros beyond 4 sigma keep the matrix banded for `_apply_banded`, and keep out the far tail's float32
    denormals, which slow a matmul ~10x.
    """
    offset = np.arange(size)[:, None] - np.arange(size)[None, :]
    weights = np.exp(-0.5 * (offset / sigma) ** 2) * (np.abs(offset) <= 4 * sigma)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def area_matrix(n_out: int, n_in: int) -> np.ndarray:
    """[n_out, n_in] weights: each output pixel is the mean of the input span it covers (fractional at the ends).

    Area averaging rather than point sampling, so downscaling loses detail instead of aliasing it.
    """
    edges = np.arange(n_out + 1) * (n_in / n_out)
    pixels = np.arange(n_in)[None, :]
    overlap = np.minimum(edges[1:, None], pixels + 1) - np.maximum(edges[:-1, None], pixels)
    return (np.clip(overlap, 0, None) * (n_out / n_in)).astype(np.float32)


def _linear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """[n_out, n_in] linear-interpolation weights with pixel centres aligned (half-pixel convention)."""
    source = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    return np.clip(1 - np.abs(source[:, None] - np.arange(n_in)[None, :]), 0, None).astype(np.float32)


def _shown_frames(n_frames: int, every: int) -> np.ndarray:
    """Index of the frame displayed at each position when every `every`-th frame repeats its predecessor."""
    index = np.arange(n_frames)
    index[every - 1 :: every] -= 1
    return index


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Pixels in 8-bit levels as uint8, clipped and rounded half up (every synthetic medium's last step)."""
    rounded = np.clip(pixels, 0, 255)
    rounded += 0.5  # the cast truncates: round half up
    return rounded.astype(np.uint8)


def _check_video(frames: np.ndarray, what: str) -> None:
    if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[3] == 3):
        got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"{what}: expected a uint8 array [frames, height, width, 3], got {got}")
    if len(frames) == 0:
        raise ValueError(f"{what}: expected at least one frame, got none")


# --------------------------------------------------------------------------------------------------------- encoding


def encode_mp4(frames: np.ndarray, path: str | os.PathLike, fps: int = 8, crf: int = PRISTINE_CRF) -> None:
    """H.264 (libx264, yuv420p) mp4 through PyAV; written to a temporary name in the same folder then os.replace'd,
    so a killed run never leaves a torn .mp4 under the final name."""
    path = Path(path)
    _check_video(frames, f"encode_mp4({path})")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"encode_mp4({path}): yuv420p needs an even width and height, got {width}x{height}")
    if not (_is_int(fps) and fps > 0):
        raise ValueError(f"encode_mp4({path}): fps must be a positive integer, got {fps!r}")
    if not (_is_int(crf) and 0 <= crf <= MAX_CRF):
        raise ValueError(f"encode_mp4({path}): crf must be an integer in 0..{MAX_CRF}, got {crf!r}")

    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with av.open(str(partial), mode="w", format="mp4") as container:
            stream = container.add_stream(
                "libx264", rate=fps, options={"crf": str(crf), "preset": X264_PRESET, "x264-params": X264_PARAMS}
            )
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------- quality

# Severity at which a distortion on its own halves perceived quality: these are the model's weights.
HALF_QUALITY: dict[str, float] = {
    "crf": 17.0,  # crf above PRISTINE_CRF; crf 35: blocking and smeared texture are obvious on a phone
    "blur": 2.0,  # gaussian sigma in px; at 240p edges look clearly soft
    "noise": 15.0,  # std in 8-bit levels; grain dominates flat regions
    "downscale": 1.5,  # log2 of the factor (≈2.8x): the upscaled look
    "drop": 0.5,  # fraction of frames held; every 2nd frame repeated is strong judder
}


def _severities(d: Distortion) -> dict[str, float]:
    """Each distortion's severity on the scale HALF_QUALITY is written in (0 = absent)."""
    return {
        "crf": float(max(d.crf - PRISTINE_CRF, 0)),
        "blur": float(d.blur),
        "noise": float(d.noise),
        "downscale": math.log2(d.downscale),
        "drop": 1.0 / d.drop if d.drop else 0.0,
    }


def quality(d: Distortion) -> float:
    """Perceived quality in [0, 1] (1 = pristine), a smooth, monotone function of each distortion's severity (see
    synth.impairment.combined_quality)."""
    return combined_quality(_severities(d), HALF_QUALITY)


# One sampler per distortion, each spanning good to bad quality.
_SAMPLERS: dict[str, Sampler] = {
    "crf": lambda rng: int(rng.integers(20, 46)),
    "blur": lambda rng: float(rng.uniform(0.0, 3.0)),
    "noise": lambda rng: float(rng.uniform(0.0, 20.0)),
    "downscale": lambda rng: float(rng.uniform(1.0, 4.0)),
    "drop": lambda rng: int(rng.choice((2, 3, 4))),
}


def random_distortion(rng: np.random.Generator) -> Distortion:
    """A plausible processed version: one or two distortions of random severity drawn from ranges that span
    good to bad quality (crf 20..45, blur 0..3, noise 0..20, downscale 1..4, drop in {0,2,3,4}), so MOS spreads."""
    return Distortion(**sample_distortions(rng, _SAMPLERS))
