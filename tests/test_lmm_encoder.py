"""The frozen LMM encoder (features.lmm) on tiny random models built offline (synth.tiny_lmm): a Qwen2-VL for Q-Align's
readout against a hand computation, batching, texts, media kinds, weights and the refusals; InternVL, LLaVA-OneVision
and SmolVLM beside it for the media kinds, batching and the readout of a family whose video is a run of images. Each
tiny model is built and loaded once per module."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from features.backbones import WeightsNotFound
from features.lmm import LmmEncoder, LmmOptions, Prompt, layout, level_token_ids, load_lmm, readout
from synth.tiny_lmm import save_tiny_lmm, save_tiny_qwen2vl

QUESTION = Prompt("Prompt: {prompt}. How would you rate the quality of this video?", "The quality of the video is")
OVERALL = Prompt("How would you rate the quality of this image?", "The quality of the image is")
OPTIONS = LmmOptions(prompts=(QUESTION, OVERALL), layers=(1,))
TEXTS = [{"prompt": "a cat"}, {"prompt": "a red car on a long wet road at night"}, {"prompt": ""}]
SEED = 3
WORDS = ["cat", "car", "red", "road"]
NEEDS_NUM2WORDS = pytest.mark.skipif(find_spec("num2words") is None, reason="SmolVLM's processor needs num2words")
# The families besides Qwen2-VL, by their config's model_type.
OTHERS = ["internvl", "llava_onevision", pytest.param("smolvlm", marks=NEEDS_NUM2WORDS)]
FAMILIES = ["qwen2_vl", *OTHERS]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"), seed=SEED, words=WORDS)


@pytest.fixture(scope="module")
def encoder(folder: Path) -> LmmEncoder:
    return load_lmm(str(folder), "hub", OPTIONS)


@pytest.fixture(scope="module")
def tiny(folder: Path, encoder: LmmEncoder, tmp_path_factory: pytest.TempPathFactory) -> Callable:
    """family -> (its folder, its encoder under OPTIONS), each family built and loaded once for the module."""
    built = {"qwen2_vl": (folder, encoder)}

    def get(family: str) -> tuple[Path, LmmEncoder]:
        if family not in built:
            where = save_tiny_lmm(family, tmp_path_factory.mktemp(f"tiny-{family}"), seed=SEED, words=WORDS)
            built[family] = (where, load_lmm(str(where), "hub", OPTIONS))
        return built[family]

    return get


def with_options(encoder: LmmEncoder, **changes) -> LmmEncoder:
    """The same model and processor under other options (no reload)."""
    options = dataclasses.replace(encoder.options, **changes)
    return LmmEncoder(encoder.model, encoder.processor, options, encoder.identity()["files"])


def clips(batch: int, frames: int, seed: int = 0, size: int = 64, width: int | None = None) -> torch.Tensor:
    return torch.rand(batch, frames, 3, size, width or size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_readout_equals_a_hand_computation_from_the_logits(tiny: Callable, family: str) -> None:
    """A 4-frame video through the processor and the model by hand; the visual tokens are the config's video token
    where it names one (Qwen2-VL, LLaVA-OneVision), else its image token, which InternVL and SmolVLM repeat a frame."""
    _, encoder = tiny(family)
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
    config = model.config
    visual = inputs["input_ids"][0] == (getattr(config, "video_token_id", None) or config.image_token_id)
    assert visual.sum() >= 4  # some tokens of every frame
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
    assert json.loads(json.dumps(identity)) == identity and identity["version"] == 1 and "tiles" not in identity
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


@pytest.mark.parametrize(("frames", "mode"), [(1, "video"), (4, "video"), (4, "each")])
@pytest.mark.parametrize("family", OTHERS)
def test_every_family_gives_finite_vectors_for_an_image_and_a_video(
    tiny: Callable, family: str, frames: int, mode: str
) -> None:
    encoder = with_options(tiny(family)[1], frames=mode)
    vectors = encoder(clips(2, frames, seed=frames, size=80), TEXTS[:2])
    assert vectors.shape == (2, encoder.dim) and vectors.dtype == torch.float32 and torch.isfinite(vectors).all()
    columns = layout(encoder.options, encoder.hidden)
    assert (vectors[:, columns["p0.visual"]].abs().sum(1) > 0).all()  # the visual tokens were found
    torch.testing.assert_close(vectors[:, columns["p0.levels"]].sum(1), torch.ones(2))


@pytest.mark.parametrize("mode", ["video", "each"])
@pytest.mark.parametrize("family", OTHERS)
def test_a_batch_equals_its_items_one_by_one_in_every_family(tiny: Callable, family: str, mode: str) -> None:
    encoder = with_options(tiny(family)[1], frames=mode)
    frames = clips(3, 4, seed=1)
    batched = encoder(frames, TEXTS)
    single = torch.cat([encoder(frames[k : k + 1], TEXTS[k : k + 1]) for k in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5)


def test_video_falls_back_to_image_slots_where_the_processor_takes_no_video(tiny: Callable) -> None:
    """A family without video input (Idefics3, PaliGemma) stood for by InternVL's processor with its video part gone."""
    _, encoder = tiny("internvl")
    processor = copy.copy(encoder.processor)
    processor.video_processor = None
    options = dataclasses.replace(encoder.options, frames="video")
    imageless = LmmEncoder(encoder.model, processor, options, "no video")
    frames = clips(2, 4, seed=5)
    torch.testing.assert_close(imageless(frames, TEXTS[:2]), with_options(encoder, frames="each")(frames, TEXTS[:2]))


@pytest.mark.parametrize(
    ("family", "pixels", "tiles"),
    [
        ("internvl", 448 * 448, 3),  # 32x64 fills two tiles of 28x28 side by side, and the thumbnail
        ("internvl", 28 * 28, 1),  # a frame shrunk under one tile's pixels: one tile, not two and a thumbnail
        pytest.param("smolvlm", 448 * 448, 5, marks=NEEDS_NUM2WORDS),  # 64 px: 2x2 tiles of 32 and the global view
        pytest.param("smolvlm", 32 * 32, 1, marks=NEEDS_NUM2WORDS),  # the global view alone, not 4x4 tiles and it
        ("llava_onevision", 448 * 448, 5),  # its grid follows the frame: 2x2 tiles of 28 beside the base
        ("llava_onevision", 28 * 28, 2),  # one tile beside the base
    ],
)
def test_tiled_families_cut_an_image_into_no_more_tiles_than_its_pixels_fill(
    tiny: Callable, family: str, pixels: int, tiles: int
) -> None:
    """`pixels` shrinks the frame, and a family that tiles an image gets no more tiles than the frame's pixels fill
    (SmolVLM's processor would grow any image to 4x4 tiles; InternVL's gives a wide one two tiles and a thumbnail)."""
    encoder = with_options(tiny(family)[1], pixels=pixels)
    size = (32, 64) if family == "internvl" else (64, 64)
    batch = encoder.model_inputs(clips(1, 1, size=size[0], width=size[1]), TEXTS[:1], OVERALL)
    assert batch["pixel_values"].shape[:-3].numel() == tiles
    assert encoder.identity().get("tiles") == {"internvl": "max_patches", "smolvlm": "longest_edge"}.get(family)
    assert torch.isfinite(encoder(clips(1, 1, size=size[0], width=size[1]), TEXTS[:1])).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_the_tiny_models_load_back_through_the_auto_classes_in_every_family(tiny: Callable, family: str) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    where, _ = tiny(family)
    processor = AutoProcessor.from_pretrained(where, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(where, local_files_only=True)
    tokens = processor.tokenizer("the quality of the red car is excellent", add_special_tokens=False)["input_ids"]
    assert processor.tokenizer.unk_token_id not in tokens
    text = model.config.get_text_config()
    assert model.config.model_type == family and text.hidden_size == 32 and text.num_hidden_layers == 2
    assert sum(p.numel() for p in model.parameters()) < 150_000
