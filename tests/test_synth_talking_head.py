"""synth.talking_head: the organisers' list formats, whole source images per split, the truth, the video and audio
streams, lip sync by construction (and its breaking by lag and pauses), the score model and determinism."""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from common import metrics
from synth import talking_head
from synth.dataset import TRUTH_DIR
from tracks.talking_head import TEST_LIST, TRAIN_LIST, VAL_LIST, TalkingHead

ITEMS, SEED, WIDTH, HEIGHT = 14, 3, 64, 64
LISTS = {"train": TRAIN_LIST, "val": VAL_LIST, "test": TEST_LIST}
TRUTH = f"{TRUTH_DIR}/{TalkingHead.truth_file}"
REFERENCE = Path(__file__).parents[2] / "shared" / "reference" / "thqa"
# <source image>_<text-to-image model>_common_voice_en_<speech clip>_<generator>.mp4, as 92% of the real names are.
NAME = re.compile(r"(\d+)_([a-z0-9]+)_common_voice_en_(\d{8})_([a-z0-9]+)\.mp4")
RMS_HALF_WINDOW = 0.02  # s each side of a frame's time: a few pitch periods, short against a syllable
WRONG_LAG = 0.2  # s off the drawn lag: half a syllable or more


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("thqa") / "data"
    return out, talking_head.synthesize(out, ITEMS, SEED, WIDTH, HEIGHT)


@pytest.fixture(scope="module")
def decoded(dataset) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every video's frame times (s), frames and audio (mean over channels), decoded as a model would."""
    out, table = dataset
    media = {}
    for name in table.Video:
        with av.open(str(out / name)) as container:
            frames = list(container.decode(video=0))
        with av.open(str(out / name)) as container:
            audio = np.concatenate([frame.to_ndarray() for frame in container.decode(audio=0)], axis=1).mean(axis=0)
        pictures = np.stack([frame.to_ndarray(format="rgb24") for frame in frames])
        media[name] = np.array([frame.time for frame in frames]), pictures, audio
    return media


def _layout(raw: bytes) -> dict[str, object]:
    """What a parser of the file relies on: header, line ends, a final line end, blank lines, fields per row."""
    text = raw.decode("ascii")
    lines = text.split("\r\n")
    body = lines[1:-1] if text.endswith("\r\n") else lines[1:]
    return {
        "header": lines[0],
        "bare_lf": "\n" in text.replace("\r\n", ""),
        "final_crlf": text.endswith("\r\n") and not text.endswith("\r\n\r\n"),
        "blank": "" in body,
        "fields": {len(line.split(",")) for line in body},
    }


def _names(path: Path) -> list[str]:
    return [line.split(",")[0] for line in path.read_bytes().decode().split("\r\n")[1:] if line]


def _mouth_darkness(frames: np.ndarray) -> np.ndarray:
    rows, cols = talking_head.mouth_box(frames.shape[2], frames.shape[1])
    return 255 - frames[:, rows, cols].astype(np.float64).mean(axis=(1, 2, 3))


def _rms(audio: np.ndarray, sample_rate: int, times: np.ndarray) -> np.ndarray:
    """RMS of `audio` in a window around each time; silence outside the clip."""
    energy = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    bounds = np.rint((times[:, None] + [-RMS_HALF_WINDOW, RMS_HALF_WINDOW]) * sample_rate).astype(int)
    low, high = np.clip(bounds, 0, len(audio)).T
    return np.sqrt((energy[high] - energy[low]) / (2 * RMS_HALF_WINDOW * sample_rate))


def _distortions(row) -> talking_head.Distortions:
    return talking_head.Distortions(row.lag, row.pause, row.pause_start, row.pause_length, row.crf, row.jitter)


def _lip_sync(row, media: tuple[np.ndarray, np.ndarray, np.ndarray], lag: float) -> float:
    """Pearson of the mouth's darkness with the audio's RMS `lag` s after each frame, over the frames that no pause
    decouples from their sound."""
    times, frames, audio = media
    d = _distortions(row)
    synced = ~d.paused("mouth", times) & ~d.paused("audio", times + row.lag)
    return metrics.plcc(_mouth_darkness(frames)[synced], _rms(audio, row.sample_rate, times + lag)[synced])


# ------------------------------------------------------------------------------------------------------------ lists


def test_lists_and_truth_have_the_organisers_layout(dataset) -> None:
    out, table = dataset
    for split, filename in LISTS.items():
        header = "Video,Score" if split == "train" else "Video"
        expected = {"header": header, "bare_lf": False, "final_crlf": True, "blank": False}
        layout = _layout((out / filename).read_bytes())
        assert layout == expected | {"fields": {header.count(",") + 1}}, filename
        names = _names(out / filename)
        assert names and all(NAME.fullmatch(name) and len(name[:-4].split("_")) == 7 for name in names), names
    truth = _layout((out / TRUTH).read_bytes())
    assert truth == {"header": "Video,Score", "bare_lf": False, "final_crlf": False, "blank": False, "fields": {2}}
    train = pd.read_csv(out / TRAIN_LIST)
    assert list(train.columns) == ["Video", "Score"] and train.Score.dtype == np.float64 and train.notna().all().all()


def test_lists_parse_as_the_real_ones(dataset) -> None:
    out, _ = dataset
    if not REFERENCE.is_dir():
        pytest.skip(f"{REFERENCE} is not on this machine")
    real = {**{filename: filename for filename in LISTS.values()}, TRUTH: "thqa_ntire_val.csv"}
    for ours, theirs in real.items():
        assert _layout((out / ours).read_bytes()) == _layout((REFERENCE / theirs).read_bytes()), ours
        mine, reference = pd.read_csv(out / ours), pd.read_csv(REFERENCE / theirs)
        assert mine.dtypes.to_dict() == reference.dtypes.to_dict(), ours
        assert NAME.fullmatch(reference.Video[0]), theirs


def test_splits_hold_whole_source_images_in_name_order(dataset) -> None:
    out, table = dataset
    listed = {split: _names(out / filename) for split, filename in LISTS.items()}
    for split, names in listed.items():
        assert names == table.Video[table.split == split].tolist(), split
        fields = [NAME.fullmatch(name).groups() for name in names]
        assert fields == sorted(fields, key=lambda f: (f[0], f[1], f[3], f[2])), split  # source as text, so 10 < 4
    assert sorted(sum(listed.values(), [])) == sorted(table.Video) and table.Video.is_unique
    sources = {split: set(table.source[table.split == split]) for split in LISTS}
    assert all(sources.values()) and not (sources["train"] & sources["val"] or sources["train"] & sources["test"])
    assert not sources["val"] & sources["test"]
    assert (table.source == table.Video.str.split("_").str[0]).all()
    counts = table.split.value_counts()
    assert counts["train"] >= 0.6 * ITEMS and counts["val"] >= 1 and counts["test"] >= 1


def test_truth_holds_the_val_and_test_scores(dataset) -> None:
    out, table = dataset
    truth = pd.read_csv(out / TRUTH)
    held_out = table[table.split != "train"].sort_values("split", key=lambda s: s.map({"val": 0, "test": 1}))
    assert truth.Video.tolist() == held_out.Video.tolist()
    np.testing.assert_array_equal(truth.Score, held_out.Score)
    train = pd.read_csv(out / TRAIN_LIST)
    np.testing.assert_array_equal(train.Score, table.Score[table.split == "train"])


# ------------------------------------------------------------------------------------------------------------ media


def test_every_video_has_one_video_and_one_audio_stream_of_the_drawn_length(dataset, decoded) -> None:
    out, table = dataset
    for row in table.itertuples():
        duration = row.frames / row.fps
        assert 3 <= duration <= 4, row.Video
        with av.open(str(out / row.Video)) as container:
            video, audio = container.streams.video, container.streams.audio
            assert len(container.streams) == 2 and len(video) == 1 and len(audio) == 1, row.Video
            assert video[0].codec_context.name == "h264" and audio[0].codec_context.name == "aac"
            assert video[0].average_rate == row.fps and (video[0].width, video[0].height) == (WIDTH, HEIGHT)
            assert audio[0].rate == row.sample_rate and audio[0].channels == row.channels
            for stream in (video[0], audio[0]):  # edit lists count in the movie's milliseconds
                assert float(stream.duration * stream.time_base) == pytest.approx(duration, abs=1e-3), row.Video
        times, frames, samples = decoded[row.Video]
        assert len(frames) == row.frames
        np.testing.assert_allclose(times, np.arange(row.frames) / row.fps, atol=1e-3)
        # AAC codes whole frames of 1024 samples; the priming samples before 0 s are cut by the edit list.
        assert 0 <= len(samples) - round(duration * row.sample_rate) < 1024, row.Video


def test_the_mouth_follows_the_audio_shifted_by_the_drawn_lag(dataset, decoded) -> None:
    _, table = dataset
    assert {"none", "audio", "mouth"} == set(table.pause) and (table.lag == 0).any() and (table.lag != 0).any()
    lags = np.round(np.arange(-0.6, 0.61, 0.02), 2)
    for row in table.itertuples():
        media = decoded[row.Video]
        right = _lip_sync(row, media, row.lag)
        wrong = _lip_sync(row, media, row.lag + WRONG_LAG if row.lag < WRONG_LAG else row.lag - WRONG_LAG)
        best = lags[np.argmax([_lip_sync(row, media, lag) for lag in lags])]
        assert right > 0.8 and wrong < right - 0.2, (row.Video, right, wrong)
        assert abs(best - row.lag) <= 0.04, (row.Video, best, row.lag)


def test_pauses_mute_the_audio_or_freeze_the_mouth(dataset, decoded) -> None:
    _, table = dataset
    for row in table[table.pause != "none"].itertuples():
        times, frames, audio = decoded[row.Video]
        # An AAC frame (1024 samples) spreads sound into its neighbours: that far from the pause's ends, and a window.
        margin = 1024 / row.sample_rate + RMS_HALF_WINDOW
        inside = row.pause_start + margin, row.pause_start + row.pause_length - margin
        if row.pause == "audio":
            loudness = _rms(audio, row.sample_rate, np.linspace(*inside, 20))
            assert loudness.max() < 1e-3 * np.abs(audio).max(), row.Video
        else:
            darkness = _mouth_darkness(frames)
            frozen = darkness[_distortions(row).paused("mouth", times)]
            assert len(frozen) >= 2 and np.ptp(frozen) < 0.1 * np.ptp(darkness), row.Video


# ----------------------------------------------------------------------------------------------------------- labels


def test_scores_fall_with_the_sync_error_most() -> None:
    rng = np.random.default_rng(0)
    drawn = [talking_head.random_distortions(rng, 3.5) for _ in range(2000)]
    scores = np.array([talking_head.label(d, rng) for d in drawn])
    assert scores.min() >= 0 and scores.max() <= talking_head.SCORE_MAX
    np.testing.assert_allclose(scores, np.round(scores, 1))
    severities = pd.DataFrame([d.severities() for d in drawn])
    correlation = {kind: metrics.srcc(scores, severities[kind]) for kind in severities}
    assert correlation["sync"] < -0.7, correlation
    assert all(correlation["sync"] < value for kind, value in correlation.items() if kind != "sync"), correlation
    assert (severities.sync == 0).mean() == pytest.approx(talking_head.IN_SYNC, abs=0.05)
    assert talking_head.label(talking_head.Distortions(), np.random.default_rng(0)) > 4.5


def test_same_seed_same_dataset(dataset, tmp_path: Path) -> None:
    out, table = dataset
    again = talking_head.synthesize(tmp_path, ITEMS, SEED, WIDTH, HEIGHT, workers=1)
    pd.testing.assert_frame_equal(again, table)
    files = sorted(path.relative_to(out) for path in out.rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*") if path.is_file())
    for path in files:  # the AAC encoder is byte for byte reproducible too
        assert (out / path).read_bytes() == (tmp_path / path).read_bytes(), path
    other = talking_head.synthesize(tmp_path / "other", ITEMS, SEED + 1, WIDTH, HEIGHT)
    assert other.Video.tolist() != table.Video.tolist()
