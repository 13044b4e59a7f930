"""NTIRE 2025 XGC track 1 (FineVD-GC): synthetic UGC videos rated on six dimensions, in the organisers' layout.

Each of the first five dimensions is driven by its own distortions, drawn independently per video (a fifth of the
videos are clean on each), so a model has something to learn per dimension:
  * color: a white-balance error (red against blue gain), a saturation shift (up or down) and a grey-neutral cast;
  * noise: luma grain and per-channel colour grain, drawn afresh every frame;
  * artifact: libx264 at a high crf and 8x8 blockiness (the trace of an earlier, coarser compression);
  * blur: Gaussian and defocus (disc) blur;
  * temporal: stutter (every n-th frame shown twice), freezes (runs of one frame held) and drops (source frames
    skipped, so the content jumps).
overall is a weighted mean of the other five plus rater noise. The temporal distortions only choose which frame of
the spatially distorted sequence is shown at each position, so every frame a temporally distorted video shows is a
frame its undistorted sequence has: a per-frame model sees nothing of them, only a motion or temporal feature does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.fft

from common.atomic import write_bytes, write_text
from synth.dataset import SYNTHESIZERS, TRUTH_DIR
from synth.impairment import Sampler, combined_quality, sample_distortions
from synth.video import PRISTINE_CRF, Distortion, distort, encode_mp4, render_source
from tracks.xgc_ugc import DIMENSIONS, SOURCE_MAP, TEST_LIST, TEST_PLACEHOLDERS, TRAIN_LIST, VIDEO_DIR, XGCUGC

WIDTH, HEIGHT = 160, 120  # px, of the videos unless asked otherwise
FPS = 8
FRAMES = 24  # 3 s at 8 fps, as short as the other synthetic clips
SOURCE_FRAMES = 2 * FRAMES  # drops skip source frames: a version may show frames beyond FRAMES
BLOCK = 8  # side of the blocks blockiness averages over, the DCT block of JPEG and MPEG-2
TEST_FRACTION = 0.2
MIN_ITEMS = 8  # two sources at most four versions each: one for train, one for test
CLEAN = 0.2  # chance that a video is clean on a dimension

# Label scale: a dimension's quality q in [0, 1] is rated SCORE_WORST + (SCORE_PRISTINE - SCORE_WORST) * q plus rater
# noise, which puts the mean near 50 and lets the worst videos fall slightly below 0, as a few do in the real set.
SCORE_PRISTINE = 90.0
SCORE_WORST = 0.0
LABEL_NOISE = 3.0  # std of the rater noise on every dimension, in score points
# The real set's overall correlates most with artifact and blur (Spearman 0.93, 0.94) and least with temporal (0.86).
OVERALL_WEIGHTS = {"color": 0.15, "noise": 0.2, "artifact": 0.25, "blur": 0.25, "temporal": 0.15}

Severities = Mapping[str, Mapping[str, float]]  # dimension -> distortion -> severity; a missing entry is clean

# Severity at which a distortion on its own halves its dimension's quality.
HALF_QUALITY: dict[str, dict[str, float]] = {
    "color": {
        "white_balance": 0.35,  # |log2| of the red to blue gain ratio
        "saturation": 0.6,  # |log2| of the chroma gain
        "cast": 15.0,  # length of the grey-neutral RGB offset, in 8-bit levels
    },
    "noise": {"luma": 8.0, "rgb": 6.0},  # grain std in 8-bit levels: shared by the channels, or one per channel
    "artifact": {"crf": 13.0, "blocks": 0.4},  # crf above PRISTINE_CRF; share of each pixel replaced by its block mean
    "blur": {"gaussian": 1.2, "defocus": 2.0},  # sigma, disc radius, in pixels
    "temporal": {"stutter": 0.2, "freeze": 0.25, "drop": 0.15},  # share of positions repeated, frozen; frames skipped
}

# One sampler per distortion, from clean to 1.6 times its HALF_QUALITY (a sixth of the quality, alone).
_SAMPLERS: dict[str, dict[str, Sampler]] = {
    "color": {
        "white_balance": lambda rng: float(rng.uniform(0.0, 0.55)),
        "saturation": lambda rng: float(rng.uniform(0.0, 1.0)),
        "cast": lambda rng: float(rng.uniform(0.0, 24.0)),
    },
    "noise": {"luma": lambda rng: float(rng.uniform(0.0, 13.0)), "rgb": lambda rng: float(rng.uniform(0.0, 10.0))},
    "artifact": {"crf": lambda rng: int(rng.integers(1, 22)), "blocks": lambda rng: float(rng.uniform(0.0, 0.65))},
    "blur": {"gaussian": lambda rng: float(rng.uniform(0.0, 2.0)), "defocus": lambda rng: float(rng.uniform(0.0, 3.2))},
    "temporal": {
        "stutter": lambda rng: 1.0 / int(rng.integers(3, 9)),  # every 3rd to every 8th position repeats
        "freeze": lambda rng: float(rng.uniform(0.0, 0.4)),
        "drop": lambda rng: float(rng.uniform(0.0, 0.25)),
    },
}


# ---------------------------------------------------------------------------------------------------------- labels


def random_severities(rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """Each dimension independently clean (chance CLEAN) or with one or two of its distortions."""
    return {
        dimension: {} if rng.random() < CLEAN else sample_distortions(rng, samplers)
        for dimension, samplers in _SAMPLERS.items()
    }


def dimension_quality(dimension: str, severities: Mapping[str, float]) -> float:
    """Quality in [0, 1] of one dimension from its own distortions only (see synth.impairment.combined_quality)."""
    return combined_quality(severities, HALF_QUALITY[dimension])


def label(severities: Severities, rng: np.random.Generator) -> dict[str, float]:
    """The six scores of one video: each dimension from its quality, overall from the five expected scores, every
    one with its own rater noise (not clipped: a few fall outside 0-100)."""
    span = SCORE_PRISTINE - SCORE_WORST
    expected = {d: SCORE_WORST + span * dimension_quality(d, severities.get(d, {})) for d in HALF_QUALITY}
    expected["overall"] = sum(weight * expected[dimension] for dimension, weight in OVERALL_WEIGHTS.items())
    return {dimension: float(expected[dimension] + rng.normal(0.0, LABEL_NOISE)) for dimension in DIMENSIONS}


# ------------------------------------------------------------------------------------------------------ distortions


def shown_frames(temporal: Mapping[str, float], seed: int, frames: int = FRAMES) -> np.ndarray:
    """Index of the source frame shown at each of `frames` positions; 0, 1, 2, ... when `temporal` is empty.

    Built from the number of source frames advanced between consecutive positions: drops add to it (the content
    jumps); stutter and freezes set it to 0 (a frame shown again) after the drops, so no drop cuts a freeze short.
    """
    rng = np.random.default_rng((seed, 2))
    step = np.ones(frames - 1, dtype=np.intp)
    if "drop" in temporal:
        np.add.at(step, rng.integers(0, frames - 1, size=round(temporal["drop"] * frames)), 1)
    if "stutter" in temporal:
        every = round(1 / temporal["stutter"])
        step[every - 2 :: every] = 0
    if "freeze" in temporal:
        for run in np.array_split(np.arange(round(temporal["freeze"] * frames)), rng.integers(1, 3)):
            start = rng.integers(0, frames - len(run))
            step[start : start + len(run)] = 0
    return np.concatenate([[0], np.cumsum(step)])


def distort_spatially(source: np.ndarray, severities: Severities, seed: int) -> np.ndarray:
    """Every frame of `source` with the colour, blur, noise and blockiness distortions (not the codec, not time).

    In a camera's order: colour and optics first, grain on top (so it is not smoothed away), blockiness from an
    earlier compression last. Grain is drawn for every source frame, so a frame shown twice repeats its grain too.
    """
    color, blur, noise = (severities.get(dimension, {}) for dimension in ("color", "blur", "noise"))
    video = source
    if color or "defocus" in blur:
        video = _rounded(_defocus(_recolour(source.astype(np.float32), color, seed), blur.get("defocus", 0.0)))
    video = distort(video, Distortion(blur=blur.get("gaussian", 0.0), noise=noise.get("luma", 0.0)), seed)
    blocks = severities.get("artifact", {}).get("blocks", 0.0)
    if "rgb" in noise or blocks:
        video = video.astype(np.float32)
        if "rgb" in noise:
            video += noise["rgb"] * np.random.default_rng((seed, 1)).standard_normal(video.shape, dtype=np.float32)
        video = _rounded(_blocky(video, blocks))
    return video


def crf(severities: Severities) -> int:
    """The libx264 crf a version is encoded at: visually lossless unless its artifact dimension has a crf."""
    return PRISTINE_CRF + int(severities.get("artifact", {}).get("crf", 0))


def _recolour(video: np.ndarray, color: Mapping[str, float], seed: int) -> np.ndarray:
    """White balance, then saturation, then cast; directions (warm or cool, up or down, the cast's hue) from `seed`."""
    rng = np.random.default_rng((seed, 0))
    warm, more, hue = rng.choice((-1.0, 1.0)), rng.choice((-1.0, 1.0)), rng.uniform(0.0, 2 * np.pi)
    if "white_balance" in color:
        video *= np.exp2(warm * color["white_balance"] / 2 * np.array([1.0, 0.0, -1.0], dtype=np.float32))
    if "saturation" in color:
        luma = video @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        video = luma[..., None] + np.float32(np.exp2(more * color["saturation"])) * (video - luma[..., None])
    if "cast" in color:
        # Unit length and zero sum: a pure hue shift with no change of brightness.
        direction = np.sqrt(2 / 3) * np.cos(hue - np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3]))
        video += (color["cast"] * direction).astype(np.float32)
    return video


def _defocus(video: np.ndarray, radius: float) -> np.ndarray:
    """Convolution with an anti-aliased disc of `radius` px (an out-of-focus lens), borders extended by reflection.

    Through the FFT at a fast length: the disc has too many taps for a direct sum, and the reflected border is as
    wide as the disc, so the zeros and the wrap-around of the padded transform never reach the frame.
    """
    if radius <= 0:
        return video
    reach = math.ceil(radius) + 1
    padded = np.pad(video, ((0, 0), (reach, reach), (reach, reach), (0, 0)), mode="reflect")
    shape = tuple(scipy.fft.next_fast_len(n, real=True) for n in padded.shape[1:3])
    offset = np.arange(-reach, reach + 1)
    disc = np.clip(radius + 0.5 - np.hypot(offset[:, None], offset[None, :]), 0.0, 1.0)
    kernel = np.zeros(shape, dtype=np.float32)
    kernel[offset[:, None] % shape[0], offset[None, :] % shape[1]] = disc / disc.sum()  # centred on pixel (0, 0)
    spectrum = scipy.fft.rfft2(padded, s=shape, axes=(1, 2)) * scipy.fft.rfft2(kernel)[None, :, :, None]
    blurred = scipy.fft.irfft2(spectrum, s=shape, axes=(1, 2))
    return blurred[:, reach : reach + video.shape[1], reach : reach + video.shape[2]]


def _blocky(video: np.ndarray, strength: float) -> np.ndarray:
    """Each pixel moved `strength` of the way to the mean of its BLOCK x BLOCK block (edge blocks may be smaller)."""
    if strength <= 0:
        return video
    means = video
    for axis in (1, 2):
        starts = np.arange(0, video.shape[axis], BLOCK)
        sizes = np.diff(np.append(starts, video.shape[axis])).reshape([-1 if a == axis else 1 for a in range(4)])
        block_of = np.arange(video.shape[axis]) // BLOCK
        means = np.take(np.add.reduceat(means, starts, axis=axis) / sizes, block_of, axis=axis)
    return video + np.float32(strength) * (means - video)


def _rounded(video: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(video, 0, 255)).astype(np.uint8)


# -------------------------------------------------------------------------------------------------------- the dataset


@dataclass(frozen=True)
class Version:
    """One video of a source: where it goes, its distortions, the seed of its grain, colour directions and timing."""

    path: Path
    severities: Severities
    seed: int


def make_version(source: np.ndarray, version: Version) -> None:
    """The video file of one version: the spatially distorted source up to the last frame its timing shows, the
    frames it shows, the codec."""
    shown = shown_frames(version.severities.get("temporal", {}), version.seed)
    frames = distort_spatially(source[: shown.max() + 1], version.severities, version.seed)
    encode_mp4(frames[shown], version.path, fps=FPS, crf=crf(version.severities))


def _make_source(job: tuple[int, int, int, list[Version]]) -> None:
    source_seed, width, height, versions = job
    source = render_source(source_seed, width, height, SOURCE_FRAMES)
    for version in versions:
        make_version(source, version)


@SYNTHESIZERS.register(XGCUGC.name)
def synthesize(out: Path, items: int, seed: int, width: int = 0, height: int = 0, workers: int = 2) -> pd.DataFrame:
    """`items` videos named 1.mp4 ... in random order, three or four versions per rendered source; whole sources go
    to test until it holds TEST_FRACTION of the items (at least 2). Writes the organisers' train.txt and test.txt,
    videos/ and truth/; returns every item's filename, split, source and six scores, in the organisers' name order."""
    if items < MIN_ITEMS:
        raise ValueError(f"items={items}: need at least {MIN_ITEMS} (two sources)")
    out, width, height = Path(out), width or WIDTH, height or HEIGHT
    rng = np.random.default_rng(seed)
    versions_per_source = []
    while sum(versions_per_source) < items:
        versions_per_source.append(int(rng.integers(3, 5)))
    versions_per_source[-1] -= sum(versions_per_source) - items
    test_sources, in_test = set(), 0
    for source in rng.permutation(len(versions_per_source)):
        if in_test >= max(2, round(items * TEST_FRACTION)):
            break
        test_sources.add(int(source))
        in_test += versions_per_source[source]
    names = iter(f"{k}.mp4" for k in rng.permutation(items) + 1)

    rows, jobs = [], []
    for source, count in enumerate(versions_per_source):
        versions = []
        for _ in range(count):
            name, severities = next(names), random_severities(rng)
            split = "test" if source in test_sources else "train"
            rows.append({"filename": name, "split": split, "source": f"s{source:03d}", **label(severities, rng)})
            versions.append(Version(out / VIDEO_DIR / name, severities, int(rng.integers(2**31))))
        jobs.append((int(rng.integers(2**31)), width, height, versions))
    (out / VIDEO_DIR).mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_make_source, jobs))

    table = pd.DataFrame(rows).sort_values("filename", ignore_index=True)  # as strings: 1, 10, 100, ..., 2
    train, test = table[table.split == "train"], table[table.split == "test"]
    write_bytes(out / TRAIN_LIST, _train_list(train).encode())
    placeholders = ",-1" * TEST_PLACEHOLDERS
    write_bytes(out / TEST_LIST, "".join(f"{name}{placeholders}\r\n" for name in test["filename"]).encode())
    write_text(out / SOURCE_MAP, table[["filename", "source"]].to_csv(index=False))
    write_text(out / TRUTH_DIR / XGCUGC.truth_file, test[["filename", *DIMENSIONS]].to_csv(index=False))
    return table


def _train_list(train: pd.DataFrame) -> str:
    """TAB-separated, no header, no final newline; scores as the organisers print them: 6 significant digits, no
    trailing zeros (`%g`, so 4 decimals from 10 to 100), which reproduces every value of the real train.txt."""
    return "\n".join(
        "\t".join([row[0], *(f"{score:g}" for score in row[1:])])
        for row in train[["filename", *DIMENSIONS]].itertuples(index=False)
    )
