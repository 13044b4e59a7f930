"""Image decoding: every colour mode a challenge ships comes out as upright RGB, 16-bit stays 16-bit, unreadable files
say why; and an extraction run over images records them in the failures table like broken videos."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps
from test_extraction import media_of

from features import decode
from features.cache import read_failures
from features.decode import DECODERS, MediaError, read_image, sample_video
from features.extract import extract
from features.reader import read_features
from features.spec import FeatureSpec

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (30, 40, 3), dtype=np.uint8)


def frame(path: Path) -> np.ndarray:
    clip = read_image(str(path))
    assert clip.frames.shape[0] == 1 and clip.frames.shape[-1] == 3 and clip.times.tolist() == [0.0]
    return clip.frames[0]


def test_rgb_greyscale_and_palette_become_rgb(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(frame(tmp_path / "rgb.png"), RGB)
    grey = RGB[..., 0]
    Image.fromarray(grey).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(frame(tmp_path / "grey.png"), np.repeat(grey[..., None], 3, axis=2))
    palette = Image.fromarray(RGB).quantize(16)
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(frame(tmp_path / "palette.png"), np.asarray(palette.convert("RGB")))


def test_alpha_is_composited_over_white(tmp_path):
    alpha = np.zeros((30, 40), np.uint8)
    alpha[:, 20:] = 255
    alpha[:, 10:20] = 128
    Image.fromarray(np.dstack([RGB, alpha])).save(tmp_path / "rgba.png")
    out = frame(tmp_path / "rgba.png").astype(int)
    np.testing.assert_array_equal(out[:, :10], 255)  # transparent: white
    np.testing.assert_array_equal(out[:, 20:], RGB[:, 20:])  # opaque: the colour
    expected = np.rint((RGB[:, 10:20].astype(int) * 128 + 255 * 127) / 255)
    assert np.abs(out[:, 10:20] - expected).max() <= 1
    Image.fromarray(np.dstack([RGB[..., 0], alpha])).save(tmp_path / "la.png")
    np.testing.assert_array_equal(frame(tmp_path / "la.png")[:, :10], 255)
    keyed = Image.fromarray(RGB).quantize(16)
    keyed.info["transparency"] = 0  # palette entry 0 is transparent
    keyed.save(tmp_path / "keyed.png", transparency=0)
    transparent = np.asarray(keyed) == 0
    np.testing.assert_array_equal(frame(tmp_path / "keyed.png")[transparent], 255)


def write_png16(path: Path, pixels: np.ndarray, pix_fmt: str) -> None:
    """A 16-bit PNG through FFmpeg's encoder (Pillow cannot write 16-bit colour)."""
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png", rate=1)
        stream.height, stream.width = pixels.shape[:2]
        stream.pix_fmt = pix_fmt
        source = av.VideoFrame.from_ndarray(pixels, format=pix_fmt.replace("be", "le"))
        for packet in stream.encode(source.reformat(format=pix_fmt)):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_sixteen_bit_png_keeps_sixteen_bits(tmp_path):
    deep = (RNG.integers(0, 65536, (30, 40, 3))).astype(np.uint16)
    write_png16(tmp_path / "rgb48.png", deep, "rgb48be")
    out = frame(tmp_path / "rgb48.png")
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, deep)
    write_png16(tmp_path / "grey16.png", deep[..., 0], "gray16be")
    np.testing.assert_array_equal(frame(tmp_path / "grey16.png"), np.repeat(deep[..., :1], 3, axis=2))
    opaque = np.dstack([deep, np.full((30, 40), 65535, np.uint16)])
    write_png16(tmp_path / "rgba64.png", opaque, "rgba64be")
    np.testing.assert_array_equal(frame(tmp_path / "rgba64.png"), deep)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    cmyk = Image.fromarray(RGB).convert("CMYK")
    cmyk.save(tmp_path / "cmyk.jpg", quality=100)
    out = frame(tmp_path / "cmyk.jpg")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.asarray(Image.open(tmp_path / "cmyk.jpg").convert("RGB")))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(tmp_path, orientation):
    image = Image.fromarray(RGB)
    exif = image.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    image.save(path, exif=exif, quality=100)
    np.testing.assert_array_equal(frame(path), np.asarray(ImageOps.exif_transpose(Image.open(path))))


def test_unreadable_images_raise_with_the_reason(tmp_path):
    (tmp_path / "text.jpg").write_text("not an image")
    Image.fromarray(RGB).save(tmp_path / "whole.jpg")
    whole = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "torn.jpg").write_bytes(whole[: len(whole) // 3])
    (tmp_path / "empty.jpg").write_bytes(b"")
    reasons = {
        "text.jpg": "cannot identify",
        "missing.jpg": "No such file",
        "torn.jpg": "(?i)truncated",
        "empty.jpg": r"empty file \(0 bytes\)",
    }
    for name, reason in reasons.items():
        with pytest.raises(MediaError, match=reason) as caught:
            read_image(str(tmp_path / name))
        assert caught.value.path == str(tmp_path / name)


def test_decoders_by_media_type():
    assert DECODERS.get("video").read is sample_video
    assert DECODERS.names() == ["hdr", "image", "video"]
    with pytest.raises(ValueError, match="unknown media type 'audio'"):
        FeatureSpec("quality_stats", decoder="audio")


def test_image_extraction_fills_two_families_from_one_decode(tmp_path, monkeypatch):
    paths = []
    for k, mode in enumerate(("RGB", "L", "RGBA")):
        path = tmp_path / f"{k}.png"
        Image.fromarray(RNG.integers(0, 256, (70, 90, 3), dtype=np.uint8)).convert(mode).save(path)
        paths.append(path)
    (tmp_path / "bad.png").write_text("broken")
    items = pd.DataFrame({"item_id": ["a", "b", "c", "bad"], "path": [str(p) for p in [*paths, tmp_path / "bad.png"]]})
    decoded = []
    monkeypatch.setattr(decode, "read_image", lambda path: decoded.append(path) or read_image(path))
    specs = [
        FeatureSpec("quality_stats", decoder="image", view=v, size=32, grid=2, patch=16)
        for v in ("native", "fragments")
    ]
    summary = extract(items, "images", specs, ["center", "s0", "s1"], tmp_path / "cache", workers=0, progress=False)
    assert sorted(decoded) == sorted(items["path"])  # every item decoded once for both feature sets
    assert list(summary.failures["item_id"]) == ["bad"] and "cannot identify" in summary.failures["reason"].iloc[0]
    native, fragments = summary.folders
    assert native.name.startswith("quality_stats__native32__")
    assert fragments.name.startswith("quality_stats__fragments32__")
    media = media_of(items)
    good = ["a", "b", "c"]
    assert read_features(native, good, None, 1, [media[i] for i in good]).views == ["center"]
    got = read_features(fragments, good, None, 1, [media[i] for i in good])
    assert got.views == ["s0", "s1"] and got.mask.all()
    for folder in summary.folders:
        assert list(read_failures(folder, media)["item_id"]) == ["bad"]
