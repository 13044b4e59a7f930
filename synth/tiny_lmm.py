"""A tiny random-weight Qwen2-VL built offline, for tests and smoke runs of the LMM encoder (features.lmm).

Nothing is downloaded: the tokenizer is a word-level vocabulary of the words the tests ask for (level words, the
default question and stem, any others named), wrapped with Qwen's special tokens and a short chat template that
emits the vision tokens per media item; the processor caps frames at a few patches, and the model is a 2-layer text
model of width 32 over a 2-deep vision tower. It builds and saves in a few seconds and loads back through
AutoProcessor and AutoModelForImageTextToText like any Qwen2-VL folder.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

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


def _vocabulary(words: Sequence[str]) -> dict[str, int]:
    """The special tokens first, then each distinct lower-case word and punctuation mark in order of first sight."""
    vocab = {token: k for k, token in enumerate((PAD, UNKNOWN, *SPECIALS))}
    for text in (*WORDS, *words):
        for word in re.findall(r"\w+|[^\w\s]", text.lower()):
            vocab.setdefault(word, len(vocab))
    return vocab


def tiny_processor(words: Sequence[str] = ()) -> object:
    """A Qwen2VLProcessor over a word-level tokenizer (unknown words map to [UNK]) with small pixel caps."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast, Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    core = Tokenizer(WordLevel(_vocabulary(words), unk_token=UNKNOWN))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token=UNKNOWN,
        pad_token=PAD,
        eos_token="<|im_end|>",
        additional_special_tokens=list(SPECIALS),
        chat_template=CHAT_TEMPLATE,
    )
    caps = {"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS}
    return Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**caps),
        video_processor=Qwen2VLVideoProcessor(**caps),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def save_tiny_qwen2vl(folder: Path, seed: int = 0, words: Sequence[str] = ()) -> Path:
    """Builds the tiny Qwen2-VL with weights seeded by `seed` and a vocabulary holding `words` besides the defaults,
    saves model and processor into `folder` (save_pretrained) and returns it."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    folder = Path(folder)
    processor = tiny_processor(words)
    tokenizer = processor.tokenizer
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIALS}
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            "bos_token_id": None,  # Qwen's own ids lie outside this vocabulary
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 1, 1]},
        },
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 32,
            "num_heads": 4,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    with torch.random.fork_rng(devices=[]):  # seeded weights without disturbing the caller's RNG stream
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
