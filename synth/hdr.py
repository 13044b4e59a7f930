"""ICME 2025 HDR/SDR video quality (HDRSDR-VQA): synthetic HDR10 and SDR encodes, in the organisers' layout.

The real set has 54 4K HDR10 sources, each also converted to SDR, and both versions encoded with libx265 at the
eight (resolution, bitrate) pairs of LADDER; the scores are JOD (about 4.5 to 10.3) from pairwise comparisons. Here
each content is a procedural scene rendered in absolute luminance (shadows at 0.05 cd/m^2, a smooth gradient up to
a diffuse white of 100-200 cd/m^2 that bands at 8 bits, a panning texture near the pixel scale, a moving highlight
of 400-1000 cd/m^2), written once as HDR10 (linear BT.2020 -> PQ, 10-bit BT.2020nc) and once as SDR (highlights
rolled off to 100 cd/m^2, BT.709 primaries, BT.1886, 8-bit BT.709), each as a lossless reference and as distorted
versions: the reference's R'G'B' area-downscaled to the version's size, then encoded at a fixed QP.

Names copy the organisers': `{id}_{content}_{HDR10|SDR}_{W}x{H}_{kbps}k.mp4`, the references
`{id}_{content}_{range}_3840x2160_50000k.mp4` (REFERENCE_TAG). The pixels are much smaller than the names say, to
keep the demo quick: a reference is `width`x`height` (128x72 by default) and a version is that scaled by its
nominal width / 3840 (rounded to even, at least MIN_SIDE), so 1920x1080 is 64x36.

QP = 30 + 6 log2(1 / bpp), bpp the nominal bits per pixel per second (kbps * 1000 / (W * H)): HEVC's rule of
thumb that six QP steps halve the bit rate, anchored at QP 30 for one bit per pixel-second.

Score (JOD-like) = 10.3 - 1.7 log2(3840 / W) - 0.12 max(QP - 18, 0) + appeal + [HDR10] 0.3 log10(peak / 100)
+ N(0, 0.2), clipped to [4.5, 10.5]: W the nominal width (detail lost to downscaling), QP as above (coding loss
beyond transparency at 18), appeal a per-content offset in -0.6..0.3, and the HDR10 version of a content gaining
with its highlight's peak luminance (what SDR clips). Whole contents go to test (TEST_SHARE, at least one), with
both their ranges.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from common.atomic import atomic_path, write_bytes
from features.colour import LUMA_WEIGHTS, bt1886_inverse_eotf, pq_inverse_eotf, primaries_matrix, rgb_to_xyz_matrix
from synth.dataset import SYNTHESIZERS, TRUTH_DIR
from synth.video import area_matrix
from tracks.hdr import REFERENCE_TAG, TEST_LIST, TRAIN_LIST, VIDEO_DIR, HdrFR, HdrNR, HdrTrack

FPS = 8
FRAMES = 24  # 3 s

# The organisers' distorted versions of a reference: (nominal width, height, kbps), best first.
LADDER = (
    (3840, 2160, 15000),
    (3840, 2160, 6000),
    (2560, 1440, 10000),
    (1920, 1080, 3000),
    (1280, 720, 4000),
    (1280, 720, 2000),
    (960, 540, 1500),
    (960, 540, 800),
)
REFERENCE_WIDTH = 3840  # of the references, REFERENCE_TAG
WIDTH, HEIGHT = 128, 72  # px, of the references unless asked otherwise
# px, the smallest side of a picture: x265 refuses under 16, and 16 wide it encodes differently from run to run
# (it reads outside the picture), which 18 does not
MIN_SIDE = 18

# Contents are named scene + time of day, CamelCase, as the real "Basketball_Afternoon" without its underscore.
SCENES = ("Basketball", "Harbour", "Fireworks", "Forest", "Market", "Stadium")
SCENES += ("Glacier", "Concert", "Skyline", "Desert", "Aquarium", "Canyon")
TIMES = ("Morning", "Afternoon", "Dusk", "Night", "Overcast", "Sunrise")
RANGES = ("HDR10", "SDR")
MIN_CONTENTS = 3  # two for train, one for test
MIN_ITEMS = 2 * MIN_CONTENTS  # a distorted version of every reference
TEST_SHARE = 0.2

# Scene luminance, cd/m^2.
SHADOW = 0.05
HORIZON = 0.6  # frame heights from the top: sky above, textured ground below
DIFFUSE_WHITE = (100.0, 200.0)
HIGHLIGHT_PEAK = (400.0, 1000.0)
BT2020_LUMINANCE = rgb_to_xyz_matrix("bt2020")[1]  # Y of linear BT.2020 RGB
SDR_PEAK, SDR_KNEE = 100.0, 60.0  # SDR keeps the scene below the knee and rolls the rest off towards its peak

QP_AT_ONE_BIT, QP_PER_OCTAVE = 30, 6
SCORE_TOP, RESOLUTION_PENALTY, QP_PENALTY, QP_TRANSPARENT = 10.3, 1.7, 0.12, 18
APPEAL = (-0.6, 0.3)
HDR_GAIN = 0.3  # per decade of highlight peak above SDR white
RATER_NOISE = 0.2
SCORE_RANGE = (4.5, 10.5)


@dataclass(frozen=True)
class Signal:
    """How one dynamic range is coded: pixel format, Y'CbCr matrix and the colour tags, as x265 parameters and as
    H.273 codes (primaries, transfer, matrix, range) for the codec context."""

    pix_fmt: str
    bit_depth: int
    matrix: str
    x265_tags: str
    codes: tuple[int, int, int, int]


SIGNALS = {
    "HDR10": Signal(
        "yuv420p10le",
        10,
        "bt2020nc",
        "colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc:range=limited",
        (9, 16, 9, 1),
    ),
    "SDR": Signal(
        "yuv420p", 8, "bt709", "colorprim=bt709:transfer=bt709:colormatrix=bt709:range=limited", (1, 1, 1, 1)
    ),
}


def qp_for(width: int, height: int, kbps: int) -> int:
    """The x265 QP of a nominal (size, bitrate): fewer bits per pixel, coarser quantiser."""
    bits_per_pixel = kbps * 1000 / (width * height)
    return int(np.clip(round(QP_AT_ONE_BIT - QP_PER_OCTAVE * math.log2(bits_per_pixel)), 0, 51))


def real_size(nominal_width: int, width: int, height: int) -> tuple[int, int]:
    """The pixel size of a nominal resolution when the reference is `width`x`height`: scaled by the nominal width
    over 3840, even (4:2:0) and at least MIN_SIDE, never above the reference."""
    scale = nominal_width / REFERENCE_WIDTH
    return tuple(min(side, max(MIN_SIDE, 2 * round(side * scale / 2))) for side in (width, height))


def rgb_to_yuv(rgb: np.ndarray, matrix: str, bit_depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-linear R'G'B' [..., 3, H, W] in [0, 1] -> limited-range Y'CbCr uint16 planes (Y [..., H, W], chroma
    [..., H/2, W/2] as the mean of each 2x2 block): the inverse of features.colour.yuv_to_rgb, by the same H.273
    equations, since swscale's RGB->YUV is not trusted at 10 bits (see features.hdr)."""
    kr, kb = LUMA_WEIGHTS[matrix]
    r, g, b = (rgb[..., c, :, :] for c in range(3))
    luma = kr * r + (1 - kr - kb) * g + kb * b
    *lead, height, width = luma.shape
    cb, cr = ((colour - luma) / (2 * (1 - k)) for colour, k in ((b, kb), (r, kr)))
    cb, cr = (c.reshape(*lead, height // 2, 2, width // 2, 2).mean(axis=(-3, -1)) for c in (cb, cr))
    scale = 2.0 ** (bit_depth - 8)
    y = np.rint(16 * scale + 219 * scale * luma)
    u, v = (np.rint(128 * scale + 224 * scale * c) for c in (cb, cr))
    return tuple(np.clip(plane, 0, 2**bit_depth - 1).astype(np.uint16) for plane in (y, u, v))


# ----------------------------------------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class Scene:
    """What one content looks like; the look is drawn once so both ranges show the same scene."""

    diffuse_white: float  # cd/m^2
    highlight_peak: float  # cd/m^2
    sky_tint: tuple[float, float, float]  # linear BT.2020, luminance 1
    ground_tint: tuple[float, float, float]
    ground_albedo: float
    gradient_angle: float  # radians off vertical
    gratings: tuple[tuple[float, float, float, float], ...]  # cycles/px, orientation, phase, px/s
    highlight_path: tuple[float, float, float, float]  # start x, y (frame heights), velocity x, y (heights/s)
    highlight_sigma: float  # frame heights

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Scene:
        return cls(
            diffuse_white=float(rng.uniform(*DIFFUSE_WHITE)),
            highlight_peak=float(rng.uniform(*HIGHLIGHT_PEAK)),
            sky_tint=_tint(rng),
            ground_tint=_tint(rng),
            ground_albedo=float(rng.uniform(0.2, 0.6)),
            gradient_angle=float(rng.uniform(-0.5, 0.5)),
            gratings=tuple(
                (
                    float(rng.uniform(0.06, 0.3)),
                    float(rng.uniform(0, np.pi)),
                    float(rng.uniform(0, 2 * np.pi)),
                    float(rng.uniform(2, 8)),
                )
                for _ in range(3)
            ),
            highlight_path=(
                float(rng.uniform(0.1, 0.5)),
                float(rng.uniform(0.15, 0.45)),
                float(rng.uniform(0.15, 0.35)),
                float(rng.uniform(-0.05, 0.05)),
            ),
            highlight_sigma=float(rng.uniform(0.04, 0.08)),
        )


def _tint(rng: np.random.Generator) -> tuple[float, float, float]:
    colour = rng.uniform(0.4, 1.0, size=3)
    return tuple(float(c) for c in colour / (BT2020_LUMINANCE @ colour))


def render_scene(scene: Scene, width: int, height: int) -> np.ndarray:
    """Linear BT.2020 RGB in cd/m^2, float64 [FRAMES, 3, height, width]: a log-luminance gradient from SHADOW to
    diffuse white above, a textured ground panning below, and a Gaussian highlight drifting across."""
    t = (np.arange(FRAMES) / FPS)[:, None, None]
    y = np.arange(height)[None, :, None] + 0.5
    x = np.arange(width)[None, None, :] + 0.5
    # depth below the top along the tilted axis, in frame heights: diffuse white at 0, SHADOW at the horizon
    depth = (y / height) * math.cos(scene.gradient_angle) + (x - width / 2) / height * math.sin(scene.gradient_angle)
    sky = SHADOW * (scene.diffuse_white / SHADOW) ** np.clip(1 - depth / HORIZON, 0, 1)
    texture = sum(
        np.sin(2 * np.pi * frequency * (x * math.cos(angle) + y * math.sin(angle) - speed * t) + phase)
        for frequency, angle, phase, speed in scene.gratings
    ) / len(scene.gratings)
    ground = scene.diffuse_white * scene.ground_albedo * (1 + 0.7 * texture)
    on_ground = np.clip((y / height - HORIZON) / 0.05, 0, 1)  # a soft edge, a twentieth of the height
    nits = (1 - on_ground)[:, None] * sky[:, None] * np.array(scene.sky_tint)[:, None, None]
    nits = nits + on_ground[:, None] * ground[:, None] * np.array(scene.ground_tint)[:, None, None]
    x0, y0, vx, vy = scene.highlight_path
    distance2 = (x / height - x0 - vx * t) ** 2 + (y / height - y0 - vy * t) ** 2
    glow = scene.highlight_peak * np.exp(-distance2 / (2 * scene.highlight_sigma**2))
    nits = nits + glow[:, None] * np.array([1.0, 0.9, 0.7])[:, None, None]  # warm, its peak on red
    return np.clip(nits, 0, 10000)


def hdr10_signal(nits: np.ndarray) -> np.ndarray:
    """Linear BT.2020 cd/m^2 -> PQ-coded R'G'B' in [0, 1]."""
    return pq_inverse_eotf(nits)


def sdr_signal(nits: np.ndarray) -> np.ndarray:
    """Linear BT.2020 cd/m^2 -> BT.709 primaries (out-of-gamut clipped), highlights rolled off above SDR_KNEE
    towards SDR_PEAK (slope 1 at the knee, so no visible kink), BT.1886-coded R'G'B' in [0, 1]."""
    to_bt709 = np.linalg.inv(primaries_matrix("bt709", "bt2020"))
    linear = np.maximum(np.einsum("ij,fjhw->fihw", to_bt709, nits), 0)
    shoulder = SDR_PEAK - SDR_KNEE
    rolled = SDR_KNEE + shoulder * (1 - np.exp(-(linear - SDR_KNEE) / shoulder))
    return bt1886_inverse_eotf(np.where(linear > SDR_KNEE, rolled, linear), peak=SDR_PEAK)


CODINGS = {"HDR10": hdr10_signal, "SDR": sdr_signal}


# ---------------------------------------------------------------------------------------------------------- encoding


def encode_hevc(path: Path, rgb: np.ndarray, signal: Signal, qp: int | None, fps: int = FPS) -> None:
    """R'G'B' frames [F, 3, H, W] -> tagged libx265 mp4 at `qp` (None: lossless) and `fps`, written atomically. No
    B-frames: with them the mp4 muxer refuses some tiny clips. One thread per encode: the process pool supplies the
    parallelism, and at these sizes x265's own threads only contend (and one thread gives the same bytes each run)."""
    encode_planes(path, *rgb_to_yuv(rgb, signal.matrix, signal.bit_depth), signal, qp, fps)


def encode_planes(
    path: Path, y: np.ndarray, u: np.ndarray, v: np.ndarray, signal: Signal, qp: int | None, fps: int = FPS
) -> None:
    """Y'CbCr planes [F, H, W] and [F, H/2, W/2] (integer code values) -> mp4 as encode_hevc writes it."""
    rate = "lossless=1" if qp is None else f"qp={qp}"
    params = f"{rate}:bframes=0:log-level=error:pools=1:frame-threads=1:{signal.x265_tags}"
    dtype = np.dtype("<u2") if signal.bit_depth > 8 else np.dtype(np.uint8)
    height, width = y.shape[1:]
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx265", rate=fps, options={"x265-params": params})
        stream.width, stream.height, stream.pix_fmt = width, height, signal.pix_fmt
        codec = stream.codec_context
        codec.color_primaries, codec.color_trc, codec.colorspace, codec.color_range = signal.codes
        for index, planes in enumerate(zip(y, u, v)):
            frame = av.VideoFrame(width, height, signal.pix_fmt)
            for plane, values in zip(frame.planes, planes):
                rows = np.frombuffer(plane, dtype=dtype).reshape(plane.height, plane.line_size // dtype.itemsize)
                rows[:, : plane.width] = values
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@dataclass(frozen=True)
class Job:
    """One (content, range): its reference and distorted versions (path, real width, height, qp)."""

    scene: Scene
    coding: str
    width: int
    height: int
    reference: Path
    versions: tuple[tuple[Path, int, int, int], ...]


def _render_and_encode(job: Job) -> None:
    """Renders the scene once and writes the reference and every version from it."""
    rgb = CODINGS[job.coding](render_scene(job.scene, job.width, job.height))
    signal = SIGNALS[job.coding]
    encode_hevc(job.reference, rgb, signal, qp=None)
    for path, width, height, qp in job.versions:
        down = area_matrix(height, job.height) @ rgb @ area_matrix(width, job.width).T
        encode_hevc(path, np.clip(down, 0, 1), signal, qp)


# -------------------------------------------------------------------------------------------------------- the dataset


def expected_score(nominal_width: int, qp: int, appeal: float, hdr_gain: float) -> float:
    """The score before rater noise (see the module docstring); `hdr_gain` is 0 for SDR."""
    loss = RESOLUTION_PENALTY * math.log2(REFERENCE_WIDTH / nominal_width) + QP_PENALTY * max(qp - QP_TRANSPARENT, 0)
    return SCORE_TOP - loss + appeal + hdr_gain


@SYNTHESIZERS.register(HdrFR.name)
@SYNTHESIZERS.register(HdrNR.name)
def synthesize(out: Path, items: int, seed: int, width: int = 0, height: int = 0) -> None:
    """`items` distorted videos over about items / 16 contents (two references each, HDR10 and SDR, the items
    spread as evenly as they go, each reference's share spaced along LADDER from its best rung to its worst), their
    references of `width` x `height` (0: WIDTH x HEIGHT), train.csv (video,score), test.csv (video) and truth/ (the
    test scores). ValueError for fewer than MIN_ITEMS items, more than the content names allow, or an odd or tiny
    reference size."""
    width, height = width or WIDTH, height or HEIGHT
    pool = len(SCENES) * len(TIMES)
    n_contents = max(MIN_CONTENTS, math.ceil(items / (len(RANGES) * len(LADDER))))
    if items < MIN_ITEMS:
        raise ValueError(
            f"items={items}: need at least {MIN_ITEMS}, a distorted version of each of the 2 x "
            f"{MIN_CONTENTS} references (HDR10 and SDR of two train contents and one test content)"
        )
    if n_contents > pool:
        raise ValueError(
            f"items={items}: at most {pool * len(RANGES) * len(LADDER)} ({pool} contents x 2 ranges x "
            f"{len(LADDER)} ladder rungs)"
        )
    if width % 2 or height % 2 or min(width, height) < MIN_SIDE:
        raise ValueError(f"{width}x{height}: the reference needs an even width and height of at least {MIN_SIDE}")
    out = Path(out)
    rng = np.random.default_rng(seed)
    names = [SCENES[k // len(TIMES)] + TIMES[k % len(TIMES)] for k in rng.choice(pool, n_contents, replace=False)]
    test_contents = set(rng.choice(n_contents, max(1, round(TEST_SHARE * n_contents)), replace=False).tolist())
    scenes = [Scene.draw(rng) for _ in names]
    appeals = rng.uniform(*APPEAL, size=n_contents)
    shares = iter(np.array_split(np.arange(items), n_contents * len(RANGES)))

    rows, jobs = [], []
    for content, (name, scene) in enumerate(zip(names, scenes)):
        for coding in RANGES:
            prefix = f"{content + 1}_{name}_{coding}"
            hdr_gain = HDR_GAIN * math.log10(scene.highlight_peak / SDR_PEAK) if coding == "HDR10" else 0.0
            versions = []
            for rung in np.linspace(0, len(LADDER) - 1, len(next(shares))).round().astype(int):
                nominal_width, nominal_height, kbps = LADDER[rung]
                qp = qp_for(nominal_width, nominal_height, kbps)
                video = f"{prefix}_{nominal_width}x{nominal_height}_{kbps}k.mp4"
                score = expected_score(nominal_width, qp, appeals[content], hdr_gain) + rng.normal(0, RATER_NOISE)
                rows.append((video, content in test_contents, float(np.clip(score, *SCORE_RANGE))))
                versions.append((out / VIDEO_DIR / video, *real_size(nominal_width, width, height), qp))
            reference = out / VIDEO_DIR / f"{prefix}_{REFERENCE_TAG}.mp4"
            jobs.append(Job(scene, coding, width, height, reference, tuple(versions)))

    (out / VIDEO_DIR).mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as executor:
        list(executor.map(_render_and_encode, jobs))
    train = [f"{video},{score:.3f}" for video, is_test, score in rows if not is_test]
    test = [(video, f"{video},{score:.3f}") for video, is_test, score in rows if is_test]
    _write_list(out / TRAIN_LIST, ["video,score", *train])
    _write_list(out / TEST_LIST, ["video", *(video for video, _ in test)])
    _write_list(out / TRUTH_DIR / HdrTrack.truth_file, ["video,score", *(row for _, row in test)])


def _write_list(path: Path, lines: list[str]) -> None:
    """UTF-8, every line ended by a line feed, whatever the platform's defaults."""
    write_bytes(path, "".join(f"{line}\n" for line in lines).encode("utf-8"))
