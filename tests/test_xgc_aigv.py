"""XGC AIGV: the organisers' `name|prompt[|score]` lists read as shipped, the phase following the download, prompts
as a text stream, and text that is empty, blank, very long, holding `|` or not UTF-8."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from features.text import text_features
from tracks import LayoutError, get_track
from tracks.xgc_aigv import TRAIN_LIST, VAL_LIST, read_list

REFERENCE = Path(__file__).parents[2] / "shared" / "reference" / "xgc_aigv"
TRACK = get_track("xgc_aigv")


def test_the_shipped_lists_read_with_the_phase_following_the_download(tmp_path):
    if not REFERENCE.is_dir():
        pytest.skip(f"{REFERENCE} is not on this machine")
    items = TRACK.read_items(REFERENCE)
    assert (items.split == "train").sum() == 23820 and (items.split == "test").sum() == 6807
    assert items.loc[items.split == "train", "score"].between(1, 5).all()
    assert items.loc[items.split == "train", "group"].nunique() == 3762  # folds by prompt
    assert items.iloc[0][["item_id", "prompt"]].tolist() == ["1.mp4", "3D animation style, an emu is running."]
    for name in (TRAIN_LIST, VAL_LIST):  # before the test list is out: the validation phase
        shutil.copy(REFERENCE / name, tmp_path / name)
    assert (TRACK.read_items(tmp_path).split == "test").sum() == 3402


def test_a_prompt_holding_the_separator_reads_whole_and_bad_lines_are_named(tmp_path):
    path = tmp_path / TRAIN_LIST
    path.write_text("1.mp4|a sign reading open | closed, café|2.5\n2.mp4||3\n", encoding="utf-8")
    table = read_list(path, labelled=True)
    assert table["prompt"].tolist() == ["a sign reading open | closed, café", ""]
    assert table["score"].tolist() == [2.5, 3]
    path.write_text("1.mp4|a prompt|good\n")
    with pytest.raises(LayoutError, match="line 1: score='good' is not a finite number"):
        read_list(path, labelled=True)
    path.write_text("1.mp4|a prompt|2\n2.mp4 without fields\n")
    with pytest.raises(LayoutError, match="line 2: expected name|prompt|score"):
        read_list(path, labelled=True)
    path.write_bytes(b"1.mp4|a prompt|2\n2.mp4|caf\xe9 in latin-1|3\n")
    with pytest.raises(LayoutError, match="line 2: not UTF-8"):
        read_list(path, labelled=True)


def test_text_features_take_empty_blank_and_very_long_text():
    texts = ["three red balloons", "a crowd with hands", "", "   \t", "word " * 5000, "three blue balloons"]
    encoded = text_features("hashed_ngrams", texts, np.array([True, True, True, True, False, True]))
    x, key = encoded.vectors, encoded.key
    assert x.shape == (6, 66) and np.isfinite(x).all()
    assert (x[2:4, -1] == 1).all() and not x[2:4, :-1].any()  # empty or blank: zeros and the empty flag
    assert x[4, -2] == pytest.approx(np.log1p(5000)) and x[4, -1] == 0  # any length is taken whole
    assert np.linalg.norm(x[0, :-2] - x[5, :-2]) < np.linalg.norm(x[0, :-2] - x[1, :-2])  # similar text, near
    again = text_features("hashed_ngrams", texts, np.array([True, True, True, True, False, True]))
    np.testing.assert_array_equal(again.vectors, x)
    assert again.key == key and text_features("hashed_ngrams", texts[::-1], np.ones(6, bool)).key != key
