"""features.audio: decoding soundtracks to 16 kHz mono on the video's clock, windows and envelopes of them, and the
weight-free log-mel statistics, on media written here with PyAV (stereo AAC at 44.1 kHz, with and without video)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from features.audio import (
    AUDIO_ENCODERS,
    SAMPLE_RATE,
    Audio,
    LogmelStats,
    audio_windows,
    create_audio_encoder,
    envelope,
    hz_to_mel,
    list_audio_encoders,
    mel_filterbank,
    mel_to_hz,
    read_audio,
)
from features.decode import FrameSampling, MediaError, sample_video
from synth.video import encode_mp4, render_source

SOURCE_RATE = 44100
AMPLITUDE = 0.5  # of the sine in each stereo channel
ONSET = 0.25  # seconds of silence before the tone in the files with video


def tone(frequency: float, seconds: float, rate: int = SAMPLE_RATE, amplitude: float = AMPLITUDE) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * frequency * np.arange(round(seconds * rate)) / rate)).astype(np.float32)


def write_media(
    path: Path, sound: np.ndarray, video: bool = False, audio_start: float = 0.0, video_start: float = 0.0
) -> Path:
    """`sound` at 44.1 kHz as stereo AAC (both channels alike) starting `audio_start` s in, and with `video` a 2 s
    64x48 H.264 stream at 8 fps starting `video_start` s in."""
    with av.open(str(path), mode="w") as container:
        if video:
            picture = container.add_stream("libx264", rate=8)
            picture.width, picture.height, picture.pix_fmt = 64, 48, "yuv420p"
        stream = container.add_stream("aac", rate=SOURCE_RATE, layout="stereo")
        stereo = np.stack([sound, sound])
        for first in range(0, sound.size, 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo[:, first : first + 1024]), format="fltp")
            frame.sample_rate, frame.pts = SOURCE_RATE, first + round(audio_start * SOURCE_RATE)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        if video:
            for index in range(16):
                image = av.VideoFrame.from_ndarray(np.full((48, 64, 3), index * 15, np.uint8), format="rgb24")
                image.pts = index + round(video_start * 8)
                container.mux(picture.encode(image))
            container.mux(picture.encode())
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("audio")
    late_tone = tone(440, 2.0, SOURCE_RATE)
    late_tone[: round(ONSET * SOURCE_RATE)] = 0
    mute = folder / "mute.mp4"
    encode_mp4(render_source(0, width=64, height=48, frames=16), mute)
    return {
        "tone": write_media(folder / "tone.m4a", tone(440, 2.0, SOURCE_RATE)),
        "video": write_media(folder / "video.mp4", late_tone, video=True),
        "late": write_media(folder / "late.mp4", late_tone, video=True, audio_start=0.5),
        "early": write_media(folder / "early.mp4", late_tone, video=True, video_start=0.5),
        "empty": write_media(folder / "empty.mkv", np.zeros(0, np.float32), video=True),  # an audio stream, no packet
        "mute": mute,
    }


@pytest.fixture(scope="module")
def stats() -> LogmelStats:
    return create_audio_encoder("logmel_stats")


def feature(features: torch.Tensor, name: str) -> torch.Tensor:
    return features[:, LogmelStats.names.index(name)]


def onset(samples: np.ndarray) -> float:
    return float(np.argmax(np.abs(samples) > 0.05)) / SAMPLE_RATE


# ---- decoding --------------------------------------------------------------------------------------------


def test_a_stereo_tone_decodes_to_16k_mono_at_its_frequency_and_length(media):
    audio = read_audio(str(media["tone"]))
    assert audio.has_audio and audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.duration == pytest.approx(2.0, abs=0.05) and audio.samples.size == round(audio.duration * SAMPLE_RATE)
    spectrum = np.abs(np.fft.rfft(audio.samples))
    assert np.argmax(spectrum) * SAMPLE_RATE / audio.samples.size == pytest.approx(440, abs=10)
    # The channels are averaged (swresample's float downmix would add them at 1/sqrt(2) each: RMS 0.5, not 0.35).
    middle = audio.samples[SAMPLE_RATE // 4 : -SAMPLE_RATE // 4]
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(AMPLITUDE / math.sqrt(2), abs=0.01)
    assert np.abs(audio.samples).max() <= 1.0


def test_audio_is_on_the_video_clock(media):
    assert onset(read_audio(str(media["video"])).samples) == pytest.approx(ONSET, abs=0.01)
    late = read_audio(str(media["late"]))  # the soundtrack starts 0.5 s after the first video frame
    assert onset(late.samples) == pytest.approx(0.5 + ONSET, abs=0.01)
    assert late.duration == pytest.approx(2.5, abs=0.01)
    assert not late.samples[: round(0.45 * SAMPLE_RATE)].any()
    early = read_audio(str(media["early"]))  # the video starts 0.5 s in: the soundtrack's first 0.5 s are before it
    assert early.duration == pytest.approx(1.5, abs=0.01)
    np.testing.assert_allclose(early.samples[:1000], read_audio(str(media["video"])).samples[8000:9000], atol=1e-3)


def test_seconds_caps_the_decoded_length(media):
    full = read_audio(str(media["tone"]))
    capped = read_audio(str(media["tone"]), seconds=0.5)
    assert capped.samples.size == SAMPLE_RATE // 2 and capped.duration == 0.5
    np.testing.assert_array_equal(capped.samples, full.samples[: SAMPLE_RATE // 2])
    with pytest.raises(ValueError, match="seconds"):
        read_audio(str(media["tone"]), seconds=-1.0)


def test_a_video_without_audio_is_not_an_error(media, stats):
    audio = read_audio(str(media["mute"]))
    assert not audio.has_audio and audio.samples.shape == (0,) and audio.samples.dtype == np.float32
    assert audio.duration == pytest.approx(2.0, abs=0.05)
    assert read_audio(str(media["mute"]), seconds=0.5).duration == 0.5
    windows, mask = audio_windows(audio, np.array([0.0, 1.0]), 0.5)
    assert windows.shape == (2, SAMPLE_RATE // 2) and not windows.any() and not mask.any()
    assert torch.isfinite(stats(torch.from_numpy(windows))).all()
    assert envelope(audio, 8.0).shape == (0,)
    empty = read_audio(str(media["empty"]))
    assert not empty.has_audio and empty.samples.size == 0 and empty.duration == pytest.approx(2.0, abs=0.05)


def test_unreadable_files_raise_media_error_naming_them(media, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    data = media["tone"].read_bytes()
    truncated = tmp_path / "truncated.m4a"
    truncated.write_bytes(data[: len(data) // 2])  # the index (moov) is written last, so it is gone
    empty = tmp_path / "empty.m4a"
    empty.touch()
    for path, reason in ((garbage, "cannot open"), (truncated, "cannot open"), (empty, "empty file")):
        with pytest.raises(MediaError, match=reason) as caught:
            read_audio(str(path))
        assert caught.value.path == str(path) and str(path) in str(caught.value)


def test_a_decoding_error_keeps_the_audio_before_it(media, tmp_path):
    data = media["tone"].read_bytes()
    payload = data.find(b"mdat") + 4  # the first AAC packet

    def corrupted(at: int) -> str:
        path = tmp_path / f"corrupt{at}.m4a"
        path.write_bytes(data[:at] + b"\xff" * 4000 + data[at + 4000 :])
        return str(path)

    with pytest.raises(MediaError, match="audio decoding failed before the first sample"):
        read_audio(corrupted(payload))
    partial = read_audio(corrupted(len(data) // 2))
    assert partial.has_audio and 0.2 < partial.duration < 1.9


# ---- windows and envelope --------------------------------------------------------------------------------


def test_windows_hold_the_samples_at_their_starts():
    ramp = (np.arange(2 * SAMPLE_RATE, dtype=np.float32) + 1) / (2 * SAMPLE_RATE)  # no sample is zero
    audio = Audio(ramp, True, 2.0)
    starts = np.array([0.0, 0.5, 1.5, 1.75, 1.8, -0.1])
    windows, mask = audio_windows(audio, starts, 0.5)
    half = SAMPLE_RATE // 2
    assert windows.shape == (6, half) and windows.dtype == np.float32
    for window, start in zip(windows[:3], (0, SAMPLE_RATE // 2, 3 * SAMPLE_RATE // 2)):
        np.testing.assert_array_equal(window, ramp[start : start + half])
    real = 2 * SAMPLE_RATE - round(1.8 * SAMPLE_RATE)  # 0.2 s of the window at 1.8 s
    np.testing.assert_array_equal(windows[4, :real], ramp[-real:])
    assert not windows[4, real:].any()
    assert not windows[5, : SAMPLE_RATE // 10].any()  # 0.1 s before the start
    np.testing.assert_array_equal(windows[5, SAMPLE_RATE // 10 :], ramp[: half - SAMPLE_RATE // 10])
    # 1.75 s holds exactly half its length of audio (kept), 1.8 s less than half (masked out)
    assert mask.tolist() == [True, True, True, True, False, True]
    with pytest.raises(ValueError, match=r"starts \[K\]"):
        audio_windows(audio, starts[None], 0.5)


def test_windows_at_key_frame_times_hear_what_plays_with_those_frames(media):
    clip = sample_video(str(media["video"]), FrameSampling(frames=2))
    windows, mask = audio_windows(read_audio(str(media["video"])), clip.times, 0.5)
    assert clip.times.tolist() == [0.0, 1.0] and mask.all()
    quiet = round(0.2 * SAMPLE_RATE)  # the tone starts at 0.25 s
    assert np.abs(windows[0, :quiet]).max() < 0.02
    assert np.sqrt(np.mean(windows[1] ** 2)) == pytest.approx(AMPLITUDE / math.sqrt(2), abs=0.01)


def test_envelope_is_the_rms_of_each_frame_interval(media):
    quiet, loud = tone(400, 1.0, amplitude=0.1), tone(400, 1.0, amplitude=0.5)
    audio = Audio(np.concatenate([quiet, loud]), True, 2.0)
    curve = envelope(audio, 10.0)
    assert curve.shape == (20,) and curve.dtype == np.float32
    np.testing.assert_allclose(curve, np.repeat([0.1, 0.5], 10) / math.sqrt(2), rtol=1e-3)
    # Frame rates that do not divide the sample rate: one value per interval, the last one partial.
    longer = tone(400, 16100 / SAMPLE_RATE)
    assert envelope(Audio(longer, True, 16100 / SAMPLE_RATE), 29.97).shape == (math.ceil(16100 * 29.97 / 16000),)
    decoded = envelope(read_audio(str(media["video"])), 8.0)
    assert decoded.shape == (16,) and decoded[0] < 0.01 and decoded[4] == pytest.approx(0.354, abs=0.01)
    with pytest.raises(ValueError, match="fps > 0"):
        envelope(audio, 0.0)


# ---- the encoder family ----------------------------------------------------------------------------------


def test_registry_lists_logmel_stats_and_rejects_unknown_names():
    assert list_audio_encoders() == ["logmel_stats"]
    with pytest.raises(ValueError, match=r"unknown audio encoder 'logmel'.*Did you mean 'logmel_stats'\?"):
        create_audio_encoder("logmel")
    with pytest.raises(ValueError, match="weight-free"):
        create_audio_encoder("logmel_stats", weights="hub")
    with pytest.raises(ValueError, match="registered twice"):
        AUDIO_ENCODERS.register("logmel_stats")(lambda weights, seed: LogmelStats())


def test_mel_filterbank_is_htk_triangles_up_to_nyquist():
    assert hz_to_mel(1000.0) == pytest.approx(1000.0, abs=0.1)
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(np.array([0.0, 440.0, 8000.0]))), [0.0, 440.0, 8000.0])
    filters = mel_filterbank()
    assert filters.shape == (40, 257) and filters.min() == 0.0 and filters.max() <= 1.0
    peaks = filters.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all() and (filters.max(axis=1) > 0.5).all()
    assert filters[:, 0].max() == 0.0 and filters[:, -1].max() < 1e-9  # nothing at 0 Hz or at 8 kHz


def test_logmel_stats_shape_identity_determinism_and_eval_mode(stats):
    windows = torch.from_numpy(np.random.default_rng(0).uniform(-0.3, 0.3, (3, SAMPLE_RATE)).astype(np.float32))
    features = stats(windows)
    assert features.shape == (3, stats.dim) and stats.dim == len(LogmelStats.names) + 1 == 115  # + has_audio
    assert (features[:, -1] == 1).all()
    absent = stats(torch.cat([windows[:1], torch.full_like(windows[:1], float("nan"))]))
    torch.testing.assert_close(absent[0], features[0])  # a real window is unchanged beside an absent one
    assert (absent[1] == 0).all()  # no audio: zeros, and the flag says so
    assert features.dtype == torch.float32 and torch.isfinite(features).all()
    torch.testing.assert_close(stats(windows), features, rtol=0, atol=0)
    torch.testing.assert_close(create_audio_encoder("logmel_stats")(windows), features, rtol=0, atol=0)
    torch.testing.assert_close(stats(windows[1:2]), features[1:2])  # a window's vector does not depend on its batch
    assert json.loads(json.dumps(stats.identity())) == stats.identity()
    assert not stats.train().training and not any(p.requires_grad for p in stats.parameters())
    for bad in (windows[:, None], windows[0], windows[:, :399], (windows * 100).long()):
        with pytest.raises(ValueError, match=r"\[B,S\]"):
            stats(bad)


def test_a_tone_shows_its_frequency(stats):
    features = stats(torch.from_numpy(tone(1000, 1.0))[None])
    assert feature(features, "centroid_mean").item() == pytest.approx(1000, abs=20)
    bin_1000 = round(1000 * 512 / SAMPLE_RATE)
    bands = features[0, : len(mel_filterbank())]
    assert bands.argmax().item() == mel_filterbank()[:, bin_1000].argmax()  # the band whose filter holds 1000 Hz
    assert feature(features, "zcr_mean").item() == pytest.approx(2 * 1000 / SAMPLE_RATE, abs=0.003)
    assert feature(features, "rms_db_mean").item() == pytest.approx(20 * math.log10(AMPLITUDE / math.sqrt(2)), abs=0.05)
    assert feature(features, "silent").item() == 0.0


def test_white_noise_is_flatter_than_a_tone(stats):
    noise = np.random.default_rng(1).normal(0, 0.1, SAMPLE_RATE).astype(np.float32)
    features = stats(torch.from_numpy(np.stack([noise, tone(1000, 1.0)])))
    flatness = feature(features, "flatness_mean")
    assert 0.5 < flatness[0] < 0.62  # exp(-Euler's gamma) = 0.56 for the exponential powers of white noise
    assert flatness[1] < 1e-3
    assert feature(features, "centroid_mean")[0].item() == pytest.approx(SAMPLE_RATE / 4, rel=0.05)


def test_silence_gives_finite_features_and_is_all_silent_frames(stats):
    half_silent = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), tone(1000, 0.5)])
    features = stats(torch.from_numpy(np.stack([np.zeros(SAMPLE_RATE, np.float32), half_silent])))
    assert torch.isfinite(features).all()
    assert feature(features, "silent").tolist() == pytest.approx([1.0, 0.5], abs=0.02)
    assert feature(features, "rms_db_max")[0].item() == pytest.approx(-100.0)  # the floor


def test_gain_shifts_loudness_and_nothing_else(stats):
    rng = np.random.default_rng(2)
    sound = 0.6 * tone(700, 1.0) + rng.normal(0, 0.02, SAMPLE_RATE).astype(np.float32)
    gains = np.array([1.0, 0.1, 3.0], dtype=np.float32)
    features = stats(torch.from_numpy(sound[None] * gains[:, None]))
    shift_db = 20 * np.log10(gains[1:])
    for name in ("rms_db_mean", "rms_db_max"):
        np.testing.assert_allclose(feature(features, name)[1:] - feature(features, name)[0], shift_db, atol=0.5)
    for name in ("rms_db_std", "zcr_mean", "centroid_mean", "centroid_std", "flatness_mean"):
        np.testing.assert_allclose(feature(features, name)[1:], feature(features, name)[0].expand(2), rtol=1e-3)
    names = LogmelStats.names
    logmel = features[:, [names.index(f"logmel_mean_{i:02d}") for i in range(40)]]
    np.testing.assert_allclose(logmel[1:] - logmel[0], np.log(gains[1:, None] ** 2).repeat(40, 1), atol=1e-3)
    mfcc = features[:, [names.index(f"mfcc_mean_{i:02d}") for i in range(13)]]
    # A constant offset of the log-mel moves only the orthonormal DCT's first coefficient, by offset * sqrt(40).
    np.testing.assert_allclose(mfcc[1:, 0] - mfcc[0, 0], np.log(gains[1:] ** 2) * math.sqrt(40), atol=1e-2)
    np.testing.assert_allclose(mfcc[1:, 1:], mfcc[0, 1:].expand(2, 12), atol=1e-3)
