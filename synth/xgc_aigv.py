"""NTIRE 2025 XGC track 2 (Q-Eval-Video): synthetic "AI-generated" videos of text prompts, rated 1-5, in the
organisers' layout.

A real AIGV score mixes how well the video is rendered with how hard its prompt was to follow, so both are
modelled and a model has something to learn from each input:
  * the prompt: drawn from a small vocabulary; its ease (`prompt_ease`) is a function of its words only: more objects
    (counts two..five) and the hard words of HARD_WORDS (crowds, hands, text, reflections, where generators fail)
    lower it;
  * the video: a procedural source with a KVQ-style random distortion (synth.video), whose quality it carries.
Several videos share a prompt (each its own source and distortion, as from different generators) and a prompt's
videos may be spread over the splits, as in the real data, but some prompts are only in train.

Format of the real lists (checked on the organisers' files): UTF-8, no header, `\\n` line ends including after the
last line; train `name.mp4|prompt|score` with the score as Python prints a float, val and test `name.mp4|prompt`;
names are numbered train first, then val, then test, each list in name order with its prompts in codepoint order.
No real prompt contains `|`, but one of ours does: a reader must take the name as the first field, the score as the
last and join the rest back into the prompt.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from common.atomic import write_bytes
from synth.dataset import SYNTHESIZERS, TRUTH_DIR
from synth.impairment import combined_quality
from synth.video import Distortion, distort, encode_mp4, quality, random_distortion, render_source
from tracks.xgc_aigv import TEST_LIST, TRAIN_LIST, VAL_LIST, VIDEO_DIR, XGCAIGV

WIDTH, HEIGHT = 96, 96  # px, of the videos unless asked otherwise
FPS = 8
FRAMES = (16, 24)  # 2 to 3 s at FPS
VAL_FRACTION = TEST_FRACTION = 0.15
TRAIN_ONLY_SHARE = 0.2  # of the train items, at least: those of prompts seen in no other split
MAX_PER_PROMPT = 7  # videos per prompt: 1..7 (the real set has up to 21, ~6 on average)
MIN_ITEMS = 8  # two per held-out split, and a train-only prompt beside the shared ones

# Score = 1 + 4 * (VIDEO_WEIGHT * video quality + (1 - VIDEO_WEIGHT) * prompt ease) + rater noise, clipped to 1..5.
VIDEO_WEIGHT = 0.6
LABEL_NOISE = 0.15

COUNTS = {"a": 1, "two": 2, "three": 3, "four": 4, "five": 5}
COLOURS = ("red", "blue", "golden", "white", "green", "crimson")
OBJECTS = (("balloon", "balloons"), ("cat", "cats"), ("kite", "kites"), ("boat", "boats"), ("lantern", "lanterns"))
ACTIONS = (
    "drifting over a lake",
    "walking through a forest",
    "floating above a city",
    "resting outside a café",
    "spinning in the rain",
    "dancing on a rooftop",
)
HARD_EXTRAS = ("watched by a crowd", "held in small hands", "under a banner with text", "with a reflection in a mirror")
STYLES = ("watercolor", "cinematic", "naïve art", "pixel art", "oil painting", "anime")
SIGN = "a neon sign with the text open | closed"  # a subject with a `|`, so readers must not split prompts on it
HARD_WORDS = frozenset({"crowd", "hands", "text", "reflection"})
# Ease as a quality of the prompt (synth.impairment.combined_quality): extra objects and hard words at which it halves.
HALF_EASE = {"objects": 3.0, "hard": 1.5}


# ---------------------------------------------------------------------------------------------------------- prompts


def random_prompt(rng: np.random.Generator, sign: bool = False, style: str | None = None) -> str:
    """E.g. "three red balloons drifting over a lake, watched by a crowd, watercolor"; `sign` and `style` let the
    dataset force its `|` and non-ASCII prompts in."""
    if sign:
        subject = SIGN
    else:
        count = str(rng.choice(list(COUNTS)))
        singular, plural = OBJECTS[rng.integers(len(OBJECTS))]
        subject = f"{count} {rng.choice(COLOURS)} {singular if COUNTS[count] == 1 else plural}"
    extras = rng.choice(HARD_EXTRAS, size=rng.choice(3, p=(0.5, 0.35, 0.15)), replace=False)
    style = style or str(rng.choice(STYLES))
    return ", ".join([f"{subject} {rng.choice(ACTIONS)}", *map(str, extras), style])


def prompt_ease(prompt: str) -> float:
    """Ease in [0, 1] of following `prompt`, read from its words alone: a count word sets the number of objects,
    and each distinct hard word makes it harder."""
    words = set(re.findall(r"\w+", prompt.lower()))
    objects = max((n for word, n in COUNTS.items() if word in words), default=1)
    return combined_quality({"objects": objects - 1, "hard": len(words & HARD_WORDS)}, HALF_EASE)


def label(video_quality: float, ease: float, rng: np.random.Generator) -> float:
    """One rated score on the 1-5 scale from the video's quality and its prompt's ease, with rater noise."""
    expected = 1 + 4 * (VIDEO_WEIGHT * video_quality + (1 - VIDEO_WEIGHT) * ease)
    return float(np.clip(expected + rng.normal(0.0, LABEL_NOISE), 1.0, 5.0))


# -------------------------------------------------------------------------------------------------------- the dataset


def _make_video(job: tuple[Path, int, int, int, int, Distortion, int]) -> None:
    path, source_seed, width, height, frames, distortion, grain_seed = job
    source = render_source(source_seed, width, height, frames)
    encode_mp4(distort(source, distortion, grain_seed), path, fps=FPS, crf=distortion.crf)


def _prompts(rng: np.random.Generator, items: int) -> list[str]:
    """The prompt of every item, in groups of 1..MAX_PER_PROMPT of one distinct prompt; the first prompt has the
    `|`, the second is non-ASCII."""
    sizes = []
    while sum(sizes) < items:
        sizes.append(int(rng.integers(1, MAX_PER_PROMPT + 1)))
    sizes[-1] -= sum(sizes) - items
    forced = [{"sign": True}, {"style": "naïve art"}]
    drawn: list[str] = []
    for index in range(len(sizes)):
        options = forced[index] if index < len(forced) else {}
        prompt = random_prompt(rng, **options)
        while prompt in drawn:  # distinct prompts keep the groups, and so the train-only share, as drawn
            prompt = random_prompt(rng, **options)
        drawn.append(prompt)
    return [prompt for prompt, size in zip(drawn, sizes) for _ in range(size)]


def _splits(rng: np.random.Generator, prompts: list[str]) -> np.ndarray:
    """Each item's split: whole prompts to train until TRAIN_ONLY_SHARE of it (at least one prompt; the smallest
    always fits), then val and test items drawn from the rest, so most held-out prompts also occur in train."""
    items = len(prompts)
    n_val, n_test = max(2, round(items * VAL_FRACTION)), max(2, round(items * TEST_FRACTION))
    n_train = items - n_val - n_test
    members: dict[str, list[int]] = {}
    for item, prompt in enumerate(prompts):
        members.setdefault(prompt, []).append(item)
    groups = list(members.values())
    train_only: list[int] = []
    for group in rng.permutation(len(groups)):
        if train_only and len(train_only) >= TRAIN_ONLY_SHARE * n_train:
            break
        if len(train_only) + len(groups[group]) <= n_train:
            train_only += groups[group]
    split = np.full(items, "train", dtype=object)
    held_out = rng.permutation(np.setdiff1d(np.arange(items), train_only))[: n_val + n_test]
    split[held_out[:n_val]], split[held_out[n_val:]] = "val", "test"
    return split


@SYNTHESIZERS.register(XGCAIGV.name)
def synthesize(out: Path, items: int, seed: int, width: int = 0, height: int = 0, workers: int = 2) -> pd.DataFrame:
    """`items` videos of `width` x `height` (0: WIDTH x HEIGHT) under out/videos, the organisers' three lists and
    the val and test truth (truth/truth.json); returns every item's video, prompt, split, score, its distortion's
    severities, video quality and prompt ease, in name order."""
    if items < MIN_ITEMS:
        raise ValueError(f"items={items}: need at least {MIN_ITEMS}")
    out, width, height = Path(out), width or WIDTH, height or HEIGHT
    rng = np.random.default_rng(seed)
    prompts = _prompts(rng, items)
    split = _splits(rng, prompts)
    rows = []
    for prompt, part in zip(prompts, split, strict=True):
        distortion = random_distortion(rng)
        video_quality, ease = quality(distortion), prompt_ease(prompt)
        rows.append(
            {
                "prompt": prompt,
                "split": part,
                "score": label(video_quality, ease, rng),
                **asdict(distortion),
                "video_quality": video_quality,
                "prompt_ease": ease,
                "distortion": distortion,
                "tiebreak": rng.random(),
                "source_seed": int(rng.integers(2**31)),
                "grain_seed": int(rng.integers(2**31)),
                "frames": int(rng.integers(FRAMES[0], FRAMES[1] + 1)),
            }
        )
    # Numbered train, val, test, each in prompt order, as the real lists are.
    table = pd.DataFrame(rows)
    table["order"] = table.split.map({"train": 0, "val": 1, "test": 2})
    table = table.sort_values(["order", "prompt", "tiebreak"], ignore_index=True)
    table.insert(0, "video", [f"{k}.mp4" for k in range(1, items + 1)])

    (out / VIDEO_DIR).mkdir(parents=True, exist_ok=True)
    jobs = [
        (out / VIDEO_DIR / row.video, row.source_seed, width, height, row.frames, row.distortion, row.grain_seed)
        for row in table.itertuples()
    ]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_make_video, jobs))

    parts = {part: table[table.split == part] for part in ("train", "val", "test")}
    write_bytes(out / TRAIN_LIST, _lines(zip(parts["train"].video, parts["train"].prompt, parts["train"].score)))
    write_bytes(out / VAL_LIST, _lines(zip(parts["val"].video, parts["val"].prompt)))
    write_bytes(out / TEST_LIST, _lines(zip(parts["test"].video, parts["test"].prompt)))
    held_out = table[table.split != "train"]
    truth = [{"video": video, "predict_score": score} for video, score in zip(held_out.video, held_out.score)]
    write_bytes(out / TRUTH_DIR / XGCAIGV.truth_file, json.dumps(truth, ensure_ascii=False, indent=1).encode("utf-8"))
    return table.drop(columns=["order", "distortion", "tiebreak", "source_seed", "grain_seed", "frames"])


def _lines(rows) -> bytes:
    """`|`-joined fields, `\\n` after every line (the last too), UTF-8; floats as Python prints them (exact)."""
    return "".join("|".join(map(str, row)) + "\n" for row in rows).encode("utf-8")
