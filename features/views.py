"""View families: how the decoded frames of one item become the square images a backbone sees.

A family is a geometry (`resize`, `aesthetic`, `native`, `salient`, `fragments`) and one feature set in the cache; its
variants are rows of that set: `center` and `hflip` for the crop families, seeded draws `s0`, `s1`, ... (optionally
`s0-hflip`) for fragments. A family's parameters are the fields of its dataclass, named as in `FeatureSpec`, so the
cache key covers exactly the geometry that changes its pixels.

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

from workbench.registry import Registry

FAMILIES: Registry[type[ViewFamily]] = Registry("view family")


def register_family(name: str) -> Callable[[type[ViewFamily]], type[ViewFamily]]:
    def decorate(cls: type[ViewFamily]) -> type[ViewFamily]:
        cls.name = name
        return FAMILIES.register(name)(cls)

    return decorate


def view_family(spec: Any) -> ViewFamily:
    """The family `spec.view`, its parameters read from the same-named attributes of `spec` (a FeatureSpec)."""
    cls = FAMILIES.get(spec.view)
    return cls(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(cls)})


def split_variants(families: Sequence[ViewFamily], views: Sequence[str]) -> list[tuple[str, ...]]:
    """The variants each family takes from `views`, in their given order; every view must belong to some family and
    every family must get one, so `views=center,hflip,s0,s1` serves aesthetic+fragments at once."""
    if len(set(views)) != len(views):
        raise ValueError(f"views {list(views)} name a view twice")
    names = ", ".join(f.name for f in families)
    orphans = [v for v in views if not any(f.accepts(v) for f in families)]
    if orphans:
        takes = "; ".join(f"{f.name} takes {f.variant_help}" for f in families)
        raise ValueError(f"view(s) {', '.join(orphans)} belong to none of the view families {names} ({takes})")
    chosen = [tuple(v for v in views if f.accepts(v)) for f in families]
    for family, variants in zip(families, chosen, strict=True):
        if not variants:
            raise ValueError(
                f"view family {family.name} gets none of views {', '.join(views)}; it takes {family.variant_help}"
            )
    return chosen


# --- pixels -----------------------------------------------------------------------------------------------------------


def _unit(dtype: np.dtype) -> float:
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def to_float(frames: np.ndarray) -> torch.Tensor:
    """[T, H, W, 3] uint8/uint16 (or float in [0, 1]) -> [T, 3, H, W] float32 in [0, 1], copying only what it gets."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(_unit(frames.dtype))


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

    @property
    @abc.abstractmethod
    def side(self) -> int:
        """The side of the square images the family makes."""

    @abc.abstractmethod
    def accepts(self, variant: str) -> bool: ...

    @abc.abstractmethod
    def render(self, frames: np.ndarray, variants: Sequence[str]) -> torch.Tensor:
        """[T, H, W, 3] uint8/uint16 -> [V, T, 3, side, side] float32 in [0, 1], one row per variant."""


_FLIPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"center": lambda x: x, "hflip": lambda x: x.flip(-1)}


@dataclass(frozen=True)
class CropFamily(ViewFamily):
    """One square image per frame; the variants are that image and its mirror."""

    size: int
    variant_help: ClassVar[str] = ", ".join(_FLIPS)

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"{self.name}: size={self.size} must be >= 1")

    @property
    def side(self) -> int:
        return self.size

    def accepts(self, variant: str) -> bool:
        return variant in _FLIPS

    def render(self, frames: np.ndarray, variants: Sequence[str]) -> torch.Tensor:
        base = self.base(frames)
        return torch.stack([_FLIPS[v](base) for v in variants])

    @abc.abstractmethod
    def base(self, frames: np.ndarray) -> torch.Tensor:
        """[T, H, W, 3] -> [T, 3, size, size]."""


@register_family("resize")
@dataclass(frozen=True)
class Resize(CropFamily):
    """The centre square of side min(H, W) resized to `size`: a short-side resize and centre crop, resampling only the
    kept square (the key-frame view of the video tracks)."""

    def base(self, frames: np.ndarray) -> torch.Tensor:
        height, width = frames.shape[1:3]
        side = min(height, width)
        return square(frames, (height - side) // 2, (width - side) // 2, side, self.size)


@register_family("aesthetic")
@dataclass(frozen=True)
class Aesthetic(CropFamily):
    """The whole frame resized to size x size: composition and colour survive whole; the aspect ratio is given up
    rather than a third of a 16:9 picture."""

    def base(self, frames: np.ndarray) -> torch.Tensor:
        return resample(frames, (self.size, self.size))


@register_family("native")
@dataclass(frozen=True)
class Native(CropFamily):
    """The centre size x size crop at native resolution (pixel-level distortions intact); a frame smaller than `size`
    gives its centre square, upsampled."""

    def base(self, frames: np.ndarray) -> torch.Tensor:
        height, width = frames.shape[1:3]
        side = min(self.size, height, width)
        return square(frames, (height - side) // 2, (width - side) // 2, side, self.size)


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

    def base(self, frames: np.ndarray) -> torch.Tensor:
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

    def accepts(self, variant: str) -> bool:
        return _DRAW.fullmatch(variant) is not None

    def origins(self, height: int, width: int, draw: int) -> tuple[np.ndarray, np.ndarray]:
        """Top and left [grid, grid] of every patch of a draw; patch (i, j) lies inside cell (i, j)."""
        cell_h, cell_w = height // self.grid, width // self.grid
        rng = np.random.default_rng([self.fragment_seed, draw])
        cells = np.arange(self.grid)
        top = cells[:, None] * cell_h + rng.integers(0, cell_h - self.patch + 1, size=(self.grid, self.grid))
        left = cells[None, :] * cell_w + rng.integers(0, cell_w - self.patch + 1, size=(self.grid, self.grid))
        return top, left

    def render(self, frames: np.ndarray, variants: Sequence[str]) -> torch.Tensor:
        height, width = frames.shape[1:3]
        if min(height, width) < self.side:  # too small for the lattice: upsample it, as FAST-VQA does
            scale = self.side / min(height, width)
            size = (max(self.side, round(height * scale)), max(self.side, round(width * scale)))
            frames = resample(frames, size).permute(0, 2, 3, 1).numpy()
            height, width = size
        offsets = np.arange(self.patch)
        views = []
        for variant in variants:
            draw, flip = _DRAW.fullmatch(variant).groups()
            top, left = self.origins(height, width, int(draw))
            rows = top[:, :, None, None] + offsets[:, None]  # [grid, grid, patch, 1]
            cols = left[:, :, None, None] + offsets[None, :]  # [grid, grid, 1, patch]
            patches = frames[:, rows, cols]  # [T, grid, grid, patch, patch, 3]: only the kept pixels are read
            image = patches.transpose(0, 1, 3, 2, 4, 5).reshape(len(frames), self.side, self.side, -1)
            pixels = to_float(image)
            views.append(pixels.flip(-1) if flip else pixels)
        return torch.stack(views)
