"""synth.xgc_aigv: the organisers' list formats (a `|` inside a prompt included), the videos, the truth, the split
rules, determinism and a score that both the prompt and the video explain in part."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from synth import xgc_aigv
from synth.dataset import TRUTH_DIR
from synth.video import quality, random_distortion
from tracks.xgc_aigv import TEST_LIST, TRAIN_LIST, VAL_LIST, VIDEO_DIR, XGCAIGV

ITEMS, SEED, WIDTH, HEIGHT = 20, 5, 64, 48
LISTS = {"train": TRAIN_LIST, "val": VAL_LIST, "test": TEST_LIST}
TRUTH = f"{TRUTH_DIR}/{XGCAIGV.truth_file}"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("aigv") / "data"
    return out, xgc_aigv.synthesize(out, ITEMS, SEED, WIDTH, HEIGHT)


def _parse(out: Path, split: str) -> list[tuple[str, str, float | None]]:
    """As a reader of the real lists must: name first, score last (train only), the prompt everything between."""
    raw = (out / LISTS[split]).read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw
    rows = []
    for line in raw.decode("utf-8").split("\n")[:-1]:
        fields = line.split("|")
        if split == "train":
            rows.append((fields[0], "|".join(fields[1:-1]), float(fields[-1])))
        else:
            rows.append((fields[0], "|".join(fields[1:]), None))
    return rows


def test_lists_parse_back_exactly_in_name_order(dataset) -> None:
    out, table = dataset
    names = []
    for split in LISTS:
        part = table[table.split == split]
        rows = _parse(out, split)
        assert [name for name, _, _ in rows] == list(part.video)
        assert [prompt for _, prompt, _ in rows] == list(part.prompt)
        if split == "train":
            assert [score for _, _, score in rows] == list(part.score)
        numbers = [int(name.removesuffix(".mp4")) for name, _, _ in rows]
        assert numbers == sorted(numbers)
        names += [name for name, _, _ in rows]
    assert sorted(names, key=lambda name: int(name.removesuffix(".mp4"))) == [f"{k}.mp4" for k in range(1, ITEMS + 1)]


def test_pipe_and_non_ascii_prompts_round_trip(dataset) -> None:
    out, table = dataset
    parsed = {prompt for split in LISTS for _, prompt, _ in _parse(out, split)}
    assert xgc_aigv.SIGN in " ".join(parsed)
    assert any("|" in prompt for prompt in parsed)
    assert any(not prompt.isascii() for prompt in parsed)
    assert parsed == set(table.prompt)


def test_splits_sizes_and_train_only_prompts(dataset) -> None:
    _, table = dataset
    counts = table.split.value_counts()
    assert all(counts[split] >= 2 for split in LISTS)
    assert counts["train"] >= 0.6 * ITEMS
    held_out = set(table.prompt[table.split != "train"])
    assert set(table.prompt[table.split == "train"]) - held_out
    assert table.groupby("prompt").size().max() > 1


def test_truth_holds_exactly_the_val_and_test_scores(dataset) -> None:
    out, table = dataset
    truth = json.loads((out / TRUTH).read_text(encoding="utf-8"))
    held_out = table[table.split != "train"]
    assert [row["video"] for row in truth] == list(held_out.video)
    assert [row["predict_score"] for row in truth] == list(held_out.score)
    assert table.score.between(1, 5).all()


def test_every_video_decodes(dataset) -> None:
    out, table = dataset
    assert sorted(path.name for path in (out / VIDEO_DIR).iterdir()) == sorted(table.video)
    for name in table.video:
        with av.open(str(out / VIDEO_DIR / name)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert xgc_aigv.FRAMES[0] <= len(frames) <= xgc_aigv.FRAMES[1]
        assert frames[0].shape == (HEIGHT, WIDTH, 3)


def test_same_seed_gives_identical_lists(dataset, tmp_path: Path) -> None:
    out, table = dataset
    again = xgc_aigv.synthesize(tmp_path, ITEMS, SEED, WIDTH, HEIGHT)
    pd.testing.assert_frame_equal(again, table)
    for name in [*LISTS.values(), TRUTH]:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes()


def test_prompt_ease_reads_counts_and_hard_words() -> None:
    assert xgc_aigv.prompt_ease("a red kite drifting over a lake, anime") == 1.0
    easy = xgc_aigv.prompt_ease("two red kites drifting over a lake, anime")
    assert easy > xgc_aigv.prompt_ease("five red kites drifting over a lake, anime")
    assert easy > xgc_aigv.prompt_ease("two red kites drifting over a lake, watched by a crowd, anime")


def test_score_follows_both_prompt_ease_and_video_quality() -> None:
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(400):
        ease, video_quality = xgc_aigv.prompt_ease(xgc_aigv.random_prompt(rng)), quality(random_distortion(rng))
        draws.append((ease, video_quality, xgc_aigv.label(video_quality, ease, rng)))
    frame = pd.DataFrame(draws, columns=["ease", "video_quality", "score"])
    spearman = frame.corr(method="spearman")["score"]
    assert spearman["ease"] > 0.3 and spearman["video_quality"] > 0.3
