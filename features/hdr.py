"""HDR decoded as HDR: colour tags, native-depth planes, and three views of them through our own colour maths.

Why a module of its own: every common video path drops HDR10 to 8-bit BT.709 (OpenCV, decord), and swscale's
YUV->RGB in PyAV has had 10-bit colour bugs (PyAV #2034, #2192) and falls back to BT.601 for untagged streams
(#1378, #2230). Here the 10-bit code values come out of the decoder untouched (uint16 planes), the matrix, range and
transfer come from the stream's tags (or an explicit fallback), and every conversion is numpy we can test against
the standards' own numbers (features.colour). A leaf: numpy, pandas (the colour facts table), torch (resampling
clips), av, features.decode and features.colour only. It registers the `hdr` decoder (every frame through these
conversions, `light=` choosing the view).

Facts used (ITU-T H.273 code points, as FFmpeg and PyAV report them as ints): HDR10 = 10-bit 4:2:0 Y'CbCr, BT.2020
primaries (9), BT.2020 non-constant-luminance matrix (9), SMPTE ST 2084 PQ transfer (16), limited range (1). HLG is
transfer 18 (ARIB STD-B67); BT.2100 defines PQ and HLG only at 10 and 12 bits.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import av
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from features.colour import PQ_PEAK, bt1886_eotf, ictcp, pq_eotf, primaries_matrix, yuv_to_rgb
from features.decode import (
    DECODERS,
    Clip,
    Decoder,
    FrameSampling,
    MediaError,
    open_container,
    probe_video,
    video_stream,
)

# --- colour tags ------------------------------------------------------------------------------------------------------

# H.273 code points -> our short names. Transfers 1 (BT.709), 6 (BT.601/SMPTE 170M), 14 and 15 (BT.2020 10/12-bit)
# are one and the same OETF curve, displayed through BT.1886: one name, "bt709". Unspecified (2) and reserved (0, 3)
# are absent, so they read as "unknown" and are filled by the fallback; specified values outside these maps read as
# "h273-<n>", tagged but not supported by the views (they raise ValueError rather than guess).
TRANSFERS = {1: "bt709", 4: "gamma22", 5: "gamma28", 6: "bt709", 8: "linear", 13: "srgb", 14: "bt709", 15: "bt709"}
TRANSFERS |= {16: "pq", 18: "hlg"}
PRIMARIES = {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020", 11: "smpte431"}
PRIMARIES |= {12: "smpte432"}
MATRICES = {0: "rgb", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "ycgco", 9: "bt2020nc"}
MATRICES |= {10: "bt2020c", 14: "ictcp"}
RANGES = {1: "limited", 2: "full"}
_UNSPECIFIED = {"transfer": (0, 2, 3), "primaries": (0, 2, 3), "matrix": (2, 3), "range": (0,)}


@dataclass(frozen=True)
class ColourTags:
    """How a stream's code values are to be read: `transfer` ("pq", "hlg", "bt709", ...), `primaries` ("bt2020",
    "bt709", ...), `matrix` ("bt2020nc", "bt709", ...), `range` ("limited" or "full"), each "unknown" when untagged,
    and `bit_depth` of the pixel format (8, 10, ...)."""

    transfer: str
    primaries: str
    matrix: str
    range: str
    bit_depth: int

    @property
    def is_hdr(self) -> bool:
        return self.transfer in ("pq", "hlg")


HDR10 = ColourTags("pq", "bt2020", "bt2020nc", "limited", 10)
# What an untagged 8-bit stream is taken to be: BT.709 SDR in limited range (not swscale's BT.601 default, which is
# for standard-definition video; the challenge's SDR clips are HD and UHD encodes).
SDR = ColourTags("bt709", "bt709", "bt709", "limited", 8)
NAME_TAGS = {"hdr10": HDR10, "sdr": SDR}  # tokens of names like 1_Basketball_Afternoon_HDR10_960x540_800k.mp4


def _unspecified(field: str, value) -> bool:
    """None (not reported), unspecified or reserved; 0 is a real matrix (RGB), so "or 0" would not do."""
    return value is None or int(value) in _UNSPECIFIED[field]


def _tag_name(table: dict[int, str], value, field: str) -> str:
    return "unknown" if _unspecified(field, value) else table.get(int(value), f"h273-{int(value)}")


def tags_from_name(path: str | os.PathLike) -> ColourTags | None:
    """HDR10 or SDR tags when exactly one of the tokens `HDR10` / `SDR` (any case, between `_ - . space`) is in the
    file name, as in the HDRSDR-VQA names `{id}_{content}_{HDR10|SDR}_{W}x{H}_{kbps}k.mp4`; None otherwise (both or
    neither: no guess)."""
    tokens = {token.lower() for token in re.split(r"[_\-. ]+", os.path.basename(os.fspath(path)))}
    found = [tags for token, tags in NAME_TAGS.items() if token in tokens]
    return found[0] if len(found) == 1 else None


def _bit_depth(video_format: av.VideoFormat) -> int:
    """From the components, not the name (8-bit nv12 has "12" in its name)."""
    return max(component.bits for component in video_format.components)


def untagged(bit_depth: int) -> ColourTags:
    """What a stream neither tagged nor named is taken to be: HDR10 at 10 bits and more, SDR below. In the HDR/SDR
    challenges a 10-bit stream is HDR10 and an 8-bit one SDR; the extraction table says how many files it assumed."""
    return HDR10 if bit_depth >= 10 else SDR


def read_tags(
    path: str | os.PathLike, *, default: ColourTags | None = None, allow_8bit_hdr: bool = False
) -> tuple[ColourTags, str]:
    """The first video stream's colour tags and where they came from.

    Each of transfer, primaries, matrix and range is taken from the stream (the codec context, else the first
    decoded frame) where the stream specifies it; an unspecified field is filled from the file name's HDR10/SDR
    token (tags_from_name) if it has one, else from `default` (None: `untagged` at the stream's depth). The stream
    wins a conflict with the name: it is what the decoder delivers. `bit_depth` always comes from the pixel format
    (the default's is ignored). The second value names the source of the transfer, the tag that decides HDR or SDR
    and the EOTF: "stream", "file name" or "default".

    An HDR transfer (PQ or HLG) at under 10 bits raises MediaError naming the file: BT.2100 defines both only at 10
    and 12 bits, 8-bit PQ bands visibly, and in practice it means a mistagged stream (an 8-bit SDR re-encode that
    kept the HDR tags, or an 8-bit file named HDR10). `allow_8bit_hdr=True` accepts it as tagged.
    """
    path = os.fspath(path)
    with open_container(path) as container:
        if not container.streams.video:
            raise MediaError(path, "no video stream")
        stream = container.streams.video[0]
        codec = stream.codec_context
        raw = {
            "transfer": codec.color_trc,
            "primaries": codec.color_primaries,
            "matrix": codec.colorspace,
            "range": codec.color_range,
        }
        video_format = codec.format
        if video_format is None or any(_unspecified(f, value) for f, value in raw.items()):
            try:  # some streams carry their VUI in-band only: the first frame's tags
                frame = next(container.decode(stream), None)
            except av.FFmpegError as error:
                raise MediaError(path, f"cannot decode the first frame ({error})") from error
            if frame is not None:
                frame_raw = (frame.color_trc, frame.color_primaries, frame.colorspace, frame.color_range)
                for field_name, value in zip(raw, frame_raw):
                    if _unspecified(field_name, raw[field_name]):
                        raw[field_name] = value
                video_format = video_format or frame.format
        if video_format is None:
            raise MediaError(path, "unknown pixel format")
    tables = {"transfer": TRANSFERS, "primaries": PRIMARIES, "matrix": MATRICES, "range": RANGES}
    stream_tags = {f: _tag_name(tables[f], raw[f], f) for f in raw}
    named = tags_from_name(path)
    depth = _bit_depth(video_format)
    fallback, fallback_source = (named, "file name") if named is not None else (default or untagged(depth), "default")
    merged = {f: value if value != "unknown" else getattr(fallback, f) for f, value in stream_tags.items()}
    tags = ColourTags(**merged, bit_depth=depth)
    source = "stream" if stream_tags["transfer"] != "unknown" else fallback_source
    if tags.is_hdr and tags.bit_depth < 10 and not allow_8bit_hdr:
        raise MediaError(
            path,
            f"{tags.bit_depth}-bit stream with an HDR transfer ({tags.transfer}, from the {source}): BT.2100 defines "
            "PQ and HLG only at 10 and 12 bits, so the tags are probably wrong (allow_8bit_hdr=True accepts them)",
        )
    return tags, source


# --- native-depth planes ----------------------------------------------------------------------------------------------


class Planes(NamedTuple):
    """One decoded frame's planes as stored (no display rotation applied): Y [H, W], U and V at their own
    (subsampled) resolution, all uint16 holding the native code values (0..1023 at 10 bits, 0..255 at 8), and the
    frame's time in seconds from the stream's start. `planes[:3]` is the (Y, U, V) triple."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    t: float


def _supported(video_format: av.VideoFormat) -> bool:
    """Three-plane little-endian Y'CbCr of at most 16 bits (yuv420p, yuv420p10le, yuv422p10le, yuv444p12le, yuvj*);
    not semi-planar nv12/p010 (two planes), alpha, RGB, greyscale or big-endian formats."""
    components = video_format.components
    return (
        not video_format.is_rgb
        and not video_format.is_big_endian
        and sorted(c.plane for c in components) == [0, 1, 2]
        and _bit_depth(video_format) <= 16
    )


def _frame_planes(frame: av.VideoFrame, t: float) -> Planes:
    """The planes copied out of FFmpeg's buffers, each row cut to the plane's width (line_size pads rows)."""
    dtype = np.dtype("<u2") if _bit_depth(frame.format) > 8 else np.dtype(np.uint8)
    arrays = []
    for plane in frame.planes:
        rows = np.frombuffer(plane, dtype=dtype).reshape(plane.height, plane.line_size // dtype.itemsize)
        arrays.append(rows[:, : plane.width].astype(np.uint16))  # astype copies, also for uint16
    return Planes(arrays[0], arrays[1], arrays[2], t)


def _decoded_frames(path: str, threads: int = 0) -> Iterator[tuple[int, av.VideoFrame, float]]:
    """(index, frame, time from the stream's start) of the first video stream, in presentation order; MediaError for
    a file without video or in a pixel format these planes cannot hold. A decoding failure propagates as FFmpegError,
    for the caller to decide whether what it already has is enough."""
    with open_container(path) as container:
        stream = video_stream(container, path, threads)
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        rate = float(stream.average_rate or 25)
        for index, frame in enumerate(container.decode(stream)):
            if not _supported(frame.format):
                raise MediaError(path, f"pixel format {frame.format.name} is not three-plane little-endian YUV")
            yield index, frame, frame.time - start if frame.time is not None else index / rate


def decode_keyed(
    path: str | os.PathLike, times: Sequence[float], run: int = 1, threads: int = 0
) -> tuple[list[Planes], list[list[Planes]]]:
    """The key frames, the first frame at or after each of `times` (seconds from the stream's start; a frame covering
    several times once), and with `run` > 1 the runs of `run` consecutive frames starting at each (only whole runs:
    a clip cut short by the end would fake a freeze). MediaError naming the file where no key frame can be had."""
    path, targets = os.fspath(path), sorted(times)
    keys: list[Planes] = []
    runs: list[list[Planes]] = []
    next_target = 0
    try:
        for _, frame, t in _decoded_frames(path, threads):
            open_runs = [r for r in runs if len(r) < run]
            if next_target >= len(targets) and not open_runs:
                break
            planes = None
            if next_target < len(targets) and t + 1e-6 >= targets[next_target]:
                planes = _frame_planes(frame, t)
                keys.append(planes)
                if run > 1:
                    runs.append([])
                    open_runs.append(runs[-1])
                while next_target < len(targets) and t + 1e-6 >= targets[next_target]:
                    next_target += 1
            for open_run in open_runs:
                open_run.append(planes or _frame_planes(frame, t))
    except av.FFmpegError as error:
        if not keys:
            raise MediaError(path, f"decoding failed before the first frame asked for ({error})") from error
    if not keys and targets:
        raise MediaError(path, "no decodable video frame at the times asked for")
    return keys, [r for r in runs if len(r) == run]


def decode_planes(
    path: str | os.PathLike, frames: int | Sequence[int] | None = None, *, times: Sequence[float] | None = None
) -> list[Planes]:
    """Frames of the first video stream as native-depth planes (see Planes), never through 8 bits or swscale.

    Exactly one of: `frames` an int N (the first N frames), `frames` a sequence of decoded-frame indices (0-based,
    presentation order), or `times` in seconds (the first frame at or after each time, relative to the stream's
    start, as features.decode.sample_video does; a frame covering several times is returned once). A clip shorter
    than asked gives fewer frames; none at all, an unsupported pixel format or a decoding failure before the first
    frame raise MediaError naming the file."""
    path = os.fspath(path)
    if (frames is None) == (times is None):
        raise ValueError("decode_planes: give exactly one of frames (a count or indices) and times")
    if times is not None:
        return decode_keyed(path, times)[0]
    wanted = set(range(int(frames))) if isinstance(frames, int | np.integer) else {int(i) for i in frames}
    kept: list[Planes] = []
    try:
        for index, frame, t in _decoded_frames(path):
            if index > max(wanted, default=-1):
                break
            if index in wanted:
                kept.append(_frame_planes(frame, t))
    except av.FFmpegError as error:
        if not kept:
            raise MediaError(path, f"decoding failed before the first frame asked for ({error})") from error
    if not kept and wanted:
        raise MediaError(path, "no decodable video frame at the frames asked for")
    return kept


# --- the three views --------------------------------------------------------------------------------------------------


def code_values(planes: Sequence[np.ndarray], tags: ColourTags) -> np.ndarray:
    """View "code values": the non-linear R'G'B' the stream encodes, float32 [3, H, W] in [0, 1] at full precision
    (PQ-coded for HDR10, gamma-coded for SDR), through our matrix (yuv_to_rgb). `planes` is (Y, U, V[, t])."""
    y, u, v = planes[:3]
    return yuv_to_rgb(y, u, v, tags.matrix, tags.range, tags.bit_depth)


def _absolute_light(planes: Sequence[np.ndarray], tags: ColourTags, sdr_peak: float, sdr_black: float) -> np.ndarray:
    """Linear BT.2020 RGB in cd/m^2, float64 [3, H, W]: float32 PQ would lose ~1e-5 relative (cancellation in
    N^(1/m2) - c1), small against a 10-bit step (~1e-2) but free to avoid."""
    rgb = code_values(planes, tags).astype(np.float64)
    if tags.transfer == "pq":
        nits = pq_eotf(rgb)
    elif tags.transfer == "bt709":
        nits = bt1886_eotf(rgb, peak=sdr_peak, black=sdr_black)
    else:
        raise ValueError(f"transfer {tags.transfer!r} has no EOTF here (pq and bt709 only)")
    if tags.primaries != "bt2020":
        nits = np.einsum("ij,jhw->ihw", primaries_matrix(tags.primaries, "bt2020"), nits)
    return nits


def linear_light(
    planes: Sequence[np.ndarray], tags: ColourTags, *, sdr_peak: float = 100.0, sdr_black: float = 0.0
) -> np.ndarray:
    """View "linear light": absolute linear RGB in BT.2020 primaries, divided by 10000 cd/m^2, float32 [3, H, W].

    Fixed scale, not per-frame normalisation: dividing by each frame's maximum would erase exactly what separates
    HDR from SDR and a bright frame from a dark one (peak luminance, the level of diffuse white), and make the same
    pixel mean different things in a reference and its distorted version. /10000 is PQ's own peak, so 1 is the
    brightest a PQ signal can say; SDR white (sdr_peak, 100 cd/m^2 by default through BT.1886) lands at 0.01.
    BT.2020 primaries for all: the container of both, so an SDR (BT.709) pixel and an HDR pixel of the same colour
    give the same triple (BT.709 -> BT.2020 by the linear BT.2087 matrix). PQ is applied per component (BT.2100);
    HLG and other transfers raise ValueError."""
    return (_absolute_light(planes, tags, sdr_peak, sdr_black) / PQ_PEAK).astype(np.float32)


def perceptual(
    planes: Sequence[np.ndarray], tags: ColourTags, *, sdr_peak: float = 100.0, sdr_black: float = 0.0
) -> np.ndarray:
    """View "perceptual": BT.2100 ICtCp (features.colour.ictcp), float32 [3, H, W], of absolute luminance
    (linear_light), so HDR and SDR share one perceptual axis. ICtCp because it is the standard colour representation
    built on PQ: its steps are near-uniform in luminance and in colour alike."""
    return ictcp(_absolute_light(planes, tags, sdr_peak, sdr_black)).astype(np.float32)


# --- the decoder ------------------------------------------------------------------------------------------------------

# The representations a backbone can be shown (FrameSampling.light), each [H, W, 3] float32 in [0, 1]: the stream's
# code values (the decoder's own), linear light, or perceptual ICtCp with Ct and Cp moved by +0.5 into [0, 1] (the
# range the views' resampling keeps; a neutral grey has Ct = Cp = 0.5).
LIGHTS = ("code", "linear", "perceptual")


def light_frame(planes: Sequence[np.ndarray], tags: ColourTags, light: str) -> np.ndarray:
    """One frame's planes as `light` (see LIGHTS), [H, W, 3] float32 in [0, 1]."""
    if light == "code":
        rgb = code_values(planes, tags)
    elif light == "linear":
        rgb = linear_light(planes, tags)
    elif light == "perceptual":
        rgb = perceptual(planes, tags)
        rgb[1:] += 0.5
        np.clip(rgb, 0.0, 1.0, out=rgb)
    else:
        raise ValueError(f"light={light!r}: expected one of {', '.join(LIGHTS)}")
    return np.ascontiguousarray(rgb.transpose(1, 2, 0))


def _short_side_scaled(frame: np.ndarray, side: int) -> np.ndarray:
    """[H, W, 3] float with its short side scaled to `side` (antialiased bilinear), as the clips of motion encoders
    are decoded small (features.decode.FrameSampling.clip_side); 0 keeps it."""
    if not side:
        return frame
    height, width = frame.shape[:2]
    scale = side / min(height, width)
    size = max(1, round(height * scale)), max(1, round(width * scale))
    pixels = torch.from_numpy(frame).permute(2, 0, 1)[None]
    return F.interpolate(pixels, size=size, mode="bilinear", antialias=True)[0].permute(1, 2, 0).clamp_(0, 1).numpy()


def sample_hdr_video(path: str, sampling: FrameSampling, threads: int = 0) -> Clip:
    """The video decoder of HDR and SDR alike: key frames (and clips) at native depth through our own conversion
    into `sampling.light` (code values by default), float32 frames [T, H, W, 3]; the key frames' planes kept for
    full-reference metrics; the colour tags and where they came from in `info`. Display rotation is not applied
    (challenge HDR masters are stored upright)."""
    tags, source = read_tags(path)
    light = sampling.light or LIGHTS[0]
    keys, runs = decode_keyed(path, sampling.targets(), sampling.clip, threads)
    frames = np.stack([light_frame(planes, tags, light) for planes in keys])
    clips = None
    if sampling.clip > 1:
        whole = [[_short_side_scaled(light_frame(p, tags, light), sampling.clip_side) for p in run] for run in runs]
        clips = np.stack([np.stack(run) for run in whole]) if whole else np.empty((0, sampling.clip, 0, 0, 3))
    info = {"width": keys[0].y.shape[1], "height": keys[0].y.shape[0], "colour": asdict(tags), "colour_from": source}
    times = np.asarray([planes.t for planes in keys], dtype=np.float32)
    return Clip(frames=frames, times=times, info=info, clips=clips, planes=keys)


def colour_facts(paths: Sequence[str], threads: int = 4) -> pd.DataFrame:
    """Per file, the colour tags the decoder reads it with and where the transfer came from ("stream", "file name"
    or "default"), or why it cannot be read (`error`): what an extraction records beside the cache."""

    def facts(path: str) -> dict:
        try:
            tags, source = read_tags(path)
        except MediaError as error:
            return {"path": path, "error": error.reason}
        return {"path": path, **asdict(tags), "colour_from": source, "error": ""}

    with ThreadPoolExecutor(max(1, min(threads, len(paths)))) as pool:
        rows = list(pool.map(facts, paths))
    columns = ["path", *(f.name for f in fields(ColourTags)), "colour_from", "error"]
    return pd.DataFrame(rows, columns=columns)


HDR_DECODING = "features.hdr: native-depth planes, own BT.709/BT.2020 YUV->RGB, H.273 tags else name else depth"
DECODERS.register("hdr")(Decoder(sample_hdr_video, HDR_DECODING, True, probe_video, LIGHTS, colour_facts))
