"""View families: the geometry of each, seeded fragment draws, the saliency crop, feature sets side by side, and the
peak memory of a 4K view pass (measured in a fresh process, not timed)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from features.reader import Features, concat_features, family_variants
from features.spec import FeatureSpec
from features.views import (
    FAMILIES,
    Variant,
    check_time_axis,
    saliency_map,
    salient_window,
    split_variants,
    view_family,
)


def family(view: str, **geometry):
    return view_family(FeatureSpec("quality_stats", decoder="image", view=view, **geometry))


def coordinates(height: int, width: int) -> np.ndarray:
    """[1, H, W, 3] uint16 whose pixels hold their own (row, column): a view's output says where it read from."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows, cols, np.zeros_like(rows)], axis=-1).astype(np.uint16)[None]


def read_back(view: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) a [3, S, S] view of `coordinates` was read from."""
    values = np.rint(view.numpy() * 65535).astype(int)
    return values[0], values[1]


# ---------------------------------------------------------------------------------------------------- fragments


@pytest.mark.parametrize(("height", "width", "grid", "patch"), [(300, 500, 7, 32), (96, 96, 3, 32), (1000, 700, 4, 16)])
def test_each_fragment_is_a_native_patch_inside_its_cell(height, width, grid, patch):
    fragments = family("fragments", grid=grid, patch=patch, fragment_seed=5)
    out = fragments.render(coordinates(height, width), ["s0"])
    assert out.shape == (1, 1, 3, grid * patch, grid * patch)
    rows, cols = read_back(out[0, 0])
    cell_h, cell_w = height // grid, width // grid
    for i in range(grid):
        for j in range(grid):
            r = rows[i * patch : (i + 1) * patch, j * patch : (j + 1) * patch]
            c = cols[i * patch : (i + 1) * patch, j * patch : (j + 1) * patch]
            top, left = r[0, 0], c[0, 0]
            np.testing.assert_array_equal(r, top + np.arange(patch)[:, None] + 0 * c)  # native: consecutive rows
            np.testing.assert_array_equal(c, left + np.arange(patch)[None, :] + 0 * r)
            assert i * cell_h <= top and top + patch <= (i + 1) * cell_h
            assert j * cell_w <= left and left + patch <= (j + 1) * cell_w


def test_seeded_draws_are_reproducible_and_differ():
    frame = coordinates(480, 640)
    fragments = family("fragments", grid=7, patch=32, fragment_seed=0)
    first = fragments.render(frame, ["s0", "s1", "s1-hflip"])
    again = family("fragments", grid=7, patch=32, fragment_seed=0).render(frame, ["s1", "s0"])
    assert torch.equal(first[0], again[1]) and torch.equal(first[1], again[0])
    assert not torch.equal(first[0], first[1])
    assert torch.equal(first[2], first[1].flip(-1))
    other_seed = family("fragments", grid=7, patch=32, fragment_seed=1).render(frame, ["s0"])
    assert not torch.equal(first[0], other_seed[0])


def test_a_frame_smaller_than_the_lattice_is_upsampled():
    out = family("fragments", grid=7, patch=32, fragment_seed=0).render(np.full((2, 100, 150, 3), 77, np.uint8), ["s0"])
    assert out.shape == (1, 2, 3, 224, 224)
    torch.testing.assert_close(out, torch.full_like(out, 77 / 255), atol=1e-3, rtol=0)


# -------------------------------------------------------------------------------------------------- crop families


def test_native_crop_is_the_exact_centre_and_flips():
    out = family("native", size=64).render(coordinates(300, 500), ["center", "hflip"])
    rows, cols = read_back(out[0, 0])
    np.testing.assert_array_equal(rows[:, 0], np.arange(118, 182))
    np.testing.assert_array_equal(cols[0], np.arange(218, 282))
    assert torch.equal(out[1], out[0].flip(-1))


@pytest.mark.parametrize(("corner", "top", "left"), [("tl", 0, 0), ("tr", 0, 436), ("bl", 236, 0), ("br", 236, 436)])
def test_native_corner_windows_touch_their_corner(corner, top, left):
    out = family("native", size=64).render(coordinates(300, 500), ["center", corner, f"{corner}-hflip"])
    rows, cols = read_back(out[1, 0])
    np.testing.assert_array_equal(rows[:, 0], np.arange(top, top + 64))
    np.testing.assert_array_equal(cols[0], np.arange(left, left + 64))
    assert not torch.equal(out[1], out[0])
    assert torch.equal(out[2], out[1].flip(-1))


@pytest.mark.parametrize(
    ("height", "width", "start", "end"), [(200, 400, (0, 0), (0, 200)), (400, 200, (0, 0), (200, 0))]
)
def test_resize_corners_are_the_ends_of_the_long_side(height, width, start, end):
    """A square of the short side, copied as is (size = short side): tl and br hold the two ends of the long side,
    on a landscape frame (left, right) and on a portrait one (top, bottom); center lies between them."""
    out = family("resize", size=200).render(coordinates(height, width), ["tl", "br", "center"])
    for view, (top, left) in zip(out, (start, end, ((height - 200) // 2, (width - 200) // 2))):
        rows, cols = read_back(view[0])
        assert (rows[0, 0], cols[0, 0]) == (top, left) and (rows[-1, -1], cols[-1, -1]) == (top + 199, left + 199)


def test_variant_names_parse_in_one_grammar():
    assert Variant.parse("tl-hflip") == Variant("tl-hflip", 0.0)
    assert Variant.parse("s1-hflip@t0.25") == Variant("s1-hflip", 0.25)
    for bad in ("center@t0.50", "center@t1", "center@t0", "center@t.5", "@t0.5", "center@tx"):
        with pytest.raises(ValueError, match="shortest decimal form"):
            Variant.parse(bad)
    families = [family("aesthetic", size=32), family("native", size=32)]
    both = [("center", "hflip@t0.5"), ("center", "tl", "hflip@t0.5")]  # aesthetic has no corners
    assert split_variants(families, ["center", "tl", "hflip@t0.5"]) == both
    with pytest.raises(ValueError, match="view.s. center-hflip belong to none"):  # the centre's mirror is `hflip`
        split_variants(families, ["center", "tl", "center-hflip"])
    check_time_axis(["center", "s0"], False, "image")
    with pytest.raises(ValueError, match="center@t0.5 shift key frames in time .* image media have no time axis"):
        check_time_axis(["center", "center@t0.5"], False, "image")


def test_aesthetic_keeps_the_whole_frame_and_resize_its_centre_square():
    frame = np.zeros((1, 200, 400, 3), np.uint8)
    frame[:, :, :100] = 255  # a white quarter on the left
    whole = family("aesthetic", size=32).render(frame, ["center"])[0, 0]
    square = family("resize", size=32).render(frame, ["center"])[0, 0]
    assert whole.shape == square.shape == (3, 32, 32)
    assert whole[:, :, :7].min() > 0.9 and whole[:, :, 9:].max() < 0.1  # the left quarter, squashed
    assert square.max() < 0.1  # the centre square never reaches the white quarter


def test_sixteen_bit_frames_keep_their_precision():
    frame = np.full((1, 40, 40, 3), 1000, np.uint16)
    out = family("resize", size=20).render(frame, ["center"])
    torch.testing.assert_close(out, torch.full_like(out, 1000 / 65535))


@pytest.mark.parametrize(("top", "left"), [(420, 700), (0, 780), (540, 0)])  # inside, and against two borders
def test_salient_crop_holds_the_one_detailed_region(top, left):
    rng = np.random.default_rng(0)
    frame = np.full((1, 600, 900, 3), 128, np.uint8)
    frame[0, top : top + 60, left : left + 120] = rng.integers(0, 256, (60, 120, 3))  # the only structure
    out = family("salient", size=160).render(frame, ["center"])[0, 0]
    assert out.shape == (3, 160, 160)
    detail = np.rint(out.numpy() * 255) != 128  # the patch's pixels, read at native resolution
    assert detail.sum() >= 0.9 * (frame != 128).sum()  # the map is coarse (7 px a cell): most of the patch, not all


def test_salient_crop_of_a_flat_frame_is_the_centre():
    flat = np.full((1, 300, 500, 3), 90, np.uint8)
    saliency = saliency_map(flat)
    top, left = salient_window(saliency, 20)
    h, w = saliency.shape
    assert abs(top - (h - 20) / 2) <= 1 and abs(left - (w - 20) / 2) <= 1


# ------------------------------------------------------------------------------------------------------ variants


def test_views_are_split_between_families():
    families = [family("aesthetic", size=32), family("fragments", grid=2, patch=16, fragment_seed=0)]
    assert split_variants(families, ["center", "s0", "hflip", "s1-hflip"]) == [("center", "hflip"), ("s0", "s1-hflip")]
    with pytest.raises(ValueError, match="belong to none of the view families"):
        split_variants(families, ["center", "s0", "vflip"])
    with pytest.raises(ValueError, match="fragments gets none of views center"):
        split_variants(families, ["center"])
    with pytest.raises(ValueError, match="twice"):
        split_variants(families, ["center", "center", "s0"])


def test_feature_sets_side_by_side_pair_variants_by_index():
    ids = ["a", "b"]
    first = Features(np.ones((2, 2, 1, 3)), np.ones((2, 2, 1), bool), ids, ["center", "hflip"])
    draws = np.arange(2 * 4 * 5, dtype=float).reshape(2, 4, 1, 5)
    second = Features(draws, np.ones((2, 4, 1), bool), ids, ["s0", "s1", "s2", "s3"])
    second.mask[1, 3] = False
    both = concat_features([first, second])
    assert both.views == ["center+s0", "hflip+s1", "center+s2", "hflip+s3"]
    assert both.x.shape == (2, 4, 1, 8)
    np.testing.assert_array_equal(both.x[:, 2, :, 3:], second.x[:, 2])
    assert not both.mask[1, 3] and both.mask[0].all()
    assert family_variants(both.views, 2) == [("center", "hflip"), ("s0", "s1", "s2", "s3")]
    assert family_variants(["center", "hflip"], 1) == [("center", "hflip")]


def test_a_family_keys_only_its_own_geometry():
    spec = FeatureSpec("quality_stats", decoder="image", view="fragments", grid=15, patch=32)
    assert spec.key().startswith("quality_stats__fragments480__")
    assert replace(spec, size=999).key() == spec.key()
    assert replace(spec, fragment_seed=1).key() != spec.key()
    native = FeatureSpec("quality_stats", decoder="image", view="native", size=480)
    assert native.key().startswith("quality_stats__native480__") and native.key() != spec.key()
    assert FeatureSpec("quality_stats", decoder="image", view="native", size=480, grid=3).key() == native.key()
    assert "sampling" not in native.identity() and "sampling" in FeatureSpec("quality_stats").identity()
    with pytest.raises(ValueError, match="unknown view family 'salt'"):
        FeatureSpec("quality_stats", view="salt")
    assert set(FAMILIES.names()) == {
        "aesthetic",
        "audio",
        "clip",
        "fr",
        "fragments",
        "lmm",
        "native",
        "pair",
        "resize",
        "salient",
        "sync",
    }


# ------------------------------------------------------------------------------------------------- peak memory

PEAK_SCRIPT = r"""
import json, re, sys
import numpy as np
from features.spec import FeatureSpec
from features.views import view_family

def status(key):
    return int(re.search(key + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024

families = [view_family(FeatureSpec("quality_stats", decoder="image", view=v, size=480, grid=15, patch=32))
            for v in ("aesthetic", "fragments", "native", "salient")]
variants = {"fragments": ["s0", "s1", "s2", "s3"]}
small = np.zeros((1, 600, 800, 3), np.uint8)
for f in families:  # first calls initialise kernels and caches: not part of the pass
    f.render(small, variants.get(f.name, ["center", "hflip"]))
frame = np.empty((1, 2160, 3840, 3), np.uint8)
frame[...] = (np.arange(3840, dtype=np.uint8) * 7)[None, None, :, None]
frame[0, ::3] = 200
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # resets VmHWM, the peak resident set, to the current one
outputs = [f.render(frame, variants.get(f.name, ["center", "hflip"])) for f in families]
growth = status("VmHWM") - before
print(json.dumps({"growth": growth, "frame": frame.nbytes, "outputs": sum(o.numel() * 4 for o in outputs)}))
"""


def test_a_4k_view_pass_never_copies_the_frame_as_float():
    """Every family of the UHD-IQA set on one 3840x2160 frame, in a fresh process: the peak resident memory may grow
    by the outputs (about 1.1 frames of float views) and little more; one float copy of the frame alone is 4 frames.
    glibc is told to serve every allocation above 64 kB by a fresh mmap, so none hides in already-resident heap."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak resident set")
    env = {"MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", PEAK_SCRIPT], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["outputs"] < 1.2 * measured["frame"]
    assert measured["growth"] < 2.5 * measured["frame"], measured


def test_uint8_resampling_matches_float_resampling():
    frame = np.random.default_rng(1).integers(0, 256, (1, 300, 500, 3), dtype=np.uint8)
    out = family("aesthetic", size=64).render(frame, ["center"])[0]
    pixels = torch.from_numpy(frame).permute(0, 3, 1, 2).float() / 255
    reference = F.interpolate(pixels, size=(64, 64), mode="bilinear", antialias=True)
    torch.testing.assert_close(out, reference, atol=1 / 255, rtol=0)
