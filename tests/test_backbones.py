import hashlib
import math
import socket

import huggingface_hub
import pytest
import safetensors.torch
import timm
import torch
import torch.nn.functional as F

from features.backbones import (
    QualityStats,
    TimmBackbone,
    WeightsNotFound,
    create_backbone,
    detail_statistics,
    list_backbones,
    luminance,
    register_backbone,
)


def textured(size: int = 64, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A natural-ish image: smooth shading plus fine random texture, kept away from clipping."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, size // 8, size // 8, generator=g)
    coarse = F.interpolate(coarse, size=(size, size), mode="bilinear")
    fine = torch.rand(batch, 3, size, size, generator=g)
    return (0.15 + 0.5 * coarse + 0.2 * fine).clamp(0, 1)


def smooth(size: int = 128) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    grey = 0.5 + 0.15 * torch.sin(2 * math.pi * x) * torch.cos(math.pi * y)
    return grey.expand(1, 3, size, size).clone()


def feature(features: torch.Tensor, name: str) -> torch.Tensor:
    return features[:, QualityStats.names.index(name)]


@pytest.fixture(scope="module")
def stats() -> QualityStats:
    return create_backbone("quality_stats", weights="none")


# ---- registry --------------------------------------------------------------------------------------------


def test_registry_lists_quality_stats_and_rejects_duplicates():
    assert "quality_stats" in list_backbones()
    with pytest.raises(ValueError, match="registered twice"):
        register_backbone("quality_stats")(lambda weights, seed: QualityStats())


def test_backbone_stays_frozen(stats):
    stats.train()
    assert not stats.training
    vit = create_backbone("test_vit")
    vit.train()
    assert not any(m.training for m in vit.modules())
    assert not any(p.requires_grad for p in vit.parameters())
    out = vit(torch.rand(2, 3, 32, 32, requires_grad=True))
    assert not out.requires_grad


@pytest.mark.parametrize(
    "bad", [torch.rand(3, 32, 32), torch.rand(1, 1, 32, 32), torch.zeros(1, 3, 32, 32, dtype=torch.uint8)]
)
def test_rejects_malformed_input(stats, bad):
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        stats(bad)


# ---- quality_stats -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "images",
    [
        torch.rand(3, 3, 64, 64),
        torch.zeros(2, 3, 64, 64),
        torch.ones(1, 3, 40, 40),
        torch.full((2, 3, 16, 16), 0.5),
        torch.rand(1, 3, 16, 24),
    ],
    ids=["random", "black", "white-odd", "grey-tiny", "tiny"],
)
def test_quality_stats_shape_and_finite(stats, images):
    out = stats(images)
    assert out.shape == (len(images), stats.dim) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert stats.dim == len(QualityStats.names) == len(set(QualityStats.names))
    assert 100 <= stats.dim <= 140


def test_quality_stats_rejects_images_too_small(stats):
    with pytest.raises(ValueError, match="at least 16x16"):
        stats(torch.rand(1, 3, 8, 32))


def test_quality_stats_identity_and_no_weights():
    assert create_backbone("quality_stats").identity() == {"name": "quality_stats", "version": 2}
    with pytest.raises(ValueError, match="no weights"):
        create_backbone("quality_stats", weights="hub")


def test_quality_stats_batch_rows_are_independent(stats):
    images = textured(batch=3)
    together = stats(images)
    alone = torch.cat([stats(image[None]) for image in images])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_blur_lowers_sharpness(stats):
    image = textured()
    blurred = F.avg_pool2d(F.pad(image, (2, 2, 2, 2), mode="reflect"), 5, stride=1)
    sharp, soft = stats(image), stats(blurred)
    for name in ("log_laplacian_var", "log_gradient_mean"):
        assert feature(soft, f"{name}@s1") < feature(sharp, f"{name}@s1") - 0.5, name
        assert feature(soft, f"{name}@s2") < feature(sharp, f"{name}@s2"), name


def test_noise_estimate_tracks_added_noise(stats):
    clean = smooth()
    sigma = 10 / 255
    noise = sigma * torch.randn(1, 1, *clean.shape[-2:], generator=torch.Generator().manual_seed(0))
    noisy = clean + noise  # same noise in every channel, so luma noise has exactly this sigma
    assert noisy.min() > 0 and noisy.max() < 1
    estimate = detail_statistics(luminance(noisy))["noise_sigma"].item()
    assert abs(estimate - sigma) < 0.3 * sigma
    assert detail_statistics(luminance(clean))["noise_sigma"].item() < 0.1 * sigma
    assert feature(stats(noisy), "log_noise_sigma@s1") > feature(stats(clean), "log_noise_sigma@s1") + 1


def test_block_averaging_raises_blockiness(stats):
    image = textured(size=96)
    blocky = F.interpolate(F.avg_pool2d(image, 8), scale_factor=8, mode="nearest")
    offset = blocky[..., 3:67, 5:69]  # a crop that is not aligned to the block grid
    plain = stats(image[..., :64, :64])
    for name in ("blockiness_h@s1", "blockiness_v@s1"):
        assert abs(feature(plain, name).item()) < 0.5, name
        assert feature(stats(blocky), name) > feature(plain, name) + 1, name
        assert feature(stats(offset), name) > feature(plain, name) + 1, name


def test_colourfulness_grey_vs_saturated(stats):
    grey = textured().mean(dim=1, keepdim=True).expand(1, 3, 64, 64)
    saturated = torch.zeros(1, 3, 64, 64)
    saturated[:, 0, :, :32] = 1.0
    saturated[:, 2, :, 32:] = 1.0
    for name in ("colourfulness", "saturation"):
        assert feature(stats(grey), name).abs() < 1e-4, name
        assert feature(stats(saturated), name) > 0.5, name


# Values from quality_stats on `pinned_image`, those of version 1 from its per-kernel reference implementation (version
# 2 kept them): a refactor that moves any of them has changed the features and must bump QualityStats.version.
PINNED_FEATURES = {
    "brightness": 0.513348,
    "contrast": 0.111273,
    "colourfulness": 0.190249,
    "saturation": 0.271056,
    "log_laplacian_var@s1": 6.87230,
    "log_gradient_mean@s1": 4.13158,
    "log_noise_sigma@s2": 1.44436,
    "blockiness_h@s1": 1.18994,
    "blockiness_v@s1": 1.28978,
    "mscn_var@s1": 0.428143,
    "mscn_skew@s1": -0.160997,
    "mscn_kurt@s2": 2.48892,
    "pair_d2_mean@s1": -0.115353,
    "pair_h_var@s2": 0.142413,
    # added in version 2 (features.nss); the fitted shapes are left out: they are steps of a lookup grid, so a last-bit
    # difference between machines may move one a whole step
    "cast_rg": 0.00395782,
    "highlight_yb": 0.0255982,
    "channel_spread": 0.00315893,
    "luma_p95": 0.700673,
    "blur": 0.351899,
    "log_noise_floor": 2.51345,
    "ggd_var@s2": 0.35603,
    "aggd_d2_right_var@s2": 0.0784021,
    "gmlog_pg3": 0.238095,
    "gmlog_ql5": 0.0353965,
}


def pinned_image() -> torch.Tensor:
    """16x24 RGB from integer arithmetic only (ramps, an integer hash, an 8-px checkerboard): no RNG to drift."""
    y, x = torch.meshgrid(torch.arange(16.0), torch.arange(24.0), indexing="ij")
    texture = (torch.arange(3 * 16 * 24).reshape(3, 16, 24) * 37 % 101) / 101.0
    ramp = torch.stack([x / 24.0, y / 16.0, (x + y) / 40.0])
    blocks = (x // 8 + y // 8) % 2
    return (0.2 + 0.4 * ramp + 0.15 * texture + 0.1 * blocks)[None]


def test_quality_stats_pinned_values(stats):
    out = stats(pinned_image())
    actual = {name: feature(out, name).item() for name in PINNED_FEATURES}
    assert actual == pytest.approx(PINNED_FEATURES, rel=1e-4, abs=1e-5)


# ---- timm ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", ["test_vit", "test_resnet", "mobilenetv3_small_050"])
def test_timm_output_width_matches_dim(name, images):
    backbone = create_backbone(name)
    out = backbone(images[..., :48])  # non-square, non-native sizes are resized to the model's input size
    assert out.shape == (2, backbone.dim) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_timm_same_seed_same_vectors(images):
    a, b = create_backbone("test_vit", seed=3), create_backbone("test_vit", seed=3)
    c = create_backbone("test_vit", seed=4)
    assert torch.equal(a(images), b(images))
    assert a.identity() == b.identity() and a.identity()["weights"] == "random(seed=3)"
    assert not torch.allclose(a(images), c(images))
    assert a.identity() != c.identity()


def test_timm_seed_does_not_disturb_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    create_backbone("test_resnet", seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_timm_identity_records_normalisation():
    identity = create_backbone("test_resnet").identity()
    data = timm.data.resolve_model_data_config(timm.create_model("test_resnet"))
    assert identity["mean"] == list(data["mean"]) and identity["std"] == list(data["std"])
    assert identity["input_size"] == list(data["input_size"][1:])


def _save(state: dict, path) -> None:
    if path.suffix == ".safetensors":
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save(state, path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_round_trip(tmp_path, images, suffix):
    source = create_backbone("test_vit", seed=1)
    path = tmp_path / f"weights{suffix}"
    _save(source.model.state_dict(), path)
    loaded = create_backbone("test_vit", weights=str(path))
    assert torch.equal(loaded(images), source(images))
    assert not torch.allclose(loaded(images), create_backbone("test_vit", seed=0)(images))
    assert loaded.identity()["weights"] == {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def test_local_checkpoint_with_classifier_and_wrapper(tmp_path, images):
    full = timm.create_model("test_resnet", num_classes=1000)
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": full.state_dict(), "epoch": 3}, path)
    loaded = create_backbone("test_resnet", weights=str(path))
    full.reset_classifier(0)
    expected = TimmBackbone("test_resnet", full.eval(), "saved")(images)
    assert torch.equal(loaded(images), expected)


def test_local_weights_with_foreign_keys_are_refused(tmp_path):
    state = {f"model.{k}": v for k, v in create_backbone("test_vit").model.state_dict().items()}
    path = tmp_path / "lightning.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"lightning\.pth.*missing \[cls_token"):
        create_backbone("test_vit", weights=str(path))


class _Payload:
    """Arbitrary pickled object: loading it would mean executing code from the file."""


def test_local_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "unsafe.pth"
    torch.save({"state_dict": create_backbone("test_resnet").model.state_dict(), "payload": _Payload()}, path)
    with pytest.raises(ValueError, match="cannot load weights safely"):
        create_backbone("test_resnet", weights=str(path))


def test_missing_weights_file_names_the_path(tmp_path):
    path = tmp_path / "absent.safetensors"
    with pytest.raises(WeightsNotFound, match="absent.safetensors"):
        create_backbone("test_vit", weights=str(path))


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache and a socket layer that fails any connection attempt."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    return cache


def test_hub_weights_missing_from_cache(offline_hub):
    with pytest.raises(WeightsNotFound) as error:
        create_backbone("test_vit", weights="hub")
    message = str(error.value)
    assert "'test_vit'" in message and str(offline_hub) in message
    assert "huggingface-cli download timm/test_vit.r160_in1k" in message
    assert "weights=/path/to/" in message


def test_hub_weights_from_cache(offline_hub, images):
    source = create_backbone("test_vit", seed=5)
    snapshot = offline_hub / "models--timm--test_vit.r160_in1k" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (offline_hub / "models--timm--test_vit.r160_in1k" / "refs").mkdir()
    (offline_hub / "models--timm--test_vit.r160_in1k" / "refs" / "main").write_text("a" * 40)
    path = snapshot / "model.safetensors"
    _save(source.model.state_dict(), path)
    loaded = create_backbone("test_vit", weights="hub")
    assert torch.equal(loaded(images), source(images))
    assert loaded.identity()["weights"] == {
        "hub_id": "timm/test_vit.r160_in1k",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


@pytest.mark.parametrize(
    "name, suggestion", [("test_vitt", "test_vit"), ("resnet5O", "resnet50"), ("test_vit.nope", "test_vit")]
)
def test_unknown_name_suggests_close_matches(name, suggestion):
    with pytest.raises(ValueError, match=f"did you mean.*'{suggestion}'"):
        create_backbone(name)


def test_channels_last_gives_the_vectors_of_the_plain_model():
    backbone = create_backbone("test_resnet", weights="random")
    images = torch.rand(2, 3, *backbone.input_size)
    plain = timm.create_model("test_resnet", pretrained=False, num_classes=0).eval()
    plain.load_state_dict(backbone.model.state_dict())
    with torch.no_grad():
        expected = plain((images - backbone.mean) / backbone.std)
    torch.testing.assert_close(backbone(images), expected, rtol=1e-4, atol=1e-5)
