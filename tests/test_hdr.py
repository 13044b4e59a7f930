"""HDR decoded as HDR (features.hdr, its maths in features.colour): the standards' numbers, our YUV->RGB, tags and
native-depth planes of real (synthetic, lossless x265) clips, and the point of it all: 10-bit detail that an 8-bit
decode throws away."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from features.colour import (
    bt1886_eotf,
    bt1886_inverse_eotf,
    pq_eotf,
    pq_inverse_eotf,
    primaries_matrix,
    pu_encode,
    upsample_chroma,
    yuv_to_rgb,
)
from features.decode import MediaError
from features.hdr import (
    HDR10,
    SDR,
    ColourTags,
    code_values,
    decode_planes,
    linear_light,
    perceptual,
    read_tags,
    tags_from_name,
)
from synth.hdr import Signal, encode_planes

W, H, FPS = 64, 48, 8
UNSPECIFIED = (2, 2, 2, 0)  # H.273 "unspecified" for primaries, transfer and matrix; range 0 is unspecified too
HDR10_CODES = (9, 16, 9, 1)  # H.273 primaries BT.2020, transfer SMPTE 2084, matrix BT.2020nc, range limited
X265_HDR10 = "colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc:range=limited"


def write_hevc(path: Path, frames, pix_fmt="yuv420p10le", codes=None, x265_params="") -> Path:
    """Lossless libx265 mp4 of `frames` [(Y, U, V) integer planes] through synth.hdr.encode_planes; `codes`
    (primaries, trc, matrix, range) set on the codec context, or tags passed in `x265_params`; neither: untagged."""
    depth = 10 if "10" in pix_fmt else 8
    signal = Signal(pix_fmt, depth, "bt2020nc", x265_params, codes or UNSPECIFIED)
    encode_planes(path, *(np.stack([frame[k] for frame in frames]) for k in range(3)), signal, qp=None, fps=FPS)
    return path


def flat(y, u=512, v=512, dtype=np.uint16):
    return (np.full((H, W), y, dtype), np.full((H // 2, W // 2), u, dtype), np.full((H // 2, W // 2), v, dtype))


def gradient() -> np.ndarray:
    """A smooth 10-bit luma ramp (300..363 across, +1 per row block): every 10-bit code value, low bits 0..3."""
    return (300 + np.arange(W)[None, :] + np.arange(H)[:, None] // 8).astype(np.uint16)


def rounded_to_8_bits(codes: np.ndarray) -> np.ndarray:
    """The 10-bit codes of the same picture's 8-bit rounding (half up), i.e. with everything below bit 8 removed."""
    return ((codes.astype(np.int32) + 2) >> 2 << 2).astype(np.uint16)


# --- transfer functions ------------------------------------------------------------------------------------------


def test_pq_eotf_matches_the_standard_values():
    assert pq_eotf(0.0) == 0.0
    assert pq_eotf(1.0) == pytest.approx(10000.0, rel=1e-12)
    assert pq_eotf(0.508078421517399) == pytest.approx(100.0, rel=1e-9)  # colour-science's doctest vector
    assert pq_eotf(0.5081) == pytest.approx(100.0, rel=1e-3)
    assert pq_eotf(0.7518) == pytest.approx(1000.0, rel=1e-3)
    assert pq_inverse_eotf(100.0) == pytest.approx(0.5080784, abs=1e-7)
    assert pq_inverse_eotf(1000.0) == pytest.approx(0.7518271, abs=1e-7)
    # 10-bit limited-range codes: black 64, white 940 (the PQ peak), and two between
    nits = pq_eotf((np.array([64, 520, 768, 940]) - 64) / 876)
    np.testing.assert_allclose(nits, [0.0, 113.17, 1608.14, 10000.0], atol=0.01)


def test_pq_inverse_undoes_the_eotf_over_a_grid():
    grid = np.linspace(0, 1, 4097)
    np.testing.assert_allclose(pq_inverse_eotf(pq_eotf(grid)), grid, atol=1e-6)  # code 0 -> c1^m2 = 7.3e-7
    nits = np.geomspace(1e-3, 1e4, 200)
    np.testing.assert_allclose(pq_eotf(pq_inverse_eotf(nits)), nits, rtol=1e-9)
    assert pq_eotf(np.float32(0.5)).dtype == np.float32  # views stay float32


def test_bt1886_puts_sdr_on_the_absolute_axis():
    assert bt1886_eotf(1.0) == pytest.approx(100.0)
    assert bt1886_eotf(0.5) == pytest.approx(100 * 0.5**2.4)
    assert bt1886_eotf(0.0, peak=200, black=0.1) == pytest.approx(0.1)
    assert bt1886_eotf(1.0, peak=200, black=0.1) == pytest.approx(200.0)
    grid = np.linspace(0, 1, 101)
    np.testing.assert_allclose(bt1886_inverse_eotf(bt1886_eotf(grid, 300, 0.05), 300, 0.05), grid, atol=1e-9)
    # SDR white and PQ's 100 cd/m^2 are the same point of the shared PU axis
    assert pu_encode(bt1886_eotf(1.0)) == pytest.approx(0.5080784, abs=1e-7)


def test_bt709_to_bt2020_is_the_bt2087_matrix():
    expected = [[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]]
    np.testing.assert_allclose(primaries_matrix("bt709", "bt2020"), expected, atol=1e-4)
    np.testing.assert_allclose(primaries_matrix("bt709", "bt2020").sum(axis=1), 1.0, atol=1e-12)  # white stays


# --- YUV -> RGB --------------------------------------------------------------------------------------------------


def test_limited_range_10_bit_black_and_white():
    black = yuv_to_rgb(*flat(64), "bt2020nc", "limited", 10)
    white = yuv_to_rgb(*flat(940), "bt2020nc", "limited", 10)
    assert black.shape == (3, H, W) and black.dtype == np.float32
    np.testing.assert_allclose(black, 0.0, atol=1e-7)
    np.testing.assert_allclose(white, 1.0, atol=1e-6)
    np.testing.assert_allclose(yuv_to_rgb(*flat(235, 128, 128), "bt709", "limited", 8), 1.0, atol=1e-6)
    np.testing.assert_allclose(yuv_to_rgb(*flat(1023), "bt709", "full", 10), 1.0, atol=1e-6)
    np.testing.assert_allclose(yuv_to_rgb(*flat(0, 128, 128), "bt709", "full", 8), 0.0, atol=1e-6)


@pytest.mark.parametrize("matrix, kr, kb", [("bt2020nc", 0.2627, 0.0593), ("bt709", 0.2126, 0.0722)])
def test_primaries_round_trip_through_the_matrix(matrix, kr, kb):
    """R'G'B' -> 10-bit limited Y'CbCr by the standard's equations (here, independently) -> yuv_to_rgb."""
    rng = np.random.default_rng(0)
    rgb = np.concatenate([np.eye(3), 1 - np.eye(3), rng.random((58, 3))]).T.reshape(3, 8, 8)  # primaries first
    r, g, b = rgb
    ey = kr * r + (1 - kr - kb) * g + kb * b
    y = np.round(64 + 876 * ey)
    u = np.round(512 + 896 * (b - ey) / (2 * (1 - kb)))
    v = np.round(512 + 896 * (r - ey) / (2 * (1 - kr)))
    back = yuv_to_rgb(y, u, v, matrix, "limited", 10)  # chroma at full resolution: the matrix alone
    np.testing.assert_allclose(back, rgb, atol=3e-3)  # 10-bit quantisation only
    np.testing.assert_allclose(back[:, 0, :3], np.eye(3), atol=3e-3)  # the BT.2020 (or BT.709) primaries


def test_chroma_upsampling_is_bilinear_at_the_hevc_siting():
    c = np.array([[0.0, 4.0], [8.0, 8.0]])
    up = upsample_chroma(c, (4, 4))
    # columns co-sited (0, mean, 4, 4 at the edge); rows interstitial (3/4 own + 1/4 neighbour)
    np.testing.assert_allclose(up[:, 0], [0, 2, 6, 8])
    np.testing.assert_allclose(up[0], [0, 2, 4, 4])
    assert upsample_chroma(np.ones((3, 4)), (5, 7)).shape == (5, 7)  # odd sizes: chroma rounded up
    with pytest.raises(ValueError):
        upsample_chroma(np.ones((3, 3)), (12, 12))


# --- tags and planes of real clips -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hdr_clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hdr")
    frames = [flat(200 + 100 * i, 480 + 10 * i, 560 - 10 * i) for i in range(4)]
    return {
        "tagged": write_hevc(folder / "tagged.mp4", frames, codes=HDR10_CODES),
        "x265": write_hevc(folder / "x265.mp4", frames, x265_params=X265_HDR10),
        "named": write_hevc(folder / "1_Basketball_Afternoon_HDR10_64x48_800k.mp4", frames),
        "sdr": write_hevc(folder / "2_Park_SDR_64x48_300k.mp4", [flat(100, 128, 128, np.uint8)], "yuv420p"),
        "plain": write_hevc(folder / "plain.mp4", [flat(100, 128, 128, np.uint8)], "yuv420p"),
    }


@pytest.mark.parametrize("clip", ["tagged", "x265"])
def test_read_tags_from_the_stream(hdr_clips, clip):
    tags, source = read_tags(hdr_clips[clip], default=SDR)
    assert (tags, source) == (ColourTags("pq", "bt2020", "bt2020nc", "limited", 10), "stream")
    assert tags == HDR10 and tags.is_hdr


def test_read_tags_falls_back_to_the_name_then_the_default(hdr_clips):
    assert read_tags(hdr_clips["named"], default=SDR) == (HDR10, "file name")
    assert read_tags(hdr_clips["sdr"], default=HDR10) == (SDR, "file name")
    custom = ColourTags("bt709", "bt709", "bt709", "full", 0)
    tags, source = read_tags(hdr_clips["plain"], default=custom)
    # x265 writes no colour description, but HEVC infers limited range when the flag is absent (FFmpeg reports it)
    assert source == "default" and tags == ColourTags("bt709", "bt709", "bt709", "limited", 8)
    assert tags_from_name("a_SDR_HDR10.mp4") is None  # both tokens: no guess


def test_an_8_bit_stream_tagged_pq_is_refused(tmp_path):
    path = write_hevc(tmp_path / "fake_pq.mp4", [flat(100, 128, 128, np.uint8)], "yuv420p", codes=HDR10_CODES)
    with pytest.raises(MediaError, match="fake_pq.mp4") as caught:
        read_tags(path)
    assert "8-bit" in str(caught.value)
    tags, source = read_tags(path, allow_8bit_hdr=True)
    assert (tags.transfer, tags.bit_depth, source) == ("pq", 8, "stream")


def test_decode_planes_keeps_10_bits(hdr_clips):
    planes = decode_planes(hdr_clips["tagged"], 4)
    assert len(planes) == 4
    y, u, v, t = planes[3]
    assert y.shape == (H, W) and u.shape == v.shape == (H // 2, W // 2)
    assert y.dtype == u.dtype == v.dtype == np.uint16
    assert y.max() > 255 and (y == 500).all() and (u == 510).all() and (v == 530).all()  # lossless, exact
    assert t == pytest.approx(3 / FPS)
    picked = decode_planes(hdr_clips["tagged"], [2, 0, 9])  # index 9 is past the end: fewer frames
    assert [int(p.y[0, 0]) for p in picked] == [200, 400]
    timed = decode_planes(hdr_clips["tagged"], times=[0.0, 0.3, 0.31])  # first frame at or after each time, once
    assert [int(p.y[0, 0]) for p in timed] == [200, 500]
    sdr = decode_planes(hdr_clips["sdr"], 1)[0]
    assert sdr.y.dtype == np.uint16 and (sdr.y == 100).all()


def test_views_of_a_pq_clip(hdr_clips):
    tags, _ = read_tags(hdr_clips["tagged"])
    planes = decode_planes(hdr_clips["tagged"], 1)[0]  # Y 200, U 480, V 560
    codes = code_values(planes, tags)
    linear = linear_light(planes, tags)
    assert codes.shape == linear.shape == (3, H, W) and linear.dtype == np.float32
    np.testing.assert_allclose(linear, pq_eotf(codes.astype(np.float64)) / 10000, rtol=1e-5)
    grey = flat(520)  # 10-bit PQ 520 = 113.17 cd/m^2 on every channel
    np.testing.assert_allclose(linear_light(grey, HDR10), 113.17 / 10000, rtol=1e-4)
    ictcp = perceptual(grey, HDR10)
    np.testing.assert_allclose(ictcp[0], (520 - 64) / 876, atol=1e-5)  # grey: I is the PQ code itself
    np.testing.assert_allclose(ictcp[1:], 0.0, atol=1e-5)


def test_sdr_and_hdr_white_meet_on_the_shared_axes():
    sdr_white = flat(235, 128, 128, np.uint8)
    pq_100 = flat(round(64 + 876 * float(pq_inverse_eotf(100.0))))
    np.testing.assert_allclose(linear_light(sdr_white, SDR), 0.01, rtol=1e-5)
    np.testing.assert_allclose(linear_light(pq_100, HDR10), 0.01, rtol=2e-3)  # one 10-bit step away at most
    np.testing.assert_allclose(perceptual(sdr_white, SDR)[0], perceptual(pq_100, HDR10)[0], atol=1e-3)


# --- the key test --------------------------------------------------------------------------------------------


def test_10_bit_detail_survives_where_an_8_bit_decode_loses_it(tmp_path):
    """Two clips that differ only below the 8th bit: a 10-bit ramp and its own 8-bit rounding. Our planes and views
    tell them apart; the 8-bit decode a naive pipeline makes (PyAV's rgb24, as OpenCV-style readers do) cannot."""
    ramp = gradient()
    coarse = rounded_to_8_bits(ramp)
    chroma = np.full((H // 2, W // 2), 512, np.uint16)
    fine_path = write_hevc(tmp_path / "fine_HDR10.mp4", [(ramp, chroma, chroma)] * 2, codes=HDR10_CODES)
    coarse_path = write_hevc(tmp_path / "coarse_HDR10.mp4", [(coarse, chroma, chroma)] * 2, codes=HDR10_CODES)
    fine, rough = decode_planes(fine_path, 1)[0], decode_planes(coarse_path, 1)[0]
    np.testing.assert_array_equal(fine.y, ramp)  # lossless round trip
    assert not np.array_equal(fine.y, rough.y)
    assert np.abs(fine.y.astype(int) - rough.y.astype(int)).max() == 2  # below the 8th bit only

    tags = read_tags(fine_path)[0]
    code_gap = np.abs(code_values(fine, tags) - code_values(rough, tags)).max()
    pu_gap = np.abs(perceptual(fine, tags) - perceptual(rough, tags)).max()
    assert code_gap == pytest.approx(2 / 876, rel=1e-3)
    assert pu_gap > 1e-3

    # what an 8-bit decode sees: identical pictures
    np.testing.assert_array_equal((fine.y.astype(int) + 2) >> 2, (rough.y.astype(int) + 2) >> 2)
    naive = []
    for path in (fine_path, coarse_path):
        with av.open(str(path)) as container:
            naive.append(next(container.decode(video=0)).to_ndarray(format="rgb24"))
    np.testing.assert_array_equal(naive[0], naive[1])


def test_unreadable_media_and_bad_requests(tmp_path):
    empty = tmp_path / "empty_HDR10.mp4"
    empty.write_bytes(b"")
    for call in (lambda: read_tags(empty), lambda: decode_planes(empty, 1)):
        with pytest.raises(MediaError, match="empty_HDR10.mp4"):
            call()
    with pytest.raises(ValueError):
        decode_planes(empty)  # neither frames nor times
    with pytest.raises(ValueError):
        yuv_to_rgb(*flat(64), "bt2020c", "limited", 10)  # constant luminance: not a matrix
    with pytest.raises(ValueError):
        linear_light(flat(64), ColourTags("hlg", "bt2020", "bt2020nc", "limited", 10))
