"""synth.xgc_ugc: the organisers' list formats, the videos, the truth, determinism, per-dimension labels and the
invisibility of temporal distortions to a per-frame model."""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from common import metrics
from synth import xgc_ugc
from synth.dataset import TRUTH_DIR
from synth.video import render_source
from tracks.xgc_ugc import DIMENSIONS, TEST_LIST, TRAIN_LIST, VIDEO_DIR, XGCUGC

ITEMS, SEED, WIDTH, HEIGHT = 14, 3, 64, 48
FIVE = DIMENSIONS[:-1]
TEMPORAL = {"stutter": 1 / 3, "freeze": 0.3, "drop": 0.2}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("xgc") / "data"
    return out, xgc_ugc.synthesize(out, ITEMS, SEED, WIDTH, HEIGHT)


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def _files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _train_rows(out: Path) -> list[list[str]]:
    return [line.split("\t") for line in (out / TRAIN_LIST).read_bytes().decode().split("\n")]


def _test_names(out: Path) -> list[str]:
    return [line.split(",")[0] for line in (out / TEST_LIST).read_bytes().decode().split("\r\n")[:-1]]


def _mean_abs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.float64) - b).mean(axis=(-3, -2, -1))


# ------------------------------------------------------------------------------------------------------------ lists


def test_train_list_is_tab_separated_without_header_or_final_newline(dataset) -> None:
    out, table = dataset
    raw = (out / TRAIN_LIST).read_bytes()
    assert b"\r" not in raw and not raw.endswith(b"\n")
    rows = _train_rows(out)
    scores = table.set_index("filename")
    for row in rows:
        assert len(row) == 7 and re.fullmatch(r"\d+\.mp4", row[0]), row
        for dimension, text in zip(DIMENSIONS, row[1:], strict=True):
            value = scores.loc[row[0], dimension]
            assert text == f"{value:g}" and float(text) == pytest.approx(value, abs=5e-4), (row[0], dimension)
            if 10 <= abs(value) < 100:  # the organisers' 4 decimals (6 significant digits, trailing zeros dropped)
                assert re.fullmatch(r"-?\d\d(\.\d{1,4})?", text), text
    assert [row[0] for row in rows] == table.filename[table.split == "train"].tolist()


def test_test_list_has_crlf_and_minus_ones(dataset) -> None:
    out, table = dataset
    raw = (out / TEST_LIST).read_bytes().decode()
    lines = raw.split("\r\n")
    assert raw.endswith("\r\n") and lines[-1] == "" and "\n" not in raw.replace("\r\n", "")
    assert all(re.fullmatch(r"\d+\.mp4,-1,-1,-1", line) for line in lines[:-1]), lines
    assert _test_names(out) == table.filename[table.split == "test"].tolist()


def test_names_split_and_sources(dataset) -> None:
    out, table = dataset
    train, test = [row[0] for row in _train_rows(out)], _test_names(out)
    assert train == sorted(train) and test == sorted(test)  # as strings: 1, 10, 11, ..., 2
    assert not set(train) & set(test)
    assert set(train) | set(test) == {f"{k}.mp4" for k in range(1, ITEMS + 1)}
    wanted = max(2, round(ITEMS * xgc_ugc.TEST_FRACTION))
    assert wanted <= len(test) < wanted + 4, "whole sources go to test until it holds a fifth of the items"
    assert list(table.columns) == ["filename", "split", "source", *DIMENSIONS]
    assert table.filename.tolist() == sorted(train + test)
    sizes = table.groupby("source").size()
    assert sizes.max() > 1 and sizes.between(1, 4).all(), sizes
    assert table.groupby("source").split.nunique().eq(1).all(), "a source in both train and test"


# ----------------------------------------------------------------------------------------------- videos and truth


def test_every_listed_video_decodes_with_the_expected_frames(dataset) -> None:
    out, table = dataset
    assert sorted(p.name for p in (out / VIDEO_DIR).iterdir()) == sorted(table.filename)
    for name in table.filename:
        with av.open(str(out / VIDEO_DIR / name)) as container:
            stream = container.streams.video[0]
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
            assert float(stream.average_rate) == xgc_ugc.FPS
        assert len(frames) == xgc_ugc.FRAMES and frames[0].shape == (HEIGHT, WIDTH, 3), name


def test_truth_holds_exactly_the_test_items_and_their_scores(dataset) -> None:
    out, table = dataset
    path = out / TRUTH_DIR / XGCUGC.truth_file
    assert path.read_text().splitlines()[0] == "filename,color,noise,artifact,blur,temporal,overall"
    truth = pd.read_csv(path)
    assert truth.filename.tolist() == _test_names(out)
    expected = table[table.split == "test"].drop(columns=["split", "source"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(truth, expected, check_exact=True)


def test_same_seed_same_bytes_other_seed_other_scores(dataset, tmp_path) -> None:
    out, table = dataset
    again = xgc_ugc.synthesize(tmp_path / "again", ITEMS, SEED, WIDTH, HEIGHT)
    pd.testing.assert_frame_equal(again, table, check_exact=True)
    assert _files(tmp_path / "again") == _files(out)
    other = xgc_ugc.synthesize(tmp_path / "other", ITEMS, SEED + 1, WIDTH, HEIGHT)
    assert not np.allclose(other[list(FIVE)], table[list(FIVE)])


def test_rejects_too_few_items(tmp_path) -> None:
    with pytest.raises(ValueError, match="need at least 8"):
        xgc_ugc.synthesize(tmp_path, 7, 0)


# ---------------------------------------------------------------------------------------------------------- labels


def _draws(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scores and each dimension's quality of n drawn videos."""
    rng = np.random.default_rng(seed)
    scores, qualities = [], []
    for _ in range(n):
        severities = xgc_ugc.random_severities(rng)
        scores.append(xgc_ugc.label(severities, rng))
        qualities.append({d: xgc_ugc.dimension_quality(d, severities[d]) for d in FIVE})
    return pd.DataFrame(scores), pd.DataFrame(qualities)


def test_each_score_follows_its_own_distortion() -> None:
    scores, qualities = _draws(40, seed=0)
    for dimension in FIVE:
        assert metrics.srcc(scores[dimension], qualities[dimension]) > 0.8, dimension
    assert metrics.srcc(scores["overall"], scores[list(FIVE)].mean(axis=1)) > 0.8


def test_dimensions_are_drawn_independently() -> None:
    scores, qualities = _draws(400, seed=1)
    for dimension in FIVE:
        for other in FIVE:
            if other != dimension:
                assert abs(metrics.srcc(scores[dimension], qualities[other])) < 0.3, (dimension, other)
    assert (qualities == 1.0).mean().between(0.1, 0.3).all(), "about a fifth of the videos clean on each dimension"


def test_scores_centre_near_50_and_stay_mostly_within_0_to_100() -> None:
    scores, _ = _draws(400, seed=2)
    assert scores.mean().between(40, 60).all(), scores.mean()
    assert scores[list(FIVE)].std().between(18, 35).all(), scores.std()
    assert ((scores < 0) | (scores > 100)).to_numpy().mean() < 0.02


def test_pristine_severities_score_at_the_top() -> None:
    scores = pd.DataFrame([xgc_ugc.label({}, np.random.default_rng(k)) for k in range(50)])
    assert (scores.mean() - xgc_ugc.SCORE_PRISTINE).abs().max() < 3


# ------------------------------------------------------------------------------------------- temporal distortions


def test_shown_frames_of_each_temporal_distortion() -> None:
    assert xgc_ugc.shown_frames({}, seed=0).tolist() == list(range(xgc_ugc.FRAMES))
    stutter = xgc_ugc.shown_frames({"stutter": 1 / 4}, seed=0)
    assert stutter[:8].tolist() == [0, 1, 2, 2, 3, 4, 5, 5]
    for kind in ("freeze", "drop"):
        shown = xgc_ugc.shown_frames({kind: 0.25}, seed=0)
        steps = np.diff(shown)
        assert len(shown) == xgc_ugc.FRAMES and shown[0] == 0 and (steps >= 0).all()
        changed = steps == 0 if kind == "freeze" else steps > 1
        assert changed.any() and set(steps[~changed]) == {1}, (kind, shown)
    assert (np.diff(xgc_ugc.shown_frames({"drop": 0.25}, seed=0)) - 1).sum() == round(0.25 * xgc_ugc.FRAMES)
    combined = xgc_ugc.shown_frames(TEMPORAL, seed=0)
    assert combined.max() < xgc_ugc.SOURCE_FRAMES


def test_temporal_distortion_changes_no_frame_before_the_codec() -> None:
    source = render_source(1, WIDTH, HEIGHT, xgc_ugc.SOURCE_FRAMES)
    spatial = {
        "color": {"white_balance": 0.3, "saturation": 0.5, "cast": 10.0},
        "noise": {"luma": 6.0, "rgb": 4.0},
        "artifact": {"crf": 12, "blocks": 0.3},
        "blur": {"gaussian": 1.0, "defocus": 2.0},
    }
    with_time = xgc_ugc.distort_spatially(source, {**spatial, "temporal": TEMPORAL}, seed=9)
    np.testing.assert_array_equal(with_time, xgc_ugc.distort_spatially(source, spatial, seed=9))


@pytest.mark.parametrize("seed", [0, 5])
def test_temporal_distortion_shows_only_frames_of_the_undistorted_sequence(tmp_path, seed: int) -> None:
    """After the codec, every frame of a stuttered, frozen and dropping clip is the source frame its timing says, as
    close to it as the pristine clip's frames are to theirs; only a repeated position repeats a frame."""
    source = render_source(seed, WIDTH, HEIGHT, xgc_ugc.SOURCE_FRAMES)
    for name, severities in (("pristine", {}), ("temporal", {"temporal": TEMPORAL})):
        xgc_ugc.make_version(source, xgc_ugc.Version(tmp_path / f"{name}.mp4", severities, seed))
    pristine, temporal = _decode(tmp_path / "pristine.mp4"), _decode(tmp_path / "temporal.mp4")
    shown = xgc_ugc.shown_frames(TEMPORAL, seed)

    pristine_step = _mean_abs(pristine[1:], pristine[:-1])
    pristine_error = _mean_abs(pristine, source[: xgc_ugc.FRAMES])
    assert pristine_step.min() > 1.0, "the pristine clip repeats a frame (a repeat decodes within about 1 level)"

    distance = _mean_abs(temporal[:, None], source[None])  # [shown position, source frame]
    assert (distance.argmin(axis=1) == shown).all()
    assert distance.min(axis=1).max() <= 1.5 * pristine_error.max()
    temporal_step = _mean_abs(temporal[1:], temporal[:-1])
    repeated = np.diff(shown) == 0
    assert repeated.sum() >= 8
    assert temporal_step[repeated].max() < pristine_step.min() / 2 < temporal_step[~repeated].min()
