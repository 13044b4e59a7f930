"""Stream families declare themselves: their words live in their own module (features/streams/<family>.py), the
configuration takes its fields from them, and the spine never names a family's own word."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import streams
from features.inputs import Category, Text
from features.reader import Features
from workbench.config import ConfigError, DecodeConfig, ExtractConfig, FeatureConfig, TrainConfig, build, check_keys

ROOT = Path(__file__).parents[1]
SPINE = sorted((ROOT / "workbench").glob("*.py"))


def family_words() -> dict[str, str]:
    """Each word of the families beside the key frames, with the family declaring it (the key frames' words, the
    backbone and its views, are the run's own: fine-tuning and the readme name them)."""
    return {word.name: family.name for family in streams.families() if family.order > 0 for word in family.words}


def named_words(path: Path) -> set[str]:
    """What a module names as a configuration word could be named: attributes, keyword arguments, string constants."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.keyword) and node.arg:
            names.add(node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)
    return names


def test_the_families_come_in_stream_order_with_the_key_frames_first():
    names = [family.name for family in streams.families()]
    assert names == ["key_frames", "motion", "audio", "sync", "pair", "fr", "lmm", "text", "align", "meta"]
    assert [family.extracted for family in streams.families()] == [True] * 7 + [False] * 3


@pytest.mark.parametrize("path", SPINE, ids=lambda path: path.name)
def test_no_spine_module_names_a_family_word(path):
    words = family_words()
    assert {"audio_seconds", "clip_size", "motion_weights"} <= set(words)
    assert sorted(named_words(path) & set(words)) == []


def test_the_configuration_holds_exactly_the_decode_and_the_families_words():
    fields = [f.name for f in dataclasses.fields(FeatureConfig)]
    declared = [word.name for word in streams.words()]
    assert fields == [f.name for f in dataclasses.fields(DecodeConfig)] + declared
    defaults = {f.name: f.default for f in dataclasses.fields(FeatureConfig)}
    assert all(defaults[word.name] == word.default for word in streams.words())
    cfg = build(TrainConfig, {"clip_size": "64", "audio_seconds": "0.5", "motion": "temporal_stats"})
    assert (cfg.clip_size, cfg.audio_seconds, cfg.extra_streams()) == (64, 0.5, ["temporal_stats"])
    assert cfg.key_frames_alone().extra_streams() == [] and cfg.key_frames_alone().clip_size == 64


def test_an_unknown_word_suggests_the_family_word_and_says_what_it_means():
    from workbench.config import known_keys

    with pytest.raises(ConfigError, match=r"Did you mean clip_size= \(the short side clips are decoded at"):
        check_keys({"clip_sise": "3"}, known_keys(ExtractConfig), "extract")


def test_each_extracted_family_makes_its_own_feature_set_and_checks_its_words():
    cfg = build(ExtractConfig, {"motion": "temporal_stats", "audio": "logmel_stats", "sync": "av_sync", "clip": "4"})
    frames, motion, audio, sync = cfg.streams("video")
    assert [s.view for s in (*frames, *motion, *audio, *sync)] == ["resize", "clip", "audio", "sync"]
    assert motion[0].clip == sync[0].clip == 4 and audio[0].audio_seconds == sync[0].audio_seconds == 1.0
    with pytest.raises(ConfigError, match="clip=1: clips take 2 frames"):
        build(ExtractConfig, {"sync": "av_sync", "clip": "1"}).streams("video")
    with pytest.raises(ConfigError, match="an audio or sync stream needs a window"):
        build(ExtractConfig, {"audio": "logmel_stats", "audio_seconds": "0"}).streams("video")
    with pytest.raises(ConfigError, match="align= relates a text encoder"):
        build(ExtractConfig, {"align": "cosine"}).streams("video")
    with pytest.raises(ConfigError, match="meta='exif': expected one of container"):
        build(ExtractConfig, {"meta": "exif"}).streams("video")


def test_the_families_made_at_load_learn_on_the_training_split_and_a_predictor_replays_them():
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "path": ["a.mp4", "b.mp4", "c.mp4", "d.mp4"],
            "split": ["train", "train", "test", "test"],
            "prompt": ["two red balloons", "a cat", "two red balloons", ""],
            "generator": ["g1", "g2", "g1", "g3"],
        }
    )
    inputs = (Text("prompt"), Category("generator", str))
    frames = Features(np.ones((4, 1, 2, 3), np.float32), np.ones((4, 1, 2), bool), list(items["item_id"]), ["center"])
    cfg = build(TrainConfig, {"text": "hashed_ngrams"})
    loading = streams.Loading(items, inputs, frames, None, None)
    made, keys = streams.load(cfg, loading)
    assert [key.split("-")[0] for key in keys] == ["text"] and made[0].x.shape[:3] == (4, 1, 1)
    # Replayed from what was learned, without the split: the same vectors, as an exported predictor makes them.
    again = streams.Loading(items.drop(columns="split"), inputs, frames, None, None, dict(loading.fitted))
    np.testing.assert_allclose(streams.load(cfg, again)[0][0].x, made[0].x, atol=1e-6)
    assert set(streams.fit(cfg, inputs, items)) == {"text"}
