import hashlib
import json
import math
import shutil

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from torchvision.models import video

from features.backbones import WeightsNotFound
from features.motion import (
    MOTION_ENCODERS,
    MotionEncoder,
    TemporalStats,
    create_motion_encoder,
    hub_checkpoint,
    list_motion_encoders,
)

VIDEO_MODELS = ["r3d_18", "mc3_18", "r2plus1d_18", "s3d", "mvit_v2_s", "swin3d_t"]
# (dim, size, frames, min_frames), as found by building each model and feeding it clips of several lengths
EXPECTED = {
    "r3d_18": (512, 112, None, 1),
    "mc3_18": (512, 112, None, 1),
    "r2plus1d_18": (512, 112, None, 1),
    "s3d": (1024, 224, None, 14),
    "mvit_v2_s": (768, 224, 16, 16),
    "swin3d_t": (768, 224, None, 1),
}
KINETICS_MEAN, KINETICS_STD = [0.43216, 0.394666, 0.37645], [0.22803, 0.22145, 0.216989]


def textured(side: int = 32, seed: int = 0) -> torch.Tensor:
    """One natural-ish RGB frame [3,S,S]: smooth shading plus fine texture, kept away from clipping."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand(1, 3, side // 8, side // 8, generator=g), size=(side, side), mode="bilinear")
    return (0.2 + 0.4 * coarse[0] + 0.2 * torch.rand(3, side, side, generator=g)).clamp(0, 1)


def clip_of(*frames: torch.Tensor) -> torch.Tensor:
    """[1,L,3,S,S] from L frames [3,S,S]."""
    return torch.stack(frames)[None]


def stat(features: torch.Tensor, name: str) -> torch.Tensor:
    return features[:, TemporalStats.names.index(name)]


def clips_for(encoder: MotionEncoder, batch: int = 2, side: int = 32, seed: int = 0) -> torch.Tensor:
    length = encoder.frames or max(4, encoder.min_frames)
    return torch.rand(batch, length, 3, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def stats() -> MotionEncoder:
    return create_motion_encoder("temporal_stats")


# ---- registry --------------------------------------------------------------------------------------------


def test_registry_lists_every_encoder_and_rejects_unknown_names():
    assert list_motion_encoders() == sorted([*VIDEO_MODELS, "temporal_stats"])
    with pytest.raises(ValueError, match=r"unknown motion encoder 'r3d18'.*Did you mean 'r3d_18'\?"):
        create_motion_encoder("r3d18")
    with pytest.raises(ValueError, match="registered twice"):
        MOTION_ENCODERS.register("temporal_stats")(lambda weights, seed: TemporalStats())


def test_temporal_stats_has_no_weights():
    with pytest.raises(ValueError, match="weight-free"):
        create_motion_encoder("temporal_stats", weights="hub")


# ---- temporal statistics ---------------------------------------------------------------------------------


def test_temporal_stats_shape_identity_and_determinism(stats):
    clips = torch.rand(3, 5, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    out = stats(clips)
    assert out.shape == (3, TemporalStats.dim) and TemporalStats.dim == len(TemporalStats.names) == 23
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.equal(out, stats(clips.clone()))
    assert torch.allclose(out[1:2], stats(clips[1:2]), rtol=1e-5, atol=1e-6)  # clips do not see each other
    assert stats(clips.double()).dtype == torch.float32
    assert stats.size is None and stats.frames is None
    assert json.loads(json.dumps(stats.identity())) == {
        "name": "temporal_stats",
        "luma": "bt601",
        "same_threshold": 1 / 255,
        "version": 2,
    }


def test_static_clip_has_no_motion_and_is_all_frozen(stats):
    frame = textured()
    out = stats(clip_of(*[frame] * 6))
    for name in ("energy_mean", "energy_std", "energy_max", "flicker_std", "flicker_change", "ti_max", "ti_mean"):
        assert stat(out, name).item() == 0.0, name
    assert stat(out, "energy_mean@s2").item() == 0.0
    assert stat(out, "frozen").item() == 1.0
    assert stat(out, "repeated").item() == pytest.approx(4 / 6)  # frames 2..5 equal frame 0, not their predecessor


def test_frozen_and_repeated_fractions_count_frames(stats):
    a, b, c = textured(seed=1), textured(seed=2), textured(seed=3)
    out = stats(torch.cat([clip_of(a, b, a, c), clip_of(a, b, c, textured(seed=4)), clip_of(a, a, b, c)]))
    assert stat(out, "repeated").tolist() == pytest.approx([1 / 4, 0.0, 0.0])  # A B A C: the third frame repeats
    assert stat(out, "frozen").tolist() == pytest.approx([0.0, 0.0, 1 / 3])  # A A B C: one pair of three frozen


def test_temporal_information_follows_p910(stats):
    """TI = max over time of the spatial std of the frame difference, in 8-bit code values."""
    still, half_lit = torch.zeros(3, 8, 8), torch.zeros(3, 8, 8)
    half_lit[:, :, :4] = 0.2  # the difference is 0.2 on half the pixels: spatial std 0.1
    out = stats(clip_of(still, half_lit, half_lit))
    assert stat(out, "ti_max").item() == pytest.approx(0.1 * 255, rel=1e-5)
    assert stat(out, "ti_mean").item() == pytest.approx(0.1 * 255 / 2, rel=1e-5)
    assert stat(out, "energy_mean").item() == pytest.approx(0.1 / 2, rel=1e-5)
    assert stat(out, "energy_max").item() == pytest.approx(0.1, rel=1e-5)


def test_half_resolution_energy_separates_noise_from_motion(stats):
    g = torch.Generator().manual_seed(0)
    base = textured(64).expand(8, 3, 64, 64)
    noisy = (base + 0.05 * torch.randn(8, 3, 64, 64, generator=g)).clamp(0, 1)
    x = torch.arange(64.0)
    moving = torch.stack([0.5 + 0.3 * torch.sin(2 * math.pi * (x - 2 * t) / 16) for t in range(8)])
    moving = moving[:, None, None, :].expand(8, 3, 64, 64)
    noise, motion = stats(noisy[None]), stats(moving[None])
    assert stat(noise, "energy_mean").item() > 1.7 * stat(noise, "energy_mean@s2").item() > 0.01
    assert stat(motion, "energy_mean@s2").item() > 0.9 * stat(motion, "energy_mean").item() > 0.05
    assert stat(motion, "frozen").item() == 0.0 and stat(noise, "frozen").item() == 0.0


def test_luminance_flicker_is_measured_apart_from_texture(stats):
    frame = textured(seed=5)
    steady = clip_of(*[frame] * 6)
    flicker = clip_of(*[(frame + (0.1 if t % 2 else -0.1)).clamp(0, 1) for t in range(6)])
    out = stats(torch.cat([steady, flicker]))
    assert stat(out, "flicker_std")[0].item() == 0.0 and stat(out, "flicker_change")[0].item() == 0.0
    assert stat(out, "flicker_std")[1].item() == pytest.approx(0.1, rel=0.05)
    assert stat(out, "flicker_change")[1].item() == pytest.approx(0.2, rel=0.05)


def test_single_frame_gives_finite_zeros(stats):
    out = stats(torch.rand(2, 1, 3, 16, 16))
    assert out.shape == (2, TemporalStats.dim) and torch.equal(out, torch.zeros_like(out))


def test_input_is_checked(stats):
    with pytest.raises(ValueError, match=r"\[B,L,3,S,S\].*got torch.float32 \(2, 3, 4, 16, 16\)"):
        stats(torch.rand(2, 3, 4, 16, 16))
    with pytest.raises(ValueError, match=r"\[B,L,3,S,S\].*got torch.float32 \(4, 3, 16, 16\)"):
        stats(torch.rand(4, 3, 16, 16))
    with pytest.raises(ValueError, match="torch.uint8"):
        stats(torch.zeros(1, 2, 3, 16, 16, dtype=torch.uint8))


# ---- torchvision video models -----------------------------------------------------------------------------


@pytest.fixture(scope="module", params=VIDEO_MODELS)
def encoder(request: pytest.FixtureRequest) -> MotionEncoder:
    return create_motion_encoder(request.param, weights="random", seed=0)


def test_video_encoder_shape_seed_and_identity(encoder):
    name = encoder.identity()["name"]
    dim, size, frames, min_frames = EXPECTED[name]
    assert (encoder.dim, encoder.size, encoder.frames, encoder.min_frames) == (dim, size, frames, min_frames)
    clips = clips_for(encoder)
    out = encoder(clips)
    assert out.shape == (2, dim) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert out.abs().amax() > 0 and not torch.allclose(out[0], out[1])  # the clips are told apart
    weights = encoder.state_dict()  # the seed decides every weight (compared, not run: a forward costs seconds)
    same, other = (create_motion_encoder(name, seed=seed).state_dict() for seed in (0, 1))
    assert all(torch.equal(same[key], value) for key, value in weights.items())
    assert any(value.is_floating_point() and not torch.equal(other[key], value) for key, value in weights.items())
    identity = encoder.identity()
    assert json.loads(json.dumps(identity)) == identity
    assert identity["weights"] == "random:seed0" and identity["size"] == size and identity["version"] == 1
    assert "/" not in json.dumps(identity)


def test_video_encoder_normalisation_comes_from_its_weights(encoder):
    """Not one Kinetics constant: torchvision's MViT and Swin3D weights were trained with other statistics."""
    name, identity = encoder.identity()["name"], encoder.identity()
    if name == "mvit_v2_s":
        assert (identity["mean"], identity["std"]) == ([0.45] * 3, [0.225] * 3)
    elif name == "swin3d_t":
        assert (identity["mean"], identity["std"]) == ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    else:
        assert (identity["mean"], identity["std"]) == (KINETICS_MEAN, KINETICS_STD)
    # what encode normalises with is what the identity records
    assert encoder.mean.flatten().tolist() == pytest.approx(identity["mean"])
    assert encoder.std.flatten().tolist() == pytest.approx(identity["std"])


def test_video_encoder_stays_frozen(encoder):
    encoder.train()
    assert not any(module.training for module in encoder.modules())
    assert not any(p.requires_grad for p in encoder.parameters())


def test_video_encoder_names_the_shape_it_expects(encoder):
    expected = encoder.expected_shape()
    length = encoder.frames or max(4, encoder.min_frames)
    with pytest.raises(ValueError, match=rf"shaped \[B,{encoder.frames or 'L'},3,S,S\].*got torch.float32"):
        encoder(torch.rand(1, 3, length, 32, 32))  # the models' own [B,3,L,H,W] order
    assert f"resized to {encoder.size}" in expected
    if encoder.frames is not None:
        with pytest.raises(ValueError, match=rf"\[B,{encoder.frames},3,S,S\].*\(1, 8, 3, 32, 32\)"):
            encoder(torch.rand(1, 8, 3, 32, 32))
    if encoder.min_frames > 1 and encoder.frames is None:
        with pytest.raises(ValueError, match=rf"L >= {encoder.min_frames}"):
            encoder(torch.rand(1, encoder.min_frames - 1, 3, 32, 32))


def test_building_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    create_motion_encoder("r3d_18", seed=7)
    assert torch.equal(torch.rand(4), expected)


def test_any_clip_side_is_resized_to_the_model_size():
    encoder = create_motion_encoder("r3d_18")
    clips = clips_for(encoder, batch=1, side=64)
    frames = F.interpolate(clips.flatten(0, 1), size=(112, 112), mode="bilinear", antialias=True)
    assert torch.allclose(encoder(clips), encoder(frames.unflatten(0, clips.shape[:2])), atol=1e-5)


# ---- weights ---------------------------------------------------------------------------------------------


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub"


def full_model_state(name: str, seed: int) -> dict[str, torch.Tensor]:
    """The whole torchvision model's state dict, classifier included, as torchvision's weight files hold it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return getattr(video, name)().state_dict()


def test_hub_weights_come_from_the_torch_hub_cache_only(empty_hub):
    expected = empty_hub / "checkpoints" / "mc3_18-a90a0ba3.pth"
    with pytest.raises(WeightsNotFound) as error:
        create_motion_encoder("mc3_18", weights="hub")
    message = str(error.value)
    assert str(expected) in message and "MC3_18_Weights.KINETICS400_V1" in message
    assert "python -c" in message and "checkpoints/mc3_18-a90a0ba3.pth" in message

    expected.parent.mkdir(parents=True)
    torch.save(full_model_state("mc3_18", seed=3), expected)  # with the classifier, as torchvision saves it
    loaded = create_motion_encoder("mc3_18", weights="hub")
    clips = clips_for(loaded, batch=1)
    assert torch.equal(loaded(clips), create_motion_encoder("mc3_18", seed=3)(clips))
    assert loaded.identity()["weights"] == "MC3_18_Weights.KINETICS400_V1"
    assert str(empty_hub) not in json.dumps(loaded.identity())


def test_hub_file_is_named_after_each_weights_url(empty_hub):
    with pytest.raises(WeightsNotFound, match=r"checkpoints/s3d-d76dad2f\.pth.*S3D_Weights\.KINETICS400_V1"):
        hub_checkpoint("s3d")


def test_local_weights_file_loads_and_is_identified_by_content(tmp_path):
    source = create_motion_encoder("mc3_18", seed=4)
    path = tmp_path / "a" / "motion.pth"
    path.parent.mkdir()
    torch.save(source.model.state_dict(), path)  # without the classifier keys
    loaded = create_motion_encoder("mc3_18", weights=str(path))
    clips = clips_for(loaded, batch=1)
    assert torch.equal(loaded(clips), source(clips))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.identity()["weights"] == f"sha256:{digest}"
    assert "motion.pth" not in json.dumps(loaded.identity())
    copy = tmp_path / "b" / "elsewhere.pth"
    copy.parent.mkdir()
    shutil.copy(path, copy)
    assert create_motion_encoder("mc3_18", weights=str(copy)).identity() == loaded.identity()


def test_safetensors_file_loads(tmp_path):
    path = tmp_path / "motion.safetensors"
    safetensors.torch.save_file(full_model_state("s3d", seed=2), path)  # S3D's classifier is nested: classifier.1.*
    loaded = create_motion_encoder("s3d", weights=str(path))
    clips = clips_for(loaded, batch=1)
    assert torch.equal(loaded(clips), create_motion_encoder("s3d", seed=2)(clips))


def test_weights_file_is_loaded_strictly(tmp_path):
    state = full_model_state("mc3_18", seed=0)
    del state["layer4.1.conv2.1.running_mean"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"(?s)partial\.pth.*layer4\.1\.conv2\.1\.running_mean.*extra\.weight"):
        create_motion_encoder("mc3_18", weights=str(path))
    torch.save(full_model_state("s3d", seed=0), path)  # another model's weights
    with pytest.raises(ValueError, match="not a state dict of torchvision's mc3_18"):
        create_motion_encoder("mc3_18", weights=str(path))
    with pytest.raises(WeightsNotFound, match=r"missing\.pth"):
        create_motion_encoder("mc3_18", weights=str(tmp_path / "missing.pth"))
    (tmp_path / "motion.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported weights file type"):
        create_motion_encoder("mc3_18", weights=str(tmp_path / "motion.onnx"))
