"""A frozen large multimodal model (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, InternVL `-hf`, LLaVA-OneVision, SmolVLM: any
native `AutoModelForImageTextToText` with its `AutoProcessor`) as an encoder: an item's frames and a question about
them in, a vector out.

Per prompt the model reads the processor's chat template (a user turn of the media slots and the question, the
question's `{column}`s filled from the item's texts) followed by the answer's stem, "The quality of the video is".
Q-Align's readout is the softmax of the final logits over the level words that would come next (excellent ... bad)
and their expected score with weights 5..1: a zero-shot quality score that needs no training. Beside it the vector
keeps the final layer's hidden state at the last token (what the readout is read from, as LMM-EVQA pooled) and the
mean over the visual tokens, and the same two for any extra layer asked for: a head learns from them what the level
words miss. `layout` names the columns, so a reader picks the expected score without the arithmetic.

A batch goes through the model once per prompt, left-padded, so the last position is every row's last real token.
The families differ in how they take frames, and the differences live in `_media` and the caps below it: Qwen sizes a
frame by its pixel count (capped per call); InternVL and SmolVLM cut an image into tiles (their count capped by the
frame's pixels) and give each video frame one tile; LLaVA-OneVision's grid follows the frame as given. InternVL and
SmolVLM spell a video as a run of image tokens, so the visual tokens are whichever of the config's image and video
token ids a prompt holds. A processor without a video part (Idefics3, PaliGemma) gets the frames as image slots.

Nothing is downloaded (features.hf), and a model whose code is not in transformers runs only when asked for with
`lmm_remote_code=true`. transformers is imported where a model is built: every process that reads the cache imports
this module through the feature specs.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from features.backbones import FrozenEncoder, WeightsNotFound, preview_keys
from features.hf import folder_digest, model_folder

LEVELS = ("excellent", "good", "fair", "poor", "bad")  # Q-Align's five, best first
FRAMES = ("video", "each")
DTYPES = ("float32", "bfloat16", "float16")
# Config keys (and processor attributes, where a config names none) that name the ids of the placeholder tokens a
# processor expands into the visual tokens.
_VISUAL_TOKEN_KEYS = ("image_token_id", "video_token_id", "image_token_index", "video_token_index")
_PIXEL_EDGES = ("shortest_edge", "longest_edge")  # a size in pixels per frame (Qwen's min_pixels, max_pixels)
# Files whose `auto_map` asks for code from the model's folder (trust_remote_code).
_CODE_FILES = (
    *("config.json", "processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json"),
    "tokenizer_config.json",
)


@dataclass(frozen=True)
class Prompt:
    question: str  # may hold {column} placeholders filled from the item's texts
    stem: str  # the answer's start, after which the level word comes: "The quality of the video is"


@dataclass(frozen=True)
class LmmOptions:
    prompts: tuple[Prompt, ...]
    levels: tuple[str, ...] = LEVELS  # weights len..1 for the expected score
    layers: tuple[int, ...] = ()  # extra hidden-state layers (indices into hidden_states) besides the final one
    frames: str = "video"  # "video": one video of the frames; "each": one image slot per frame; one frame: an image
    # (a model whose processor takes no video gets image slots under "video" too)
    pixels: int = 448 * 448  # the most pixels of one frame given to the processor (and the tiles it may fill)
    dtype: str = "float32"  # the model's compute dtype
    remote_code: bool = False  # allow a model whose code lives in its folder (trust_remote_code)


def layout(options: LmmOptions, hidden: int) -> dict[str, slice]:
    """Names -> columns of one item's vector: per prompt `p<k>.levels`, `.expected`, `.last`, `.visual`, then
    `.last@L<i>` and `.visual@L<i>` per extra layer i; prompts one after another in their order."""
    widths = {"levels": len(options.levels), "expected": 1, "last": hidden, "visual": hidden}
    for layer in options.layers:
        widths |= {f"last@L{layer}": hidden, f"visual@L{layer}": hidden}
    names, start = {}, 0
    for k in range(len(options.prompts)):
        for part, width in widths.items():
            names[f"p{k}.{part}"] = slice(start, start + width)
            start += width
    return names


def hidden_width(options: LmmOptions, width: int) -> int:
    """The model's hidden size from the width of a vector it made under `options` (what `layout` needs)."""
    per_prompt = width // len(options.prompts)
    return (per_prompt - len(options.levels) - 1) // (2 * (1 + len(options.layers)))


def readout(last_logits: torch.Tensor, level_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Q-Align: the softmax of the last position's logits [B, V] over the level words -> (probabilities [B, L],
    expected score [B] with weights L..1, best level first)."""
    probs = torch.softmax(last_logits[:, level_ids].float(), dim=-1)
    weights = torch.arange(len(level_ids), 0, -1, dtype=probs.dtype, device=probs.device)
    return probs, probs @ weights


def level_token_ids(tokenizer: Any, levels: tuple[str, ...] | list[str]) -> list[int]:
    """The first token of each level word as it follows the stem (" excellent": with its leading space), without the
    special tokens a tokenizer adds; two levels sharing it could not be told apart, so they are refused."""
    ids = []
    for level in levels:
        tokens = tokenizer(" " + level, add_special_tokens=False)["input_ids"]
        if not tokens:
            raise ValueError(f"level word {level!r} gives no token")
        ids.append(int(tokens[0]))
    shared = {level: i for level, i in zip(levels, ids) if ids.count(i) > 1}
    if shared:
        tokens = sorted(set(shared.values()))
        raise ValueError(f"levels {sorted(shared)} share their first token {tokens}: give words it tells apart")
    return ids


class LmmEncoder(FrozenEncoder):
    """A frozen LMM: [B, T, 3, H, W] frames in [0,1] and each item's texts -> [B, dim] float32, `layout` its columns."""

    takes_text = True
    version = 1

    def __init__(self, model: Any, processor: Any, options: LmmOptions, files: str) -> None:
        super().__init__()
        self.model = model
        self.processor = processor
        self.options = options
        config = model.config
        text = config.get_text_config()
        self.hidden = int(text.hidden_size)
        self.layout = layout(options, self.hidden)
        self.dim = max(s.stop for s in self.layout.values())
        self.level_ids = level_token_ids(processor.tokenizer, options.levels)
        ids = {getattr(config, key, None) for key in _VISUAL_TOKEN_KEYS} - {None}
        ids = ids or {getattr(processor, key, None) for key in _VISUAL_TOKEN_KEYS} - {None}
        if not ids:
            keys = ", ".join(_VISUAL_TOKEN_KEYS)
            raise ValueError(f"{type(config).__name__} names no image or video token id ({keys}): no visual tokens")
        self.register_buffer("visual_ids", torch.tensor(sorted(ids)), persistent=False)
        self.takes_video = getattr(processor, "video_processor", None) is not None
        # Only the last position's logits are read; a forward that cannot be told so computes them all.
        keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._forward = {"logits_to_keep": 1} if keep else {}
        template = getattr(processor, "chat_template", None)
        if not template:
            raise ValueError(f"{type(processor).__name__} has no chat template: the prompt could not be laid out")
        self._identity = {
            "name": "lmm",
            "config": type(config).__name__,
            "files": files,
            "chat_template": hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16],
            "options": {
                "prompts": [asdict(p) for p in options.prompts],
                **{k: list(v) for k, v in (("levels", options.levels), ("layers", options.layers))},
                **{k: getattr(options, k) for k in ("frames", "pixels", "dtype")},
            },
            "version": self.version,
        }
        if tiles := _tile_knob(processor):  # the tiles an image is cut into follow `pixels` (Qwen's sizes do anyway)
            self._identity["tiles"] = tiles

    def identity(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._identity))

    def check(self, inputs: torch.Tensor) -> None:
        if inputs.ndim != 5 or inputs.shape[2] != 3 or not inputs.is_floating_point():
            raise ValueError(
                f"LmmEncoder expects float RGB frames shaped [B,T,3,H,W] in [0,1] (one clip of T frames per item), "
                f"got {inputs.dtype} {tuple(inputs.shape)}"
            )

    def _frames(self, clip: torch.Tensor) -> np.ndarray:
        """[T,3,H,W] in [0,1] -> uint8 [T,H,W,3], shrunk (aspect kept) to at most `pixels` a frame."""
        height, width = clip.shape[-2:]
        if height * width > self.options.pixels:
            scale = (self.options.pixels / (height * width)) ** 0.5
            size = (max(1, int(height * scale)), max(1, int(width * scale)))
            clip = F.interpolate(clip, size=size, mode="bilinear", antialias=True, align_corners=False)
        return (clip.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()

    def _media(self, inputs: torch.Tensor) -> tuple[str, list[Any], dict[str, Any]]:
        """The processor's media for the batch: its kind (image or video), one entry per item, and per-call options
        that cap what a frame becomes: Qwen's size in pixels, or the tiles a tiling processor cuts an image into."""
        clips = [self._frames(clip) for clip in inputs.float()]
        low = _pixel_floor(self.processor)
        if clips[0].shape[0] == 1 or self.options.frames == "each" or not self.takes_video:
            media = [[Image.fromarray(frame) for frame in clip] for clip in clips]
            height, width = clips[0].shape[1:3]
            caps = _pixel_caps(self.processor, "image_processor", low, self.options.pixels)
            return "image", media, caps or _tile_caps(self.processor, height * width)
        pair = int(getattr(getattr(self.processor, "video_processor", None), "temporal_patch_size", 1) or 1)
        if pad := -clips[0].shape[0] % pair:  # frames merged in pairs: repeat the last rather than let it be padded
            clips = [np.concatenate([clip, np.repeat(clip[-1:], pad, axis=0)]) for clip in clips]
        caps = _pixel_caps(self.processor, "video_processor", low, self.options.pixels * clips[0].shape[0])
        return "video", clips, caps  # the video cap covers the clip's frames: some processors count it per frame

    def text(self, prompt: Prompt, texts: dict[str, str], kind: str, count: int) -> str:
        """The model's text for one item: the chat template's user turn (media slots, the filled question) and the
        assistant's turn opened with the stem."""
        try:
            question = prompt.question.format_map(texts)
        except (KeyError, IndexError) as error:
            raise ValueError(
                f"prompt {prompt.question!r} names the text {error} but the item's texts hold {sorted(texts)}"
            ) from None
        content = [{"type": kind} for _ in range(count)] + [{"type": "text", "text": question}]
        chat = [{"role": "user", "content": content}]
        return self.processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) + prompt.stem

    def model_inputs(self, inputs: torch.Tensor, texts: list[dict[str, str]], prompt: Prompt) -> dict[str, Any]:
        """The processor's tensors for one prompt over the batch, left-padded, on the model's device and dtype."""
        return self._batch(self._media(inputs), texts, prompt)

    def _batch(self, media: tuple[str, list[Any], dict[str, Any]], texts: list[dict[str, str]], prompt: Prompt) -> dict:
        kind, items, caps = media
        count = len(items[0]) if kind == "image" else 1
        lines = [self.text(prompt, item, kind, count) for item in texts]
        batch = self.processor(
            text=lines, **{f"{kind}s": items}, padding=True, padding_side="left", return_tensors="pt", **caps
        )
        device, dtype = self.model.device, self.model.dtype
        return {
            key: value.to(device, dtype if value.is_floating_point() else value.dtype)
            for key, value in batch.items()
            if isinstance(value, torch.Tensor)
        }

    def encode(self, inputs: torch.Tensor, texts: list[dict[str, str]] | None) -> torch.Tensor:
        """Without texts (`profile` costing the model on frames alone) every {column} of a prompt reads as empty."""
        texts = texts if texts is not None else [defaultdict(str) for _ in range(len(inputs))]
        if len(texts) != len(inputs):
            raise ValueError(f"LmmEncoder got {len(inputs)} inputs but {len(texts)} texts")
        media = self._media(inputs)  # the frames as the processor takes them, once for every prompt
        parts = []
        for prompt in self.options.prompts:
            batch = self._batch(media, texts, prompt)
            if not bool(batch["attention_mask"][:, -1].all()):
                raise RuntimeError(f"{type(self.processor).__name__} did not pad on the left")
            out = self.model(**batch, output_hidden_states=True, use_cache=False, **self._forward)
            probs, expected = readout(out.logits[:, -1], self.level_ids)
            visual = torch.isin(batch["input_ids"], self.visual_ids).unsqueeze(-1).float()
            parts += [probs, expected[:, None]]
            for layer in (-1, *self.options.layers):
                states = out.hidden_states[layer].float()
                parts += [states[:, -1], (states * visual).sum(1) / visual.sum(1).clamp(min=1)]
        return torch.cat(parts, dim=1)


def _pixel_floor(processor: Any) -> int:
    """One visual token's pixels: the lowest floor a Qwen-style processor may be given, so frames are never grown."""
    image = getattr(processor, "image_processor", None)
    return (int(getattr(image, "patch_size", 14) or 14) * int(getattr(image, "merge_size", 2) or 2)) ** 2


def _pixel_caps(processor: Any, part: str, low: int, high: int) -> dict[str, Any]:
    """Per-call size for a processor part that sizes frames by their pixel count (Qwen's shortest/longest edge in
    pixels, with a merge size); none for others, which resize to their own tiles (_tile_caps)."""
    sub = getattr(processor, part, None)
    size = getattr(sub, "size", None)
    edges = [size.get(k) if isinstance(size, dict) else getattr(size, k, None) for k in _PIXEL_EDGES]
    if not hasattr(sub, "merge_size") or None in edges:
        return {}
    return {f"{part.split('_')[0]}s_kwargs": {"size": {"shortest_edge": min(low, high), "longest_edge": high}}}


def _tile_knob(processor: Any) -> str | None:
    """The image processor's option that sets how many tiles an image is cut into, where it tiles: InternVL's
    (GotOcr2) `max_patches`, or SmolVLM's and Idefics3's `size` (the longest edge, split into tiles of
    `max_image_size`)."""
    image = getattr(processor, "image_processor", None)
    size = getattr(image, "size", None)
    if hasattr(image, "max_patches") and getattr(size, "height", None) and getattr(size, "width", None):
        return "max_patches"
    tile = getattr(image, "max_image_size", None)
    if getattr(image, "do_image_splitting", False) and isinstance(tile, dict) and tile.get("longest_edge"):
        return "longest_edge"
    return None


def _tile_caps(processor: Any, area: int) -> dict[str, Any]:
    """Per-call options that cut an image of `area` pixels into at most as many tiles as its pixels fill (one at
    least), within the processor's own most: left alone, InternVL gives a wide frame two tiles and a thumbnail, and
    SmolVLM grows any image to its longest edge (4x4 tiles and a global view, over a thousand tokens a frame). A
    processor that does not tile (LLaVA-OneVision, whose grid follows the frame as given) gets none."""
    image = processor.image_processor
    knob = _tile_knob(processor)
    if knob == "max_patches":
        tiles = area // (image.size.height * image.size.width)
        return {"images_kwargs": {"max_patches": max(1, min(int(image.max_patches), tiles))}}
    if knob == "longest_edge":
        tile = int(image.max_image_size["longest_edge"])
        most = int(getattr(image.size, "longest_edge", None) or tile)
        side = tile * max(1, min(most // tile, math.isqrt(area) // tile))
        return {"images_kwargs": {"size": {"longest_edge": side}}}
    return {}


def _refuse_remote_code(name: str, folder: Path) -> None:
    for file in _CODE_FILES:
        path = folder / file
        if path.is_file() and "auto_map" in json.loads(path.read_text(encoding="utf-8") or "{}"):
            raise ValueError(
                f"lmm {name}: {file} asks for code from the model's folder (auto_map), which runs only when allowed: "
                f"set lmm_remote_code=true if you trust it, or use a checkpoint native to transformers (an `-hf` one)"
            )


def load_lmm(model: str, weights: str, options: LmmOptions, seed: int = 0) -> LmmEncoder:
    """The frozen encoder of `model` (a Hugging Face repo id in the local cache, or a folder): weights "hub" are the
    folder's own, "random" the architecture of its config seeded by `seed` (tests, smoke runs). Nothing is
    downloaded: a model not on this machine raises WeightsNotFound saying how to bring it."""
    if weights not in ("hub", "random"):
        raise ValueError(f"lmm {model}: weights={weights!r}; expected hub (the model's own) or random (seeded init)")
    if not options.prompts:
        raise ValueError("lmm: no prompts; give at least one Prompt(question, stem)")
    if options.frames not in FRAMES:
        raise ValueError(f"lmm: frames={options.frames!r}; expected one of {', '.join(FRAMES)}")
    if options.dtype not in DTYPES:
        raise ValueError(f"lmm: dtype={options.dtype!r}; expected one of {', '.join(DTYPES)}")
    if options.pixels < 1:
        raise ValueError(f"lmm: pixels={options.pixels}; expected a positive pixel count per frame")
    folder = model_folder(model)
    if not (folder / "config.json").is_file():
        raise WeightsNotFound(
            f"lmm {model}: {folder} has no config.json; the model is incomplete on this machine and nothing is "
            f"downloaded here (run `hf download <repo>` on a machine with internet and copy it here)"
        )
    if not options.remote_code:
        _refuse_remote_code(model, folder)
    import transformers

    local = {"local_files_only": True, "trust_remote_code": options.remote_code}
    config = transformers.AutoConfig.from_pretrained(folder, **local)
    layers = int(config.get_text_config().num_hidden_layers) + 1  # hidden_states: the embeddings, then each layer
    if wrong := [k for k in options.layers if not -layers <= k < layers]:
        raise ValueError(f"lmm {model}: layers {wrong} are not among its {layers} hidden states (0..{layers - 1})")
    processor = transformers.AutoProcessor.from_pretrained(folder, **local)
    processor.tokenizer.padding_side = "left"
    video = getattr(processor, "video_processor", None)
    if video is not None:
        video.do_sample_frames = False  # the frames are the ones we sampled
        if hasattr(video, "cap_pixels_per_frame"):
            video.cap_pixels_per_frame = False  # the pixel caps are ours (LmmEncoder._media)
    dtype = getattr(torch, options.dtype)
    files = folder_digest(folder)
    if weights == "random":
        with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG stream
            torch.manual_seed(seed)
            net = transformers.AutoModelForImageTextToText.from_config(config, trust_remote_code=options.remote_code)
            net = net.to(dtype)
        files = f"random(seed={seed}) {files}"
    else:
        if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
            raise WeightsNotFound(
                f"lmm {model}: no weights in {folder} (no .safetensors or .bin); nothing is downloaded here: copy the "
                f"whole repository (`hf download <repo>` on a machine with internet), or use weights=random"
            )
        net, info = transformers.AutoModelForImageTextToText.from_pretrained(
            folder, config=config, dtype=dtype, output_loading_info=True, **local
        )
        if info["missing_keys"] or info["mismatched_keys"]:
            raise ValueError(
                f"lmm {model}: the weights in {folder} do not fill {type(net).__name__} (missing "
                f"{preview_keys(sorted(info['missing_keys']))}, mismatched "
                f"{preview_keys(sorted(map(str, info['mismatched_keys'])))}): they would run partly random"
            )
    return LmmEncoder(net.eval().requires_grad_(False), processor, options, files)
