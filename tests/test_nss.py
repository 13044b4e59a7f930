"""The natural-scene statistics behind the weight-free encoders hold to the standards' own properties: the fits recover
the parameters of sampled generalised-Gaussian data, and a pristine picture against the same picture blurred, noised,
compressed or tinted moves each statistic the way its paper says."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from features import nss
from features.backbones import QualityStats, create_backbone
from features.motion import TemporalStats, create_motion_encoder


def ggd_samples(shape: float, n: int, seed: int) -> torch.Tensor:
    """Zero-mean, unit-scale generalised-Gaussian samples: |x|^shape is Gamma(1/shape) distributed."""
    rng = np.random.default_rng(seed)
    magnitude = rng.gamma(1.0 / shape, 1.0, n) ** (1.0 / shape)
    return torch.from_numpy(magnitude * rng.choice((-1.0, 1.0), n))


@pytest.mark.parametrize("shape", [0.6, 1.0, 2.0, 3.0])
def test_ggd_fit_recovers_the_shape_and_variance_of_sampled_data(shape):
    x = ggd_samples(shape, 200_000, seed=int(shape * 10))[None]
    fitted, variance = nss.ggd_fit(x)
    expected_variance = math.exp(math.lgamma(3 / shape) - math.lgamma(1 / shape))
    assert fitted.item() == pytest.approx(shape, rel=0.05)
    assert variance.item() == pytest.approx(expected_variance, rel=0.05)


@pytest.mark.parametrize(("shape", "left", "right"), [(0.8, 1.0, 2.0), (2.0, 1.5, 0.5), (1.2, 1.0, 1.0)])
def test_aggd_fit_recovers_shape_spreads_and_mean_of_sampled_data(shape, left, right):
    """An AGGD is a GGD's left half scaled by beta_l and its right half by beta_r, each side drawn in proportion."""
    rng = np.random.default_rng(7)
    n = 300_000
    magnitude = rng.gamma(1.0 / shape, 1.0, n) ** (1.0 / shape)
    negative = rng.random(n) < left / (left + right)
    x = torch.from_numpy(np.where(negative, -left * magnitude, right * magnitude))[None]
    fit = nss.aggd_fit(x)
    moment = math.exp(math.lgamma(3 / shape) - math.lgamma(1 / shape))  # E[m^2] of the unit-scale magnitude
    assert fit["shape"].item() == pytest.approx(shape, rel=0.06)
    assert fit["left_var"].item() == pytest.approx(left**2 * moment, rel=0.05)
    assert fit["right_var"].item() == pytest.approx(right**2 * moment, rel=0.05)
    assert fit["mean"].item() == pytest.approx(x.mean().item(), abs=0.02 * (left + right))


def test_shape_lookup_is_batched_and_stays_in_its_range():
    ratios = torch.tensor([1.0, 1.2, math.pi**2 / 8 * 4 / math.pi, 1e9])  # clamp, a wide shape, ~2, the peakiest
    shapes = nss.shape_from_ratio(ratios)
    assert shapes.shape == (4,) and shapes[0] == pytest.approx(10.0) and shapes[-1] == pytest.approx(0.2)
    assert shapes[2] == pytest.approx(2.0, abs=0.01)  # the Gaussian's ratio is pi/2


def natural(size: int = 128, seed: int = 0) -> torch.Tensor:
    """A 1/f image, [1,3,S,S]: the power spectrum of natural scenes, so its MSCN statistics are a photograph's."""
    g = torch.Generator().manual_seed(seed)
    spectrum = torch.fft.fft2(torch.randn(3, size, size, generator=g))
    frequency = torch.fft.fftfreq(size)
    radius = torch.hypot(frequency[:, None], frequency[None, :]).clamp_min(1.0 / size)
    image = torch.fft.ifft2(spectrum / radius).real
    image = image - image.mean(dim=(-2, -1), keepdim=True)
    return (0.5 + 0.15 * image / image.std()).clamp(0, 1)[None]


def through_pil(image: torch.Tensor, change) -> torch.Tensor:
    pixels = Image.fromarray((image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    return torch.from_numpy(np.asarray(change(pixels)).astype(np.float32) / 255).permute(2, 0, 1)[None]


def jpeg(image: Image.Image, quality: int = 10) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(buffer).convert("RGB")


@pytest.fixture(scope="module")
def image_features() -> dict[str, torch.Tensor]:
    """quality_stats of a pristine 1/f image and of it blurred, noised, JPEG-compressed and tinted, by name."""
    pristine = natural()
    noise = 0.06 * torch.randn(pristine.shape, generator=torch.Generator().manual_seed(1))
    variants = {
        "pristine": pristine,
        "blurred": through_pil(pristine, lambda p: p.filter(ImageFilter.GaussianBlur(2))),
        "noised": (pristine + noise).clamp(0, 1),
        "compressed": through_pil(pristine, jpeg),
        "tinted": (pristine * torch.tensor([1.25, 1.0, 0.75]).view(1, 3, 1, 1)).clamp(0, 1),
    }
    out = create_backbone("quality_stats", weights="none")(torch.cat(list(variants.values())))
    return {name: row for name, row in zip(variants, out)}


def value(features: torch.Tensor, name: str) -> float:
    return features[QualityStats.names.index(name)].item()


@pytest.mark.parametrize(
    ("variant", "name", "direction"),
    [
        ("blurred", "blur", +1),  # re-blurring takes away less of a blurred image's variation
        ("blurred", "ggd_shape@s1", -1),  # blur leaves a peakier MSCN distribution (BRISQUE's Fig. 2)
        ("blurred", "gmlog_pg9", +1),  # the gradient loses ground to the LoG: the top normalised-gradient level fills
        ("noised", "log_noise_floor", +1),
        ("noised", "ggd_var@s1", +1),  # noise adds contrast-normalised energy where the scene was flat
        ("compressed", "blockiness_h@s1", +1),
        ("compressed", "aggd_h_shape@s1", -1),  # flattened blocks make neighbour products peakier
        ("tinted", "highlight_rg", +1),  # a warm cast tints the whites red
        ("tinted", "cast_yb", +1),
    ],
)
def test_each_distortion_moves_its_image_statistic_the_expected_way(image_features, variant, name, direction):
    change = value(image_features[variant], name) - value(image_features["pristine"], name)
    assert change * direction > 0, f"{name}: {variant} moved it by {change:+.4f}"


def moving(length: int = 10, size: int = 64, step: int = 2, seed: int = 0) -> torch.Tensor:
    """A 1/f texture panning `step` px a frame, [1,L,3,S,S]: coherent motion."""
    texture = natural(size + step * length, seed)
    return torch.stack([texture[0, :, :size, t * step : t * step + size] for t in range(length)])[None]


@pytest.fixture(scope="module")
def clip_features() -> dict[str, torch.Tensor]:
    clip = moving()
    still = clip[:, :1].expand(-1, 8, -1, -1, -1)
    noise = 0.08 * torch.randn(still.shape, generator=torch.Generator().manual_seed(2))
    variants = {
        "moving": clip[:, :8],
        "dropped": clip[:, torch.tensor([0, 1, 2, 4, 5, 6, 8, 9])],  # frames 3 and 7 lost
        "held": clip[:, torch.tensor([0, 0, 2, 2, 4, 4, 6, 6])],  # every other frame lost and its predecessor held
        "noisy still": (still + noise).clamp(0, 1),
        "still": still,
    }
    out = create_motion_encoder("temporal_stats", "none")(torch.cat(list(variants.values())))
    return {name: row for name, row in zip(variants, out)}


def motion_value(features: torch.Tensor, name: str) -> float:
    return features[TemporalStats.names.index(name)].item()


def test_frame_differences_tell_coherent_motion_from_noise(clip_features):
    assert motion_value(clip_features["moving"], "diff_corr@s8") > 0.3  # the same structure moves on
    for scale in ("diff_corr", "diff_corr@s8"):  # independent noise in each frame
        assert motion_value(clip_features["noisy still"], scale) == pytest.approx(-0.5, abs=0.1)
    assert motion_value(clip_features["noisy still"], "diff_shape") == pytest.approx(2.0, abs=0.25)  # Gaussian
    assert motion_value(clip_features["still"], "diff_log_var") == 0.0


def test_dropped_frames_are_jumps_and_a_still_clip_has_none(clip_features):
    assert motion_value(clip_features["moving"], "jumps") == 0.0
    assert motion_value(clip_features["dropped"], "jumps") == pytest.approx(2 / 7)  # two of seven pairs moved twice
    assert motion_value(clip_features["dropped"], "jump_ratio") > math.log(1.6)
    assert motion_value(clip_features["held"], "frozen") == pytest.approx(4 / 7)
    assert motion_value(clip_features["still"], "jumps") == 0.0  # no moving pair, no jump


def test_compressed_frames_show_their_block_grid_over_time():
    clip = moving()
    frames = clip[0]
    compressed = torch.stack([through_pil(f[None], jpeg)[0] for f in frames])[None]
    out = create_motion_encoder("temporal_stats", "none")(torch.cat([clip, compressed]))
    block_mean = out[:, TemporalStats.names.index("block_mean")]
    assert block_mean[1] > block_mean[0] + 0.2
