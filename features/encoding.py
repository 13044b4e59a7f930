"""From an item's files to its vectors, without Lightning: what the extraction run and the exported predictor share.

A `Job` names an item's file (and reference), its fingerprint and the variants each feature set still needs;
`MediaDataset` decodes the item once (once per temporal offset its variants ask for) and cuts every set's views from
that decode (`render_item`); `collate` batches the sets' pixels with their row keys; an `EncoderPool` runs each set's
frozen encoder (`create_encoders`: made by the stream family whose encoders take the view, features.streams). The
extraction (features.extract) drives these through Lightning and writes the cache; the exported predictor
(workbench.predictor) drives them with a plain DataLoader, so it needs no trainer.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from features.audio import attach_audio
from features.backbones import FrozenEncoder
from features.decode import DECODERS, Decoder, FrameSampling, MediaError
from features.fingerprint import REFERENCE
from features.pairs import read_pair
from features.spec import SHARED_DECODE, FeatureSpec
from features.streams import encoder_family
from features.views import FAMILIES, Variant, ViewFamily, view_family


@dataclass(frozen=True)
class Job:
    item_id: str
    path: str
    fingerprint: str  # the file's when the run planned: rows and failures are bound to it
    views: tuple[tuple[str, ...], ...]  # per feature set, the variants it still lacks (empty: none)
    reference: str = ""  # the reference of a full-reference pair (features.pairs), decoded on the same frames
    bound: tuple[str, ...] = ()  # per set, the fingerprint its rows carry (FeatureSpec.bound); empty: the file's
    texts: tuple[tuple[str, str], ...] = ()  # (column, text) of the item's texts that a set's encoder reads

    @property
    def sets(self) -> list[int]:
        return [s for s, views in enumerate(self.views) if views]

    def fingerprint_of(self, feature_set: int) -> str:
        return self.bound[feature_set] if self.bound else self.fingerprint


# per feature set: (variant, pixels [T, 3, S, S] or clips [C, L, 3, S, S], their key frames' times)


Rendered = list[list[tuple[str, torch.Tensor, np.ndarray]]]


def render_item(
    decoder: Decoder,
    path: str,
    sampling: FrameSampling,
    families: Sequence[ViewFamily],
    variants: Sequence[tuple[str, ...]],
    threads: int = 0,
    reference: str = "",
) -> Rendered:
    """Per feature set, each of its variants' frames with their times. The media are decoded (on `threads` decoder
    threads, 0 for the library's choice) once per distinct temporal offset among the variants asked for (once, when
    none is shifted), with the `reference` of a pair beside them, and each family renders its geometries from the
    frames of their offset."""
    parsed = [[Variant.parse(name) for name in names] for names in variants]
    offsets = sorted({v.offset for views in parsed for v in views})
    if reference:
        clips = {offset: read_pair(decoder, path, reference, sampling.shifted(offset), threads) for offset in offsets}
    else:
        clips = {offset: decoder.read(path, sampling.shifted(offset), threads) for offset in offsets}
    if sampling.audio_seconds:
        clips = {offset: attach_audio(clip, path, sampling.audio_seconds) for offset, clip in clips.items()}
    rendered = []
    for family, names, views in zip(families, variants, parsed, strict=True):
        out = {}
        for offset, clip in clips.items():
            here = [(name, v.geometry) for name, v in zip(names, views) if v.offset == offset]
            if here:
                source = clip if family.source is None else getattr(clip, family.source)
                pixels = family.render(source, [geometry for _, geometry in here])
                out.update({name: (frames, clip.times[: len(frames)]) for (name, _), frames in zip(here, pixels)})
        rendered.append([(name, *out[name]) for name in names])
    return rendered


class MediaDataset(Dataset):
    """One item per index: every variant each feature set still lacks (see render_item); or the reason the item
    cannot be read."""

    def __init__(
        self,
        jobs: Sequence[Job],
        decoder: Decoder,
        sampling: FrameSampling,
        families: Sequence[ViewFamily],
        decode_threads: int = 0,
    ):
        self.jobs = list(jobs)
        self.decoder = decoder
        self.sampling = sampling
        self.families = list(families)
        self.decode_threads = decode_threads

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> dict:
        job = self.jobs[index]
        try:
            views = render_item(
                self.decoder, job.path, self.sampling, self.families, job.views, self.decode_threads, job.reference
            )
        except MediaError as error:
            return {"job": job, "error": error.reason}
        except Exception as error:  # a decoder crash on one file must not end a run of thousands
            return {"job": job, "error": f"{type(error).__name__}: {error}"}
        return {"job": job, "views": views, "error": None}


def collate(samples: list[dict]) -> dict:
    """Per feature set, the frames of every variant of every readable item in one tensor, with per-row bookkeeping
    beside it (sets differ in image size, so they cannot share a tensor; variants of another temporal offset may
    have fewer frames near a clip's end)."""
    ok = [s for s in samples if s["error"] is None]
    sets = []
    for index in range(len(samples[0]["job"].views)):
        rows = {"item_id": [], "fingerprint": [], "view": [], "t": [], "time": []}
        pixels, texts = [], []
        for sample in ok:
            job = sample["job"]
            for view, frames, times in sample["views"][index]:
                rows["item_id"] += [job.item_id] * len(frames)
                rows["fingerprint"] += [job.fingerprint_of(index)] * len(frames)
                rows["view"] += [view] * len(frames)
                rows["t"] += range(len(frames))
                rows["time"] += times.tolist()
                pixels.append(frames)
                texts += [dict(job.texts)] * len(frames)
        sets.append({"pixels": torch.cat(pixels) if pixels else torch.empty(0), "rows": rows, "texts": texts})
    failures = [
        {
            "item_id": s["job"].item_id,
            "fingerprints": [s["job"].fingerprint_of(k) for k in range(len(s["job"].views))],
            "path": s["job"].path,
            "reason": s["error"],
            "sets": s["job"].sets,
        }
        for s in samples
        if s["error"]
    ]
    return {"sets": sets, "failures": failures}


class EncoderPool(nn.Module):
    """Frozen encoders, one per feature set (sets of one backbone share it): each set's encoder run on its frames or
    clips, at most `chunk` to a forward pass. With `threads` > 1 (the CPU's share of a process) and while `running`,
    the inputs are shared among that many threads, each running the encoder on its share."""

    def __init__(self, encoders: Sequence[FrozenEncoder], chunk: int = 64, threads: int = 1):
        super().__init__()
        distinct = list({id(encoder): encoder for encoder in encoders}.values())
        self.encoders = nn.ModuleList(distinct)
        self.uses = [next(k for k, e in enumerate(distinct) if e is encoder) for encoder in encoders]
        self.chunk = chunk
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        if self.threads > 1 and self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="encoder")

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    @contextlib.contextmanager
    def running(self) -> Iterator[EncoderPool]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def forward(self, pixels: torch.Tensor, encoder: int = 0, texts: list[dict] | None = None) -> torch.Tensor:
        module = self.encoders[encoder]
        with torch.inference_mode():  # grad mode is per thread: the pool's threads do not inherit the caller's
            return module(pixels, texts) if module.takes_text else module(pixels)

    def encode(self, pixels: torch.Tensor, feature_set: int, texts: list[dict] | None = None) -> np.ndarray:
        """The set's vectors of `pixels`, each row's item `texts` beside it for an encoder that reads them."""
        encoder = self.uses[feature_set]
        if not len(pixels):
            return np.empty((0, self.encoders[encoder].dim), np.float32)
        share = self.chunk if self._pool is None else min(self.chunk, -(-len(pixels) // self.threads))
        starts = range(0, len(pixels), share)
        parts = [(pixels[k : k + share], texts[k : k + share] if texts else None) for k in starts]
        mapped = map if self._pool is None else self._pool.map
        return torch.cat(list(mapped(lambda part: self(part[0], encoder, part[1]), parts))).float().cpu().numpy()


def shared_sampling(specs: Sequence[FeatureSpec]) -> FrameSampling:
    """The one decode of feature sets extracted together: they share the media and the key-frame sampling (encoders,
    views and the dtype each stores may differ), and at most one clip geometry, which the key frames' decode also
    yields."""
    for spec in specs[1:]:
        differ = [n for n in SHARED_DECODE if n != "dtype" and getattr(spec, n) != getattr(specs[0], n)]
        if differ:
            raise ValueError(
                f"feature sets extracted together share their decoding; {', '.join(differ)} differ: "
                f"{specs[0]} vs {spec}"
            )
    clips = {(spec.clip, spec.size) for spec in specs if spec.clip > 1}
    if len(clips) > 1:
        raise ValueError(f"feature sets extracted together take one clip geometry (clip, size), not {sorted(clips)}")
    windows = {spec.audio_seconds for spec in specs if spec.audio_seconds > 0}
    if len(windows) > 1:
        raise ValueError(f"feature sets extracted together take one audio window length, not {sorted(windows)}")
    clip, side = next(iter(clips), (1, 0))
    common = specs[0]
    return FrameSampling(common.frames, common.fps, common.phase, clip, side, next(iter(windows), 0.0), common.light)


def create_encoders(specs: Sequence[FeatureSpec]) -> list[FrozenEncoder]:
    """Each set's frozen encoder, made by the stream family whose encoders take what its view renders
    (features.streams); sets of the same encoder and weights share one."""
    built: dict[tuple[str, str, str, str], FrozenEncoder] = {}
    keys = [(FAMILIES.get(spec.view).encodes, spec.backbone, spec.weights, spec.options) for spec in specs]
    for key, spec in zip(keys, specs):
        if key not in built:
            built[key] = encoder_family(key[0]).create_encoder(spec)
    return [built[key] for key in keys]


@contextlib.contextmanager
def single_threaded_ops() -> Iterator[None]:
    """Torch ops on one thread each for the run's duration; the backbone's parallelism on the CPU is its threads
    (cpu_threads) instead.

    The decoding workers and the model share the cores. OpenMP threads spin at their barriers, so a model on 2 threads
    beside a decoding worker made extraction 1.8 times slower than on 1 thread (2 cores, 1080p); single-threaded ops
    in several Python threads (torch releases the GIL) never wait for each other, and the OS gives each side the cores
    it can use. OMP_NUM_THREADS is set too: Lightning's DDP launcher otherwise resets the count to cores / processes,
    and the ranks it starts inherit the variable.
    """
    before, variable = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if variable is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = variable


def encode_media(
    items: pd.DataFrame,
    specs: Sequence[FeatureSpec],
    encoders: Sequence[FrozenEncoder],
    variants: Sequence[Sequence[str]],
    workers: int,
    batch: int,
) -> list[dict[tuple[str, str], np.ndarray]]:
    """Per feature set, (item, view) -> [frames, D] for `items` (item_id, path, the reference where pairs are), in
    memory as extraction makes them (nothing cached): DataLoader workers decode and cut each set's `variants` ahead of
    the encoders, which run on threads of single-threaded ops beside them on the CPU, a batch of items to a pass.
    The first file that cannot be read raises its MediaError."""
    decoder, sampling = DECODERS.get(specs[0].decoder), shared_sampling(specs)
    references = items[REFERENCE].astype(str) if REFERENCE in items else [""] * len(items)
    views = tuple(map(tuple, variants))
    ids, paths = items["item_id"].astype(str), items["path"].astype(str)
    columns = list(dict.fromkeys(column for spec in specs for column in spec.binds))
    texts = [tuple(zip(columns, row)) for row in zip(*(items[c].fillna("").astype(str) for c in columns))]
    jobs = [Job(i, p, "", views, r, texts=t) for i, p, r, t in zip(ids, paths, references, texts or repeat(()))]
    workers = min(workers, len(jobs) - 1)  # a lone item decodes here, as fast as in a worker
    dataset = MediaDataset(jobs, decoder, sampling, [view_family(s) for s in specs], decode_threads(max(workers, 1)))
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=collate)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pool = EncoderPool(encoders, threads=encoder_threads(device == "cpu")).to(device)
    out: list[dict[tuple[str, str], list]] = [{} for _ in specs]
    with pool.running(), single_threaded_ops() if device == "cpu" else contextlib.nullcontext():
        for batch_of_items in loader:
            if batch_of_items["failures"]:
                failure = batch_of_items["failures"][0]
                raise MediaError(failure["path"], failure["reason"])
            for s, (spec, part) in enumerate(zip(specs, batch_of_items["sets"], strict=True)):
                rows = pool.encode(part["pixels"].to(device), s, part["texts"]).astype(spec.dtype).astype(np.float32)
                for item, view, row in zip(part["rows"]["item_id"], part["rows"]["view"], rows):
                    out[s].setdefault((item, view), []).append(row)  # in frame order, as collated
    return [{key: np.stack(rows) for key, rows in by_key.items()} for by_key in out]


def encoder_threads(on_cpu: bool, processes: int = 1) -> int:
    """Encoder threads per process: its share of the cores on the CPU (10 s clips, resnet18, 2 cores, 2 decoding
    workers: 0.71 s a clip at 720p against 0.89 with the encoder on one thread), one on an accelerator."""
    return max(1, len(os.sched_getaffinity(0)) // processes) if on_cpu else 1


def decode_threads(workers: int) -> int:
    """Decoder threads per DataLoader worker: one where several workers decode, FFmpeg's own count otherwise.

    Parallel over items is cheaper than parallel within one: frame threads cost FFmpeg 14-18% more CPU for the same
    frames (10 s H.264 clips at 720p and 1080p), CPU the model could use. A lone worker keeps them, since they borrow
    the cores the model leaves idle when decoding is the slower side (1080p on 2 cores)."""
    return 1 if workers > 1 else 0
