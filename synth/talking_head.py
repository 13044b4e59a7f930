"""NTIRE 2025 XGC track 3 (THQA-NTIRE): synthetic talking heads with speech, in the organisers' layout.

A video is a drawn face whose mouth (a dark ellipse) opens with the envelope of a speech-like audio track, so a
model that hears and sees can tell when the two disagree. The distortions the real set is rated on are drawn
independently per video:
  * sync: the mouth shows the envelope `lag` seconds early (lag > 0: video lead, < 0: audio lead), uniform in
    -0.4..0.4 s, and 0 for a quarter of the videos;
  * pause: for half of the videos, 0.3-1 s in which either the audio is muted while the mouth keeps moving, or the
    mouth is frozen while the audio plays on;
  * compression: libx264 at crf 23..45;
  * jitter: the whole head wanders smoothly by up to 2.5% of the frame height.
Score = 5 * quality (synth.impairment.combined_quality, a sync error weighing most) plus rater noise, clipped to
0-5 and rounded to 0.1, as most real scores are.

Names follow the real `<source image>_<text-to-image model>_common_voice_en_<speech clip>_<generator>.mp4`. As in
the real set, one speech clip is spoken by every generator of its source image: the clip's id fixes the audio, the
source image and the model fix the face's look, and whole source images go to one split.
"""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av
import numpy as np
import pandas as pd

from common.atomic import atomic_path, write_bytes
from synth.dataset import SYNTHESIZERS, TRUTH_DIR
from synth.impairment import combined_quality
from synth.video import PRISTINE_CRF, X264_PARAMS, X264_PRESET, background, to_uint8
from tracks.talking_head import TEST_LIST, TRAIN_LIST, VAL_LIST, TalkingHead

Real = float | np.ndarray  # a number, or one per frame broadcast against the pixels

IMAGE_MODELS = ("dalle3", "flux", "kandinsky", "mid", "sd3")
GENERATORS = ("audio2head", "dinet", "echomimic", "sadtalker", "wavlip")
SPEECH_PREFIX = "common_voice_en"  # the real speech field is a Common Voice clip: common_voice_en_<8 digits>
SPEECHES_PER_SOURCE = 2
VERSIONS_PER_SOURCE = 6
HELD_OUT = 0.15  # share of the source images in val, and again in test; at least one each
MIN_SOURCES = 7  # five for train, one each for val and test: 70/15/15 where there are enough items
MIN_ITEMS = 3  # a source image for each split

WIDTH, HEIGHT = 96, 96  # px, of the videos unless asked otherwise
FPS = (8, 10, 12)
SAMPLE_RATES = (16_000, 22_050, 44_100)
AAC_BIT_RATE = 32_000  # per channel
DURATION = (3.0, 4.0)  # s, of a speech clip

# Speech: syllables are raised-cosine bursts of the envelope at 3-6 per second, phrases split by short silences.
SYLLABLE_RATE = (3.0, 6.0)
PHRASE_BREAK = 0.2  # chance of a 0.2-0.5 s silence after a syllable
PITCH = (120.0, 220.0)  # Hz, of the voice's fundamental
HARMONICS = 6
LOUDNESS = 0.5  # gain on the harmonic carrier, whose peak is 1.62: speech peaks at 0.81, well clear of clipping

# Face geometry in units of the frame height, centred horizontally; the mouth's half-height follows the envelope.
FACE_Y = 0.52
EYE_Y, EYE_DX, EYE_RADIUS = 0.42, 0.12, 0.035
MOUTH_Y, MOUTH_HALF_WIDTH = 0.68, 0.13
MOUTH_CLOSED, MOUTH_OPEN = 0.01, 0.09
MOUTH_COLOUR = (55.0, 15.0, 20.0)
SKIN_LIGHT, SKIN_DARK = (240.0, 200.0, 170.0), (120.0, 80.0, 60.0)  # a face's tone lies between the two

MAX_LAG = 0.4
IN_SYNC = 0.25  # share of the videos with no lag
NO_PAUSE = 0.5  # share of the videos without a pause
PAUSE_LENGTH = (0.3, 1.0)
CRF = (23, 45)
MAX_JITTER = 0.025  # largest wander of the head, in frame heights

SCORE_MAX = 5.0
RATER_NOISE = 0.15
# Severity at which a distortion alone halves quality: a lag of 0.2 s, as much as a 1 s pause or crf 43.
HALF_QUALITY = {"sync": 0.2, "pause": 1.0, "crf": 25.0, "jitter": 0.04}


# ---------------------------------------------------------------------------------------------------------- labels


@dataclasses.dataclass(frozen=True)
class Distortions:
    """What was done to one video; the defaults are a clean, in-sync, visually lossless one."""

    lag: float = 0.0  # s the mouth runs ahead of the audio: > 0 video lead, < 0 audio lead
    pause: str = "none"  # "audio": muted while the mouth moves; "mouth": frozen while the audio plays
    pause_start: float = 0.0  # s, on the clock of what pauses
    pause_length: float = 0.0  # s; 0 without a pause
    crf: int = PRISTINE_CRF
    jitter: float = 0.0  # amplitude of the head's wander, in frame heights

    def severities(self) -> dict[str, float]:
        """Each distortion's severity on the scale HALF_QUALITY is written in (0 = absent)."""
        return {
            "sync": abs(self.lag),
            "pause": self.pause_length,
            "crf": float(max(self.crf - PRISTINE_CRF, 0)),
            "jitter": self.jitter,
        }

    def paused(self, kind: str, t: np.ndarray) -> np.ndarray:
        """Whether each time `t` (s) falls in a pause of `kind`, "audio" or "mouth"."""
        return (self.pause == kind) & (t >= self.pause_start) & (t < self.pause_start + self.pause_length)


def random_distortions(rng: np.random.Generator, duration: float) -> Distortions:
    """Every distortion drawn independently; a pause lies wholly inside a clip of `duration` seconds."""
    lag = 0.0 if rng.random() < IN_SYNC else float(rng.uniform(-MAX_LAG, MAX_LAG))
    pause, start, length = "none", 0.0, 0.0
    if rng.random() >= NO_PAUSE:
        pause, length = str(rng.choice(("audio", "mouth"))), float(rng.uniform(*PAUSE_LENGTH))
        start = float(rng.uniform(0.2, duration - length - 0.2))
    crf = int(rng.integers(CRF[0], CRF[1] + 1))
    return Distortions(lag, pause, start, length, crf, float(rng.uniform(0.0, MAX_JITTER)))


def label(distortions: Distortions, rng: np.random.Generator) -> float:
    """The rated score: SCORE_MAX * quality plus rater noise, clipped to the scale and rounded to 0.1."""
    quality = combined_quality(distortions.severities(), HALF_QUALITY)
    return round(float(np.clip(SCORE_MAX * quality + rng.normal(0.0, RATER_NOISE), 0.0, SCORE_MAX)), 1)


# ---------------------------------------------------------------------------------------------------------- speech


@dataclasses.dataclass(frozen=True, eq=False)
class Speech:
    """One spoken clip, fixed by its id: length, pitch and syllables (onset, length, loudness, in s and 0-1)."""

    duration: float
    pitch: float
    syllables: np.ndarray  # [n, 3]

    @classmethod
    def from_id(cls, speech: int) -> Speech:
        rng = np.random.default_rng(speech)
        duration, rate = rng.uniform(*DURATION), rng.uniform(*SYLLABLE_RATE)
        syllables, onset = [], rng.uniform(0.1, 0.3)
        while onset < duration - 0.3:
            length = min(rng.uniform(0.6, 0.9) / rate, duration - 0.1 - onset)
            syllables.append((onset, length, rng.uniform(0.5, 1.0)))
            onset += rng.uniform(0.8, 1.2) / rate + (rng.uniform(0.2, 0.5) if rng.random() < PHRASE_BREAK else 0.0)
        return cls(float(duration), float(rng.uniform(*PITCH)), np.array(syllables))

    def envelope(self, t: np.ndarray) -> np.ndarray:
        """Loudness in [0, 1] at times `t` (s): 0 outside the clip and between syllables."""
        onset, length, peak = (column[:, None] for column in self.syllables.T)
        phase = (np.asarray(t, dtype=np.float64)[None, :] - onset) / length
        bursts = peak * np.sin(np.pi * np.clip(phase, 0.0, 1.0)) ** 2
        return bursts.max(axis=0)

    def waveform(self, samples: int, sample_rate: int) -> np.ndarray:
        """float32 [samples]: a few harmonics of a slowly gliding pitch, shaped by the envelope."""
        t = np.arange(samples) / sample_rate
        phase = 2 * np.pi * np.cumsum(self.pitch * (1 + 0.05 * np.sin(2 * np.pi * 0.5 * t))) / sample_rate
        carrier = sum(np.sin(k * phase) / k for k in range(1, HARMONICS + 1))
        return (LOUDNESS * self.envelope(t) * carrier).astype(np.float32)


# --------------------------------------------------------------------------------------------------------- a video


@dataclasses.dataclass(frozen=True)
class Video:
    """One file: where it goes, its speech clip, its look (source image and model), timing, audio and distortions."""

    path: Path
    speech: int
    look: tuple[int, int]  # seeds the backdrop, the face's tone and shape: (source image, text-to-image model)
    fps: int
    sample_rate: int
    channels: int
    distortions: Distortions
    seed: int  # of the head's wander

    @property
    def frames(self) -> int:
        return round(Speech.from_id(self.speech).duration * self.fps)

    @property
    def samples(self) -> int:
        return round(self.frames * self.sample_rate / self.fps)


def mouth_box(width: int, height: int) -> tuple[slice, slice]:
    """Rows and columns the mouth can reach at any opening and jitter, and only skin besides: the region whose mean
    darkness follows the mouth's opening."""
    half_height, half_width = (MOUTH_OPEN + MAX_JITTER) * height + 1, (MOUTH_HALF_WIDTH + MAX_JITTER) * height + 1
    rows = slice(math.floor(MOUTH_Y * height - half_height), math.ceil(MOUTH_Y * height + half_height))
    return rows, slice(math.floor(width / 2 - half_width), math.ceil(width / 2 + half_width))


def render_frames(video: Video, width: int, height: int) -> np.ndarray:
    """uint8 [frames, height, width, 3]: backdrop, shaded oval face, eyes, and the mouth open by the envelope at
    the frame's time plus the lag (held during a mouth freeze)."""
    d, speech = video.distortions, Speech.from_id(video.speech)
    look = np.random.default_rng(video.look)
    y = np.arange(height, dtype=np.float32)[None, :, None]
    x = np.arange(width, dtype=np.float32)[None, None, :]
    canvas = np.broadcast_to(background(look, y, x), (video.frames, height, width, 3)).astype(np.float32)

    t = np.arange(video.frames) / video.fps
    wander = _wander(np.random.default_rng(video.seed), t) * (d.jitter * height)
    cy, cx = wander[:, 0, None, None] + FACE_Y * height, wander[:, 1, None, None] + width / 2
    face_radii = look.uniform((0.38, 0.28), (0.42, 0.32)) * height
    skin = np.array(SKIN_LIGHT) + look.uniform() * (np.array(SKIN_DARK) - np.array(SKIN_LIGHT))
    face = _ellipse(y, x, cy, cx, *face_radii)
    radius2 = ((y - cy) / face_radii[0]) ** 2 + ((x - cx) / face_radii[1]) ** 2
    _paint(canvas, face, skin * (1 - 0.25 * np.clip(radius2, 0, 1))[..., None])
    for side in (-1, 1):
        eye_y, eye_x, radius = cy + (EYE_Y - FACE_Y) * height, cx + side * EYE_DX * height, EYE_RADIUS * height
        eye = _ellipse(y, x, eye_y, eye_x, radius, radius)
        _paint(canvas, eye, np.float32(40.0))

    shown = np.where(d.paused("mouth", t), d.pause_start, t)
    opening = (MOUTH_CLOSED + (MOUTH_OPEN - MOUTH_CLOSED) * speech.envelope(shown + d.lag)) * height
    mouth = _ellipse(y, x, cy + (MOUTH_Y - FACE_Y) * height, cx, opening[:, None, None], MOUTH_HALF_WIDTH * height)
    _paint(canvas, mouth, np.array(MOUTH_COLOUR, dtype=np.float32))
    return to_uint8(canvas)


def render_audio(video: Video) -> np.ndarray:
    """float32 [channels, samples]: the speech clip, silent during an audio pause, the same on every channel."""
    audio = Speech.from_id(video.speech).waveform(video.samples, video.sample_rate)
    audio[video.distortions.paused("audio", np.arange(video.samples) / video.sample_rate)] = 0
    return np.repeat(audio[None], video.channels, axis=0)


def _wander(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """[frames, 2] smooth offsets (dy, dx) within [-1, 1]: two slow sinusoids per axis at random phases."""
    frequency, phase = rng.uniform(0.3, 1.5, size=(2, 2, 1)), rng.uniform(0, 2 * np.pi, size=(2, 2, 1))
    return np.sin(2 * np.pi * frequency * t + phase).mean(axis=0).T


def _ellipse(y: np.ndarray, x: np.ndarray, cy: Real, cx: Real, ry: Real, rx: Real) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of an ellipse, from its first-order signed distance (sub-pixel centres and
    radii move the coverage smoothly, so a thin mouth still darkens in proportion to its opening)."""
    dy, dx = (y - cy) / ry, (x - cx) / rx
    gradient = 2 * np.sqrt((dy / ry) ** 2 + (dx / rx) ** 2)
    distance = (dy**2 + dx**2 - 1) / np.maximum(gradient, 1e-6)
    return np.clip(0.5 - distance, 0.0, 1.0).astype(np.float32)


def _paint(canvas: np.ndarray, coverage: np.ndarray, colour: np.ndarray) -> None:
    """Blends `colour` over `canvas` [frames, height, width, 3] in place, by `coverage` [frames, height, width]."""
    alpha = np.broadcast_to(coverage, canvas.shape[:3])[..., None]
    canvas += alpha * (colour - canvas)


def encode_talking_head(frames: np.ndarray, audio: np.ndarray, video: Video) -> None:
    """One H.264 stream (as synth.video.encode_mp4 writes it, byte for byte reproducible) and one AAC stream in an
    mp4 written atomically. The AAC priming samples are trimmed by the container's edit list, so decoded audio
    starts at 0 s as the frames do."""
    with atomic_path(video.path) as partial, av.open(str(partial), mode="w", format="mp4") as container:
        options = {"crf": str(video.distortions.crf), "preset": X264_PRESET, "x264-params": X264_PARAMS}
        picture = container.add_stream("libx264", rate=video.fps, options=options)
        picture.width, picture.height, picture.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        layout = "mono" if video.channels == 1 else "stereo"
        sound = container.add_stream("aac", rate=video.sample_rate, layout=layout)
        sound.bit_rate = AAC_BIT_RATE * video.channels
        for frame in frames:
            container.mux(picture.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(picture.encode())
        samples = av.AudioFrame.from_ndarray(audio, format="fltp", layout=layout)
        samples.sample_rate, samples.pts = video.sample_rate, 0
        container.mux(sound.encode(samples))
        container.mux(sound.encode())


def _make_video(job: tuple[Video, int, int]) -> None:
    video, width, height = job
    encode_talking_head(render_frames(video, width, height), render_audio(video), video)


# -------------------------------------------------------------------------------------------------------- the dataset


@SYNTHESIZERS.register(TalkingHead.name)
def synthesize(out: Path, items: int, seed: int, width: int = 0, height: int = 0, workers: int = 2) -> pd.DataFrame:
    """`items` videos of `width` x `height` (0: WIDTH x HEIGHT) from about items / VERSIONS_PER_SOURCE source
    images, each a distinct (model, speech clip, generator) of its source; HELD_OUT of the source images go to val,
    as many to test, the rest to train. Writes the three organiser lists, the videos and truth/ (val then test);
    returns every item's name, split, source, score and drawn distortions, in the organisers' name order."""
    if items < MIN_ITEMS:
        raise ValueError(f"items={items}: need at least {MIN_ITEMS} (one source image per split)")
    width, height = width or WIDTH, height or HEIGHT
    if width % 2 or height % 2:
        raise ValueError(f"{width}x{height}: yuv420p needs an even width and height")
    out = Path(out)
    rng = np.random.default_rng(seed)
    n_sources = min(items, max(MIN_SOURCES, math.ceil(items / VERSIONS_PER_SOURCE)))
    held_out = max(1, round(n_sources * HELD_OUT))
    order = rng.permutation(n_sources)
    splits = {int(s): "val" for s in order[:held_out]} | {int(s): "test" for s in order[held_out : 2 * held_out]}
    source_ids = rng.permutation(n_sources) + 1
    speech_ids = 34_900_000 + rng.choice(1_600_000, size=(n_sources, SPEECHES_PER_SOURCE), replace=False)

    rows, jobs = [], []
    for source, members in enumerate(np.array_split(np.arange(items), n_sources)):
        look_seed = int(rng.integers(2**31))
        combos = [(m, s, g) for m in IMAGE_MODELS for s in speech_ids[source] for g in GENERATORS]
        for k in rng.choice(len(combos), size=len(members), replace=False):
            model, speech, generator = combos[k]
            name = f"{source_ids[source]}_{model}_{SPEECH_PREFIX}_{speech}_{generator}.mp4"
            fps = int(rng.choice(FPS))
            distortions = random_distortions(rng, Speech.from_id(int(speech)).duration)
            video = Video(
                path=out / name,
                speech=int(speech),
                look=(look_seed, IMAGE_MODELS.index(model)),
                fps=fps,
                sample_rate=int(rng.choice(SAMPLE_RATES)),
                channels=int(rng.integers(1, 3)),
                distortions=distortions,
                seed=int(rng.integers(2**31)),
            )
            rows.append(
                {
                    "Video": name,
                    "split": splits.get(source, "train"),
                    "source": str(source_ids[source]),
                    "Score": label(distortions, rng),
                    "model": model,
                    "speech": str(speech),
                    "generator": generator,
                    **dataclasses.asdict(distortions),
                    "fps": fps,
                    "frames": video.frames,
                    "sample_rate": video.sample_rate,
                    "channels": video.channels,
                }
            )
            jobs.append((video, width, height))
    out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_make_video, jobs, chunksize=4))

    # The organisers' order: source image (as text, so 10 before 4), then model, generator and speech clip.
    table = pd.DataFrame(rows).sort_values(["source", "model", "generator", "speech"], ignore_index=True)
    by_split = {split: table[table.split == split] for split in ("train", "val", "test")}
    scored = {split: [f"{r.Video},{r.Score:g}" for r in part.itertuples()] for split, part in by_split.items()}
    write_bytes(out / TRAIN_LIST, _crlf(["Video,Score", *scored["train"]]) + b"\r\n")
    write_bytes(out / VAL_LIST, _crlf(["Video", *by_split["val"].Video]) + b"\r\n")
    write_bytes(out / TEST_LIST, _crlf(["Video", *by_split["test"].Video]) + b"\r\n")
    write_bytes(out / TRUTH_DIR / TalkingHead.truth_file, _crlf(["Video,Score", *scored["val"], *scored["test"]]))
    return table


def _crlf(lines: list[str]) -> bytes:
    """CRLF-separated, with no final line end: the organisers' released truth (thqa_ntire_val.csv, _test.csv) ends
    so, while their three lists end with one more CRLF, which the caller adds."""
    return "\r\n".join(lines).encode()
