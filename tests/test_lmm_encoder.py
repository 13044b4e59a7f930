"""The frozen LMM encoder (features.lmm) on a tiny random Qwen2-VL built offline (synth.tiny_lmm): Q-Align's readout
against a hand computation, batching, texts, media kinds, weights and the refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from features.backbones import WeightsNotFound
from features.lmm import LmmEncoder, LmmOptions, Prompt, layout, level_token_ids, load_lmm, readout
from synth.tiny_lmm import save_tiny_qwen2vl

QUESTION = Prompt("Prompt: {prompt}. How would you rate the quality of this video?", "The quality of the video is")
OVERALL = Prompt("How would you rate the quality of this image?", "The quality of the image is")
OPTIONS = LmmOptions(prompts=(QUESTION, OVERALL), layers=(1,))
TEXTS = [{"prompt": "a cat"}, {"prompt": "a red car on a long wet road at night"}, {"prompt": ""}]
SEED = 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"), seed=SEED, words=["cat", "car", "red", "road"])


@pytest.fixture(scope="module")
def encoder(folder: Path) -> LmmEncoder:
    return load_lmm(str(folder), "hub", OPTIONS)


def clips(batch: int, frames: int, seed: int = 0, size: int = 64) -> torch.Tensor:
    return torch.rand(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_readout_equals_a_hand_computation_from_the_logits(encoder: LmmEncoder) -> None:
    frames = clips(1, 4)
    features = encoder(frames, TEXTS[:1])[0]
    processor, model = encoder.processor, encoder.model
    question = QUESTION.question.format(prompt="a cat")
    chat = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) + QUESTION.stem
    video = (frames[0] * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    inputs = processor(text=[text], videos=[video], return_tensors="pt")
    with torch.inference_mode():
        out = model(**inputs, output_hidden_states=True)
    ids = processor.tokenizer.convert_tokens_to_ids(list(OPTIONS.levels))
    probs = torch.softmax(out.logits[0, -1, ids], dim=0)
    columns = layout(OPTIONS, encoder.hidden)
    torch.testing.assert_close(features[columns["p0.levels"]], probs)
    torch.testing.assert_close(features[columns["p0.expected"]][0], probs @ torch.tensor([5.0, 4, 3, 2, 1]))
    visual = inputs["input_ids"][0] == model.config.video_token_id
    for layer, name in ((-1, ""), (1, "@L1")):
        states = out.hidden_states[layer][0]
        torch.testing.assert_close(features[columns[f"p0.last{name}"]], states[-1])
        torch.testing.assert_close(features[columns[f"p0.visual{name}"]], states[visual].mean(0))
    assert level_token_ids(processor.tokenizer, OPTIONS.levels) == ids


def test_readout_weights_the_levels_best_first() -> None:
    logits = torch.full((2, 10), -50.0)
    logits[0, 7], logits[1, 2] = 50.0, 50.0  # all on the first level, then all on the last
    probs, expected = readout(logits, [7, 4, 5, 3, 2])
    torch.testing.assert_close(expected, torch.tensor([5.0, 1.0]))
    torch.testing.assert_close(probs.sum(1), torch.ones(2))


def test_a_batch_equals_its_items_one_by_one(encoder: LmmEncoder) -> None:
    frames = clips(3, 4, seed=1)
    batched = encoder(frames, TEXTS)
    single = torch.cat([encoder(frames[k : k + 1], TEXTS[k : k + 1]) for k in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_the_text_changes_the_vector_but_not_the_identity(folder: Path, encoder: LmmEncoder) -> None:
    frames = clips(1, 4, seed=2).expand(2, -1, -1, -1, -1)
    vectors = encoder(frames, [{"prompt": "a cat"}, {"prompt": "a red car"}])
    columns = layout(OPTIONS, encoder.hidden)
    assert not torch.allclose(vectors[0, columns["p0.last"]], vectors[1, columns["p0.last"]])
    torch.testing.assert_close(vectors[0, columns["p1.levels"]], vectors[1, columns["p1.levels"]])  # no {prompt}
    identity = encoder.identity()
    assert json.loads(json.dumps(identity)) == identity and identity["version"] == 1
    assert identity["options"]["prompts"][0]["question"] == QUESTION.question
    other = load_lmm(str(folder), "hub", LmmOptions(prompts=(OVERALL,), layers=(1,)))
    assert other.identity() != identity and other.identity()["files"] == identity["files"]


@pytest.mark.parametrize(("frames", "mode"), [(1, "video"), (4, "video"), (3, "video"), (4, "each")])
def test_images_and_videos_give_finite_vectors_the_layout_covers(folder: Path, frames: int, mode: str) -> None:
    options = LmmOptions(prompts=(QUESTION, OVERALL), layers=(0, 1), frames=mode)
    encoder = load_lmm(str(folder), "hub", options)
    vectors = encoder(clips(2, frames, seed=frames, size=80), TEXTS[:2])
    per_prompt = len(options.levels) + 1 + encoder.hidden * 2 * (1 + len(options.layers))
    assert vectors.shape == (2, encoder.dim) and encoder.dim == 2 * per_prompt
    assert vectors.dtype == torch.float32 and torch.isfinite(vectors).all()
    spans = sorted((s.start, s.stop) for s in layout(options, encoder.hidden).values())
    assert spans[0][0] == 0 and spans[-1][1] == encoder.dim
    assert all(stop == start for (_, stop), (start, _) in zip(spans, spans[1:]))


def test_the_frames_are_refused_in_any_other_shape(encoder: LmmEncoder) -> None:
    with pytest.raises(ValueError, match=r"\[B,T,3,H,W\]"):
        encoder(torch.rand(2, 3, 64, 64), TEXTS[:2])


def test_random_weights_follow_the_seed_and_hub_loads_the_saved_ones(folder: Path, encoder: LmmEncoder) -> None:
    frames = clips(1, 2)
    first, again, other = (load_lmm(str(folder), "random", OPTIONS, seed=s) for s in (0, 0, 1))
    torch.testing.assert_close(first(frames, TEXTS[:1]), again(frames, TEXTS[:1]))
    assert not torch.allclose(first(frames, TEXTS[:1]), other(frames, TEXTS[:1]))
    assert first.identity()["files"] == f"random(seed=0) {encoder.identity()['files']}"
    saved = load_file(folder / "model.safetensors")
    torch.testing.assert_close(encoder.model.get_input_embeddings().weight, saved["model.embed_tokens.weight"])
    assert not encoder.model.training and not any(p.requires_grad for p in encoder.model.parameters())
    half = load_lmm(str(folder), "random", LmmOptions(prompts=(OVERALL,), dtype="bfloat16"))
    assert next(half.model.parameters()).dtype == torch.bfloat16
    assert torch.isfinite(half(frames, TEXTS[:1])).all()
    with pytest.raises(ValueError, match="hub.*random"):
        load_lmm(str(folder), "imagenet", OPTIONS)


def test_a_model_not_on_this_machine_says_nothing_is_downloaded(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFound, match="nothing is downloaded"):
        load_lmm("vqa-workbench-tests/no-such-lmm", "hub", OPTIONS)
    with pytest.raises(WeightsNotFound, match="nothing is downloaded"):
        load_lmm(str(tmp_path), "hub", OPTIONS)  # a folder without config.json


def test_remote_code_is_refused_unless_allowed(folder: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(folder, tmp_path / "remote"))
    config = json.loads((copy / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig"}
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="lmm_remote_code=true"):
        load_lmm(str(copy), "hub", OPTIONS)


def test_a_prompt_naming_a_text_the_item_lacks_is_refused(encoder: LmmEncoder) -> None:
    with pytest.raises(ValueError, match=r"(?s)Prompt: \{prompt\}.*'prompt'.*\['title'\]"):
        encoder(clips(1, 2), [{"title": "a cat"}])


def test_levels_sharing_a_first_token_are_refused(encoder: LmmEncoder) -> None:
    with pytest.raises(ValueError, match="share their first token"):
        level_token_ids(encoder.processor.tokenizer, ("splendid", "dreadful"))  # both unknown: [UNK]


def test_the_tiny_model_loads_back_through_the_auto_classes(folder: Path) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True)
    tokens = processor.tokenizer("the quality of the red car is excellent", add_special_tokens=False)["input_ids"]
    assert processor.tokenizer.unk_token_id not in tokens
    assert model.config.get_text_config().hidden_size == 32 and np.isfinite(model.config.video_token_id)
