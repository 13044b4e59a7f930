"""synth.video: procedural sources, known distortions, atomic mp4 encoding and the quality model."""

from __future__ import annotations

import dataclasses
import os

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synth import video
from synth.video import Distortion, distort, encode_mp4, quality, random_distortion, render_source


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return render_source(7, width=96, height=64, frames=12)


def _luma(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _gradient_energy(frames: np.ndarray) -> float:
    luma = _luma(frames)
    return float(np.mean(np.diff(luma, axis=1) ** 2) + np.mean(np.diff(luma, axis=2) ** 2))


def _laplacian_energy(frames: np.ndarray) -> float:
    luma = _luma(frames)
    laplacian = (
        luma[:, :-2, 1:-1] + luma[:, 2:, 1:-1] + luma[:, 1:-1, :-2] + luma[:, 1:-1, 2:] - 4 * luma[:, 1:-1, 1:-1]
    )
    return float(np.mean(laplacian**2))


def _decode(path: os.PathLike) -> tuple[np.ndarray, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])
        return frames, float(stream.average_rate)


# ---------------------------------------------------------------------------------------------------------- sources


def test_render_source_shape_and_dtype() -> None:
    frames = render_source(0, width=64, height=48, frames=5)
    assert frames.shape == (5, 48, 64, 3)
    assert frames.dtype == np.uint8
    assert render_source(0).shape == (64, 240, 320, 3)


def test_render_source_is_deterministic_in_seed(clip: np.ndarray) -> None:
    np.testing.assert_array_equal(render_source(7, width=96, height=64, frames=12), clip)


def test_render_source_differs_between_seeds(clip: np.ndarray) -> None:
    for seed in (8, 9, 10):
        other = render_source(seed, width=96, height=64, frames=12)
        assert np.abs(other.astype(int) - clip).mean() > 20, f"seed {seed} looks like seed 7"
    colours = [render_source(seed, width=32, height=32, frames=2).reshape(-1, 3).mean(axis=0) for seed in range(6)]
    assert np.ptp(np.stack(colours), axis=0).max() > 30, "sources should differ in colour"


def test_render_source_moves_and_has_texture(clip: np.ndarray) -> None:
    step = np.abs(np.diff(clip.astype(int), axis=0)).mean(axis=(1, 2, 3))
    assert (step > 0.5).all(), f"some consecutive frames barely change: {step}"
    assert _gradient_energy(clip) > 10


def test_render_source_rejects_empty_size() -> None:
    with pytest.raises(ValueError, match="width, height and frames must be >= 1"):
        render_source(0, width=0)


# ------------------------------------------------------------------------------------------------------ distortions


def test_pristine_distortion_is_identity(clip: np.ndarray) -> None:
    out = distort(clip, Distortion(), seed=0)
    np.testing.assert_array_equal(out, clip)
    assert out is not clip


@pytest.mark.parametrize(
    "d",
    [Distortion(blur=1.5), Distortion(downscale=2.5), Distortion(noise=10), Distortion(drop=3)],
    ids=["blur", "downscale", "noise", "drop"],
)
def test_distort_keeps_shape_and_dtype_and_leaves_input_alone(clip: np.ndarray, d: Distortion) -> None:
    before = clip.copy()
    out = distort(clip, d, seed=0)
    assert out.shape == clip.shape and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(clip, before)


def test_blur_lowers_gradient_energy(clip: np.ndarray) -> None:
    energies = [_gradient_energy(distort(clip, Distortion(blur=sigma), seed=0)) for sigma in (0.0, 0.7, 1.5, 3.0)]
    assert all(a > b for a, b in zip(energies, energies[1:], strict=False)), energies


def test_blur_keeps_flat_content_flat() -> None:
    flat = np.full((2, 16, 20, 3), 123, dtype=np.uint8)
    np.testing.assert_array_equal(distort(flat, Distortion(blur=2.0, downscale=3.3), seed=0), flat)


def test_downscale_lowers_detail(clip: np.ndarray) -> None:
    energies = [_laplacian_energy(distort(clip, Distortion(downscale=f), seed=0)) for f in (1.0, 1.5, 2.0, 4.0)]
    assert all(a > b for a, b in zip(energies, energies[1:], strict=False)), energies


def test_noise_raises_high_frequency_energy_by_its_std(clip: np.ndarray) -> None:
    noisy = distort(clip, Distortion(noise=12.0), seed=3)
    assert _laplacian_energy(noisy) > 2 * _laplacian_energy(clip)
    residual = noisy.astype(float) - clip
    assert abs(residual.mean()) < 1.0
    assert 9.0 < residual.std() < 13.0  # clipping at 0/255 can only shrink it


def test_noise_is_seeded(clip: np.ndarray) -> None:
    d = Distortion(noise=8.0)
    np.testing.assert_array_equal(distort(clip, d, seed=1), distort(clip, d, seed=1))
    assert not np.array_equal(distort(clip, d, seed=1), distort(clip, d, seed=2))


@pytest.mark.parametrize("every", [2, 3, 4])
def test_drop_repeats_every_nth_frame(clip: np.ndarray, every: int) -> None:
    out = distort(clip, Distortion(drop=every), seed=0)
    for i in range(len(clip)):
        if (i + 1) % every == 0:
            np.testing.assert_array_equal(out[i], clip[i - 1], err_msg=f"frame {i} should repeat frame {i - 1}")
        else:
            np.testing.assert_array_equal(out[i], clip[i], err_msg=f"frame {i} should be untouched")
    duplicated = [i for i in range(1, len(out)) if np.array_equal(out[i], out[i - 1])]
    assert duplicated == list(range(every - 1, len(out), every))


def test_distort_rejects_non_video(clip: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"uint8 array \[frames, height, width, 3\], got float32"):
        distort(clip.astype(np.float32), Distortion(), seed=0)


@pytest.mark.parametrize(
    ("field", "value"),
    [("crf", 52), ("crf", -1), ("crf", 20.5), ("blur", -0.1), ("noise", float("nan")), ("downscale", 0.5), ("drop", 1)],
)
def test_distortion_validates_its_fields(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"Distortion.{field}="):
        Distortion(**{field: value})


# --------------------------------------------------------------------------------------------------------- encoding


def test_encode_mp4_round_trip_and_crf(tmp_path, clip: np.ndarray) -> None:
    sizes, errors = {}, {}
    for crf in (18, 40):
        path = tmp_path / f"crf{crf}.mp4"
        encode_mp4(clip, path, fps=10, crf=crf)
        decoded, rate = _decode(path)
        assert decoded.shape == clip.shape
        assert rate == 10
        sizes[crf] = path.stat().st_size
        errors[crf] = float(np.abs(decoded.astype(float) - clip).mean())
    assert errors[18] < 6, errors
    assert sizes[40] < sizes[18] and errors[40] > errors[18], (sizes, errors)
    assert sorted(os.listdir(tmp_path)) == ["crf18.mp4", "crf40.mp4"], "a temporary file was left behind"


def test_encode_mp4_is_byte_for_byte_repeatable(tmp_path) -> None:
    """The demo's data, and so its scores, are the same on every run: libx264's macroblock-tree rate control gave
    different bytes for the same frames on 5 of 12 (source, crf) pairs, 5 encodes each, in the FFmpeg PyAV bundles."""
    for seed in range(3):
        frames = render_source(seed, width=320, height=240, frames=32)
        for crf in (18, 30):
            encoded = set()
            for k in range(4):
                encode_mp4(frames, tmp_path / f"{k}.mp4", crf=crf)
                encoded.add((tmp_path / f"{k}.mp4").read_bytes())
            assert len(encoded) == 1, f"source {seed}, crf {crf}: {len(encoded)} different encodings of the same frames"


def test_encode_mp4_replaces_an_existing_file(tmp_path, clip: np.ndarray) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"stale")
    encode_mp4(clip, str(path))
    assert _decode(path)[0].shape == clip.shape
    assert os.listdir(tmp_path) == ["clip.mp4"]


def test_encode_mp4_failure_keeps_the_old_file_and_no_partial(tmp_path, clip: np.ndarray, monkeypatch) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"previous run")

    def killed(*_args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(video.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        encode_mp4(clip, path)
    assert path.read_bytes() == b"previous run"
    assert os.listdir(tmp_path) == ["clip.mp4"]


@pytest.mark.parametrize(("width", "height"), [(63, 48), (64, 47)])
def test_encode_mp4_rejects_odd_sizes(tmp_path, width: int, height: int) -> None:
    frames = np.zeros((2, height, width, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=rf"odd\.mp4.*even width and height, got {width}x{height}"):
        encode_mp4(frames, tmp_path / "odd.mp4")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(("kwargs", "message"), [({"crf": 60}, "crf must be"), ({"fps": 0}, "fps must be")])
def test_encode_mp4_rejects_bad_settings(tmp_path, clip: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode_mp4(clip, tmp_path / "bad.mp4", **kwargs)


# ---------------------------------------------------------------------------------------------------------- quality

LADDERS = {
    "crf": [18, 20, 23, 28, 35, 45, 51],
    "blur": [0.0, 0.3, 1.0, 2.0, 3.0, 6.0],
    "noise": [0.0, 1.0, 5.0, 10.0, 20.0, 40.0],
    "downscale": [1.0, 1.2, 2.0, 3.0, 4.0, 8.0],
    "drop": [0, 6, 4, 3, 2],  # ordered by how often a frame is held
}


def test_quality_of_pristine_is_one() -> None:
    assert quality(Distortion()) == 1.0
    assert quality(Distortion(crf=0)) == 1.0


@pytest.mark.parametrize("field", list(LADDERS))
def test_quality_strictly_decreases_along_each_severity(field: str) -> None:
    for base in (Distortion(), Distortion(crf=30, blur=1.0), Distortion(noise=10.0, drop=3)):
        values = [quality(dataclasses.replace(base, **{field: v})) for v in LADDERS[field]]
        assert all(0.0 <= q <= 1.0 for q in values)
        assert all(a > b for a, b in zip(values, values[1:], strict=False)), (field, base, values)


def test_each_distortion_alone_halves_quality_at_its_documented_point() -> None:
    halves = {
        "crf": video.PRISTINE_CRF + round(video.HALF_QUALITY["crf"]),
        "blur": video.HALF_QUALITY["blur"],
        "noise": video.HALF_QUALITY["noise"],
        "downscale": 2 ** video.HALF_QUALITY["downscale"],
        "drop": round(1 / video.HALF_QUALITY["drop"]),
    }
    for field, value in halves.items():
        assert quality(Distortion(**{field: value})) == pytest.approx(0.5), field


distortions = st.builds(
    Distortion,
    crf=st.integers(0, 51),
    blur=st.floats(0, 10),
    noise=st.floats(0, 50),
    downscale=st.floats(1, 8),
    drop=st.sampled_from([0, 2, 3, 4, 8]),
)


@settings(max_examples=200, deadline=None)
@given(d=distortions, field=st.sampled_from(["crf", "blur", "noise", "downscale"]), step=st.floats(0.05, 5))
def test_quality_is_bounded_and_monotone(d: Distortion, field: str, step: float) -> None:
    assert 0.0 <= quality(d) <= 1.0
    value = getattr(d, field)
    if field == "crf":
        worse_value = min(max(value, video.PRISTINE_CRF) + max(1, round(step)), video.MAX_CRF)
        if worse_value <= max(value, video.PRISTINE_CRF):
            return
    else:
        worse_value = value + step
    assert quality(dataclasses.replace(d, **{field: worse_value})) < quality(d)


def test_random_distortion_is_seeded_plausible_and_spreads_quality() -> None:
    first = [random_distortion(np.random.default_rng(seed)) for seed in range(300)]
    again = [random_distortion(np.random.default_rng(seed)) for seed in range(300)]
    assert first == again
    pristine = Distortion()
    for d in first:
        changed = [f.name for f in dataclasses.fields(d) if getattr(d, f.name) != getattr(pristine, f.name)]
        assert 1 <= len(changed) <= 2, d
        assert 20 <= d.crf <= 45 or d.crf == video.PRISTINE_CRF
        assert 0 <= d.blur <= 3 and 0 <= d.noise <= 20 and 1 <= d.downscale <= 4 and d.drop in (0, 2, 3, 4)
        assert isinstance(d.crf, int) and isinstance(d.drop, int)
    qualities = np.array([quality(d) for d in first])
    assert qualities.min() < 0.2 and qualities.max() > 0.9 and qualities.std() > 0.15
    assert {"crf", "blur", "noise", "downscale", "drop"} == {
        f.name for d in first for f in dataclasses.fields(d) if getattr(d, f.name) != getattr(pristine, f.name)
    }
