"""synth.hdr: the HDRSDR-VQA layout and names, the colour tags and bit depths of the two ranges, the real sizes of
the versions, 10-bit references, the score model and determinism."""

from __future__ import annotations

import re
from pathlib import Path

import av
import numpy as np
import pytest

from features.colour import yuv_to_rgb
from features.hdr import HDR10, SDR, ColourTags, decode_planes, linear_light, read_tags
from synth import hdr
from synth.dataset import TRUTH_DIR
from tracks.hdr import REFERENCE_TAG, HdrTrack

ITEMS, SEED, WIDTH, HEIGHT = 16, 1, 64, 48
TRUTH = f"{TRUTH_DIR}/{HdrTrack.truth_file}"
NAME = re.compile(r"(\d+)_([A-Z][A-Za-z]+)_(HDR10|SDR)_(\d+)x(\d+)_(\d+)k\.mp4")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hdrsdr") / "data"
    hdr.synthesize(out, items=ITEMS, seed=SEED, width=WIDTH, height=HEIGHT)
    return out


def _rows(path: Path) -> tuple[str, list[list[str]]]:
    """The header and the rows of a list, checking it is UTF-8 with `\\n` line ends and no blank lines."""
    text = path.read_bytes().decode("utf-8")
    assert "\r" not in text and text.endswith("\n") and "\n\n" not in text
    header, *lines = text.splitlines()
    return header, [line.split(",") for line in lines]


def _scores(data: Path) -> dict[str, float]:
    """Every distorted video's score, train and test."""
    rows = _rows(data / "train.csv")[1] + _rows(data / TRUTH)[1]
    return {video: float(score) for video, score in rows}


def _reference(video: str) -> str:
    return re.sub(r"_\d+x\d+_\d+k\.mp4$", f"_{REFERENCE_TAG}.mp4", video)


def _size(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as container:
        codec = container.streams.video[0].codec_context
        return codec.width, codec.height


def test_layout(data):
    train_header, train = _rows(data / "train.csv")
    test_header, test = _rows(data / "test.csv")
    truth_header, truth = _rows(data / TRUTH)
    assert (train_header, test_header, truth_header) == ("video,score", "video", "video,score")
    assert {len(row) for row in train} == {len(row) for row in truth} == {2} and {len(row) for row in test} == {1}
    train_videos, test_videos = [row[0] for row in train], [row[0] for row in test]
    assert [row[0] for row in truth] == test_videos
    assert len(train_videos) + len(test_videos) == ITEMS and len(set(train_videos + test_videos)) == ITEMS

    def contents(videos: list[str]) -> set[tuple[str, str]]:
        return {NAME.fullmatch(video).group(1, 2) for video in videos}

    for video in train_videos + test_videos:
        assert NAME.fullmatch(video) and REFERENCE_TAG not in video, video
        assert (data / "videos" / video).is_file() and (data / "videos" / _reference(video)).is_file()
    assert test_videos and not contents(train_videos) & contents(test_videos)
    assert len(contents(train_videos)) >= 2
    for videos in (train_videos, test_videos):  # each content of a split has both its ranges there
        ranges = {NAME.fullmatch(video).group(1, 2, 3) for video in videos}
        assert ranges == {(*content, coding) for content in contents(videos) for coding in hdr.RANGES}
    references = {_reference(video) for video in train_videos + test_videos}
    assert len(references) == len(hdr.RANGES) * len(contents(train_videos + test_videos))
    assert {path.name for path in (data / "videos").iterdir()} == set(train_videos + test_videos) | references


def test_colour_tags_and_pixel_formats(data):
    for coding, tags, pix_fmt in [
        ("HDR10", ColourTags("pq", "bt2020", "bt2020nc", "limited", 10), "yuv420p10le"),
        ("SDR", ColourTags("bt709", "bt709", "bt709", "limited", 8), "yuv420p"),
    ]:
        for path in (data / "videos").glob(f"*_{coding}_*.mp4"):
            assert read_tags(path) == (tags, "stream"), path.name  # from the stream, not the name
            with av.open(str(path)) as container:
                assert container.streams.video[0].codec_context.pix_fmt == pix_fmt


def test_versions_are_smaller_and_references_are_10_bit(data):
    scores = _scores(data)
    for video in scores:
        match = NAME.fullmatch(video)
        nominal = int(match[4])
        width, height = _size(data / "videos" / video)
        ref_width, ref_height = _size(data / "videos" / _reference(video))
        assert (ref_width, ref_height) == (WIDTH, HEIGHT)
        assert (width, height) == hdr.real_size(nominal, WIDTH, HEIGHT)
        assert abs(width - max(hdr.MIN_SIDE, WIDTH * nominal / 3840)) <= 1  # the nominal ratio, rounded to even
        assert height <= HEIGHT and width % 2 == height % 2 == 0
        if nominal < 3840:
            assert width < WIDTH
    reference = next((data / "videos").glob(f"*_HDR10_{REFERENCE_TAG}.mp4"))
    planes = decode_planes(reference, 4)
    assert len(planes) == 4 and all(plane.y.max() > 255 for plane in planes)
    assert any((plane.y % 4).any() for plane in planes)  # codes an 8-bit source scaled up would not use


def test_hdr10_keeps_the_highlight_that_sdr_rolls_off(data):
    hdr_reference = next((data / "videos").glob(f"*_HDR10_{REFERENCE_TAG}.mp4"))
    sdr_reference = Path(str(hdr_reference).replace("_HDR10_", "_SDR_"))
    hdr_nits = np.stack([linear_light(p, HDR10) for p in decode_planes(hdr_reference, 8)]) * 10000
    sdr_nits = np.stack([linear_light(p, SDR) for p in decode_planes(sdr_reference, 8)]) * 10000
    assert hdr_nits.max() > 300 and hdr_nits.min() < 0.2  # highlight and shadow, cd/m^2
    assert sdr_nits.max() <= 101  # BT.1886 white; BT.709 -> BT.2020 keeps white at white


@pytest.mark.parametrize("matrix, bit_depth", [("bt2020nc", 10), ("bt709", 8)])
def test_rgb_to_yuv_inverts_yuv_to_rgb(matrix, bit_depth):
    """Flat 2x2 pictures, so the chroma average is exact and only the quantisation is left."""
    colours = np.concatenate([np.eye(3), 1 - np.eye(3), np.random.default_rng(0).random((20, 3))])
    pictures = np.broadcast_to(colours[:, :, None, None], (len(colours), 3, 2, 2))
    y, u, v = hdr.rgb_to_yuv(pictures, matrix, bit_depth)
    assert y.shape == (len(colours), 2, 2) and u.shape == v.shape == (len(colours), 1, 1) and y.dtype == np.uint16
    back = np.stack([yuv_to_rgb(*planes, matrix, "limited", bit_depth)[:, 0, 0] for planes in zip(y, u, v)])
    np.testing.assert_allclose(back, colours, atol=2 / (219 * 2 ** (bit_depth - 8)))
    scale = 2 ** (bit_depth - 8)
    white = hdr.rgb_to_yuv(np.ones((3, 2, 2)), matrix, bit_depth)
    assert [int(p.flat[0]) for p in white] == [235 * scale, 128 * scale, 128 * scale]


def test_scores_follow_the_distortion(data):
    scores = _scores(data)
    low, high = hdr.SCORE_RANGE
    assert all(low <= score <= high for score in scores.values())
    by_reference: dict[str, list[tuple[int, int, float]]] = {}
    for video, score in scores.items():
        match = NAME.fullmatch(video)
        by_reference.setdefault(_reference(video), []).append((int(match[4]), int(match[6]), score))
    for versions in by_reference.values():
        assert min(versions)[2] < max(versions)[2]  # 960x540 800k below 3840x2160 15000k
    assert hdr.expected_score(1920, 25, 0, 0) < hdr.expected_score(3840, 25, 0, 0)
    assert hdr.expected_score(3840, 33, 0, 0) < hdr.expected_score(3840, 25, 0, 0)
    qps = [hdr.qp_for(*rung) for rung in hdr.LADDER]
    assert hdr.qp_for(3840, 2160, 6000) > hdr.qp_for(3840, 2160, 15000) and 0 <= min(qps) <= max(qps) <= 51


def test_same_seed_same_dataset(data, tmp_path):
    hdr.synthesize(tmp_path, items=ITEMS, seed=SEED, width=WIDTH, height=HEIGHT)
    files = ["train.csv", "test.csv", TRUTH, *(f"videos/{p.name}" for p in (data / "videos").iterdir())]
    for name in files:  # the videos too: one x265 thread per encode gives the same bytes
        assert (tmp_path / name).read_bytes() == (data / name).read_bytes(), name


def test_too_few_items_is_refused(tmp_path):
    with pytest.raises(ValueError, match="items=5"):
        hdr.synthesize(tmp_path, items=5, seed=SEED)
