"""Row 15: the LMM stream's extraction (features.streams.lmm) against a bare transformers loop over the same decoded
frames and prompts, in the same batches.

The model is a random-weight Qwen2-VL built offline from synth.tiny_lmm's pieces (its word-level processor, Qwen's
config) but wide and deep enough that the model's work, not Python, is what a batch costs; it is saved once under
the bench root and loaded from its files by both sides. The data are a synthetic XGC AIGV set (videos with their
prompts), made once. Ours: `extract` of the LMM set alone into a fresh cache (fingerprints, decoding workers, the
frames cut as ItemFrames cuts them, the processor, one forward per prompt, the readout, the Parquet parts). The
baseline: the same frames decoded and cut beforehand, untimed; then, timed, the model and processor loaded from the
same folder and a loop of `processor(...)` and `model(**batch)` per prompt over the same batches with the same chat
text, nothing kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.harness import BenchConfig, Progress, Row, Sizes, median, median_ratio, timed
from features.decode import DECODERS
from features.encoding import render_item
from features.extract import extract
from features.spec import FeatureSpec
from features.streams.lmm import lmm_spec
from features.views import view_family
from synth import synthesize
from synth.tiny_lmm import qwen2vl_config, tiny_processor
from tracks import get_track
from workbench.config import ExtractConfig, build

TRACK = "xgc_aigv"
PROMPTS = "quality,temporal"  # two prompts: the stream runs the model once per prompt over each batch
VIEWS = ["center"]  # one view, so a batch of items is a batch of rows on both sides
SOURCE = (96, 96)  # the synthetic videos' size (synth.xgc_aigv's own)
VISION_DEPTH = 2  # the vision tower's blocks, each as wide as the text model


def bench_model(folder: Path, hidden: int, layers: int, seed: int = 0) -> Path:
    """A Qwen2-VL with random weights, `layers` text layers of width `hidden` (heads of 64, two KV heads, Qwen's 3.5x
    wide MLP) over a VISION_DEPTH-deep vision tower, with synth.tiny_lmm's word-level processor; saved once."""
    if (folder / "config.json").is_file():
        return folder
    from transformers import Qwen2VLForConditionalGeneration

    processor = tiny_processor()
    heads = max(1, hidden // 64)
    half = hidden // heads // 2  # mrope's sections split a head's rotary half into time, height and width
    rope = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [half - 2 * (half // 4), half // 4, half // 4]}
    text = {
        "hidden_size": hidden, "intermediate_size": hidden * 7 // 2, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": min(2, heads), "max_position_embeddings": 4096,
        "rope_parameters": rope,
    }  # fmt: skip
    vision = {
        "depth": VISION_DEPTH, "embed_dim": hidden, "hidden_size": hidden, "num_heads": heads, "patch_size": 14,
        "spatial_merge_size": 2, "temporal_patch_size": 2,
    }  # fmt: skip
    config = qwen2vl_config(processor.tokenizer, text, vision)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2VLForConditionalGeneration(config).eval()
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    processor.save_pretrained(partial)
    partial.rename(folder)
    return folder


def bench_items(root: Path, items: int) -> pd.DataFrame:
    """`items` videos with their prompts from a synthetic XGC AIGV set (made once under `root`), as the track reads
    them: it reads the training list and one held-out list, so the set is made a third larger."""
    track = get_track(TRACK)
    made = max(8, -(-items * 4 // 3) + 2)  # synth.xgc_aigv makes 8 at least
    folder = root / f"aigv-{made}"
    if not (folder / "truth").is_dir():
        synthesize(track, folder, made, 0, *SOURCE)
    found = track.read_items(folder)
    if len(found) < items:
        raise RuntimeError(f"{folder}: {len(found)} items, fewer than the {items} asked for")
    return found.head(items).reset_index(drop=True)


def stream_spec(model: Path, sizes: Sizes) -> tuple[ExtractConfig, FeatureSpec]:
    """The LMM set of `extract lmm=<model> lmm_weights=hub lmm_prompts=quality,temporal lmm_text=prompt ...`."""
    words = {
        "track": TRACK, "lmm": str(model), "lmm_weights": "hub", "lmm_prompts": PROMPTS, "lmm_text": "prompt",
        "lmm_pixels": str(sizes.lmm_side**2), "lmm_dtype": "float32", "frames": str(sizes.lmm_frames),
    }  # fmt: skip
    cfg = build(ExtractConfig, words, get_track(TRACK).defaults)
    return cfg, lmm_spec(cfg, get_track(TRACK).decoder)


def rendered_frames(items: pd.DataFrame, spec: FeatureSpec) -> list[np.ndarray]:
    """Each item's frames as the stream cuts them (render_item with the set's ItemFrames family), then as the
    encoder hands them to the processor: uint8 [T, H, W, 3]."""
    decoder, sampling, family = DECODERS.get(spec.decoder), spec.sampling(), view_family(spec)
    clips = []
    for path in items["path"]:
        ((_, pixels, _),) = render_item(decoder, str(path), sampling, [family], [tuple(VIEWS)])[0]
        clips.append((pixels[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return clips


def bare_loop(model_dir: Path, clips: list[np.ndarray], texts: list[str], prompts: list, batch: int) -> float:
    """transformers alone: the model and processor from their folder, then per batch and prompt the chat text, the
    processor (left padding, the frames' pixel cap) and one forward with the hidden states, as the stream asks.
    Returns the seconds the loading took."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    with timed() as load:
        processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
        processor.video_processor.do_sample_frames = False  # the frames given are the ones to read
        processor.video_processor.cap_pixels_per_frame = False  # the cap is the call's, as the stream's
        model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True)
        model.eval()
    frames, side = clips[0].shape[0], clips[0].shape[1]
    caps = {"size": {"shortest_edge": 28 * 28, "longest_edge": side * side * frames}}
    for start in range(0, len(clips), batch):
        videos = clips[start : start + batch]
        for question, stem in prompts:
            chats = [
                [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question.format(prompt=t)}]}]
                for t in texts[start : start + batch]
            ]
            lines = [processor.apply_chat_template(c, add_generation_prompt=True, tokenize=False) + stem for c in chats]
            inputs = processor(
                text=lines, videos=videos, padding=True, padding_side="left", return_tensors="pt", videos_kwargs=caps
            )
            with torch.inference_mode():
                model(**inputs, output_hidden_states=True, logits_to_keep=1, use_cache=False)
    return load.wall


@contextlib.contextmanager
def one_core() -> Iterator[None]:
    """This thread (and the threads and processes it starts: the extraction's decoding workers) held to one core,
    torch's ops on one thread: the stream's decode and bookkeeping cannot hide on cores the bare loop leaves idle,
    and no OpenMP team waits on a thread a neighbour's load has descheduled."""
    cores, threads = os.sched_getaffinity(0), torch.get_num_threads()
    os.sched_setaffinity(0, {min(cores)})
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():  # the DataLoader's advice to start fewer workers than the extraction does
            warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
            yield
    finally:
        os.sched_setaffinity(0, cores)
        torch.set_num_threads(threads)


def run_stream(items: pd.DataFrame, spec: FeatureSpec, batch: int, workers: int, scratch: Path) -> float:
    """`extract` of the LMM set alone into a fresh cache under `scratch`; its wall seconds."""
    with tempfile.TemporaryDirectory(dir=scratch) as cache, timed() as full:
        summary = extract(
            items, TRACK, [spec], VIEWS, cache_root=cache, batch_size=batch, workers=workers, progress=False
        )
    if summary.extracted != len(items):
        raise RuntimeError(f"LMM stream: {summary.extracted} of {len(items)} items extracted")
    return full.wall


def rows(sizes: Sizes, cfg: BenchConfig, root: Path, progress: Progress) -> list[Row]:
    """The stream against the bare loop twice, interleaved: on every core as each runs by default (the stream's
    decoding workers beside its encoder threads of single-threaded ops, the bare loop on torch's threads), and both
    held to one core; the decode alone (what the bare loop is spared) on one core beside them."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the weights' loading bars, on both sides
    progress("LMM stream: model and data")
    where = root / "lmm"
    name = f"qwen2-vl-{sizes.lmm_hidden}x{sizes.lmm_layers}"
    model_dir = bench_model(where / name, sizes.lmm_hidden, sizes.lmm_layers)
    items = bench_items(where, sizes.lmm_items)
    extract_cfg, spec = stream_spec(model_dir, sizes)
    batch, workers = extract_cfg.batch, extract_cfg.workers
    prompts = json.loads(spec.options)["prompts"]
    texts = items["prompt"].fillna("").astype(str).tolist()
    clips = rendered_frames(items, spec)
    progress("LMM stream, warm-up")  # first calls (files into the page cache, lazy imports) on neither side's clock
    run_stream(items.head(batch), spec, batch, workers, root)
    bare_loop(model_dir, clips[:batch], texts[:batch], prompts, batch)
    sides: dict[str, tuple[list[float], list[float]]] = {"every": ([], []), "one": ([], [])}  # ours, bare
    loads, decodes = [], []
    for repeat in range(sizes.repeats):
        progress(f"LMM stream, repeat {repeat + 1}/{sizes.repeats}")
        for cores, (ours, bare) in sides.items():
            with one_core() if cores == "one" else contextlib.nullcontext():
                ours.append(run_stream(items, spec, batch, workers, root))
                with timed() as loop:
                    loads.append(bare_loop(model_dir, clips, texts, prompts, batch))
                bare.append(loop.wall)
                if cores == "one":
                    with timed() as decode:
                        rendered_frames(items, spec)
                    decodes.append(decode.wall)
    n, threads = len(items), torch.get_num_threads()
    what = (
        f"LMM stream (random Qwen2-VL, text {sizes.lmm_hidden} x {sizes.lmm_layers}) on {n} AIGV videos, "
        f"{sizes.lmm_frames} frames at {sizes.lmm_side}, 2 prompts, batch {batch}, against a bare transformers loop"
    )
    includes = (
        f"ours is `extract` into a fresh cache: fingerprints, the model's loading, decoding ({workers} workers) and "
        f"cutting the frames, the processor, a forward per prompt, the readout, the Parquet part; bare loads model "
        f"and processor from the same folder (median {median(loads):.2f} s) and runs processor + forward per "
        f"prompt and batch with the same chat text on frames decoded and cut beforehand, untimed: the ratio "
        f"charges the stream its decode"
    )
    notes = {
        "every": f"{includes}; the stream's encoder runs on {len(os.sched_getaffinity(0))} threads of single-threaded "
        f"ops beside its workers, the bare loop on torch's {threads} threads, which a neighbour's load stalls far "
        f"more: on a shared machine this ratio swings with the load average",
        "one": f"both held to one core, torch's ops to one thread, so no side hides work on an idle core: the "
        f"stream's whole cost over the bare forwards; of the stream's {median(sides['one'][0]):.2f} s, decoding and "
        f"cutting the frames alone take {median(decodes):.2f} s on that core",
    }
    return [
        Row(
            "15",
            f"{what}, {cores} core",
            f"{n / median(ours):.2f} items/s",
            f"{n / median(bare):.2f} items/s (bare loop)",
            median_ratio(bare, ours),
            ">= 0.9",
            notes[cores],
        )
        for cores, (ours, bare) in sides.items()
    ]
