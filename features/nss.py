"""Natural-scene statistics: the batched maths behind the weight-free encoders (`quality_stats`, `temporal_stats`).

Undistorted photographs and footage have regular local statistics: contrast-normalised luminance (MSCN) is close to a
unit Gaussian, its neighbour products follow an asymmetric generalised Gaussian, gradient magnitude and the
Laplacian-of-Gaussian response co-vary in a fixed way, and frame differences are as peaked as the coefficients of a
still image. Blur, noise, compression and scaling bend those shapes each in their own direction, so the fitted shape
parameters are what no-reference models (BRISQUE, GM-LOG, V-BLIINDS) regress quality on. Everything here works on
whole batches of luma maps [B,H,W] on a [0,1] scale (unless a function says otherwise) with no Python loop per image,
so the statistics cost little beside decoding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_BT601 = (0.299, 0.587, 0.114)
_MSCN_C = 1.0 / 255.0
_EPS = 1e-6


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of [B,3,H,W] RGB -> [B,H,W]; a batched matrix product, several times faster than einsum."""
    return (rgb.new_tensor(_BT601) @ rgb.flatten(2)).unflatten(-1, rgb.shape[-2:])


def correlate(maps: torch.Tensor, kernels: torch.Tensor) -> list[torch.Tensor]:
    """'valid' 2-D correlation of every map in [..., H, W] with each of K kernels [K,h,w] -> K maps [..., H', W'].

    The maps enter as the channels of a depthwise convolution, one kernel per call: on CPU that path is
    several times faster than a dense convolution over single-channel images or a depthwise one with a
    channel multiplier. 'valid' keeps padding artefacts out of the statistics.
    """
    channels = maps.reshape(1, -1, *maps.shape[-2:])
    n = channels.shape[1]
    responses = [F.conv2d(channels, kernel.expand(n, 1, -1, -1), groups=n) for kernel in kernels.to(maps)]
    return [response.reshape(*maps.shape[:-2], *response.shape[-2:]) for response in responses]


def mean_var(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population variance of each row of [B,N].

    Two plain passes (mean, then mean of centred squares) are as accurate as torch.var_mean's Welford
    update and several times faster on CPU.
    """
    mean = x.mean(dim=1, keepdim=True)
    return mean[:, 0], (x - mean).square().mean(dim=1)


def gaussian_window(size: int, sigma: float) -> torch.Tensor:
    """[1,size,size] normalised Gaussian, built in float32 (as quality_stats version 1 built it): stable features."""
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)[None]


_MSCN_WINDOW = gaussian_window(7, 7.0 / 6.0)


def local_mean_sigma(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian-weighted local mean and standard deviation of [B,H,W] (BRISQUE's 7x7 window), each [B,H,W].

    Both come from one pass over the pair [y, y²]; reflect padding keeps the maps the size of `y`.
    """
    pair = F.pad(y.expand(2, *y.shape), (_MSCN_WINDOW.shape[-1] // 2,) * 4, mode="reflect")
    pair[1].square_()  # squaring commutes with reflect padding, so one padded copy serves both
    mu, second = correlate(pair, _MSCN_WINDOW)[0]
    return mu, (second - mu.square()).clamp_min(0).sqrt()


def mscn(y: torch.Tensor) -> torch.Tensor:
    """Mean-subtracted contrast-normalised coefficients (BRISQUE), [B,H,W]."""
    mu, sigma = local_mean_sigma(y)
    return (y - mu) / (sigma + _MSCN_C)


def neighbour_products(m: torch.Tensor) -> dict[str, torch.Tensor]:
    """The products of each coefficient of [B,H,W] with its right, lower and two diagonal neighbours."""
    return {
        "h": m[:, :, :-1] * m[:, :, 1:],
        "v": m[:, :-1, :] * m[:, 1:, :],
        "d1": m[:, :-1, :-1] * m[:, 1:, 1:],
        "d2": m[:, :-1, 1:] * m[:, 1:, :-1],
    }


# --- generalised Gaussian fits ----------------------------------------------------------------------------------------

# Shapes searched by the moment-matching fits; Gaussian is 2, Laplacian 1. The ratio r(a) = G(1/a)G(3/a)/G(2/a)^2
# falls monotonically from about 1.7e4 at a = 0.2 to 1.05 at a = 10, so one sorted lookup inverts it.
_SHAPES = torch.arange(0.2, 10.0 + 1e-9, 0.001, dtype=torch.float64)
_LOG_RATIO = torch.lgamma(1 / _SHAPES) + torch.lgamma(3 / _SHAPES) - 2 * torch.lgamma(2 / _SHAPES)


def shape_from_ratio(ratio: torch.Tensor) -> torch.Tensor:
    """The generalised-Gaussian shape a whose r(a) = G(1/a)G(3/a)/G(2/a)^2 is nearest `ratio` (any shape [...]).

    For a generalised Gaussian r(a) equals E[x²] / E[|x|]², which is how both fits below use it.
    """
    increasing = _LOG_RATIO.flip(0)  # r falls with a, so its reverse rises: searchsorted needs ascending
    target = ratio.double().clamp_min(1.0 + 1e-9).log()
    upper = torch.searchsorted(increasing, target).clamp(1, len(increasing) - 1)
    lower = upper - 1
    nearest = torch.where(target - increasing[lower] < increasing[upper] - target, lower, upper)
    return _SHAPES.flip(0)[nearest].to(ratio.dtype)


def ggd_fit(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-mean generalised-Gaussian fit of each row of [B,N] by moment matching: (shape a, variance), each [B]."""
    second = x.square().mean(dim=1)
    first = x.abs().mean(dim=1)
    return shape_from_ratio(second / (first.square() + _EPS**2)), second


def aggd_fit(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Asymmetric generalised-Gaussian fit of each row of [B,N] (Lasmar, Stitou and Berthoumieu's moment estimate,
    as BRISQUE uses it): shape, mean and the left and right variances, each [B].

    The left and right variances are the mean squares of the negative and positive values; the shape comes from
    E[|x|]² / E[x²] corrected for the asymmetry, and the mean follows from the shape and the two spreads.
    """
    square = x.square()
    negative = (x < 0).to(x.dtype)
    positive = (x > 0).to(x.dtype)
    left = (square * negative).sum(dim=1) / negative.sum(dim=1).clamp_min(1)
    right = (square * positive).sum(dim=1) / positive.sum(dim=1).clamp_min(1)
    gamma = left.sqrt() / (right.sqrt() + _EPS)
    r_hat = x.abs().mean(dim=1).square() / (square.mean(dim=1) + _EPS**2)
    big_r = r_hat * (gamma.pow(3) + 1) * (gamma + 1) / (gamma.square() + 1).square()
    shape = shape_from_ratio(1.0 / big_r.clamp_min(_EPS))
    log_g1, log_g2, log_g3 = (torch.lgamma(k / shape) for k in (1.0, 2.0, 3.0))
    spread = torch.exp(0.5 * (log_g1 - log_g3))  # beta = sigma * sqrt(G(1/a) / G(3/a))
    mean = (right.sqrt() - left.sqrt()) * spread * torch.exp(log_g2 - log_g1)
    return {"shape": shape, "mean": mean, "left_var": left, "right_var": right}


def brisque_statistics(m: torch.Tensor) -> dict[str, torch.Tensor]:
    """BRISQUE's 18 numbers at one scale of an MSCN map [B,H,W]: its GGD (shape, variance) and an AGGD (shape, mean,
    left and right variance) of each of its four neighbour products."""
    shape, variance = ggd_fit(m.flatten(1))
    stats = {"ggd_shape": shape, "ggd_var": variance}
    for direction, product in neighbour_products(m).items():
        stats |= {f"aggd_{direction}_{name}": value for name, value in aggd_fit(product.flatten(1)).items()}
    return stats


BRISQUE_NAMES = ("ggd_shape", "ggd_var") + tuple(
    f"aggd_{d}_{n}" for d in ("h", "v", "d1", "d2") for n in ("shape", "mean", "left_var", "right_var")
)


# --- gradient magnitude and Laplacian of Gaussian (GM-LOG) --------------------------------------------------------


def _gaussian_derivative_kernels(sigma: float) -> torch.Tensor:
    """[3,k,k]: the x and y derivatives of a Gaussian and its Laplacian (zero-sum), k = 2*ceil(3 sigma) + 1."""
    half = math.ceil(3 * sigma)
    r = torch.arange(-half, half + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    g = torch.exp(-(xx.square() + yy.square()) / (2 * sigma**2))
    g = g / g.sum()
    gx, gy = -xx / sigma**2 * g, -yy / sigma**2 * g
    log = (xx.square() + yy.square() - 2 * sigma**2) / sigma**4 * g
    log = log - log.mean()
    return torch.stack([gx, gy, log]).float()


_GMLOG_SIGMA = 0.5
_GMLOG_KERNELS = _gaussian_derivative_kernels(_GMLOG_SIGMA)
_GMLOG_NORM_WINDOW = gaussian_window(2 * math.ceil(6 * _GMLOG_SIGMA) + 1, 2 * _GMLOG_SIGMA)
GMLOG_LEVELS = 10
# Level widths of the normalised gradient and |LoG|: at sigma 0.5 the LoG carries most of the joint energy, so on
# natural images the normalised gradient falls mostly under 0.5 and the |LoG| under 2; the last level takes the rest.
_GMLOG_STEPS = (0.05, 0.2)


def gmlog_statistics(y: torch.Tensor) -> dict[str, torch.Tensor]:
    """GM-LOG (Xue et al. 2014): the joint statistics of gradient magnitude and |LoG| after a joint adaptive
    normalisation, quantised to 10 levels each: both marginals and both independency distributions (the mean over
    one variable's levels of the other's conditional probability), 40 numbers each [B].

    The normalisation divides both responses by the local root-mean-square of their joint magnitude, which removes
    the local contrast and leaves the way structure (edges against blobs, sharp against smooth) is distributed.
    """
    gx, gy, log = correlate(y, _GMLOG_KERNELS)
    gradient, laplacian = torch.hypot(gx, gy), log.abs()
    energy = correlate(gradient.square() + laplacian.square(), _GMLOG_NORM_WINDOW)[0]
    crop = (gradient.shape[-1] - energy.shape[-1]) // 2
    norm = energy.clamp_min(0).sqrt() + 1e-3
    gradient, laplacian = (m[:, crop:-crop, crop:-crop] / norm for m in (gradient, laplacian))

    def level(m: torch.Tensor, step: float) -> torch.Tensor:
        return (m / step).long().clamp(max=GMLOG_LEVELS - 1).flatten(1)

    joint_index = level(gradient, _GMLOG_STEPS[0]) * GMLOG_LEVELS + level(laplacian, _GMLOG_STEPS[1])
    counts = y.new_zeros(y.shape[0], GMLOG_LEVELS**2).scatter_add_(
        1, joint_index, torch.ones_like(joint_index, dtype=y.dtype)
    )
    joint = (counts / joint_index.shape[1]).unflatten(1, (GMLOG_LEVELS, GMLOG_LEVELS))  # [B, gradient, laplacian]
    p_gradient, p_laplacian = joint.sum(dim=2), joint.sum(dim=1)
    q_gradient = (joint / (p_laplacian[:, None, :] + _EPS)).mean(dim=2)
    q_laplacian = (joint / (p_gradient[:, :, None] + _EPS)).mean(dim=1)
    stats = {}
    for name, values in (("pg", p_gradient), ("pl", p_laplacian), ("qg", q_gradient), ("ql", q_laplacian)):
        stats |= {f"{name}{k}": values[:, k] for k in range(GMLOG_LEVELS)}
    return stats


GMLOG_NAMES = tuple(f"{name}{k}" for name in ("pg", "pl", "qg", "ql") for k in range(GMLOG_LEVELS))


# --- sharpness, noise floor and colour --------------------------------------------------------------------------------

_REBLUR = 9  # Crété-Roffet's strong low-pass: a 9-tap box along each axis
_NOISE_BLOCK = 8


def _lost_variation(y: torch.Tensor) -> torch.Tensor:
    """The share of the horizontal variation of [B,H,W] that a 9-tap box blur keeps, in [0,1]."""
    blurred = F.avg_pool2d(y[:, None], (1, _REBLUR), stride=1)[:, 0]
    margin = _REBLUR // 2
    original = y[..., margin:-margin].diff(dim=-1).abs()
    kept = blurred.diff(dim=-1).abs()
    lost = (original - kept).clamp_min(0).sum(dim=(1, 2))
    total = original.sum(dim=(1, 2))
    return (total - lost) / (total + _EPS)


def blur_score(y: torch.Tensor) -> torch.Tensor:
    """Crété-Roffet et al.'s (2007) perceptual blur of [B,H,W], [B] in [0,1] (1 is flat): re-blurring a sharp image
    removes much of its neighbour variation, re-blurring a blurred one little; the worse of the two axes counts."""
    return torch.maximum(_lost_variation(y), _lost_variation(y.transpose(-1, -2)))


def noise_floor(y: torch.Tensor) -> torch.Tensor:
    """The 10th percentile of the standard deviation of 8x8 blocks of [B,H,W], in the units of `y`, [B]: the flattest
    blocks of a photograph hold little but noise, so it tracks the noise level where texture fools Immerkær's mask."""
    pooled = F.avg_pool2d(torch.stack([y, y.square()], dim=1), _NOISE_BLOCK)
    sigma = (pooled[:, 1] - pooled[:, 0].square()).clamp_min(0).sqrt().flatten(1)
    return torch.quantile(sigma, 0.1, dim=1)


_HIGHLIGHT_SHARE = 0.05  # the brightest pixels, where a white-balance error shows as a tinted white
_CLIPPED = 2.0 / 255.0


def colour_cast_statistics(rgb: torch.Tensor) -> dict[str, torch.Tensor]:
    """Casts, white balance and exposure of [B,3,H,W] RGB: the mean red-green and yellow-blue opponents over the whole
    image and over its brightest 5% (a grey-world and a white-patch reading), the spread of the three channel means,
    the shares of clipped shadows and highlights, and the 5th and 95th luma percentiles."""
    r, g, b = rgb.flatten(2).unbind(dim=1)
    red_green, yellow_blue = r - g, 0.5 * (r + g) - b
    y = luminance(rgb).flatten(1)
    threshold = torch.quantile(y, torch.tensor([0.05, 0.95, 1 - _HIGHLIGHT_SHARE]).to(y), dim=1)  # [3,B]
    bright = (y >= threshold[2][:, None]).to(y.dtype)
    count = bright.sum(dim=1).clamp_min(1)
    channel_means = rgb.mean(dim=(-2, -1))
    return {
        "cast_rg": red_green.mean(dim=1),
        "cast_yb": yellow_blue.mean(dim=1),
        "highlight_rg": (red_green * bright).sum(dim=1) / count,
        "highlight_yb": (yellow_blue * bright).sum(dim=1) / count,
        "channel_spread": channel_means.std(dim=1, correction=0) / (channel_means.mean(dim=1) + _EPS),
        "clipped_low": (y <= _CLIPPED).to(y.dtype).mean(dim=1),
        "clipped_high": (y >= 1 - _CLIPPED).to(y.dtype).mean(dim=1),
        "luma_p05": threshold[0],
        "luma_p95": threshold[1],
    }


COLOUR_NAMES = (
    "cast_rg", "cast_yb", "highlight_rg", "highlight_yb", "channel_spread", "clipped_low", "clipped_high",
    "luma_p05", "luma_p95",
)  # fmt: skip


# --- frame differences --------------------------------------------------------------------------------------------


def difference_statistics(y: torch.Tensor) -> dict[str, torch.Tensor]:
    """V-BLIINDS-style statistics of the frame differences of clips [B,L,H,W], L >= 2, each [B].

    A generalised-Gaussian fit of the raw differences (pooled over the clip), and of the differences divided by the
    local contrast of the frame they lead to: coherent motion gives peaked, heavy-tailed differences, added noise
    Gaussian ones (shape near 2), and compression flattens small differences to zero (a very small shape). The mean
    correlation of consecutive differences, at full resolution and on 8x8 block means, separates the two again:
    independent noise in each frame makes consecutive differences anti-correlated (-0.5) at every scale, while a
    motion that goes on changes coarse blocks the same way from one pair to the next (positive on the block means;
    at full resolution a pan of fine texture may decorrelate).
    """
    batch, length = y.shape[:2]
    diff = y.diff(dim=1)
    shape, variance = ggd_fit(diff.flatten(1))
    _, sigma = local_mean_sigma(y[:, 1:].flatten(0, 1))
    normalised = diff.flatten(0, 1) / (sigma + _MSCN_C)
    norm_shape, norm_variance = ggd_fit(normalised.unflatten(0, (batch, length - 1)).flatten(1))
    stats = {
        "diff_shape": shape,
        "diff_log_var": torch.log(variance * 255.0**2 + 1.0),
        "diff_norm_shape": norm_shape,
        "diff_norm_log_var": torch.log(norm_variance + _EPS),
    }
    coarse = F.avg_pool2d(diff, _COHERENCE_BLOCK) if min(diff.shape[-2:]) >= _COHERENCE_BLOCK else diff
    return stats | {"diff_corr": _consecutive_correlation(diff), "diff_corr@s8": _consecutive_correlation(coarse)}


_COHERENCE_BLOCK = 8


def _consecutive_correlation(diff: torch.Tensor) -> torch.Tensor:
    """The mean over t of the correlation between differences t and t+1 of [B,L-1,H,W] -> [B]; 0 with one pair."""
    if diff.shape[1] < 2:
        return diff.new_zeros(diff.shape[0])
    flat = diff.flatten(2)
    flat = flat - flat.mean(dim=2, keepdim=True)
    norms = flat.square().sum(dim=2).sqrt()
    corr = (flat[:, 1:] * flat[:, :-1]).sum(dim=2) / (norms[:, 1:] * norms[:, :-1] + _EPS)
    return corr.mean(dim=1)


DIFFERENCE_NAMES = ("diff_shape", "diff_log_var", "diff_norm_shape", "diff_norm_log_var", "diff_corr", "diff_corr@s8")
