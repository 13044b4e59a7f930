"""ICCV VQualA 2025 short-video engagement (SnapUGC): synthetic short videos with an engagement continuation rate
(ECR, in [0, 1]) in the organisers' layout.

The real ECR depends on how a video looks, whether it has sound and what its text promises, so each is modelled and
a model has something to learn from every input:
  * the video: a procedural source with a KVQ-style random distortion (synth.video), whose quality it carries;
  * the audio: ~60% of the videos carry an AAC voice track (as synth.talking_head muxes it), the rest no audio stream;
  * the title: hook words ("wait", "watch till the end", "amazing", "secret", "funny") raise its appeal, dull ones
    ("boring", "ad", "sale") lower it, an empty title is neutral. The description is text only, no factor.
ECR = sigmoid(QUALITY_WEIGHT * (quality - 0.5) + AUDIO_WEIGHT * (has_audio - AUDIO_SHARE)
              + APPEAL_WEIGHT * appeal + N(0, LABEL_NOISE)).

Format of the real lists (checked on the organisers' val_data.csv and submission_baseline.csv): UTF-8 without BOM,
`\\r\\n` line ends including after the last line, quoted only where needed with `""` for a quote, an empty string as
an empty cell: exactly what pandas `to_csv(index=False, lineterminator="\\r\\n")` writes (the real val file round-
trips through it byte for byte). Ids are 32 lowercase hex characters, videos `videos/<Id>.mp4`, each list in no
particular order; most Titles and Descriptions are empty and emoji appear as words.
"""

from __future__ import annotations

import math
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from common.atomic import write_bytes
from synth.dataset import SYNTHESIZERS, TRUTH_DIR
from synth.talking_head import Distortions, Speech, Video, encode_talking_head
from synth.video import Distortion, distort, encode_mp4, quality, random_distortion, render_source
from tracks.engagement import TEST_LIST, TRAIN_LIST, VAL_LIST, VIDEO_DIR, Engagement

LINE_END = "\r\n"

WIDTH, HEIGHT = 96, 96  # px, of the videos unless asked otherwise
FPS = 8
FRAMES = (16, 24)  # 2 to 3 s at FPS
SAMPLE_RATE = 22_050
VAL_FRACTION = TEST_FRACTION = 0.15
MIN_ITEMS = 3  # one per split

AUDIO_SHARE = 0.6
EMPTY_TITLE = 0.6
EMPTY_DESCRIPTION = 0.7

# Logit weights: each factor alone moves ECR by about as much as the others (Spearman > 0.2 each over many draws),
# and together they span ECR ~0.1..0.9.
QUALITY_WEIGHT = 3.0
AUDIO_WEIGHT = 1.2
APPEAL_WEIGHT = 1.6
LABEL_NOISE = 0.4
APPEAL_SLOPE = 0.8  # appeal = tanh(APPEAL_SLOPE * (hook phrases - dull words)): saturates, as clickbait does

HOOKS = ("wait", "watch till the end", "amazing", "secret", "funny")
DULL = ("boring", "ad", "sale")
# Title and description topics; the first four are non-ASCII, two are emoji as words, one needs CSV quoting.
TOPICS = (
    "niño plays fútbol",
    "café latte art",
    "straße at night",
    "crème brûlée recipe",
    "face with tears of joy",
    "fire fire",
    '"Freddy, are you okay?" cosplay',
    "my cat vs the vacuum",
    "gym day",
    "skate park fail",
    "morning routine",
)
TAGS = ("cosplay", "gaming", "football", "soccer", "viral", "spotlight", "minecraft", "dance", "foodie", "straßenkunst")


# ------------------------------------------------------------------------------------------------------------- text


def random_title(rng: np.random.Generator, topic: str | None = None) -> str:
    """A topic with 0-2 hook phrases and 0-1 dull words in random order; `topic` lets the dataset force one in."""
    hooks = rng.choice(HOOKS, size=rng.choice(3, p=(0.4, 0.4, 0.2)), replace=False)
    dull = rng.choice(DULL, size=rng.choice(2, p=(0.6, 0.4)), replace=False)
    parts = [topic or str(rng.choice(TOPICS)), *map(str, hooks), *map(str, dull)]
    title = " ".join(parts[k] for k in rng.permutation(len(parts)))
    return title[0].upper() + title[1:] if rng.random() < 0.5 else title


def random_description(rng: np.random.Generator, topic: str | None = None) -> str:
    """A topic and a few tags separated by double spaces (as hashtags read once the # is stripped), sometimes a
    `|`-separated call to action."""
    tags = rng.choice(TAGS, size=rng.integers(1, 4), replace=False)
    text = "  ".join([topic or str(rng.choice(TOPICS)), *map(str, tags)])
    return text + " | Subscribe For More" if rng.random() < 0.3 else text


def title_appeal(title: str) -> float:
    """Appeal in [-1, 1] read from the title's words alone: distinct hook phrases raise it, distinct dull words lower
    it, whole words only ("ad" is not in "made"); 0 for an empty title."""
    text = title.lower()
    hooks, dull = (sum(bool(re.search(rf"\b{re.escape(w)}\b", text)) for w in words) for words in (HOOKS, DULL))
    return math.tanh(APPEAL_SLOPE * (hooks - dull))


def engagement(video_quality: float, has_audio: bool, appeal: float, rng: np.random.Generator) -> float:
    """One ECR in [0, 1]: the sigmoid of the three factors' weighted sum plus noise (see the module docstring)."""
    logit = (
        QUALITY_WEIGHT * (video_quality - 0.5)
        + AUDIO_WEIGHT * (float(has_audio) - AUDIO_SHARE)
        + APPEAL_WEIGHT * appeal
        + rng.normal(0.0, LABEL_NOISE)
    )
    return float(1.0 / (1.0 + math.exp(-logit)))


def _download_link(rng: np.random.Generator) -> str:
    """An opaque CDN address shaped like the real val file's (a path token and a base64url query)."""
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))
    token, mo = ("".join(rng.choice(alphabet, size=n)) for n in (21, 64))
    return f"https://cf-st.sc-cdn.net/{rng.choice(list('adh'))}/{token}.1034.IRZXSOY?mo={mo}%3D&uc=46"


# -------------------------------------------------------------------------------------------------------- the dataset


def _make_video(job: tuple[Path, int, int, int, int, Distortion, int, int | None]) -> None:
    path, source_seed, width, height, frames, distortion, grain_seed, speech = job
    pictures = distort(render_source(source_seed, width, height, frames), distortion, grain_seed)
    if speech is None:
        encode_mp4(pictures, path, fps=FPS, crf=distortion.crf)
        return
    # synth.talking_head muxes H.264 + AAC; only the fields its encoder reads matter here.
    video = Video(path, speech, (0, 0), FPS, SAMPLE_RATE, 1, Distortions(crf=distortion.crf), 0)
    audio = Speech.from_id(speech).waveform(round(frames * SAMPLE_RATE / FPS), SAMPLE_RATE)[None]
    encode_talking_head(pictures, audio, video)


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, lineterminator=LINE_END).encode("utf-8")


@SYNTHESIZERS.register(Engagement.name)
def synthesize(out: Path, items: int, seed: int, width: int = 0, height: int = 0, workers: int = 2) -> pd.DataFrame:
    """`items` videos of `width` x `height` (0: WIDTH x HEIGHT) under out/videos, the organisers' three lists and
    the val and test truth (truth/truth.csv); returns every item's Id, texts, split, ECR, has_audio and drawn factors
    (video quality and its distortion, title appeal, frames), in list order: train, val, test."""
    if items < MIN_ITEMS:
        raise ValueError(f"items={items}: need at least {MIN_ITEMS} (one per split)")
    out, width, height = Path(out), width or WIDTH, height or HEIGHT
    rng = np.random.default_rng(seed)
    n_val, n_test = max(1, round(items * VAL_FRACTION)), max(1, round(items * TEST_FRACTION))
    split = np.full(items, "train", dtype=object)
    held_out = rng.permutation(items)[: n_val + n_test]
    split[held_out[:n_val]], split[held_out[n_val:]] = "val", "test"

    ids: list[str] = []
    while len(ids) < items:
        if (candidate := rng.bytes(16).hex()) not in ids:
            ids.append(candidate)
    rows, jobs = [], []
    for index in range(items):
        # Forced in so every dataset has them: a non-ASCII first title, a second description that needs quoting.
        title = random_title(rng, TOPICS[1]) if index == 0 or rng.random() >= EMPTY_TITLE else ""
        description = random_description(rng, TOPICS[6]) if index == 1 or rng.random() >= EMPTY_DESCRIPTION else ""
        has_audio = bool(rng.random() < AUDIO_SHARE)
        distortion = random_distortion(rng)
        video_quality, appeal = quality(distortion), title_appeal(title)
        frames = int(rng.integers(FRAMES[0], FRAMES[1] + 1))
        rows.append(
            {
                "Id": ids[index],
                "Title": title,
                "Description": description,
                "split": split[index],
                "ECR": engagement(video_quality, has_audio, appeal, rng),
                "has_audio": has_audio,
                "video_quality": video_quality,
                "title_appeal": appeal,
                **asdict(distortion),
                "frames": frames,
                "Download_link": _download_link(rng),
            }
        )
        speech = 34_900_000 + int(rng.integers(1_600_000)) if has_audio else None
        path = out / VIDEO_DIR / f"{ids[index]}.mp4"
        source_seed, grain_seed = (int(value) for value in rng.integers(2**31, size=2))
        jobs.append((path, source_seed, width, height, frames, distortion, grain_seed, speech))

    (out / VIDEO_DIR).mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_make_video, jobs))

    table = pd.DataFrame(rows)
    table["order"] = table.split.map({"train": 0, "val": 1, "test": 2})
    table = table.sort_values("order", kind="stable", ignore_index=True)
    parts = {part: table[table.split == part] for part in ("train", "val", "test")}
    write_bytes(out / TRAIN_LIST, _csv(parts["train"][["Id", "Title", "Description", "ECR"]]))
    write_bytes(out / VAL_LIST, _csv(parts["val"][["Id", "Title", "Description", "Download_link"]]))
    write_bytes(out / TEST_LIST, _csv(parts["test"][["Id", "Title", "Description"]]))
    write_bytes(out / TRUTH_DIR / Engagement.truth_file, _csv(table[table.split != "train"][["Id", "ECR"]]))
    return table.drop(columns=["order", "Download_link"])
