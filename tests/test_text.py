"""Pretrained text encoders (open_clip towers, transformers sentence encoders) from small random configs, their
memo, the prompt-alignment stream, and their refusals when a model is not on this machine."""

from __future__ import annotations

import json
import shutil

import numpy as np
import open_clip
import pytest
import torch

from features.backbones import WeightsNotFound, create_backbone
from features.clip import prompt_alignment
from features.metadata import CONTAINER_FACTS
from features.reader import Features
from features.text import SentenceEncoder, text_features

TINY_CLIP = "vqa-tiny-clip"
WORDS = [
    "a",
    "the",
    "red",
    "blue",
    "green",
    "ball",
    "balloons",
    "crowd",
    "cat",
    "dog",
    "with",
    "hands",
    "three",
    "in",
    "on",
    "under",
    "sky",
    "tree",
]
LONG = " ".join(["three red balloons in the sky"] * 40)  # ~240 tokens: past CLIP's 77 and the tiny BERT's 64


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A CLIP of two-layer towers, 32-wide embeddings and 32-pixel images, known to open_clip by name."""
    folder = tmp_path_factory.mktemp("clip-config")
    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return f"open_clip:{TINY_CLIP}"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A two-layer BERT with its word-piece tokenizer, saved as a Hugging Face model folder."""
    import transformers

    folder = tmp_path_factory.mktemp("bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    return folder


TEXTS = ["three red balloons", "", "  \t", LONG, LONG + " and then a cat and a dog under a tree", "a crowd with hands"]


@pytest.mark.parametrize("encoder", ["clip", "bert"])
def test_a_pretrained_encoder_takes_empty_blank_and_over_long_text(encoder, tiny_clip, tiny_bert):
    name = tiny_clip if encoder == "clip" else f"hf:{tiny_bert}"
    encoded = text_features(name, TEXTS, np.ones(len(TEXTS), bool), weights="random" if encoder == "clip" else "hub")
    x = encoded.vectors
    assert x.shape == (len(TEXTS), 33) and np.isfinite(x).all()
    assert (x[1:3, -1] == 1).all() and not x[1:3, :-1].any()  # empty or blank: zeros and the flag
    assert np.linalg.norm(x[[0, 3, 5], :-1], axis=1) == pytest.approx(1.0, abs=1e-5)  # unit-length embeddings
    # Past the token limit the text is cut there, as the model was trained: a different tail changes nothing.
    np.testing.assert_allclose(x[3], x[4], atol=1e-6)
    assert np.abs(x[0] - x[5]).max() > 1e-3
    assert encoded.identity["name" if encoder == "bert" else "tower"] == ("sentence" if encoder == "bert" else "text")


def test_the_two_clip_towers_share_a_space_and_an_image_tower_is_a_backbone(tiny_clip):
    backbone = create_backbone(tiny_clip, "random", seed=0)
    frames = backbone(torch.rand(3, 3, 48, 40))  # any view size: resized to the tower's input
    assert frames.shape == (3, 32) and torch.linalg.norm(frames, dim=1) == pytest.approx(torch.ones(3), abs=1e-5)
    text = text_features(tiny_clip, ["a red ball"], np.ones(1, bool), seed=0)
    assert text.identity["space"] == backbone.identity()["space"]
    other = text_features(tiny_clip, ["a red ball"], np.ones(1, bool), seed=1)
    assert other.identity["space"] != backbone.identity()["space"]


def test_alignment_is_the_cosine_of_each_frame_with_its_prompt():
    rng = np.random.default_rng(0)
    texts = rng.normal(size=(2, 8)).astype(np.float32)
    x = rng.normal(size=(2, 1, 3, 8)).astype(np.float32)
    x[0, 0, 1] = 5 * texts[0]  # a frame showing the prompt exactly
    x[1, 0, 2] = -texts[1]  # one showing its opposite
    frames = Features(x, np.ones((2, 1, 3), bool), ["a", "b"], ["center"])
    aligned = prompt_alignment(frames, texts)
    assert aligned.x.shape == (2, 1, 3, 1)
    assert aligned.x[0, 0, 1, 0] == pytest.approx(1.0) and aligned.x[1, 0, 2, 0] == pytest.approx(-1.0)
    assert (np.abs(aligned.x) <= 1 + 1e-6).all()
    empty = prompt_alignment(frames, np.zeros_like(texts))
    assert not empty.x.any()  # an empty prompt aligns with nothing
    with pytest.raises(ValueError, match="width 7"):
        prompt_alignment(frames, texts[:, :7])


def test_a_pretrained_encoders_vectors_are_memoised_per_text_and_identity(tmp_path, tiny_bert, monkeypatch):
    name, train = f"hf:{tiny_bert}", np.ones(len(TEXTS) + 1, bool)
    first = text_features(name, TEXTS, train[:-1], weights="hub", memo_root=tmp_path)
    assert len(list((tmp_path / "text-memo").glob("*.parquet"))) == 1
    encoded = []
    transform = SentenceEncoder.transform
    monkeypatch.setattr(
        SentenceEncoder, "transform", lambda self, texts: encoded.append(texts) or transform(self, texts)
    )
    again = text_features(name, [*TEXTS, "a green tree", TEXTS[0]], np.ones(8, bool), weights="hub", memo_root=tmp_path)
    assert encoded == [["a green tree"]]  # each distinct text encoded once per encoder, ever
    np.testing.assert_array_equal(again.vectors[: len(TEXTS)], first.vectors)
    np.testing.assert_array_equal(again.vectors[-1], first.vectors[0])
    text_features(name, ["a green tree"], train[:1], weights="random", memo_root=tmp_path)  # other weights: own memo
    assert encoded[-1] == ["a green tree"] and len(list((tmp_path / "text-memo").glob("*.parquet"))) == 2


def test_a_model_folder_moved_keeps_its_identity_and_other_weights_change_it(tmp_path, tiny_bert):
    import transformers

    moved = tmp_path / "moved"
    shutil.copytree(tiny_bert, moved)
    here = text_features(f"hf:{tiny_bert}", ["a cat"], np.ones(1, bool), weights="hub")
    there = text_features(f"hf:{moved}", ["a cat"], np.ones(1, bool), weights="hub")
    assert here.identity == there.identity
    np.testing.assert_array_equal(here.vectors, there.vectors)
    torch.manual_seed(1)
    transformers.BertModel(transformers.BertConfig.from_pretrained(moved)).save_pretrained(moved)
    retrained = text_features(f"hf:{moved}", ["a cat"], np.ones(1, bool), weights="hub")
    assert retrained.identity != here.identity and np.abs(retrained.vectors - here.vectors).max() > 1e-4


def test_a_model_not_on_this_machine_is_refused_with_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFound, match=r"nobody/absent-model.*hf download nobody/absent-model"):
        text_features("hf:nobody/absent-model", ["a cat"], np.ones(1, bool), weights="hub")
    with pytest.raises(WeightsNotFound, match="no pretrained tag 'nope'"):
        create_backbone("open_clip:ViT-B-32", "hub:nope")
    with pytest.raises(WeightsNotFound, match="open_clip_model.safetensors"):
        create_backbone("open_clip:ViT-B-32", "hub:openai")
    with pytest.raises(ValueError, match="did you mean 'ViT-B-32'"):
        create_backbone("open_clip:ViT-B-33", "random")


def test_a_run_reads_text_alignment_and_metadata_streams_beside_the_key_frames(tmp_path, tiny_clip):
    from ensembles.combine import fold_ensemble
    from tracks import get_track
    from workbench.cli import main
    from workbench.config import TrainConfig, build
    from workbench.data import load_training_data
    from workbench.predictor import Predictor
    from workbench.runs import Run

    data = tmp_path / "data"
    assert main(["synth", "track=xgc_aigv", f"out={data}", "items=12", "width=48", "height=48"]) == 0
    where = ["track=xgc_aigv", f"data={data}", f"cache={tmp_path / 'cache'}", f"backbone={tiny_clip}", "size=32"]
    assert main(["extract", *where, "workers=0"]) == 0
    words = [*where, f"runs_dir={tmp_path / 'runs'}", "folds=2", "epochs=1", f"text={tiny_clip}"]
    assert main(["train", *words, "align=cosine", "meta=container"]) == 0

    defaults = get_track("xgc_aigv").defaults
    cfg = build(TrainConfig, dict(w.split("=", 1) for w in [*words, "align=cosine", "meta=container"]), defaults)
    loaded = load_training_data(cfg)
    assert loaded.features.dims == [
        32,
        33,
        1,
        len(CONTAINER_FACTS),
    ]  # key frames, prompt, their cosine, container facts
    aligned = loaded.features.parts[2]
    assert aligned.x.shape[2] == loaded.features.parts[0].x.shape[2] and (np.abs(aligned.x) <= 1 + 1e-5).all()
    facts = loaded.features.parts[3].x[:, 0, 0]
    assert np.allclose(np.exp2(facts[:, 2]), 48) and (facts[:, 6] == 8).all()  # 48 pixels wide, 8 bits
    assert (tmp_path / "cache" / "container-memo").is_dir() and (tmp_path / "cache" / "text-memo").is_dir()

    # Exported, the run makes the same prompt, alignment and metadata streams from the items: the same predictions.
    assert (
        main(["export", *where[:2], f"runs_dir={tmp_path / 'runs'}", "calibration=none", f"out={tmp_path / 'x'}"]) == 0
    )
    (folder,) = (p for p in (tmp_path / "x").iterdir() if p.is_dir())
    (run,) = (tmp_path / "runs" / "xgc_aigv").iterdir()
    expected = fold_ensemble(Run(run).predictions("test"), ("score",))
    items = get_track("xgc_aigv").read_items(data)
    scores = Predictor.load(folder).predict(items[items["split"] == "test"])
    np.testing.assert_allclose(scores.loc[expected.index, "score"], expected["score"], rtol=1e-4, atol=1e-5)

    # The cosine of two models' embeddings means nothing: refused, naming both.
    other = build(TrainConfig, dict(w.split("=", 1) for w in [*words, "align=cosine", "seed=3"]), defaults)
    with pytest.raises(ValueError, match="two towers of one model"):
        load_training_data(other)
    assert main(["train", *words[:-1], "text=hashed_ngrams", "align=cosine"]) == 2


def test_profile_costs_the_text_and_alignment_streams_a_run_reads(tiny_clip):
    from tracks import get_track
    from workbench.config import ProfileConfig, build
    from workbench.profile import Pipeline

    track = get_track("xgc_aigv")
    words = {"backbone": tiny_clip, "text": tiny_clip, "align": "cosine", "meta": "container", "size": "32"}
    cfg = build(ProfileConfig, words, track.defaults)
    pipeline = Pipeline.of(cfg, track, [("center",)])
    assert pipeline.stream_dims() == [
        32,
        33,
        1,
        len(CONTAINER_FACTS),
    ]  # key frames, prompt, cosine per key frame, container facts
    stages = {stage.name: stage for stage in pipeline.stages()}
    tower = stages[f"{tiny_clip} on prompt"]
    assert tower.input == "1x77 tokens" and tower.cost.flops > 0 and tower.cost.params > 0
    assert stages["alignment of prompt"].cost.flops == 2 * 32 * cfg.frames
    hashed = Pipeline.of(build(ProfileConfig, {}, track.defaults), track, [("center",)])
    assert hashed.stream_dims()[1:] == [66]  # the default's text stream is in the head's inputs too


def test_profile_costs_a_sentence_encoder_at_its_token_limit(tiny_bert):
    import transformers

    from tracks import get_track
    from workbench.config import ProfileConfig, build
    from workbench.profile import Pipeline

    track = get_track("xgc_aigv")
    cfg = build(ProfileConfig, {"text": f"hf:{tiny_bert}", "size": "32"}, track.defaults)
    stages = {stage.name: stage for stage in Pipeline.of(cfg, track, [("center",)]).stages()}
    tower = stages[f"hf:{tiny_bert} on prompt"]
    bert = transformers.BertModel(transformers.BertConfig.from_pretrained(tiny_bert))
    assert tower.input == "1x64 tokens" and tower.cost.flops > 0
    assert tower.cost.params == sum(p.numel() for p in bert.parameters())
