"""Full-reference metrics through FFmpeg's filters (features.fr): identity values, monotone in noise, the Lanczos
upscaling path, frame k of each filter belonging to pair k, 16-bit precision end to end, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest

from features.fr import FR_METRICS, PEAK, PSNR_CAP_DB, pair_metrics

H, W = 48, 64  # 3072 pixels: xpsnr runs; 32x24 (768) is below its minimum and falls back to the PSNR
COLUMN = {name: index for index, name in enumerate(FR_METRICS)}
VIF = [f"vif_s{i}" for i in range(4)]


def scene(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """A smooth 16-bit picture with some texture, spanning mid-scale (where an int16 reading would wrap)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    values = 32768 + 15000 * np.sin(x / 4 + seed) * np.cos(y / 5) + rng.normal(0, 1500, (h, w))
    return np.clip(values, 0, PEAK).astype(np.uint16)


def noisy(plane: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, plane.shape)
    return np.clip(plane + noise, 0, PEAK).astype(np.uint16)


def metrics(distorted, reference) -> dict[str, np.ndarray]:
    out = pair_metrics(distorted, reference)
    assert out.shape == (len(reference), len(FR_METRICS)) and out.dtype == np.float64
    assert np.isfinite(out).all()
    return {name: out[:, index] for name, index in COLUMN.items()}


def test_columns():
    assert FR_METRICS == ("ssim", "psnr", "xpsnr", "vif_s0", "vif_s1", "vif_s2", "vif_s3", "msad")


@pytest.mark.parametrize("shape", [(H, W), (24, 32), (17, 33)])
def test_identical_planes_score_the_identity_values(shape):
    plane = scene(*shape)
    m = metrics([plane, plane], [plane, plane.copy()])
    assert m["ssim"] == pytest.approx(1.0)
    assert (m["psnr"] == PSNR_CAP_DB).all() and (m["xpsnr"] == PSNR_CAP_DB).all()
    for name in VIF:
        assert m[name] == pytest.approx(1.0, abs=1e-5)
    assert (m["msad"] == 0).all()


def test_more_noise_scores_worse():
    reference = scene()
    levels = [noisy(reference, sigma) for sigma in (300, 1500, 6000)]
    m = metrics(levels, [reference] * 3)
    for name in ("ssim", "psnr", "xpsnr", "vif_s0", "vif_s1"):
        assert (np.diff(m[name]) < 0).all(), (name, m[name])
    assert (np.diff(m["msad"]) > 0).all()
    assert (m["psnr"] < PSNR_CAP_DB).all() and (m["ssim"] < 1).all()


def test_a_half_size_distorted_is_upscaled_to_the_reference():
    reference = scene()
    half = reference.reshape(H // 2, 2, W // 2, 2).mean(axis=(1, 3)).round().astype(np.uint16)
    upscaled = metrics([half], [reference])["psnr"][0]
    much_noisier = metrics([noisy(reference, 8000)], [reference])["psnr"][0]
    assert much_noisier < upscaled < PSNR_CAP_DB
    # the Lanczos upscale of a smooth picture is close to it; a flat plane at the mean is not
    flat = np.full_like(half, int(reference.mean()))
    assert metrics([flat], [reference])["psnr"][0] < upscaled - 5


def test_row_k_belongs_to_pair_k():
    references = [scene(seed=k) for k in range(3)]
    distorted = [references[0], noisy(references[1], 2000), references[2]]
    m = metrics(distorted, references)
    assert (m["psnr"][[0, 2]] == PSNR_CAP_DB).all() and m["psnr"][1] < 50
    assert (m["xpsnr"][[0, 2]] == PSNR_CAP_DB).all() and m["xpsnr"][1] < 50
    assert m["ssim"][[0, 2]] == pytest.approx(1.0) and m["ssim"][1] < 0.999
    assert (m["msad"][[0, 2]] == 0).all() and m["msad"][1] > 0
    assert m["vif_s0"][[0, 2]] == pytest.approx(1.0, abs=1e-5) and m["vif_s0"][1] < 0.9


def test_one_16_bit_code_value_is_seen():
    """Planes that differ by 1 everywhere at 16 bits (identical in their top 8 bits, mostly): MSE 1, 96.3 dB."""
    reference = np.minimum(scene(), PEAK - 1)
    m = metrics([reference + 1], [reference])
    assert m["psnr"][0] == pytest.approx(20 * np.log10(PEAK), abs=1e-3)
    assert m["psnr"][0] < PSNR_CAP_DB
    assert m["msad"][0] > 0


def test_refusals():
    plane, small = scene(), scene(24, 32)
    with pytest.raises(ValueError, match="distorted 64x48, reference 32x24"):
        pair_metrics([plane], [small])
    with pytest.raises(ValueError, match="smaller"):
        pair_metrics([scene(24, 64)], [scene(48, 32)])
    with pytest.raises(ValueError, match="2 distorted frames but 1 reference"):
        pair_metrics([plane, plane], [plane])
    with pytest.raises(ValueError, match="no frame pairs"):
        pair_metrics([], [])
    with pytest.raises(ValueError, match="at least 16 pixels"):
        pair_metrics([scene(15, 32)], [scene(15, 32)])
    with pytest.raises(ValueError, match="uint16"):
        pair_metrics([plane.astype(np.float32)], [plane])
    with pytest.raises(ValueError, match="reference frames differ in size: 32x24, 64x48"):
        pair_metrics([small, small], [plane, small])
