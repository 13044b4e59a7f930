"""Frozen image encoders: a batch of view images in, one feature vector per image out.

Features are cached on disk keyed by `Backbone.identity()`, so an identity must capture everything that
changes the vectors (weights hash, normalisation, resolution, code version) and nothing that does not
(such as where a weights file happens to live).

timm is imported where a model is built, not with this module: every process that reads the cache imports this
module (through the feature specs), and timm with torchvision's model zoo cost about 2.5 s of each start, paid by a
training run on cached features or a weight-free predictor for nothing. tests/test_layers.py holds them to it.
"""

from __future__ import annotations

import abc
import difflib
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from torch import nn

from common.registry import Registry
from common.tables import examples
from features.fingerprint import file_sha256
from features.nss import (
    BRISQUE_NAMES,
    COLOUR_NAMES,
    GMLOG_NAMES,
    blur_score,
    brisque_statistics,
    colour_cast_statistics,
    correlate,
    gmlog_statistics,
    luminance,
    mean_var,
    mscn,
    neighbour_products,
    noise_floor,
)


class WeightsNotFound(RuntimeError):
    """Pretrained weights are not on this machine (which has no internet); the message says how to get them."""


class FrozenEncoder(nn.Module, abc.ABC):
    """A frozen encoder of one family (image frames, clips, ...): inputs in, one vector per input out.

    Subclasses implement `check` and `encode`; `forward` owns the check and inference mode so that no encoder can
    build autograd graphs or pick up train-mode statistics while filling the cache.
    """

    dim: int
    takes_text: bool = False  # whether each input comes with its item's text inputs (column -> text), see forward

    @abc.abstractmethod
    def identity(self) -> dict[str, Any]:
        """JSON-serialisable description of everything that changes the vectors (part of the cache key)."""

    @abc.abstractmethod
    def check(self, inputs: torch.Tensor) -> None:
        """Raises ValueError naming the expected input where `inputs` is not it."""

    @abc.abstractmethod
    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        """Inputs in [0,1] -> [B, dim]; called under inference mode."""

    def forward(self, inputs: torch.Tensor, texts: list[dict[str, str]] | None = None) -> torch.Tensor:
        """One vector per input; an encoder that `takes_text` gets each input's item texts beside it (the track's
        text inputs by column, features.inputs), which an encoder of pixels alone never sees."""
        self.check(inputs)
        with torch.inference_mode():
            if self.takes_text:
                return self.encode(inputs.float(), texts).float()
            return self.encode(inputs.float()).float()

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Stay in eval mode whatever a parent module asks: cached features must not depend on the batch."""
        return super().train(False)


class EncoderRegistry(Registry):
    """The factories of one encoder family, `factory(weights, seed) -> FrozenEncoder`; `create` builds one frozen."""

    def create(self, name: str, weights: str = "random", seed: int = 0) -> FrozenEncoder:
        return self.get(name)(weights, seed).eval().requires_grad_(False)


class Backbone(FrozenEncoder):
    """Frozen image encoder: [B,3,H,W] float32 RGB in [0,1] -> [B, dim] float32."""

    def check(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(
                f"{type(self).__name__} expects float RGB images shaped [B,3,H,W] in [0,1], "
                f"got {images.dtype} {tuple(images.shape)}"
            )


# Factories `factory(weights, seed) -> Backbone` by name, and by prefix for open-ended names such as
# `open_clip:ViT-B-32` (features.clip); a registered name shadows a timm model of that name.
BACKBONES = EncoderRegistry("backbone")
register_backbone = BACKBONES.register
list_backbones = BACKBONES.names  # registered names; any timm model name (`timm.list_models()`) is accepted as well


def create_backbone(name: str, weights: str = "random", seed: int = 0) -> Backbone:
    """Build a frozen backbone: a registered name first, then a registered prefix (`open_clip:<architecture>`),
    otherwise a timm model of that name.

    weights: "random" (seeded init), "hub" (Hugging Face cache only, never the network), or a local file path.
    """
    if name in BACKBONES:
        return BACKBONES.create(name, weights, seed)
    return timm_backbone(name, weights, seed).eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------------------
# Weight-free no-reference quality statistics.
# Inputs are luminance maps [B,H,W] on a [0,1] scale unless a function says otherwise.

_LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))
_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
_IMMERKAER = ((1.0, -2.0, 1.0), (-2.0, 4.0, -2.0), (1.0, -2.0, 1.0))
_DETAIL_KERNELS = torch.tensor((_LAPLACIAN, _SOBEL_X, tuple(zip(*_SOBEL_X)), _IMMERKAER))
_CODE_VALUES = 255.0  # energies are taken in 8-bit units because log1p only compresses values well above 1
_BLOCK = 8
_BLOCK_EPS = 0.5 / 255.0  # half a code value: smaller mean differences are quantisation, not structure
_EPS = 1e-6


def detail_statistics(y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sharpness (Laplacian variance, mean Sobel magnitude) and noise sigma of [B,H,W], in the units of `y`.

    The noise is Immerkær's fast estimate: his mask is the difference of two Laplacians, which cancels
    image structure up to second order, so the mean absolute response is dominated by noise.
    """
    laplacian, gx, gy, immerkaer = (response.flatten(1) for response in correlate(y, _DETAIL_KERNELS))
    return {
        "laplacian_var": mean_var(laplacian)[1],
        "gradient_mean": torch.hypot(gx, gy).mean(dim=1),
        "noise_sigma": math.sqrt(math.pi / 2.0) / 6.0 * immerkaer.abs().mean(dim=1),
    }


def _grid_contrast(diffs: torch.Tensor) -> torch.Tensor:
    """Log ratio of the strongest 8-periodic column of |differences| [B,H,N] to the other seven.

    Taking the strongest phase instead of a fixed one keeps the measure valid for crops whose
    origin is not on the codec's block grid.
    """
    usable = diffs.shape[-1] // _BLOCK * _BLOCK
    if usable == 0:
        return diffs.new_zeros(diffs.shape[0])
    phases = diffs[..., :usable].unflatten(-1, (-1, _BLOCK)).mean(dim=(1, 2))
    peak = phases.amax(dim=1)
    rest = (phases.sum(dim=1) - peak) / (_BLOCK - 1)
    return torch.log((peak + _BLOCK_EPS) / (rest + _BLOCK_EPS))


def blockiness(y: torch.Tensor) -> torch.Tensor:
    """[B,2]: horizontal (across vertical block edges) and vertical blockiness; 0 means no 8-px grid."""
    horizontal = _grid_contrast(y.diff(dim=-1).abs())
    vertical = _grid_contrast(y.diff(dim=-2).abs().transpose(-1, -2))
    return torch.stack([horizontal, vertical], dim=1)


def colourfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler & Süsstrunk (2003) colourfulness of [B,3,H,W] RGB, on the [0,1] scale."""
    r, g, b = rgb.flatten(2).unbind(dim=1)
    rg_mean, rg_var = mean_var(r - g)
    yb_mean, yb_var = mean_var(0.5 * (r + g) - b)
    return torch.sqrt(rg_var + yb_var) + 0.3 * torch.hypot(rg_mean, yb_mean)


def saturation(rgb: torch.Tensor) -> torch.Tensor:
    """Mean HSV saturation of [B,3,H,W] RGB."""
    high = rgb.amax(dim=1)
    return ((high - rgb.amin(dim=1)) / (high + _EPS)).flatten(1).mean(dim=1)


def mscn_statistics(m: torch.Tensor) -> dict[str, torch.Tensor]:
    """Moments of an MSCN map [B,H,W] and of its neighbour products, whose shapes distortions are known to bend."""
    centred = m.flatten(1) - m.flatten(1).mean(dim=1, keepdim=True)
    squared = centred.square()
    var = squared.mean(dim=1)
    stats = {
        "mscn_var": var,
        "mscn_skew": (squared * centred).mean(dim=1) / (var + _EPS) ** 1.5,
        "mscn_kurt": squared.square().mean(dim=1) / (var + _EPS) ** 2,
    }
    for direction, product in neighbour_products(m).items():
        pair_mean, pair_var = mean_var(product.flatten(1))
        stats |= {f"pair_{direction}_mean": pair_mean, f"pair_{direction}_var": pair_var}
    return stats


def _scale_statistics(y: torch.Tensor) -> dict[str, torch.Tensor]:
    block_h, block_v = blockiness(y).unbind(dim=1)
    m = mscn(y)
    return {
        **{f"log_{name}": torch.log1p(value) for name, value in detail_statistics(y * _CODE_VALUES).items()},
        "blockiness_h": block_h,
        "blockiness_v": block_v,
        **mscn_statistics(m),
        **brisque_statistics(m),
    }


_GLOBAL_NAMES = ("brightness", "contrast", "colourfulness", "saturation", *COLOUR_NAMES, "blur", "log_noise_floor")
_SCALE_NAMES = (
    "log_laplacian_var", "log_gradient_mean", "log_noise_sigma", "blockiness_h", "blockiness_v",
    "mscn_var", "mscn_skew", "mscn_kurt",
    "pair_h_mean", "pair_h_var", "pair_v_mean", "pair_v_var",
    "pair_d1_mean", "pair_d1_var", "pair_d2_mean", "pair_d2_var",
    *BRISQUE_NAMES,
)  # fmt: skip
_SCALES = ("s1", "s2")  # full resolution and 2x box-downsampled


class QualityStats(Backbone):
    """Classic no-reference quality statistics: sharpness, noise, blocking, colour casts and exposure, and the
    natural-scene statistics of BRISQUE (at two scales) and GM-LOG (features.nss).

    Needs no weights, so the offline demo runs end to end and gives heads an interpretable baseline.
    Bump `version` whenever a formula changes: it invalidates cached features.
    """

    names: tuple[str, ...] = (
        _GLOBAL_NAMES
        + tuple(f"{n}@{s}" for s in _SCALES for n in _SCALE_NAMES)
        + tuple(f"gmlog_{n}" for n in GMLOG_NAMES)
    )
    dim = len(names)
    version = 2
    min_size = 16  # the half scale must still hold one 8-px block and the 7x7 window

    def identity(self) -> dict[str, Any]:
        return {"name": "quality_stats", "version": self.version}

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if min(images.shape[-2:]) < self.min_size:
            raise ValueError(
                f"quality_stats needs images of at least {self.min_size}x{self.min_size}, got {tuple(images.shape)}"
            )
        y = luminance(images)
        brightness, variance = mean_var(y.flatten(1))
        features = {
            "brightness": brightness,
            "contrast": variance.sqrt(),
            "colourfulness": colourfulness(images),
            "saturation": saturation(images),
            **colour_cast_statistics(images),
            "blur": blur_score(y),
            "log_noise_floor": torch.log1p(noise_floor(y) * _CODE_VALUES),
            **{f"gmlog_{name}": value for name, value in gmlog_statistics(y).items()},
        }
        half = F.avg_pool2d(y[:, None], 2)[:, 0]
        for scale, luma in zip(_SCALES, (y, half)):
            features |= {f"{name}@{scale}": value for name, value in _scale_statistics(luma).items()}
        return torch.stack([features[name] for name in self.names], dim=1)


@register_backbone("quality_stats")
def quality_stats(weights: str, seed: int) -> Backbone:
    if weights not in ("none", "random"):
        raise ValueError(f"quality_stats has no weights (it is weight-free): use weights='none', got {weights!r}")
    return QualityStats()


# --------------------------------------------------------------------------------------------------------
# timm models, the fallback for any name that is not registered.


def at_input_size(images: torch.Tensor, model: Any) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] resized (antialiased, kept in [0, 1]) to a pretrained image model's `input_size` by its
    `interpolation`: one rule for the timm and CLIP image encoders, pair statistics and fine-tuning, so a tuned
    student sees what its exported predictor will."""
    if tuple(images.shape[-2:]) == tuple(model.input_size):
        return images
    return F.interpolate(images, size=model.input_size, mode=model.interpolation, antialias=True).clamp(0, 1)


class TimmBackbone(Backbone):
    """A timm model without its classifier, fed at its own input resolution and normalisation.

    Resizing here (not in the caller) lets any view size reach fixed-size models such as ViTs,
    and records the resolution in the identity because it changes the vectors.
    """

    def __init__(self, name: str, model: nn.Module, weights: str | dict[str, str]) -> None:
        super().__init__()
        import timm

        data = timm.data.resolve_model_data_config(model)
        # Channels-last is oneDNN's native layout: CNNs run 1.2-1.7x faster on CPU, transformers the same.
        self.model = model.to(memory_format=torch.channels_last)
        # Models with a pre-logits layer (e.g. MobileNetV3) pool to head_hidden_size, not num_features.
        self.dim = int(getattr(model, "head_hidden_size", None) or model.num_features)
        self.input_size = tuple(data["input_size"][1:])
        self.interpolation = data["interpolation"] if data["interpolation"] in ("bilinear", "bicubic") else "bilinear"
        self.register_buffer("mean", torch.tensor(data["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(data["std"]).view(1, 3, 1, 1), persistent=False)
        self._identity = {
            "name": name,
            "weights": weights,
            "timm": timm.__version__,
            "input_size": list(self.input_size),
            "interpolation": self.interpolation,
            "mean": list(data["mean"]),
            "std": list(data["std"]),
        }

    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        images = at_input_size(images, self)
        return self.model(((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last))


_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def timm_backbone(name: str, weights: str = "random", seed: int = 0) -> TimmBackbone:
    """A timm model as a backbone; see `create_backbone` for `weights`."""
    import timm

    pretrained_cfg = _timm_pretrained_cfg(name)
    if weights == "random":
        with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG stream
            torch.manual_seed(seed)
            model = timm.create_model(name, pretrained=False, num_classes=0)
        return TimmBackbone(name, model, f"random(seed={seed})")
    if weights == "hub":
        hub_id, path = _cached_hub_file(name, pretrained_cfg)
        # Handing timm the cached file (not the hub id) means no code path can reach the network,
        # while timm still applies the model's own checkpoint conversion.
        overlay = dict(file=str(path))
        model = timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay)
        return TimmBackbone(name, model, {"hub_id": hub_id, "sha256": file_sha256(path)})
    path = Path(weights)
    if not path.is_file():
        raise WeightsNotFound(
            f"weights file for {name!r} not found: {path} "
            f"(weights must be 'random', 'hub' or the path of a {'/'.join(_WEIGHT_SUFFIXES)} file)"
        )
    model = timm.create_model(name, pretrained=False, num_classes=0)
    _load_weights_file(model, name, path)
    return TimmBackbone(name, model, {"sha256": file_sha256(path)})


def timm_hub_file(name: str) -> Path:
    """The local file `weights=hub` loads for the timm model `name` (a filesystem lookup, never a download)."""
    return _cached_hub_file(name, _timm_pretrained_cfg(name))[1]


def _timm_pretrained_cfg(name: str) -> Any:
    import timm

    if not timm.is_model(name):
        raise _unknown_backbone(name)
    try:
        return timm.models.get_pretrained_cfg(name)
    except RuntimeError:  # known architecture, unknown pretrained tag
        raise _unknown_backbone(name) from None


def _unknown_backbone(name: str) -> ValueError:
    import timm

    known = list_backbones() + timm.list_models() + timm.list_models(pretrained=True)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(
        f"unknown backbone {name!r}: not registered ({', '.join(list_backbones())}) and not a timm model{hint}"
    )


def hub_filenames(hf_hub_filename: str | None) -> tuple[str, ...]:
    """Files timm would fetch for a hub repo, safetensors first (same preference as timm)."""
    filename = hf_hub_filename or "pytorch_model.bin"
    stem = filename.removesuffix("pytorch_model.bin")
    safe = (f"{stem}model.safetensors",) if stem != filename else ()
    return safe + (filename,)


def _cached_hub_file(name: str, pretrained_cfg: Any) -> tuple[str, Path]:
    """Find the model's hub weights in the local Hugging Face cache; a pure filesystem lookup."""
    hub_id = getattr(pretrained_cfg, "hf_hub_id", None)
    if not hub_id:
        raise WeightsNotFound(
            f"timm has no Hugging Face hub weights for {name!r}; pass weights=/path/to/weights.safetensors"
        )
    repo_id, _, revision = hub_id.partition("@")
    filenames = hub_filenames(pretrained_cfg.hf_hub_filename)
    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, revision=revision or None)
        if isinstance(found, str):
            return hub_id, Path(found)
    raise WeightsNotFound(
        f"no pretrained weights for {name!r} in the Hugging Face cache {hf_constants.HF_HUB_CACHE} "
        f"(looked for {' or '.join(filenames)} of {hub_id}; HF_HUB_CACHE or HF_HOME select another cache). "
        f"This machine does not download. To fix: on a machine with internet run "
        f"`hf download {repo_id}` (`huggingface-cli download {repo_id}` with older huggingface_hub) "
        f"and copy its cache directory here, or pass weights=/path/to/model.safetensors"
    )


def _load_weights_file(model: nn.Module, name: str, path: Path) -> None:
    """Load a timm-format state dict strictly, apart from the classifier the backbone drops.

    timm's own file route loads non-strictly whenever the head is removed, so a checkpoint with other key
    names (e.g. a Lightning module's 'model.' prefix) would leave the model silently random.
    """
    if path.suffix not in _WEIGHT_SUFFIXES:
        raise ValueError(f"{path}: unsupported weights file type; expected one of {', '.join(_WEIGHT_SUFFIXES)}")
    import timm

    try:
        # safetensors, or torch.load(weights_only=True): never unpickles code; unwraps 'state_dict'/EMA wrappers
        state = timm.models.load_state_dict(str(path))
    except Exception as error:
        raise ValueError(f"{path}: cannot load weights safely: {error}") from error
    classifier = model.pretrained_cfg.get("classifier") or ()
    head = tuple(f"{c}." for c in ((classifier,) if isinstance(classifier, str) else classifier))
    state = {key: value for key, value in state.items() if not key.startswith(head)}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches: weights of another variant
        raise ValueError(f"{path}: weights do not fit timm model {name!r}: {error}") from error
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{path}: not a timm state dict for {name!r}: "
            f"missing {preview_keys(result.missing_keys)}, unexpected {preview_keys(result.unexpected_keys)}"
        )


def preview_keys(keys: list[str], n: int = 4) -> str:
    """The first `n` keys in brackets, and how many more there are: state-dict keys in an error message."""
    return f"[{examples(keys, n)}]"
