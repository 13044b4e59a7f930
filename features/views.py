"""View families: how the decoded frames of one item become the square images a backbone sees.

A family is a geometry (`resize`, `aesthetic`, `native`, `salient`, `fragments`) and one feature set in the cache; its
variants are rows of that set. A family's parameters are the fields of its dataclass, named as in `FeatureSpec`, so the
cache key covers exactly the geometry that changes its pixels.

Variant names (parsed here and nowhere else) are `<geometry>[@t<offset>]`:
  * crop families: `center` and its mirror `hflip`; `resize` and `native` also take the windows anchored at a corner,
    `tl`, `tr`, `bl`, `br`, each mirrorable (`tl-hflip`). `resize` keeps a square of the short side, so on a landscape
    frame `tl`/`bl` are its left end and `tr`/`br` its right end, on a portrait frame `tl`/`tr` the top and `bl`/`br`
    the bottom: `tl` and `br` are the start and end of the long side (the three crops of video test-time views).
  * fragments: seeded draws `s0`, `s1`, ..., each mirrorable (`s0-hflip`).
  * `@t<offset>` (video only): the same geometry on key frames sampled `offset` of a sampling period later (the phase
    shifted, wrapping within the period), `center@t0.5` halfway between the spec's own key frames. The offset is
    written in its shortest decimal form, so one set of pixels has one name.
Given the FeatureSpec (which fixes the frames, fps, phase and geometry), a variant's name fully determines its pixels:
that is why variants can be rows under one cache key.

Memory: frames arrive as one uint8 (or uint16) array, which may be a 3840-wide image. Families cut views of it first
and convert only what they keep to float; a whole-frame resize runs on the uint8 array itself (torch's antialiased
bilinear kernel takes uint8), and fragments gather their patches by indexing. No family copies a 4K frame as float.
"""

from __future__ import annotations

import abc
import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from common.registry import Registry
from features.audio import SAMPLE_RATE
from features.backbones import luminance

FAMILIES: Registry[type[ViewFamily]] = Registry("view family")
DEFAULT_FAMILY = "resize"


def register_family(name: str) -> Callable[[type[ViewFamily]], type[ViewFamily]]:
    def decorate(cls: type[ViewFamily]) -> type[ViewFamily]:
        cls.name = name
        return FAMILIES.register(name)(cls)

    return decorate


def view_family(spec: Any) -> ViewFamily:
    """The family `spec.view`, its parameters read from the same-named attributes of `spec` (a FeatureSpec)."""
    cls = FAMILIES.get(spec.view)
    return cls(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class Variant:
    """A variant's name split into the geometry a family renders and the shift of its key frames."""

    geometry: str
    offset: float = 0.0  # fraction of a sampling period the key frames are sampled later; 0: the spec's own frames

    @classmethod
    def parse(cls, name: str) -> Variant:
        geometry, at, shift = name.partition("@t")
        if not at:
            return cls(name)
        try:
            offset = float(shift)
        except ValueError:
            offset = None
        if not geometry or offset is None or not 0 < offset < 1 or str(offset) != shift:
            raise ValueError(
                f"view {name!r}: a temporal offset is written <view>@t<x> with 0 < x < 1 in its shortest decimal "
                f"form, e.g. center@t0.5"
            )
        return cls(geometry, offset)


def check_time_axis(views: Sequence[str], time_axis: bool, media: str) -> None:
    """Temporal offsets shift key frames: only media with a time axis have them to shift."""
    shifted = [v for v in views if Variant.parse(v).offset]
    if shifted and not time_axis:
        raise ValueError(
            f"view(s) {', '.join(shifted)} shift key frames in time (@t), but {media} media have no time axis; "
            f"drop the @t part"
        )


def split_variants(families: Sequence[ViewFamily | type[ViewFamily]], views: Sequence[str]) -> list[tuple[str, ...]]:
    """The variants each family takes from `views`, in their given order; every view must belong to some family and
    every family must get one, so `views=center,hflip,s0,s1` serves aesthetic+fragments at once. A family is matched
    on a view's geometry, whatever its temporal offset."""
    if len(set(views)) != len(views):
        raise ValueError(f"views {list(views)} name a view twice")
    names = ", ".join(f.name for f in families)
    geometry = {v: Variant.parse(v).geometry for v in views}
    orphans = [v for v in views if not any(f.accepts(geometry[v]) for f in families)]
    if orphans:
        takes = "; ".join(f"{f.name} takes {f.variant_help}" for f in families)
        raise ValueError(
            f"view(s) {', '.join(orphans)} belong to none of the view families {names} ({takes}; on video, any of "
            f"them shifted in time as <view>@t<x>)"
        )
    chosen = [tuple(v for v in views if f.accepts(geometry[v])) for f in families]
    for family, variants in zip(families, chosen, strict=True):
        if not variants:
            raise ValueError(
                f"view family {family.name} gets none of views {', '.join(views)}; it takes {family.variant_help}"
            )
    return chosen


# --- pixels -----------------------------------------------------------------------------------------------------------


def _full_scale(dtype: np.dtype) -> float:
    """The value of white in `dtype`: its maximum for integers, 1 for floats."""
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def to_float(frames: np.ndarray) -> torch.Tensor:
    """[T, H, W, 3] uint8/uint16 (or float in [0, 1]) -> [T, 3, H, W] float32 in [0, 1], copying only what it gets."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(_full_scale(frames.dtype))


def resample(region: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """[T, h, w, 3] (a view into the frames) -> [T, 3, *size] float32 in [0, 1], antialiased.

    8-bit regions are resampled as uint8: the kernel reads the strided view in place and only the small result is
    converted to float. Higher bit depths are converted first (rare, and never worth 8-bit rounding)."""
    if region.shape[1:3] == tuple(size):
        return to_float(region)
    if region.dtype == np.uint8:
        pixels = torch.from_numpy(region).permute(0, 3, 1, 2)
        return F.interpolate(pixels, size=size, mode="bilinear", antialias=True).float().div_(255)
    return F.interpolate(to_float(region), size=size, mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)


def square(frames: np.ndarray, top: int, left: int, side: int, size: int) -> torch.Tensor:
    """The square of `side` at (top, left), resampled to `size` (copied as is when side == size)."""
    return resample(frames[:, top : top + side, left : left + side], (size, size))


# --- families ---------------------------------------------------------------------------------------------------------


class ViewFamily(abc.ABC):
    name: ClassVar[str]
    variant_help: ClassVar[str]
    source: ClassVar[str | None] = "frames"  # the field of a decoded Clip it renders (None: the whole Clip)
    encodes: ClassVar[str] = "image"  # the encoder family its output feeds (see features.streams.encoder_family)
    clips: ClassVar[bool] = False  # whether it needs clips of consecutive frames decoded
    audio: ClassVar[bool] = False  # whether it needs audio windows decoded
    whole_item: ClassVar[bool] = False  # whether an item's key frames go to its encoder in one pass, one row a variant

    @property
    @abc.abstractmethod
    def side(self) -> int:
        """The side of the square images the family makes."""

    @classmethod
    @abc.abstractmethod
    def accepts(cls, geometry: str) -> bool:
        """Whether the family renders this geometry (a variant's name without its temporal offset)."""

    @abc.abstractmethod
    def render(self, frames: np.ndarray, geometries: Sequence[str]) -> torch.Tensor:
        """[T, H, W, 3] uint8/uint16 -> [V, T, 3, side, side] float32 in [0, 1], one row per geometry."""

    def pass_shape(self, spec: Any) -> tuple[int, ...]:
        """The shape of what one encoder pass takes (a frame, clip, window or pair of one variant) under `spec`
        (a FeatureSpec): what `profile` costs the encoder on."""
        return (3, self.side, self.side)


CORNERS = ("tl", "tr", "bl", "br")
_CROP = re.compile(r"center|hflip|(tl|tr|bl|br)(-hflip)?")


def crop_parts(geometry: str) -> tuple[str, bool] | None:
    """(position, mirrored) of a crop variant: `center`, `hflip` (the centre mirrored), a corner, a mirrored corner
    (`tl-hflip`); None for a name of no crop."""
    match = _CROP.fullmatch(geometry)
    if match is None:
        return None
    if geometry in ("center", "hflip"):
        return "center", geometry == "hflip"
    return match[1], match[2] is not None


def anchor(position: str, height: int, width: int, side: int) -> tuple[int, int]:
    """(top, left) of a side x side window at the centre of the frame or against one of its corners."""
    if position == "center":
        return (height - side) // 2, (width - side) // 2
    vertical, horizontal = position
    return (0 if vertical == "t" else height - side), (0 if horizontal == "l" else width - side)


@dataclass(frozen=True)
class CropFamily(ViewFamily):
    """One square image per frame and position; the variants are those images and their mirrors."""

    size: int
    positions: ClassVar[tuple[str, ...]] = ("center",)
    variant_help: ClassVar[str] = "center, hflip"

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"{self.name}: size={self.size} must be >= 1")

    @property
    def side(self) -> int:
        return self.size

    @classmethod
    def accepts(cls, geometry: str) -> bool:
        parts = crop_parts(geometry)
        return parts is not None and parts[0] in cls.positions

    def render(self, frames: np.ndarray, geometries: Sequence[str]) -> torch.Tensor:
        parts = [crop_parts(g) for g in geometries]
        crops = {position: self.crop(frames, position) for position, _ in parts}
        return torch.stack([crops[position].flip(-1) if mirrored else crops[position] for position, mirrored in parts])

    @abc.abstractmethod
    def crop(self, frames: np.ndarray, position: str) -> torch.Tensor:
        """[T, H, W, 3] -> [T, 3, size, size], the image at `position` (one of `positions`)."""


@dataclass(frozen=True)
class WindowFamily(CropFamily):
    """A square window of the frame resized to `size`: at the centre, or against a corner."""

    positions: ClassVar[tuple[str, ...]] = ("center", *CORNERS)
    variant_help: ClassVar[str] = "center, hflip, corners tl, tr, bl, br, each optionally mirrored (tl-hflip)"

    @abc.abstractmethod
    def window(self, height: int, width: int) -> int:
        """The side of the window cut from a height x width frame."""

    def crop(self, frames: np.ndarray, position: str) -> torch.Tensor:
        height, width = frames.shape[1:3]
        side = self.window(height, width)
        return square(frames, *anchor(position, height, width, side), side, self.size)


@register_family("resize")
@dataclass(frozen=True)
class Resize(WindowFamily):
    """The square of side min(H, W) resized to `size`: a short-side resize and crop, resampling only the kept square
    (the key-frame view of the video tracks); its corner windows are the ends of the long side."""

    def window(self, height: int, width: int) -> int:
        return min(height, width)


@register_family("clip")
@dataclass(frozen=True)
class Clips(Resize):
    """Clips of consecutive frames for a motion encoder: each frame of a clip cut as `resize` cuts a key frame (the
    decoder has already scaled their short side to `size`, so this only crops), [V, C, L, 3, size, size]."""

    source: ClassVar[str] = "clips"
    encodes: ClassVar[str] = "motion"
    clips: ClassVar[bool] = True

    def pass_shape(self, spec: Any) -> tuple[int, ...]:
        return (spec.clip, 3, self.side, self.side)

    def render(self, clips: np.ndarray, geometries: Sequence[str]) -> torch.Tensor:
        count, length = clips.shape[:2]
        if not count:
            return torch.empty((len(geometries), 0, length, 3, self.size, self.size))
        flat = super().render(clips.reshape(count * length, *clips.shape[2:]), geometries)
        return flat.reshape(len(geometries), count, length, *flat.shape[2:])


class Unshaped(ViewFamily):
    """A family of what has no geometry (sound, measurements of a frame pair): no image side and one variant,
    `center`; paired with mirrored views it serves each of them."""

    variant_help: ClassVar[str] = "center"

    @property
    def side(self) -> int:
        return 0

    @classmethod
    def accepts(cls, geometry: str) -> bool:
        return geometry == "center"


@register_family("audio")
@dataclass(frozen=True)
class AudioWindows(Unshaped):
    """The audio window at each key frame, for an audio encoder: [1, T, S] samples, NaN where a window holds no real
    audio (no stream, or past its end), which the encoder turns into zeros and a presence flag."""

    source: ClassVar[str] = "audio"
    encodes: ClassVar[str] = "audio"
    audio: ClassVar[bool] = True

    def pass_shape(self, spec: Any) -> tuple[int, ...]:
        return (round(spec.audio_seconds * SAMPLE_RATE),)

    def render(self, windows: np.ndarray, geometries: Sequence[str]) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))[None].expand(len(geometries), -1, -1)


MOUTH = (slice(0.6, 0.85), slice(0.35, 0.65))  # the lower centre of a face crop, as fractions of height and width


def _fraction(part: slice, size: int) -> slice:
    """The pixels of `size` that the fractional `part` covers, at least one."""
    start = int(part.start * size)
    return slice(start, max(start + 1, int(part.stop * size)))


@register_family("sync")
@dataclass(frozen=True)
class SyncSeries(ViewFamily):
    """For audio-video sync: per key frame, the mouth region's mean luma over its clip's frames beside the audio's
    loudness over the same frames, [1, C, 2, L]. The mouth is the lower centre of the frame (MOUTH): talking-head
    videos are face crops. Only the series go to the encoder, which measures how one follows the other."""

    size: int = 64
    source: ClassVar[None] = None
    encodes: ClassVar[str] = "sync"
    clips: ClassVar[bool] = True
    audio: ClassVar[bool] = True
    variant_help: ClassVar[str] = "center"

    @property
    def side(self) -> int:
        return self.size

    @classmethod
    def accepts(cls, geometry: str) -> bool:
        return geometry == "center"

    def pass_shape(self, spec: Any) -> tuple[int, ...]:
        return (2, spec.clip)

    def render(self, clip: Any, geometries: Sequence[str]) -> torch.Tensor:
        count, length, height, width = clip.clips.shape[:4]
        region = clip.clips[:, :, _fraction(MOUTH[0], height), _fraction(MOUTH[1], width)]
        luma = luminance(to_float(region.reshape(count * length, *region.shape[2:])))  # [C*L, h, w] in [0, 1]
        mouth = luma.mean(dim=(1, 2)).reshape(count, length).numpy()
        windows = np.nan_to_num(clip.audio[:count])  # [C, S]: absent audio is silence here
        fps = clip.info.get("fps") or 0.0
        per_frame = round(SAMPLE_RATE / fps) if fps else windows.shape[1] // length  # samples under one frame
        span = max(1, min(per_frame, windows.shape[1] // length))
        loudness = np.sqrt(np.square(windows[:, : span * length].reshape(count, length, span)).mean(axis=2))
        series = np.stack([mouth, loudness], axis=1).astype(np.float32)
        return torch.from_numpy(series)[None].expand(len(geometries), -1, -1, -1)


@register_family("aesthetic")
@dataclass(frozen=True)
class Aesthetic(CropFamily):
    """The whole frame resized to size x size: composition and colour survive whole; the aspect ratio is given up
    rather than a third of a 16:9 picture."""

    def crop(self, frames: np.ndarray, position: str) -> torch.Tensor:
        return resample(frames, (self.size, self.size))


@register_family("native")
@dataclass(frozen=True)
class Native(WindowFamily):
    """The size x size crop at native resolution (pixel-level distortions intact), at the centre or a corner; a frame
    smaller than `size` gives its square of the short side, upsampled."""

    def window(self, height: int, width: int) -> int:
        return min(self.size, height, width)


SALIENCY_THUMBNAIL = 128  # long side of the map: spectral residual works on the coarse scale (Hou & Zhang used 64)
SALIENCY_BLUR = 0.04  # smoothing of the map, as a fraction of its long side


def saliency_map(frames: np.ndarray) -> np.ndarray:
    """Spectral-residual saliency (Hou & Zhang, CVPR 2007) of the mean frame, on a thumbnail [h, w] whose long side is
    SALIENCY_THUMBNAIL. Weight-free: what departs from the image's smooth log-amplitude spectrum stands out."""
    height, width = frames.shape[1:3]
    scale = SALIENCY_THUMBNAIL / max(height, width)
    thumb = resample(frames, (max(1, round(height * scale)), max(1, round(width * scale)))).mean(0)
    luma = torch.tensordot(torch.tensor([0.299, 0.587, 0.114]), thumb, dims=1).numpy().astype(np.float64)
    spectrum = np.fft.fft2(luma - luma.mean())  # without its mean, the DC term cannot swamp the map with a constant
    amplitude = np.abs(spectrum)
    log_amplitude = np.log(amplitude + 1e-12)
    residual = log_amplitude - ndimage.uniform_filter(log_amplitude, size=3, mode="nearest")
    phase = np.divide(spectrum, amplitude, out=np.zeros_like(spectrum), where=amplitude > 1e-12)  # absent: silent
    saliency = np.abs(np.fft.ifft2(np.exp(residual) * phase)) ** 2
    return ndimage.gaussian_filter(saliency, sigma=SALIENCY_BLUR * max(saliency.shape))


def salient_window(saliency: np.ndarray, window: int) -> tuple[int, int]:
    """(top, left) of the window x window square holding the most saliency, from an integral image; among equal
    windows the one nearest the centre, so a map without a peak falls back to the centre crop."""
    h, w = saliency.shape
    window = min(window, h, w)
    integral = np.pad(saliency.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    ends, starts = slice(window, None), slice(None, -window)
    sums = integral[ends, ends] - integral[starts, ends] - integral[ends, starts] + integral[starts, starts]
    tops, lefts = np.nonzero(sums >= sums.max() * (1 - 1e-9))
    nearest = np.argmin((tops - (h - window) / 2) ** 2 + (lefts - (w - window) / 2) ** 2)
    return int(tops[nearest]), int(lefts[nearest])


@register_family("salient")
@dataclass(frozen=True)
class Salient(CropFamily):
    """The native-resolution size x size crop centred on what a spectral-residual saliency map finds most salient
    (one window for all frames of a clip). The UHD-IQA winner's released "saliency" view was a plain centre crop."""

    def crop(self, frames: np.ndarray, position: str) -> torch.Tensor:
        height, width = frames.shape[1:3]
        side = min(self.size, height, width)
        saliency = saliency_map(frames)
        scale = saliency.shape[1] / width
        top, left = salient_window(saliency, max(1, round(side * scale)))
        top = min(max(round(top / scale), 0), height - side)
        left = min(max(round(left / scale), 0), width - side)
        return square(frames, top, left, side, self.size)


_DRAW = re.compile(r"s(\d+)(-hflip)?")


@register_family("fragments")
@dataclass(frozen=True)
class Fragments(ViewFamily):
    """Grid mini-patch sampling (FAST-VQA): a grid x grid lattice of cells, one patch x patch native-resolution patch
    from each at a seeded random offset, assembled into one (grid * patch)-pixel image. Draw `s<k>` uses the offsets of
    seed (fragment_seed, k) for every item, so draws are reproducible test-time views; all frames share them."""

    grid: int
    patch: int
    fragment_seed: int
    variant_help: ClassVar[str] = "seeded draws s0, s1, ..., each optionally mirrored (s0-hflip)"

    def __post_init__(self):
        if self.grid < 1 or self.patch < 1:
            raise ValueError(f"fragments: grid={self.grid} and patch={self.patch} must be >= 1")

    @property
    def side(self) -> int:
        return self.grid * self.patch

    @classmethod
    def accepts(cls, geometry: str) -> bool:
        return _DRAW.fullmatch(geometry) is not None

    def origins(self, height: int, width: int, draw: int) -> tuple[np.ndarray, np.ndarray]:
        """Top and left [grid, grid] of every patch of a draw; patch (i, j) lies inside cell (i, j)."""
        cell_h, cell_w = height // self.grid, width // self.grid
        rng = np.random.default_rng([self.fragment_seed, draw])
        cells = np.arange(self.grid)
        top = cells[:, None] * cell_h + rng.integers(0, cell_h - self.patch + 1, size=(self.grid, self.grid))
        left = cells[None, :] * cell_w + rng.integers(0, cell_w - self.patch + 1, size=(self.grid, self.grid))
        return top, left

    def render(self, frames: np.ndarray, geometries: Sequence[str]) -> torch.Tensor:
        height, width = frames.shape[1:3]
        if min(height, width) < self.side:  # too small for the lattice: upsample it, as FAST-VQA does
            scale = self.side / min(height, width)
            size = (max(self.side, round(height * scale)), max(self.side, round(width * scale)))
            frames = resample(frames, size).permute(0, 2, 3, 1).numpy()
            height, width = size
        offsets = np.arange(self.patch)
        views = []
        for geometry in geometries:
            draw, flip = _DRAW.fullmatch(geometry).groups()
            top, left = self.origins(height, width, int(draw))
            rows = top[:, :, None, None] + offsets[:, None]  # [grid, grid, patch, 1]
            cols = left[:, :, None, None] + offsets[None, :]  # [grid, grid, 1, patch]
            patches = frames[:, rows, cols]  # [T, grid, grid, patch, patch, 3]: only the kept pixels are read
            image = patches.transpose(0, 1, 3, 2, 4, 5).reshape(len(frames), self.side, self.side, -1)
            pixels = to_float(image)
            views.append(pixels.flip(-1) if flip else pixels)
        return torch.stack(views)
