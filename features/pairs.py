"""Full-reference pairs: a distorted video decoded with its reference on the same key frames, and the two encoder
families that compare them.

A pair is read by one decoder for both members, on the same sampling, so each key frame of the distorted video meets
the reference's frame at the same time (the first frame at or after each key time in either stream: where the frame
rates differ, the timestamps map one onto the other). What would make the comparison meaningless is refused with
the files named: members of different lengths, a reference smaller than its distorted version (the distorted one is
scaled up to the reference, never the reverse), or members in different dynamic ranges.

- `pair` (view family) crops the same square of both members at `size` for `dists:`-style encoders (PairStatistics):
  per stage of any timm backbone, DISTS's structure and texture terms between the two feature maps (Ding et al.
  2020; the ICME 2025 FR winner's statistic over Swin-B stages).
- `fr` (view family) measures each key-frame pair with FFmpeg's own filters (features.fr.pair_metrics) in two
  domains: luma code values, and perceptually uniform luminance (PU of absolute cd/m^2, so SDR and HDR pairs sit on
  one axis); the `ffmpeg` encoder passes the measurements through.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import av
import numpy as np
import torch

from features.backbones import FrozenEncoder, TimmBackbone, at_input_size, timm_backbone
from features.colour import LUMA_WEIGHTS, PQ_PEAK, pu_encode
from features.decode import Clip, Decoder, FrameSampling, MediaError, open_container, video_stream
from features.fr import FR_METRICS, pair_metrics
from features.hdr import ColourTags, linear_light
from features.views import CropFamily, Resize, Unshaped, register_family


def _frames_and_rate(path: str) -> tuple[int, float]:
    """(frames, frames per second) of the first video stream, from the container (no decoding); frames 0 where the
    container does not count them, then estimated from the duration."""
    with open_container(path) as container:
        stream = video_stream(container, path)
        rate = float(stream.average_rate or 0) or 25.0
        frames = stream.frames
        if not frames and stream.duration is not None:
            frames = round(float(stream.duration * stream.time_base) * rate)
        elif not frames and container.duration:
            frames = round(container.duration / av.time_base * rate)
    return int(frames), rate


def check_lengths(path: str, reference: str) -> None:
    """Refuses members whose durations differ by more than a frame of the slower one: a cut or a truncated file,
    whose key frames would meet frames of other moments."""
    (frames, rate), (ref_frames, ref_rate) = _frames_and_rate(path), _frames_and_rate(reference)
    if frames and ref_frames and abs(frames / rate - ref_frames / ref_rate) > 1.0 / min(rate, ref_rate) + 1e-6:
        raise MediaError(
            path,
            f"{frames} frames at {rate:g} fps ({frames / rate:.2f} s) against its reference {reference}'s "
            f"{ref_frames} at {ref_rate:g} fps ({ref_frames / ref_rate:.2f} s): a pair must cover the same clip",
        )


def read_pair(decoder: Decoder, path: str, reference: str, sampling: FrameSampling, threads: int = 0) -> Clip:
    """The distorted clip with `reference` attached: the reference read by the same decoder on the same sampling."""
    check_lengths(path, reference)
    clip = decoder.read(path, sampling, threads)
    ref = decoder.read(reference, sampling, threads)
    (height, width), (ref_height, ref_width) = clip.frames.shape[1:3], ref.frames.shape[1:3]
    if ref_height < height or ref_width < width:
        raise MediaError(
            path,
            f"{width}x{height}, larger than its reference {reference} ({ref_width}x{ref_height}): the distorted video "
            "is scaled to its reference's size, so the reference must be the larger",
        )
    ranges = clip.info.get("colour", {}).get("transfer"), ref.info.get("colour", {}).get("transfer")
    if ranges[0] != ranges[1]:
        reason = f"transfer {ranges[0]} but its reference {reference}'s is {ranges[1]}: a pair shares its range"
        raise MediaError(path, reason)
    if len(ref.frames) != len(clip.frames):
        raise MediaError(path, f"{len(clip.frames)} key frame(s) but its reference {reference} gives {len(ref.frames)}")
    return dataclasses.replace(clip, reference=ref)


def _reference_of(clip: Any, family: str) -> Clip:
    if getattr(clip, "reference", None) is None:
        raise ValueError(f"view family {family} compares a pair: the items need a reference (a `reference` column)")
    return clip.reference


@register_family("pair")
@dataclass(frozen=True)
class PairCrops(CropFamily):
    """The same square of the distorted frame and its reference's (the `resize` geometry of each, so the same part of
    the picture whatever their sizes), [V, T, 2, 3, size, size]; `hflip` mirrors both."""

    source: ClassVar[None] = None
    encodes: ClassVar[str] = "pair"

    def crop(self, frames: np.ndarray, position: str) -> torch.Tensor:
        return Resize(self.size).crop(frames, position)

    def pass_shape(self, spec: Any) -> tuple[int, ...]:
        return (2, 3, self.size, self.size)

    def render(self, clip: Any, geometries: Sequence[str]) -> torch.Tensor:
        reference = _reference_of(clip, self.name)
        return torch.stack([super().render(clip.frames, geometries), super().render(reference.frames, geometries)], 2)


# BT.2020 luminance weights of linear RGB (BT.2020 Table 4): every linear_light frame is in BT.2020 primaries.
_KR, _KB = LUMA_WEIGHTS["bt2020nc"]
_LUMINANCE = np.array([_KR, 1 - _KR - _KB, _KB])
_FULL_SCALE = 65535.0
DOMAINS = ("code", "pu")


def _domains(planes: Any, tags: ColourTags) -> tuple[np.ndarray, np.ndarray]:
    """A frame's luma as code values (E'Y from the Y plane, by its range: the same scale at 8 and 10 bits) and as
    perceptually uniform luminance (PU of cd/m^2), both uint16 on the full 16-bit scale."""
    if tags.range == "limited":
        scale = 2.0 ** (tags.bit_depth - 8)
        luma = (planes[0] - 16 * scale) / (219 * scale)
    else:
        luma = planes[0] / (2.0**tags.bit_depth - 1)
    nits = np.tensordot(_LUMINANCE, linear_light(planes, tags).astype(np.float64), axes=1) * PQ_PEAK
    return tuple(np.round(np.clip(x, 0, 1) * _FULL_SCALE).astype(np.uint16) for x in (luma, pu_encode(nits)))


@register_family("fr")
@dataclass(frozen=True)
class FrameMetrics(Unshaped):
    """Per key-frame pair, FFmpeg's full-reference metrics (FR_METRICS) on luma code values, then on PU luminance,
    [1, T, 2 * len(FR_METRICS)]; from the native-depth planes the hdr decoder keeps, never from 8-bit pictures."""

    source: ClassVar[None] = None
    encodes: ClassVar[str] = "fr"

    def pass_shape(self, spec: Any) -> tuple[int, ...]:
        return (len(DOMAINS) * len(FR_METRICS),)

    def render(self, clip: Any, geometries: Sequence[str]) -> torch.Tensor:
        reference = _reference_of(clip, self.name)
        if clip.planes is None or reference.planes is None:
            raise ValueError("view family fr measures native-depth planes: the track's media need the hdr decoder")
        members = []
        for member in (clip, reference):
            tags = ColourTags(**member.info["colour"])
            members.append([_domains(planes, tags) for planes in member.planes])
        columns = [pair_metrics([d[k] for d in members[0]], [r[k] for r in members[1]]) for k in range(len(DOMAINS))]
        metrics = torch.from_numpy(np.concatenate(columns, axis=1).astype(np.float32))
        return metrics[None].expand(len(geometries), -1, -1)


# --- encoders ---------------------------------------------------------------------------------------------------------

DISTS_C = 1e-6  # DISTS's stabilising constants c1 = c2


class PairStatistics(FrozenEncoder):
    """[B, 2, 3, S, S] (distorted, reference) in [0, 1] -> [B, 2 * channels]: for the input itself and each stage of
    a timm backbone, per channel, DISTS's structure term (2 mu_x mu_y + c) / (mu_x^2 + mu_y^2 + c) and texture term
    (2 sigma_xy + c) / (sigma_x^2 + sigma_y^2 + c) over the feature map. Both are 1 for identical members; a frozen
    random backbone already makes them differ with blur, noise and blocking, and trained stages sharpen them."""

    def __init__(self, backbone: TimmBackbone):
        super().__init__()
        self.backbone = backbone
        self.channels = [3, *(int(info["num_chs"]) for info in backbone.model.feature_info)]
        self.dim = 2 * sum(self.channels)

    def identity(self) -> dict[str, Any]:
        return {"statistic": "dists-structure-texture", "c": DISTS_C, "backbone": self.backbone.identity()}

    def check(self, pairs: torch.Tensor) -> None:
        if pairs.ndim != 5 or pairs.shape[1:3] != (2, 3) or not pairs.is_floating_point():
            raise ValueError(f"PairStatistics expects float pairs [B, 2, 3, S, S] in [0, 1], got {tuple(pairs.shape)}")

    def encode(self, pairs: torch.Tensor) -> torch.Tensor:
        backbone = self.backbone
        images = at_input_size(pairs.flatten(0, 1), backbone)  # [2B, 3, S, S]: members interleaved, one pass
        stages = backbone.model.forward_intermediates((images - backbone.mean) / backbone.std, intermediates_only=True)
        terms = []
        for features in [images, *stages]:
            x, y = features.float().flatten(2).unflatten(0, (-1, 2)).unbind(1)  # [B, C, N] each
            mx, my = x.mean(-1), y.mean(-1)
            vx, vy = x.var(-1, correction=0), y.var(-1, correction=0)
            cov = ((x - mx[..., None]) * (y - my[..., None])).mean(-1)
            terms += [(2 * mx * my + DISTS_C) / (mx**2 + my**2 + DISTS_C), (2 * cov + DISTS_C) / (vx + vy + DISTS_C)]
        return torch.cat(terms, dim=1)


def create_pair_encoder(name: str, weights: str = "random", seed: int = 0) -> PairStatistics:
    """`dists:<timm model>` (weights as for backbones: random, hub or a local file)."""
    prefix, _, model = name.partition(":")
    if prefix != "dists" or not model:
        raise ValueError(f"pair encoder {name!r}: expected dists:<timm model>, e.g. dists:resnet18")
    return PairStatistics(timm_backbone(model, weights, seed)).eval().requires_grad_(False)


class MetricVectors(FrozenEncoder):
    """The `fr` family's measurements as they are ([B, D] in, [B, D] out): FFmpeg has already done the work in the
    decoding workers; the heads standardise each column."""

    def __init__(self):
        super().__init__()
        self.dim = len(DOMAINS) * len(FR_METRICS)

    def identity(self) -> dict[str, Any]:
        versions = {"ffmpeg": av.ffmpeg_version_info, "av": av.__version__}
        return {"metrics": list(FR_METRICS), "domains": list(DOMAINS), **versions}

    def check(self, metrics: torch.Tensor) -> None:
        if metrics.ndim != 2 or metrics.shape[1] != self.dim:
            raise ValueError(f"MetricVectors expects [B, {self.dim}] measurements, got {tuple(metrics.shape)}")

    def encode(self, metrics: torch.Tensor) -> torch.Tensor:
        return metrics


def create_fr_encoder(name: str, weights: str = "random", seed: int = 0) -> MetricVectors:
    """`ffmpeg`, the only one; weight-free (weights are ignored)."""
    if name != "ffmpeg":
        raise ValueError(f"full-reference encoder {name!r}: the one there is is `ffmpeg` (FFmpeg's own filters)")
    return MetricVectors().eval()
