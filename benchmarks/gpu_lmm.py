"""A prepared GPU check of the LMM stream and its LoRA recipe at Qwen2-VL-2B's shape, random weights, nothing
downloaded: `python -m benchmarks.gpu_lmm` on a CUDA machine (a few minutes on an H100, warm-up included), or
`python -m benchmarks.gpu_lmm --smoke` on the CPU with a tiny model, to check the script itself.

The model is built from a Qwen2VLConfig with the 2B's sizes (text 1536 wide, 28 layers, 12 heads, 2 KV heads, MLP
8960, vocabulary 151936; vision 32 blocks 1280 wide, 16 heads, 14-pixel patches merged 2 x 2, frames paired) in
bfloat16 directly on the GPU; the processor is synth.tiny_lmm's word-level tokenizer and chat template with Qwen's
image and video processors capped at 448 x 448 a frame. Each item is 8 frames at 448 x 448 (1,024 visual tokens) and
a prompt; a batch is 4 items. Two checks, each ours against a bare loop on the same model and inputs, interleaved
repeats, CUDA synchronised around every timed call:

- frozen: the stream's encoder (features.lmm.LmmEncoder, called as the extraction's EncoderPool calls it: frames on
  the device, inference mode) on one prompt: frames to uint8, the processor, one forward with the hidden states, the
  level readout and the pooled states; against `model(**batch)` alone (the same forward: hidden states, the last
  position's logits, no cache) on the processor's tensors made once beforehand. The processor's own time per batch
  (CPU) is printed beside, since the encoder pays it on every batch and the bare loop does not;
- LoRA: one training step of `train finetune=lmm`'s module (workbench.lora: lora_model's adapters and gradient
  checkpointing, LoraRegressor.training_step with a linear head, its AdamW groups) under bfloat16 autocast as
  Lightning's bf16-mixed runs it, driven by a plain loop; against the same step written with transformers, peft and
  torch alone (LoraConfig r=16, alpha=64, dropout 0.05 on the language model's q/k/v/o projections, gradient
  checkpointing, the processor, the forward, a float32 linear head on the last token's state, MSE + PLCC, AdamW).

Prints one markdown table: throughput of each side, their ratio (ours over bare: 1 means no overhead) and each
side's peak GPU memory (torch.cuda.max_memory_allocated, reset before each side; the weights included). Exit status
2 without CUDA (unless --smoke), as the workbench's commands exit on a usage error.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

EXIT_USAGE = 2
QUESTION = "prompt: {prompt}\nHow would you rate the quality of this video?"  # the lmm stream's with lmm_text=prompt
STEM = "The quality of the video is"
PROMPT = "three red balloons drifting over a lake, watched by a crowd, watercolor"


@dataclass(frozen=True)
class Shape:
    """The model's sizes and the inputs' shape: the 2B's on the GPU, a tiny one for --smoke."""

    text: dict
    vision: dict
    frames: int
    side: int
    batch: int
    repeats: int  # timed calls per side, after `warmup`
    warmup: int
    device: str
    dtype: torch.dtype


QWEN2_VL_2B = Shape(
    text={
        "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
        "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
    },
    vision={
        "depth": 32, "embed_dim": 1280, "hidden_size": 1536, "num_heads": 16, "mlp_ratio": 4, "patch_size": 14,
        "spatial_merge_size": 2, "temporal_patch_size": 2,
    },
    frames=8, side=448, batch=4, repeats=5, warmup=2, device="cuda", dtype=torch.bfloat16,
)  # fmt: skip
TINY = Shape(
    text={
        "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 1, 1]},
    },
    vision={
        "depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 4, "patch_size": 14, "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
    frames=8, side=56, batch=4, repeats=2, warmup=1, device="cpu", dtype=torch.float32,
)  # fmt: skip


def processor_for(side: int, frames: int):
    """synth.tiny_lmm's tokenizer and chat template with Qwen2-VL's image and video processors capped at side^2
    pixels a frame (the video's cap covering its frames)."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    from synth.tiny_lmm import CHAT_TEMPLATE, tiny_processor

    tokenizer = tiny_processor().tokenizer
    tokenizer.padding_side = "left"
    low = 28 * 28
    video = Qwen2VLVideoProcessor(min_pixels=low, max_pixels=side * side * frames)
    video.do_sample_frames = False  # the frames given are the ones to read, as features.lmm.load_lmm sets
    if hasattr(video, "cap_pixels_per_frame"):
        video.cap_pixels_per_frame = False
    return Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=low, max_pixels=side * side),
        video_processor=video,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
    )


def build_model(shape: Shape, processor) -> torch.nn.Module:
    """Qwen2-VL of the shape's sizes, random weights made on the device in its dtype, in eval mode and frozen."""
    from transformers import Qwen2VLForConditionalGeneration

    from synth.tiny_lmm import qwen2vl_config

    tied = shape.text.get("tie_word_embeddings", False)
    config = qwen2vl_config(processor.tokenizer, shape.text, shape.vision, tie_word_embeddings=tied)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(shape.dtype)  # the weights made in the dtype, never first in float32
    try:
        with torch.device(shape.device):
            model = Qwen2VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default)
    return model.eval().requires_grad_(False)


def checkpointing(model, on: bool) -> None:
    """Gradient checkpointing (non-reentrant, as workbench.lora has it) on or off, under transformers' current name
    for it where it has one."""
    name = "activation" if hasattr(model, "activation_checkpointing_enable") else "gradient"
    if on:
        getattr(model, f"{name}_checkpointing_enable")(**{f"{name}_checkpointing_kwargs": {"use_reentrant": False}})
    else:
        getattr(model, f"{name}_checkpointing_disable")()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_reset(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak(device: str) -> str:
    return f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if device == "cuda" else "n/a (CPU)"


def time_calls(call: Callable[[], object], shape: Shape) -> tuple[list[float], str]:
    """`warmup` untimed calls, then `repeats` timed ones (synchronised); the seconds of each, and the peak memory
    over all of them."""
    peak_reset(shape.device)
    for _ in range(shape.warmup):
        call()
    seconds = []
    for _ in range(shape.repeats):
        sync(shape.device)
        start = time.perf_counter()
        call()
        sync(shape.device)
        seconds.append(time.perf_counter() - start)
    return seconds, peak(shape.device)


def bare_inputs(processor, frames: torch.Tensor, texts: list[dict], device: str, dtype: torch.dtype) -> dict:
    """The processor's tensors for the batch as transformers alone makes them: the chat text, left padding, the
    frames as uint8 videos under a pixel cap of their own size."""
    videos = [(clip.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy() for clip in frames]
    lines = []
    for text in texts:
        content = [{"type": "video"}, {"type": "text", "text": QUESTION.format(**text)}]
        chat = [{"role": "user", "content": content}]
        lines.append(processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) + STEM)
    t, side = frames.shape[1], frames.shape[-1]
    caps = {"size": {"shortest_edge": 28 * 28, "longest_edge": side * side * t}}
    batch = processor(
        text=lines, videos=videos, padding=True, padding_side="left", return_tensors="pt", videos_kwargs=caps
    )
    return {
        k: v.to(device, dtype if v.is_floating_point() else v.dtype)
        for k, v in batch.items()
        if isinstance(v, torch.Tensor)
    }


def lmm_options(shape: Shape):
    """The stream's encoder options: the one prompt, frames as one video, the pixel cap, the model's dtype."""
    from features.lmm import LmmOptions, Prompt

    dtype = str(shape.dtype).removeprefix("torch.")
    return LmmOptions(prompts=(Prompt(QUESTION, STEM),), frames="video", pixels=shape.side**2, dtype=dtype)


def frozen_check(shape: Shape, model, processor, frames, texts) -> list[list[str]]:
    """The stream's encoder against a bare forward on the same tensors; the processor's time beside."""
    from features.lmm import LmmEncoder

    options = lmm_options(shape)
    encoder = LmmEncoder(model, processor, options, files="random (benchmarks.gpu_lmm)").to(shape.device)
    batch = bare_inputs(processor, frames, texts, shape.device, shape.dtype)
    ours_batch = encoder.model_inputs(frames, texts, options.prompts[0])
    if not torch.equal(batch["input_ids"].cpu(), ours_batch["input_ids"].cpu()):
        raise RuntimeError("the bare inputs differ from the encoder's: the comparison would not be of one forward")
    del ours_batch
    tokens = batch["input_ids"].shape[1]

    def ours() -> None:
        encoder(frames, texts)  # FrozenEncoder.forward: the check, inference mode, encode, as EncoderPool calls it

    def bare() -> None:
        with torch.inference_mode():
            model(**batch, output_hidden_states=True, logits_to_keep=1, use_cache=False)

    def processor_alone() -> None:
        bare_inputs(processor, frames, texts, shape.device, shape.dtype)

    mine, mine_peak = time_calls(ours, shape)
    theirs, theirs_peak = time_calls(bare, shape)
    alone, _ = time_calls(processor_alone, shape)
    n = len(frames)
    ours_rate, bare_rate = n / statistics.median(mine), n / statistics.median(theirs)
    what = f"frozen encode, 1 prompt, {n} items x {shape.frames} frames at {shape.side} ({tokens} tokens a row)"
    return [
        [what, f"{ours_rate:.2f} items/s", f"{bare_rate:.2f} items/s", f"{ours_rate / bare_rate:.2f}", mine_peak,
         theirs_peak],
        [f"processor alone (CPU), the same batch: {statistics.median(alone) * 1e3:.0f} ms, in ours and not in bare",
         f"{n / statistics.median(alone):.2f} items/s", "", "", "", ""],
    ]  # fmt: skip


def autocast(shape: Shape):
    """Lightning's bf16-mixed on CUDA (what LoraFit trains under), nothing on the CPU (its 32-true)."""
    if shape.device == "cuda":
        return torch.autocast("cuda", dtype=shape.dtype)
    return torch.autocast("cpu", enabled=False)


def lora_ours(shape: Shape, encoder, frames, texts, y) -> tuple[list[float], str, int, torch.nn.Module]:
    """`train finetune=lmm`'s module on the encoder's model: lora_model's adapters (and, on CUDA, its gradient
    checkpointing), LoraRegressor with a linear head, its optimiser; a plain loop of its training step. Returns the
    step's seconds, the peak memory, the weights trained and the base model with the adapters taken out again."""
    import workbench.lora as lora
    from workbench.heads import create_head
    from workbench.losses import CombinedLoss

    lora.load_lmm_of = lambda spec, seed: encoder  # the model built here, not load_lmm's CPU-made one
    torch.manual_seed(0)
    tuned = lora.lora_model(None, 0)
    head = create_head("linear", [encoder.hidden], out=1)
    module = lora.LoraRegressor(
        tuned, head, loss=CombinedLoss.from_spec("mse:1,plcc:1"), lr=1e-3, wd=1e-4, epochs=1, views=1, scorer=None
    ).to(shape.device)
    optimizer = module.configure_optimizers()["optimizer"]
    pseudo = torch.zeros(len(frames), dtype=torch.bool, device=shape.device)

    def step() -> None:
        with autocast(shape):
            loss = module.training_step((frames, texts, y, pseudo), 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds, top = time_calls(step, shape)
    trained = sum(p.numel() for p in module.adapters())
    base = tuned.net.unload()  # the adapters taken out, unmerged
    checkpointing(base, False)
    return seconds, top, trained, base


def lora_bare(shape: Shape, base, processor, frames, texts, y, hidden: int) -> tuple[list[float], str, int]:
    """The same step with transformers, peft and torch alone; the step's seconds, peak memory, weights trained."""
    from peft import LoraConfig, get_peft_model

    if shape.device == "cuda":
        checkpointing(base, True)
    torch.manual_seed(0)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]  # the vision tower's are qkv and proj: the language model's
    with warnings.catch_warnings():  # peft asks transformers' deprecated `is_gradient_checkpointing`
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        net = get_peft_model(base, LoraConfig(r=16, lora_alpha=64, lora_dropout=0.05, target_modules=targets))
    net.train()
    linear = torch.nn.Linear(hidden, 1).to(shape.device)
    adapters = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": list(linear.parameters())}, {"params": adapters, "lr": 1e-4}], lr=1e-3, weight_decay=1e-4
    )

    def step() -> None:
        batch = bare_inputs(processor, frames, texts, shape.device, shape.dtype)
        with autocast(shape):
            out = net(**batch, output_hidden_states=True, logits_to_keep=1, use_cache=False)
        pred = linear(out.hidden_states[-1][:, -1].float())  # the head in float32, outside autocast
        centred_p, centred_y = pred - pred.mean(), y - y.mean()
        plcc = (centred_p * centred_y).sum() / (centred_p.norm() * centred_y.norm() + 1e-8)
        loss = torch.nn.functional.mse_loss(pred, y) + (1 - plcc)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds, top = time_calls(step, shape)
    return seconds, top, sum(p.numel() for p in adapters)


def lora_check(shape: Shape, model, processor, frames, texts) -> list[list[str]]:
    """One step of the workbench's LoRA module against the same step in transformers, peft and torch alone."""
    from features.lmm import LmmEncoder

    encoder = LmmEncoder(model, processor, lmm_options(shape), files="random (benchmarks.gpu_lmm)").to(shape.device)
    y = torch.linspace(1, 5, len(frames))[:, None].to(shape.device)
    mine, mine_peak, trained, base = lora_ours(shape, encoder, frames, texts, y)
    theirs, theirs_peak, bare_trained = lora_bare(shape, base, processor, frames, texts, y, encoder.hidden)
    if bare_trained != trained:
        raise RuntimeError(f"the bare loop trains {bare_trained} adapter weights, the workbench {trained}")
    ours_rate, bare_rate = 1 / statistics.median(mine), 1 / statistics.median(theirs)
    recompute = "gradient checkpointing, " if shape.device == "cuda" else ""
    what = (
        f"LoRA step (r=16, alpha=64, q/k/v/o: {trained:,} weights trained), {recompute}batch {len(frames)}, "
        f"processor included"
    )
    return [[what, f"{ours_rate:.2f} steps/s", f"{bare_rate:.2f} steps/s", f"{ours_rate / bare_rate:.2f}", mine_peak,
             theirs_peak]]  # fmt: skip


def table(rows: list[list[str]]) -> str:
    columns = ["check", "ours", "bare", "ours / bare", "peak memory, ours", "peak memory, bare"]
    lines = ["| " + " | ".join(row) + " |" for row in [columns, ["---"] * len(columns), *rows]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_lmm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny model on the CPU in float32: checks the script")
    args = parser.parse_args(argv)
    shape = TINY if args.smoke else QWEN2_VL_2B
    if args.smoke:
        torch.set_num_threads(1)  # a shared CPU's other load stalls multithreaded ops; the smoke checks code, not speed
    if shape.device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_lmm: CUDA is not available here. This check measures a Qwen2-VL-2B-shaped model in bfloat16 on a GPU; "
            "run it on a CUDA machine, or `python -m benchmarks.gpu_lmm --smoke` for the tiny CPU run of the script.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    started = time.perf_counter()
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    processor = processor_for(shape.side, shape.frames)
    model = build_model(shape, processor)
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    built = time.perf_counter() - started
    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(shape.batch, shape.frames, 3, shape.side, shape.side, generator=generator).to(shape.device)
    texts = [{"prompt": f"{PROMPT}, take {k}"} for k in range(shape.batch)]
    rows = frozen_check(shape, model, processor, frames, texts)
    rows += lora_check(shape, model, processor, frames, texts)
    device = torch.cuda.get_device_name() if shape.device == "cuda" else "CPU (smoke)"
    print(
        f"Qwen2-VL, text {shape.text['hidden_size']} x {shape.text['num_hidden_layers']}, vision "
        f"{shape.vision['embed_dim']} x {shape.vision['depth']}, {weights:.2f} GiB of weights in "
        f"{str(shape.dtype).removeprefix('torch.')} on {device}; built in {built:.0f} s; median of {shape.repeats} "
        f"timed calls per side after {shape.warmup} warm-up; torch {torch.__version__}\n"
    )
    print(table(rows))
    print(f"\n{time.perf_counter() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
