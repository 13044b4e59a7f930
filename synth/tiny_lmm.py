"""Tiny random-weight multimodal models built offline, for tests and smoke runs of the LMM encoder (features.lmm): a
Qwen2-VL, an InternVL (the `-hf` layout, model_type internvl), a LLaVA-OneVision and a SmolVLM.

Nothing is downloaded: each tokenizer is a word-level vocabulary of the words the tests ask for (level words, the
default question and stem, any others named), wrapped with the family's special tokens and a short chat template that
emits the family's media placeholders as its real template does; the processors cut frames into a few patches, and
each model is a 2-layer text model of width 32 over a 2-deep vision tower of width 32. One builds and saves in a few
seconds and loads back through AutoProcessor and AutoModelForImageTextToText like a real checkpoint of its family.
SmolVLM's processor needs the `num2words` package (it spells a video's frame count).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

SPECIALS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
UNKNOWN, PAD = "[UNK]", "<|endoftext|>"
# The words of the default prompts and answers (features.lmm, Q-Align), the chat roles and the punctuation.
WORDS = (
    "excellent good fair poor bad user assistant system",
    "how would you rate the quality of this image video is prompt title description frame frames and a an",
    ".,:;?!'\"()-/{}",
)
MIN_PIXELS, MAX_PIXELS = 56 * 56, 112 * 112  # 4 to 16 patches of 14 px a frame: a handful of visual tokens

# Qwen2-VL's template cut to what the encoder sends: user turns of media slots and text, then the assistant's turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# InternVL (`-hf`): ChatML with `<IMG_CONTEXT>` per image and `<video>` per video, each on its own line; the processor
# expands them into `<img>` + the context tokens + `</img>` (a video: one such run per frame).
INTERNVL_SPECIALS = ("<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>")
INTERNVL_TOKENS = {  # the tokenizer's named tokens InternVLProcessor reads
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
INTERNVL_TEMPLATE = CHAT_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<IMG_CONTEXT>\n").replace(
    "<|vision_start|><|video_pad|><|vision_end|>", "<video>\n"
)

# LLaVA-OneVision: ChatML with `<image>` and `<video>`, which the processor repeats once per visual token.
LLAVA_ONEVISION_SPECIALS = ("<|im_start|>", "<|im_end|>", "<image>", "<video>")
LLAVA_ONEVISION_TEMPLATE = CHAT_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<image>").replace(
    "<|vision_start|><|video_pad|><|vision_end|>", "<video>"
)

# SmolVLM: "User:<image>...<end_of_utterance>\nAssistant:", as transformers' SmolVLM default template (which its
# processor uses for a video whatever the template); an image is a global view and its tiles, each framed by
# `<fake_token_around_image>` and named `<global-img>` or `<row_r_col_c>`.
SMOLVLM_SPECIALS = (
    *("<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<global-img>", "<image>", "<video>"),
    *(f"<row_{r}_col_{c}>" for r in range(1, 5) for c in range(1, 5)),
)
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% elif line['type'] == 'video' %}{{ '<video>' }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# The text model every family shares: 2 layers of width 32, 4 heads over 2 key-value heads.
TEXT = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "bos_token_id": None,  # the real models' ids lie outside these vocabularies
}
VISION = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
TILE, PATCH = 28, 7  # InternVL's and LLaVA-OneVision's tile side and patch side: 16 patches a tile


def _vocabulary(specials: Sequence[str], words: Sequence[str]) -> dict[str, int]:
    """The special tokens first, then each distinct lower-case word and punctuation mark in order of first sight."""
    vocab = {token: k for k, token in enumerate((PAD, UNKNOWN, *specials))}
    for text in (*WORDS, *words):
        for word in re.findall(r"\w+|[^\w\s]", text.lower()):
            vocab.setdefault(word, len(vocab))
    return vocab


def word_tokenizer(
    words: Sequence[str],
    specials: Sequence[str],
    *,
    eos: str,
    chat_template: str,
    named: dict[str, str] | None = None,
) -> Any:
    """A fast tokenizer over a word-level vocabulary (unknown words map to [UNK]) of the default words and `words`,
    with `specials` as special tokens (never split), `eos` among them, and `named` special tokens the processor reads
    as tokenizer attributes (InternVL's `start_image_token` ...)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(WordLevel(_vocabulary(specials, words), unk_token=UNKNOWN))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    core.add_special_tokens(list(specials))  # matched whole before the split into words
    # Named special tokens replace the list of extra ones, so with names the specials are the core's alone.
    extra = {"extra_special_tokens": dict(named)} if named else {"additional_special_tokens": list(specials)}
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token=UNKNOWN, pad_token=PAD, eos_token=eos, chat_template=chat_template, **extra
    )


def _text_config(tokenizer: Any, **extra: Any) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer),
        **TEXT,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **extra,
    }


def _save(folder: Path, seed: int, model_class: type, config: Any, processor: Any) -> Path:
    """Builds `model_class(config)` with weights seeded by `seed`, saves it and the processor into `folder`."""
    with torch.random.fork_rng(devices=[]):  # seeded weights without disturbing the caller's RNG stream
        torch.manual_seed(seed)
        model = model_class(config).eval()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def tiny_processor(words: Sequence[str] = ()) -> Any:
    """A Qwen2VLProcessor over a word-level tokenizer with small pixel caps."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    tokenizer = word_tokenizer(words, SPECIALS, eos="<|im_end|>", chat_template=CHAT_TEMPLATE)
    caps = {"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS}
    return Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**caps),
        video_processor=Qwen2VLVideoProcessor(**caps),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def qwen2vl_config(tokenizer: Any, text: dict[str, Any], vision: dict[str, Any], **extra: Any) -> Any:
    """A Qwen2VLConfig of `text` and `vision` sizes over one of our word-level tokenizers: its vocabulary size, its
    end and padding ids, and Qwen's media token ids (the benchmarks build wider models the same way)."""
    from transformers import Qwen2VLConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIALS}
    return Qwen2VLConfig(
        text_config=_text_config(tokenizer, **text),
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        **extra,
    )


def save_tiny_qwen2vl(folder: Path, seed: int = 0, words: Sequence[str] = ()) -> Path:
    """Builds the tiny Qwen2-VL with weights seeded by `seed` and a vocabulary holding `words` besides the defaults,
    saves model and processor into `folder` (save_pretrained) and returns it."""
    from transformers import Qwen2VLForConditionalGeneration

    processor = tiny_processor(words)
    rope = {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 1, 1]}
    vision = {"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 4}
    vision |= {"patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
    config = qwen2vl_config(processor.tokenizer, {"rope_parameters": rope}, vision)
    return _save(folder, seed, Qwen2VLForConditionalGeneration, config, processor)


def tiny_internvl_processor(words: Sequence[str] = ()) -> Any:
    """An InternVLProcessor: tiles of TILE px (at most 4 an image, with a thumbnail beside several), 4 visual tokens a
    tile (16 patches shuffled 2x2 into one), a video's frames one tile each."""
    from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor

    tokenizer = word_tokenizer(
        words, INTERNVL_SPECIALS, eos="<|im_end|>", chat_template=INTERNVL_TEMPLATE, named=INTERNVL_TOKENS
    )
    size = {"height": TILE, "width": TILE}
    return InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(size=size, crop_to_patches=True, max_patches=4),
        video_processor=InternVLVideoProcessor(size=size),
        tokenizer=tokenizer,
        image_seq_length=(TILE // PATCH // 2) ** 2,
        chat_template=INTERNVL_TEMPLATE,
    )


def save_tiny_internvl(folder: Path, seed: int = 0, words: Sequence[str] = ()) -> Path:
    """The tiny InternVL (InternVLForConditionalGeneration over a Qwen2 text model), saved as save_tiny_qwen2vl."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    processor = tiny_internvl_processor(words)
    config = InternVLConfig(
        text_config={"model_type": "qwen2", **_text_config(processor.tokenizer)},
        vision_config={**VISION, "image_size": TILE, "patch_size": PATCH},
        image_token_id=processor.image_token_id,
        image_seq_length=processor.image_seq_length,
        downsample_ratio=0.5,
    )
    return _save(folder, seed, InternVLForConditionalGeneration, config, processor)


def tiny_llava_onevision_processor(words: Sequence[str] = ()) -> Any:
    """A LlavaOnevisionProcessor: a single image in a base tile of TILE px and the tiles of the best of a few grids (up
    to 2x2), several images a base tile each, 16 visual tokens a tile; a video's frames pooled to 4 tokens each."""
    from transformers import LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor

    tokenizer = word_tokenizer(
        words, LLAVA_ONEVISION_SPECIALS, eos="<|im_end|>", chat_template=LLAVA_ONEVISION_TEMPLATE
    )
    size = {"height": TILE, "width": TILE}
    return LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=_PINPOINTS),
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        tokenizer=tokenizer,
        num_image_tokens=(TILE // PATCH) ** 2,
        vision_feature_select_strategy="full",
        chat_template=LLAVA_ONEVISION_TEMPLATE,
    )


_PINPOINTS = [[TILE * rows, TILE * cols] for rows in (1, 2) for cols in (1, 2)]


def save_tiny_llava_onevision(folder: Path, seed: int = 0, words: Sequence[str] = ()) -> Path:
    """The tiny LLaVA-OneVision (a SigLIP tower under a Qwen2 text model), saved as save_tiny_qwen2vl."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    processor = tiny_llava_onevision_processor(words)
    config = LlavaOnevisionConfig(
        text_config={"model_type": "qwen2", **_text_config(processor.tokenizer)},
        vision_config={"model_type": "siglip_vision_model", **VISION, "image_size": TILE, "patch_size": PATCH},
        image_token_index=processor.image_token_id,
        video_token_index=processor.video_token_id,
        image_grid_pinpoints=_PINPOINTS,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    return _save(folder, seed, LlavaOnevisionForConditionalGeneration, config, processor)


SMOLVLM_TILE, SMOLVLM_PATCH = 32, 8  # 16 patches a tile, shuffled 2x2 into 4 visual tokens


def tiny_smolvlm_processor(words: Sequence[str] = ()) -> Any:
    """A SmolVLMProcessor: an image split into tiles of SMOLVLM_TILE px (up to 4x4) beside a global view, 4 visual
    tokens a tile; a video's frames one global view each."""
    from transformers import SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor

    tokenizer = word_tokenizer(words, SMOLVLM_SPECIALS, eos="<end_of_utterance>", chat_template=SMOLVLM_TEMPLATE)
    tile = {"longest_edge": SMOLVLM_TILE}
    return SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(size={"longest_edge": 4 * SMOLVLM_TILE}, max_image_size=tile),
        video_processor=SmolVLMVideoProcessor(size=tile, max_image_size=tile),
        tokenizer=tokenizer,
        image_seq_len=(SMOLVLM_TILE // SMOLVLM_PATCH // 2) ** 2,
        chat_template=SMOLVLM_TEMPLATE,
    )


def save_tiny_smolvlm(folder: Path, seed: int = 0, words: Sequence[str] = ()) -> Path:
    """The tiny SmolVLM (its SigLIP-like tower under a Llama text model), saved as save_tiny_qwen2vl."""
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    processor = tiny_smolvlm_processor(words)
    config = SmolVLMConfig(
        text_config={"model_type": "llama", **_text_config(processor.tokenizer)},
        vision_config={**VISION, "image_size": SMOLVLM_TILE, "patch_size": SMOLVLM_PATCH},
        image_token_id=processor.image_token_id,
        scale_factor=2,
        pad_token_id=processor.tokenizer.pad_token_id,
    )
    return _save(folder, seed, SmolVLMForConditionalGeneration, config, processor)


# family -> builder(folder, seed, words), each family's name as its config's model_type
SAVERS: dict[str, Callable[..., Path]] = {
    "qwen2_vl": save_tiny_qwen2vl,
    "internvl": save_tiny_internvl,
    "llava_onevision": save_tiny_llava_onevision,
    "smolvlm": save_tiny_smolvlm,
}


def save_tiny_lmm(family: str, folder: Path, seed: int = 0, words: Sequence[str] = ()) -> Path:
    """The tiny model of `family` (a key of SAVERS) saved into `folder`."""
    if family not in SAVERS:
        raise ValueError(f"tiny lmm: no family {family!r}; expected one of {', '.join(SAVERS)}")
    return SAVERS[family](folder, seed=seed, words=words)
