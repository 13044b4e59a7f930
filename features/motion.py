"""Frozen motion encoders: clips of consecutive frames in, one feature vector per clip out.

The image backbones see single key frames, so they are blind to what quality loses between frames: judder,
frozen or repeated frames, flicker, temporal noise. A motion encoder sees L consecutive frames at once.
As with `Backbone.identity()`, an encoder's identity is part of the cache key: it names everything that
changes the vectors (weights content, normalisation, resolution, code version) and never where a file lives.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from features.backbones import EncoderRegistry, FrozenEncoder, WeightsNotFound, blockiness
from features.fingerprint import file_sha256
from features.nss import DIFFERENCE_NAMES, difference_statistics, luminance

if TYPE_CHECKING:
    from torchvision.models._api import WeightsEnum


class MotionEncoder(FrozenEncoder):
    """Frozen clip encoder: [B,L,3,S,S] float RGB in [0,1] -> [B, dim] float32.

    `min_frames` is the shortest clip an encoder with no fixed `frames` can take (S3D's pooling needs 14).
    """

    size: int | None = None
    frames: int | None = None
    min_frames: int = 1

    def expected_shape(self) -> str:
        """The input this encoder takes, for error messages."""
        length = "L" if self.frames is None else str(self.frames)
        notes = [f"L >= {self.min_frames}"] if self.frames is None and self.min_frames > 1 else []
        notes += [f"any S, resized to {self.size}"] if self.size is not None else []
        return f"[B,{length},3,S,S]" + (f" ({'; '.join(notes)})" if notes else "")

    def check(self, clips: torch.Tensor) -> None:
        if not (
            clips.ndim == 5
            and clips.shape[2] == 3
            and clips.is_floating_point()
            and clips.shape[1] == (self.frames or clips.shape[1])
            and clips.shape[1] >= self.min_frames
        ):
            raise ValueError(
                f"{type(self).__name__} expects float RGB clips shaped {self.expected_shape()}, in [0,1]; "
                f"got {clips.dtype} {tuple(clips.shape)}"
            )


# weights: "random" (seeded init), "hub" (the torch hub cache only), or a weights file
MOTION_ENCODERS = EncoderRegistry("motion encoder")
register_motion_encoder = MOTION_ENCODERS.register
create_motion_encoder = MOTION_ENCODERS.create
list_motion_encoders = MOTION_ENCODERS.names


# --------------------------------------------------------------------------------------------------------
# Weight-free temporal statistics.

_SAME = 1.0 / 255.0  # frames whose mean absolute luma difference is under one 8-bit code value count as equal
_CODE_VALUES = 255.0  # P.910 quotes TI on the 8-bit scale, so TI is given in code values to compare with it
_JUMP = 1.4  # a pair changing this many times as much as the clip's typical moving pair is a jump: a dropped frame
_JUMP_POOL = 4  # jumps are judged on 4x4 means, where a pair's change grows with the distance moved (fine texture
# decorrelates within two pixels, so at full resolution twice the motion is barely more change)


def _energy(luma: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between consecutive frames of [B,L,H,W] -> [B,L-1]."""
    return luma.diff(dim=1).abs().mean(dim=(-2, -1))


def _grid_contrast(maps: torch.Tensor) -> torch.Tensor:
    """The stronger of the horizontal and vertical 8-px grid contrasts of each map of [B,T,H,W] -> [B,T]."""
    return blockiness(maps.flatten(0, 1)).amax(dim=1).unflatten(0, maps.shape[:2])


def _moments(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, population std and max of each row of [B,N], N >= 1."""
    return values.mean(dim=1), values.std(dim=1, correction=0), values.amax(dim=1)


class TemporalStats(MotionEncoder):
    """Classic temporal statistics of BT.601 luma: frame-difference energy, flicker, frozen, repeated and dropped
    frames, P.910 temporal information, the energy again at half resolution, the natural-scene statistics of the
    frame differences (features.nss.difference_statistics) and the codec's block grid over time.

    Energy is the mean absolute luma difference of consecutive frames (mean, std, max over the L-1 pairs), flicker
    the std over frames of the mean luma and its mean absolute change, both on the [0,1] scale; `frozen` is the
    fraction of pairs under `_SAME`, `repeated` the fraction of the L frames within `_SAME` of an earlier frame other
    than their predecessor (a still clip repeats from its third frame on); TI is P.910's (spatial std of the frame
    difference, max over time) and its mean over time, in 8-bit code values. Full and half resolution together
    separate the kinds of change: per-frame noise is halved by a 2x2 average, coherent motion of structure larger
    than two pixels is not. Jerkiness (TLVQM's cheap measures): `jumps` is the share of pairs changing more than
    `_JUMP` times the median of the clip's moving (not frozen) pairs at quarter resolution, since a dropped frame
    doubles the motion of its pair; `jump_ratio` is the log of the largest pair's change over that median; held frames
    are `frozen`. Blocking over time is the mean and std over frames of the stronger 8-px grid contrast
    (features.backbones.blockiness) and that contrast in the frame differences, where a codec's predicted blocks show
    before they show in a frame. A clip of one frame has no temporal statistics: every value is 0.
    Bump `version` whenever a formula changes: it invalidates cached features.
    """

    names: tuple[str, ...] = (
        "energy_mean", "energy_std", "energy_max",
        "flicker_std", "flicker_change",
        "frozen", "repeated",
        "ti_max", "ti_mean",
        "energy_mean@s2", "energy_std@s2", "energy_max@s2",
        "jumps", "jump_ratio",
        "block_mean", "block_std", "block_diff",
        *DIFFERENCE_NAMES,
    )  # fmt: skip
    dim = len(names)
    version = 2
    min_side = 2  # the half scale needs one 2x2 block

    def identity(self) -> dict[str, Any]:
        return {"name": "temporal_stats", "luma": "bt601", "same_threshold": _SAME, "version": self.version}

    def encode(self, clips: torch.Tensor) -> torch.Tensor:
        batch, length = clips.shape[:2]
        if min(clips.shape[-2:]) < self.min_side:
            raise ValueError(f"temporal_stats needs frames of at least 2x2 pixels, got {tuple(clips.shape)}")
        if length == 1:
            return clips.new_zeros(batch, self.dim)
        y = luminance(clips.flatten(0, 1)).unflatten(0, (batch, length))  # [B,L,H,W]
        energy = _energy(y)
        brightness = y.mean(dim=(-2, -1))
        ti = y.diff(dim=1).flatten(2).std(dim=2, correction=0) * _CODE_VALUES
        pixels = y.flatten(2)
        # Mean absolute difference between every pair of frames; cdist's p=1 path needs no [B,L,L,H*W] tensor.
        distance = torch.cdist(pixels, pixels, p=1.0) / pixels.shape[-1]
        earlier = torch.ones(length, length, dtype=torch.bool, device=y.device).tril(diagonal=-2)
        features = dict(zip(("energy_mean", "energy_std", "energy_max"), _moments(energy)))
        features |= {
            "flicker_std": brightness.std(dim=1, correction=0),
            "flicker_change": brightness.diff(dim=1).abs().mean(dim=1),
            "frozen": (energy < _SAME).float().mean(dim=1),
            "repeated": ((distance < _SAME) & earlier).any(dim=2).float().mean(dim=1),
            "ti_max": ti.amax(dim=1),
            "ti_mean": ti.mean(dim=1),
        }
        half = _energy(F.avg_pool2d(y, 2))
        features |= dict(zip(("energy_mean@s2", "energy_std@s2", "energy_max@s2"), _moments(half)))
        coarse = _energy(F.avg_pool2d(y, min(_JUMP_POOL, *y.shape[-2:])))
        moving = energy > _SAME
        median = coarse.where(moving, torch.nan).nanmedian(dim=1, keepdim=True).values.nan_to_num(0.0)
        blocks = _grid_contrast(y)
        features |= {
            "jumps": (moving & (coarse > _JUMP * median)).float().mean(dim=1),
            "jump_ratio": torch.log((coarse.amax(dim=1) + _SAME) / (median[:, 0] + _SAME)),
            "block_mean": blocks.mean(dim=1),
            "block_std": blocks.std(dim=1, correction=0),
            "block_diff": _grid_contrast(y.diff(dim=1)).mean(dim=1),
            **difference_statistics(y),
        }
        return torch.stack([features[name] for name in self.names], dim=1)


@register_motion_encoder("temporal_stats")
def temporal_stats(weights: str, seed: int) -> MotionEncoder:
    if weights not in ("none", "random"):
        raise ValueError(f"temporal_stats has no weights (it is weight-free): use weights='none', got {weights!r}")
    return TemporalStats()


# --------------------------------------------------------------------------------------------------------
# torchvision's Kinetics-400 video classifiers without their classifier.


@dataclass(frozen=True)
class _VideoModel:
    """A torchvision video classifier, named: torchvision's model zoo is imported when one is built (its import costs
    2 s, torch's compiler included, of every process that imports this module's registry)."""

    name: str  # the builder in torchvision.models.video
    weights_class: str  # its weights enum there, whose Kinetics-400 member gives the file, input size and normalisation
    head: str  # the classifier attribute, replaced by identity
    dim: int  # width of the pooled feature the classifier took
    frames: int | None = None  # MViT's positional encoding is built for exactly 16 frames

    @property
    def build(self) -> Callable[..., nn.Module]:
        from torchvision.models import video

        return getattr(video, self.name)

    @property
    def weights(self) -> WeightsEnum:
        from torchvision.models import video

        return getattr(video, self.weights_class).KINETICS400_V1


VIDEO_MODELS = {
    model.name: model
    for model in (
        _VideoModel("r3d_18", "R3D_18_Weights", "fc", 512),
        _VideoModel("mc3_18", "MC3_18_Weights", "fc", 512),
        _VideoModel("r2plus1d_18", "R2Plus1D_18_Weights", "fc", 512),
        _VideoModel("s3d", "S3D_Weights", "classifier", 1024),
        _VideoModel("mvit_v2_s", "MViT_V2_S_Weights", "head", 768, frames=16),
        _VideoModel("swin3d_t", "Swin3D_T_Weights", "head", 768),
    )
}


class TorchvisionVideoEncoder(MotionEncoder):
    """A torchvision video classifier's pooled feature, at the crop size and normalisation of its weights.

    Clips of another side are resized here (bilinear, antialiased) rather than refused, so any view size reaches
    the model; the size is in the identity because it changes the vectors. The normalisation is read from the
    weights' own transforms: it is not one Kinetics constant (MViT uses 0.45/0.225, Swin3D ImageNet's).
    """

    version = 1

    def __init__(self, name: str, model: nn.Module, spec: _VideoModel, weights: str) -> None:
        super().__init__()
        transform = spec.weights.transforms()
        # Channels-last-3d is oneDNN's native layout: S3D runs 1.9x faster on CPU, the ResNets 5-15%.
        self.model = model.to(memory_format=torch.channels_last_3d)
        self.dim = spec.dim
        self.size = int(transform.crop_size[0])
        self.frames = spec.frames
        self.min_frames = int(spec.weights.meta.get("min_temporal_size", 1))
        self.register_buffer("mean", torch.tensor(transform.mean).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(transform.std).view(1, 1, 3, 1, 1), persistent=False)
        self._identity = {
            "name": name,
            "weights": weights,
            "mean": list(transform.mean),
            "std": list(transform.std),
            "size": self.size,
            "version": self.version,
        }

    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    def encode(self, clips: torch.Tensor) -> torch.Tensor:
        batch, length = clips.shape[:2]
        if tuple(clips.shape[-2:]) != (self.size, self.size):
            frames = F.interpolate(clips.flatten(0, 1), size=(self.size, self.size), mode="bilinear", antialias=True)
            clips = frames.unflatten(0, (batch, length))
        x = ((clips - self.mean) / self.std).permute(0, 2, 1, 3, 4)  # the models take [B,3,L,H,W]
        return self.model(x.contiguous(memory_format=torch.channels_last_3d))


_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")


def torchvision_encoder(name: str, weights: str = "random", seed: int = 0) -> TorchvisionVideoEncoder:
    """A torchvision video model as a motion encoder; see `create_motion_encoder` for `weights`."""
    spec = VIDEO_MODELS[name]
    # Seed the init without disturbing the caller's RNG: fork the CPU generator, and seed only it (torch.manual_seed
    # would also reseed every CUDA generator, which fork_rng(devices=[]) does not restore).
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        model = spec.build(weights=None)
    setattr(model, spec.head, nn.Identity())
    if weights == "random":
        return TorchvisionVideoEncoder(name, model, spec, f"random:seed{seed}")
    if weights == "hub":
        _load_weights_file(model, spec, hub_checkpoint(name))
        return TorchvisionVideoEncoder(name, model, spec, repr(spec.weights))
    path = Path(weights)
    if not path.is_file():
        raise WeightsNotFound(
            f"weights file for {name!r} not found: {path} "
            f"(weights must be 'random', 'hub' or the path of a {'/'.join(_WEIGHT_SUFFIXES)} file)"
        )
    _load_weights_file(model, spec, path)
    return TorchvisionVideoEncoder(name, model, spec, f"sha256:{file_sha256(path)}")


def hub_file(name: str) -> Path:
    """Where the torch hub cache keeps the model's Kinetics-400 weights, whether they are there or not."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(VIDEO_MODELS[name].weights.url)


def hub_checkpoint(name: str) -> Path:
    """The torch hub cache file of the model's Kinetics-400 weights; a pure filesystem lookup, never a download."""
    spec = VIDEO_MODELS[name]
    path = hub_file(name)
    filename = path.name
    if not path.is_file():
        enum = type(spec.weights).__name__
        fetch = f"from torchvision.models.video import {name}, {enum}; {name}(weights={spec.weights!r})"
        raise WeightsNotFound(
            f"no {spec.weights!r} weights for {name!r} in the torch hub cache: expected {path} "
            f"(TORCH_HOME selects another cache). This machine does not download. To fix: on a machine with "
            f'internet run `python -c "{fetch}"`, copy ~/.cache/torch/hub/checkpoints/{filename} to {path}, '
            f"or pass weights=/path/to/{filename}"
        )
    return path


def _load_weights_file(model: nn.Module, spec: _VideoModel, path: Path) -> None:
    """Load a torchvision-format state dict strictly, apart from the classifier the encoder drops."""
    if path.suffix not in _WEIGHT_SUFFIXES:
        raise ValueError(f"{path}: unsupported weights file type; expected one of {', '.join(_WEIGHT_SUFFIXES)}")
    try:
        if path.suffix == ".safetensors":
            state = safetensors.torch.load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
    except Exception as error:
        raise ValueError(f"{path}: cannot load weights safely: {error}") from error
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict (a mapping of names to tensors) but a {type(state).__name__}")
    head = f"{spec.head}."
    try:
        model.load_state_dict({key: value for key, value in state.items() if not key.startswith(head)})
    except RuntimeError as error:  # missing, unexpected or misshapen keys: another model's weights
        raise ValueError(f"{path}: not a state dict of torchvision's {spec.build.__name__}: {error}") from error


for _name in VIDEO_MODELS:
    register_motion_encoder(_name)(functools.partial(torchvision_encoder, _name))
