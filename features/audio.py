"""Audio: a file's soundtrack as 16 kHz mono on the video's clock, windows of it at a track's key-frame times, its
loudness envelope, and frozen audio encoders (windows in, one vector per window out).

Raters of user-generated video hear it too: hiss, wind, clipping, a dead or missing soundtrack all pull their scores
down, and no image or motion encoder can see them. As with `Backbone.identity()`, an encoder's identity is part of
the cache key: it names everything that changes the vectors.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import scipy.fft
import torch
import torch.nn.functional as F

from features.backbones import EncoderRegistry, FrozenEncoder, WeightsNotFound, preview_keys
from features.decode import Clip, MediaError, open_container
from features.hf import files_digest, model_folder

SAMPLE_RATE = 16000  # what speech and audio-event models are trained at; 8 kHz of bandwidth holds what raters notice


@dataclass
class Audio:
    samples: np.ndarray  # float32 [N] mono in [-1, 1] at SAMPLE_RATE; sample 0 at the video's time zero
    has_audio: bool
    duration: float  # seconds: of the samples, or of the container where there is no audio


def _mono(frames: Iterable[av.AudioFrame]) -> list[np.ndarray]:
    """The mean of the channels. Not swresample's own downmix to float mono: it adds stereo channels at 1/sqrt(2)
    each, 3 dB up, so loud correlated stereo leaves [-1, 1]."""
    return [frame.to_ndarray().mean(axis=0) for frame in frames]


def read_audio(path: str, seconds: float | None = None) -> Audio:
    """The first audio stream of `path`, resampled to 16 kHz mono, on the video's clock: sample 0 is the video
    stream's start, the time zero of `sample_video`'s key-frame times, so a soundtrack that starts late is led by
    zeros and one that starts early loses its lead (a file without video starts at its first sample). It ends where
    the stream's declared duration does (the AAC decoder pads its last frame) and after at most `seconds`, where
    demuxing stops.

    A file without audio, or whose audio stream holds nothing, is not an error: has_audio is False, there are no
    samples, and the duration is the container's (FFmpeg's, from its streams), 0 where unknown. A decoding error
    after some audio ends the track there, as `sample_video` keeps the frames before one; a file that cannot be
    opened, or whose audio fails before its first sample, raises MediaError."""
    if seconds is not None and not seconds >= 0:
        raise ValueError(f"read_audio({path!r}): seconds must be None or >= 0, got {seconds!r}")
    with open_container(path) as container:
        if not container.streams.audio:
            return _no_audio(container, seconds)
        stream = container.streams.audio[0]
        origin = _video_start(container)
        cap = math.inf if seconds is None else round(seconds * SAMPLE_RATE)  # samples from time zero
        resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)
        chunks: list[np.ndarray] = []
        zero, lead, held = None, 0, 0  # time zero (s); samples from it to the first decoded one; samples resampled
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if zero is None:
                        start = frame.time or 0.0
                        zero = start if origin is None else origin
                        lead = round((start - zero) * SAMPLE_RATE)
                    mono = _mono(resampler.resample(frame))
                    chunks += mono
                    held += sum(chunk.size for chunk in mono)
                if zero is not None and lead + held >= cap:
                    break
        except av.FFmpegError as error:
            if zero is None:
                raise MediaError(path, f"audio decoding failed before the first sample ({error})") from error
        if zero is None:
            return _no_audio(container, seconds)
        chunks += _mono(resampler.resample(None))
        samples = np.concatenate(chunks)
        samples = np.concatenate([np.zeros(lead, np.float32), samples]) if lead > 0 else samples[-lead:]
        if stream.duration is not None and stream.start_time is not None:
            end = (stream.start_time + stream.duration) * stream.time_base - zero
            cap = min(cap, round(end * SAMPLE_RATE))
        samples = samples[: min(cap, samples.size)]
        np.clip(samples, -1.0, 1.0, out=samples)  # lossy decoders overshoot full scale a little
    return Audio(samples, True, samples.size / SAMPLE_RATE)


def _video_start(container: av.container.InputContainer) -> float | None:
    """The first video stream's start (s), where `sample_video` counts key-frame times from; None without video."""
    if not container.streams.video:
        return None
    video = container.streams.video[0]
    return float(video.start_time * video.time_base) if video.start_time is not None else 0.0


def _no_audio(container: av.container.InputContainer, seconds: float | None) -> Audio:
    duration = container.duration / av.time_base if container.duration is not None else 0.0
    return Audio(np.zeros(0, np.float32), False, duration if seconds is None else min(duration, seconds))


def audio_windows(audio: Audio, starts: np.ndarray, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """Windows of `seconds` from each of `starts` (seconds on the video's clock, such as a track's key-frame times)
    -> [K, S] float32, zero outside the audio, and a bool [K] mask of the windows at least half of which is real
    audio (False everywhere for a file without audio, which has no samples)."""
    starts = np.asarray(starts, dtype=np.float64)
    if starts.ndim != 1 or not seconds > 0:
        raise ValueError(f"audio_windows needs starts [K] and seconds > 0, got shape {starts.shape} and {seconds!r}")
    length = round(seconds * SAMPLE_RATE)
    index = np.round(starts * SAMPLE_RATE).astype(np.int64)[:, None] + np.arange(length)
    count = audio.samples.size
    real = (index >= 0) & (index < count)
    padded = np.append(audio.samples, 0.0).astype(np.float32, copy=False)  # index `count` reads the zero
    return padded[np.where(real, index, count)], 2 * real.sum(axis=1) >= length


def attach_audio(clip: Clip, path: str, seconds: float) -> Clip:
    """The clip with the audio window of `seconds` at each of its key frames (`Clip.audio`), NaN where a window is
    not at least half real audio, which an audio encoder turns into zeros and its has-audio flag."""
    audio = read_audio(path, seconds=float(clip.times.max(initial=0.0)) + seconds)
    windows, real = audio_windows(audio, clip.times, seconds)
    windows[~real] = np.nan
    clip.audio = windows
    return clip


def envelope(audio: Audio, fps: float) -> np.ndarray:
    """RMS of the samples in each interval [k / fps, (k + 1) / fps) that holds audio, the last over what it holds:
    the loudness curve on a video's frame clock, for audio-video sync. Each value integrates its whole interval, so
    no loudness change between two frame times is lost (RMS read at points would alias)."""
    if not fps > 0:
        raise ValueError(f"envelope needs fps > 0, got {fps!r}")
    count = audio.samples.size
    # One interval more than ceil() gives, so float rounding never drops the last; those past the end are cut.
    starts = np.floor(np.arange(math.ceil(count * fps / SAMPLE_RATE) + 1) * (SAMPLE_RATE / fps)).astype(np.int64)
    edges = np.append(starts[starts < count], count)
    energy = np.concatenate([[0.0], np.cumsum(np.square(audio.samples, dtype=np.float64))])
    return np.sqrt(np.diff(energy[edges]) / np.diff(edges)).astype(np.float32)


# --------------------------------------------------------------------------------------------------------
# The encoder family.


class AudioEncoder(FrozenEncoder):
    """Frozen audio encoder: [B,S] float32 mono windows at SAMPLE_RATE in [-1,1] -> [B, dim] float32.

    A window of NaN is absent audio (a video without an audio stream, or a window past its end): it encodes to zeros,
    and the last feature, `has_audio`, says which windows held audio, so a silent track and a missing one differ and
    every key frame still gets its row. `width` is the encoder's own features, `dim` adds the flag."""

    min_samples: int = 1
    width: int

    @property
    def dim(self) -> int:
        return self.width + 1

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        absent = torch.isnan(windows).any(dim=1) if windows.ndim == 2 else torch.zeros(0, dtype=torch.bool)
        features = super().forward(torch.nan_to_num(windows))
        features = torch.where(absent[:, None], torch.zeros_like(features), features)
        return torch.cat([features, (~absent).to(features.dtype)[:, None]], dim=1)

    def check(self, windows: torch.Tensor) -> None:
        if windows.ndim != 2 or not windows.is_floating_point() or windows.shape[1] < self.min_samples:
            raise ValueError(
                f"{type(self).__name__} expects float mono windows shaped [B,S] of {SAMPLE_RATE} Hz samples in "
                f"[-1,1], S >= {self.min_samples}; got {windows.dtype} {tuple(windows.shape)}"
            )


AUDIO_ENCODERS = EncoderRegistry("audio encoder")
register_audio_encoder = AUDIO_ENCODERS.register
create_audio_encoder = AUDIO_ENCODERS.create
list_audio_encoders = AUDIO_ENCODERS.names


# --------------------------------------------------------------------------------------------------------
# Weight-free log-mel statistics.

WINDOW = 400  # 25 ms Hann frames
HOP = 160  # every 10 ms
N_FFT = 512  # the frame zero-padded to a power of two: 257 bins of 31.25 Hz
MELS = 40
MFCCS = 13
F_MAX = SAMPLE_RATE / 2
_FLOOR = 1e-10  # of powers and energies before their log: silence gives finite features (-100 dB)
_SILENCE_DB = -50.0  # frames with RMS under -50 dBFS count as silent: below room tone at any usable recording level


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """The HTK mel scale: 1000 Hz is 1000 mel."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def mel_filterbank(bands: int = MELS, n_fft: int = N_FFT, rate: int = SAMPLE_RATE, f_max: float = F_MAX) -> np.ndarray:
    """[bands, n_fft // 2 + 1] triangular filters from 0 Hz to `f_max`, evenly spaced on the HTK mel scale, each
    peaking at 1 (HTK's, not Slaney's equal area: after the log a per-band gain is an offset that a head's
    standardisation removes)."""
    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(f_max), bands + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    hz = np.fft.rfftfreq(n_fft, 1.0 / rate)
    return np.clip(np.minimum((hz - lower) / (centre - lower), (upper - hz) / (upper - centre)), 0.0, None)


def _numbered(name: str, count: int) -> tuple[str, ...]:
    return tuple(f"{name}_{i:02d}" for i in range(count))


class LogmelStats(AudioEncoder):
    """Classic audio statistics of a window: the mean and std over its frames of 40 log-mel energies and of 13 MFCCs
    (the orthonormal DCT-II of the log-mel), frame RMS in dBFS (mean, std, max; 0 dBFS is a full-scale square), the
    fraction of silent frames, zero-crossing rate (crossings per sample, mean), spectral centroid (Hz, mean and std)
    and spectral flatness (geometric over arithmetic mean of the power spectrum, mean: near 0 for a tone, 0.56 for
    white noise).

    Frames are 25 ms every 10 ms; every feature is read from the same frames, the STFT's Hann window covering exactly
    the samples the time-domain features see. Powers and energies are floored at 1e-10, so a silent window gives
    finite values: -100 dBFS, silent fraction 1, and the floor's flat spectrum (flatness 1, centroid 4 kHz).
    Bump `version` whenever a formula changes: it invalidates cached features.
    """

    names: tuple[str, ...] = (
        *_numbered("logmel_mean", MELS), *_numbered("logmel_std", MELS),
        *_numbered("mfcc_mean", MFCCS), *_numbered("mfcc_std", MFCCS),
        "rms_db_mean", "rms_db_std", "rms_db_max", "silent", "zcr_mean",
        "centroid_mean", "centroid_std", "flatness_mean",
    )  # fmt: skip
    width = len(names)
    version = 1
    min_samples = WINDOW

    def __init__(self) -> None:
        super().__init__()
        constants = {
            "window": torch.hann_window(WINDOW),
            "filters": mel_filterbank(),
            "dct": scipy.fft.dct(np.eye(MELS), type=2, norm="ortho", axis=0)[:MFCCS],  # [13, 40]: dct @ x = DCT(x)
            "hz": np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE),  # each bin's frequency
        }
        for name, value in constants.items():  # buffers, so they follow the encoder to its device
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32), persistent=False)

    def identity(self) -> dict[str, Any]:
        return {
            "name": "logmel_stats",
            "sample_rate": SAMPLE_RATE,
            "frames": {"window": WINDOW, "hop": HOP, "n_fft": N_FFT, "taper": "hann"},
            "mel": {"bands": MELS, "scale": "htk", "f_max": F_MAX},
            "mfccs": MFCCS,
            "silence_dbfs": _SILENCE_DB,
            "version": self.version,
        }

    def encode(self, windows: torch.Tensor) -> torch.Tensor:
        # Padding by (N_FFT - WINDOW) / 2 puts frame k's centred Hann window on samples [HOP k, HOP k + WINDOW),
        # the frames `unfold` gives the time-domain features: both have 1 + (S - WINDOW) // HOP of them.
        side = (N_FFT - WINDOW) // 2
        padded = F.pad(windows, (side, side))
        spectrum = torch.stft(
            padded, N_FFT, hop_length=HOP, win_length=WINDOW, window=self.window, center=False, return_complex=True
        )
        power = spectrum.abs().square().transpose(1, 2).clamp_min(_FLOOR)  # [B,T,257]
        frames = windows.unfold(1, WINDOW, HOP)  # [B,T,400]
        logmel = (power @ self.filters.T).clamp_min(_FLOOR).log()  # [B,T,40]
        mfcc = logmel @ self.dct.T
        rms_db = 10.0 * frames.square().mean(dim=2).clamp_min(_FLOOR).log10()
        positive = frames >= 0
        centroid = (power @ self.hz) / power.sum(dim=2)
        logmel_std, logmel_mean = torch.std_mean(logmel, dim=1, correction=0)
        mfcc_std, mfcc_mean = torch.std_mean(mfcc, dim=1, correction=0)
        rms_std, rms_mean = torch.std_mean(rms_db, dim=1, correction=0)
        centroid_std, centroid_mean = torch.std_mean(centroid, dim=1, correction=0)
        scalars = (
            rms_mean,
            rms_std,
            rms_db.amax(dim=1),
            (rms_db < _SILENCE_DB).float().mean(dim=1),
            (positive[..., 1:] != positive[..., :-1]).float().mean(dim=(1, 2)),
            centroid_mean,
            centroid_std,
            (power.log().mean(dim=2).exp() / power.mean(dim=2)).mean(dim=1),
        )
        return torch.cat([logmel_mean, logmel_std, mfcc_mean, mfcc_std, torch.stack(scalars, dim=1)], dim=1)


@register_audio_encoder("logmel_stats")
def logmel_stats(weights: str, seed: int) -> AudioEncoder:
    if weights not in ("none", "random"):
        raise ValueError(f"logmel_stats has no weights (it is weight-free): use weights='none', got {weights!r}")
    return LogmelStats()


# --------------------------------------------------------------------------------------------------------
# Pretrained encoders through Hugging Face transformers: `hf:<repo id>` or `hf:<local folder>`.

# Self-supervised speech models: a convolutional feature encoder on the raw waveform (20 ms frames), then a
# transformer; their feature extractors only normalise the waveform.
WAVEFORM_MODELS = ("wav2vec2", "wav2vec2-conformer", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat")
SPECTROGRAM_MODELS = ("audio-spectrogram-transformer",)  # AST: 16x16 patches of a kaldi log-mel fbank
_AST_FRAME, _AST_HOP = 400, 160  # the AST extractor's fbank frames: 25 ms every 10 ms, only whole frames
# Config keys that never change the base model's vectors, or name where it was loaded from.
_CONFIG_NOISE = (
    *("_name_or_path", "transformers_version", "architectures", "id2label", "label2id", "dtype", "torch_dtype"),
)
_UNUSED_IN_EVAL = ("masked_spec_embed",)  # SpecAugment's mask vector: fine-tuned checkpoints may lack it


def _weight_files(folder: Path) -> list[Path]:
    """The weights transformers loads from `folder`, in its order of preference: safetensors before pickles, one
    file or the shards an index names."""
    for single in ("model.safetensors", "pytorch_model.bin"):
        index = f"{single}.index.json"
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            return [folder / index, *(folder / shard for shard in shards)]
    return []


def _json_digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))
    return hashlib.sha256(text.encode()).hexdigest()


class TransformersAudioEncoder(AudioEncoder):
    """A pretrained audio model of `transformers` (wav2vec2, HuBERT, WavLM and kin; AST), frozen: each window goes
    through the model's own feature extractor (the waveform normalisation or the log-mel fbank it was trained on,
    at 16 kHz, asserted) and the model; the vector pools its hidden states over the window's time.

    Pooling. A window is one quality sample: its vector should say what the whole window sounds like, whatever
    moment the noise or clipping falls on, and a mean over time does that with a fixed size for any window length
    (a CLS-style token would be the pretext task's, and wav2vec2-like models have none).
    - wav2vec2 family: the mean over the window's frames (one per 20 ms) of the last hidden state, then the mean of
      the middle layer's (layer L // 2 of L). Layer-wise analyses of these self-supervised models (Pasad et al.,
      2021, "Layer-wise analysis of a self-supervised speech representation model"; the SUPERB layer weights) find
      the last layers bent toward the pre-training objective and the middle ones richest in acoustic detail, which
      noise, codecs and clipping change; a head picks from both halves.
    - AST: the mean of the last hidden state over the patch tokens whose frames are all real audio. The extractor
      pads every window's fbank to `max_length` frames (10.24 s for the AudioSet models, trained on 10 s clips padded
      the same way) and the model runs on all of it, as it was trained, but the padding patches are left out of the
      mean: for a 1 s window they would be nine tenths of it. The two summary tokens (CLS, distillation) are the
      AudioSet classifier's and are left out too. Only the last layer: the model is trained supervised on sound
      events, whose last layer is the one that names them.

    Length. A window shorter than one output step (the conv encoder's receptive field, 400 samples for the base
    models; one patch of fbank frames for AST, 2800 samples for 16-frame patches) is refused by `check` rather than
    padded: padding would invent silence that the vector then describes. For AST a window longer than `max_length`
    fbank frames is refused too, as the extractor would silently cut it.
    """

    version = 1

    def __init__(self, model: Any, extractor: Any, weights: dict[str, Any], config_digest: str) -> None:
        super().__init__()
        import transformers

        self.model = model
        self.extractor = extractor
        config = model.config
        if getattr(extractor, "sampling_rate", None) != SAMPLE_RATE:
            raise ValueError(
                f"{type(model).__name__}: its feature extractor expects {extractor.sampling_rate} Hz audio; audio "
                f"windows are {SAMPLE_RATE} Hz mono"
            )
        self.spectrogram = config.model_type in SPECTROGRAM_MODELS
        self.max_samples: int | None = None
        if self.spectrogram:
            self.patch, self.stride, self.max_frames = config.patch_size, config.time_stride, extractor.max_length
            self.frequency_patches = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
            self.time_patches = (config.max_length - config.patch_size) // config.time_stride + 1
            if config.max_length != extractor.max_length or config.num_mel_bins != extractor.num_mel_bins:
                raise ValueError(
                    f"{type(model).__name__}: the feature extractor's max_length/num_mel_bins "
                    f"({extractor.max_length}/{extractor.num_mel_bins}) are not the model's "
                    f"({config.max_length}/{config.num_mel_bins})"
                )
            self.min_samples = _AST_FRAME + (self.patch - 1) * _AST_HOP
            self.max_samples = _AST_FRAME + (self.max_frames - 1) * _AST_HOP + _AST_HOP - 1
            layers = {"last": config.num_hidden_layers}
            tokens = "mean over the patch tokens of real fbank frames (CLS and distillation tokens left out)"
        else:
            self.min_samples = _shortest_input(model)
            layers = {"last": config.num_hidden_layers, "middle": config.num_hidden_layers // 2}
            tokens = "mean over frames"
        self.layers = layers
        self.width = config.hidden_size * len(layers)
        self._identity = {
            "name": "hf",
            "class": type(model).__name__,
            "model_type": config.model_type,
            "config_sha256": config_digest,
            "feature_extractor": {
                "class": type(extractor).__name__,
                "sha256": _json_digest({k: v for k, v in extractor.to_dict().items() if k != "processor_class"}),
            },
            "weights": weights,
            "pooling": {"tokens": tokens, "layers": layers},
            "attention": getattr(config, "_attn_implementation", None),
            "sample_rate": SAMPLE_RATE,
            "transformers": transformers.__version__,
            "version": self.version,
        }
        if self.spectrogram:
            from transformers.utils import is_speech_available

            self._identity["fbank"] = "torchaudio" if is_speech_available() else "numpy"  # they differ a little

    def identity(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._identity))

    def check(self, windows: torch.Tensor) -> None:
        super().check(windows)
        if self.max_samples is not None and windows.shape[1] > self.max_samples:
            raise ValueError(
                f"{self._identity['class']} sees at most {self.max_frames} fbank frames "
                f"({self.max_samples / SAMPLE_RATE:.2f} s, {self.max_samples} samples at {SAMPLE_RATE} Hz): "
                f"got windows of {windows.shape[1]} samples; use a shorter audio_seconds"
            )

    def encode(self, windows: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        batch = self.extractor(list(windows.cpu().numpy()), sampling_rate=SAMPLE_RATE, return_tensors="pt")
        inputs = batch["input_values"].to(device=device, dtype=torch.float32)
        out = self.model(input_values=inputs, output_hidden_states=not self.spectrogram)
        if self.spectrogram:
            frames = min(1 + (windows.shape[1] - _AST_FRAME) // _AST_HOP, self.max_frames)
            real = (frames - self.patch) // self.stride + 1  # time patches over real frames only
            patches = out.last_hidden_state[:, 2:].unflatten(1, (self.frequency_patches, self.time_patches))
            return patches[:, :, :real].mean(dim=(1, 2))
        middle = out.hidden_states[self.layers["middle"]]
        return torch.cat([out.last_hidden_state.mean(dim=1), middle.mean(dim=1)], dim=1)


def _shortest_input(model: Any) -> int:
    """The fewest samples that give the model's conv feature encoder one output frame (its receptive field)."""
    length = model._get_feat_extract_output_lengths
    low, high = 1, 1 << 22  # the bisection's invariant: `high` gives a frame, `low - 1` does not
    while low < high:
        mid = (low + high) // 2
        if int(length(torch.tensor(mid))) >= 1:
            high = mid
        else:
            low = mid + 1
    return low


def _config_dict(config: Any) -> dict[str, Any]:
    return {k: v for k, v in config.to_dict().items() if k not in _CONFIG_NOISE}


@AUDIO_ENCODERS.register_prefix("hf:")
def transformers_audio_encoder(name: str, weights: str, seed: int) -> TransformersAudioEncoder:
    """`hf:<repo id>[@revision]` (from the local Hugging Face cache) or `hf:<folder>` (a save_pretrained folder).

    weights: "hub", the pretrained weights of that cache snapshot or folder; "random", the architecture of its
    config.json with a seeded random init (tests, smoke runs: still needs the config and the feature extractor's
    preprocessor_config.json on disk). Nothing is downloaded: a model not on disk raises WeightsNotFound saying how
    to bring it."""
    if weights not in ("hub", "random"):
        raise ValueError(
            f"hf:{name}: weights must be 'hub' (the pretrained weights of the cache or folder) or 'random' (seeded "
            f"init of its config), got {weights!r}"
        )
    folder = model_folder(name)
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

    for needed in ("config.json", "preprocessor_config.json"):
        if not (folder / needed).is_file():
            raise WeightsNotFound(
                f"hf:{name}: {folder} has no {needed}; the model is incomplete on this machine (run "
                f"`hf download <repo>` on a machine with internet and copy it here)"
            )
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    if config.model_type not in WAVEFORM_MODELS + SPECTROGRAM_MODELS:
        raise ValueError(
            f"hf:{name} is a {config.model_type!r} model; audio encoders take "
            f"{', '.join(WAVEFORM_MODELS + SPECTROGRAM_MODELS)}"
        )
    extractor = AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
    if weights == "random":
        with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's RNG stream
            torch.manual_seed(seed)
            model = AutoModel.from_config(config).float()
        identity: dict[str, Any] = {"init": "random", "seed": seed}
    else:
        files = _weight_files(folder)
        if not files or not all(f.is_file() for f in files):
            raise WeightsNotFound(
                f"hf:{name}: no weights in {folder} (looked for model.safetensors, pytorch_model.bin or their "
                f"sharded indexes with all their shards); download the whole repository (`hf download <repo>`), or "
                f"use weights=random"
            )
        model, info = AutoModel.from_pretrained(
            folder, config=config, local_files_only=True, dtype=torch.float32, output_loading_info=True
        )
        missing = sorted(k for k in info["missing_keys"] if not k.endswith(_UNUSED_IN_EVAL))
        if missing or info["mismatched_keys"]:
            raise ValueError(
                f"hf:{name}: the weights in {folder} do not fill {type(model).__name__} (missing "
                f"{preview_keys(missing)}, mismatched {preview_keys(sorted(map(str, info['mismatched_keys'])))}): "
                f"they would run partly random"
            )
        identity = {"sha256": files_digest(files), "files": [f.name for f in files]}
    return TransformersAudioEncoder(model.eval(), extractor, identity, _json_digest(_config_dict(config)))
