"""Decoding media into the frames a view needs, and nothing more.

Video goes through PyAV (FFmpeg in the wheel). Reference frames must all be decoded (inter-frame coding), but a
non-reference frame before the next target time is skipped unread (no other frame is predicted from it, so the
frames kept are bit-identical), and only the key frames kept are converted to RGB: at 1 fps most of a clip's
frames are neither, and skipping them makes sampling about 1.6 times faster on x264 clips with B-frames.
High-bit-depth video (10-bit HDR10, for instance) is converted to 16-bit RGB, never silently to 8 bits.

Images go through Pillow, except 16-bit PNGs, which Pillow reduces to 8 bits in colour: PyAV decodes those to 16-bit
RGB. An image is a clip of one frame (T=1), so views and the cache treat both media alike.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import av
import numpy as np
import pandas as pd
from PIL import Image

from common.registry import Registry


class MediaError(Exception):
    """A media file that cannot give the frames asked for; the message names the file and the reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def unreadable(path: str, what: str, error: Exception) -> MediaError:
    """The decoder's own words, except for an empty file: FFmpeg and Pillow both call that invalid data."""
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return MediaError(path, "empty file (0 bytes)")
    return MediaError(path, f"{what} ({type(error).__name__}: {error})")


@dataclass(frozen=True)
class FrameSampling:
    """Key frames at `fps` per second, the k-th at time (k + phase) / fps: phase 0 takes the first frame of each
    second (as the KVQ winners did), 0.5 the middle one. At most `frames` are kept; shorter videos give fewer.

    With `clip` > 1, each key frame also starts a clip of `clip` consecutive decoded frames (the key frame first),
    for motion encoders, decoded in the same pass; `clip_side` > 0 scales the clips' frames (short side to it, by
    FFmpeg, before they become arrays), so eight frames per key time cost little memory at 1080p."""

    frames: int = 8
    fps: float = 1.0
    phase: float = 0.0
    clip: int = 1
    clip_side: int = 0
    audio_seconds: float = 0.0  # > 0: the audio window starting at each key frame is decoded too (features.audio)
    light: str = ""  # what the pixels hold, for decoders that offer a choice (Decoder.lights); "": the decoder's own

    def __post_init__(self):
        invalid = self.frames < 1 or self.fps <= 0 or not 0.0 <= self.phase < 1.0 or self.clip < 1
        if invalid or self.clip_side < 0 or self.audio_seconds < 0:
            raise ValueError(
                f"invalid sampling {self}: need frames >= 1, fps > 0, 0 <= phase < 1, clip >= 1, clip_side >= 0 "
                "and audio_seconds >= 0"
            )

    def targets(self) -> np.ndarray:
        return (np.arange(self.frames) + self.phase) / self.fps

    def shifted(self, offset: float) -> FrameSampling:
        """The same sampling `offset` of a period later, wrapping within the period (a temporal test-time view)."""
        return dataclasses.replace(self, phase=(self.phase + offset) % 1.0)


@dataclass
class Clip:
    """Sampled frames [T, H, W, 3] (uint8, or uint16 for high-bit-depth sources) and their times in seconds; with
    clips asked for, `clips` [C, L, h, w, 3] holds the consecutive frames from the first C key frames (C < T where
    the video ends before the last key frames' clips are whole: a clip is never padded, which would fake a freeze)."""

    frames: np.ndarray
    times: np.ndarray
    info: dict = field(default_factory=dict)
    clips: np.ndarray | None = None
    audio: np.ndarray | None = None  # [T, S] the audio window at each key frame, NaN where it holds no real audio
    planes: list | None = None  # the key frames' native-depth planes, where the decoder keeps them (features.hdr)
    reference: Clip | None = None  # the reference's frames at the same times, for a full-reference pair


def _rgb_format(video_format: av.VideoFormat) -> str:
    """From the components' bit depth, not the name: 8-bit nv12 and yuv410p have "12" and "10" in theirs."""
    high_bit_depth = max(component.bits for component in video_format.components) > 8
    return "rgb48le" if high_bit_depth else "rgb24"


def _clip_frame(frame: av.VideoFrame, side: int, rgb: str) -> np.ndarray:
    """A clip's frame as an array, its short side scaled to `side` (0: as decoded)."""
    if not side:
        return frame.to_ndarray(format=rgb)
    scale = side / min(frame.width, frame.height)
    width, height = max(1, round(frame.width * scale)), max(1, round(frame.height * scale))
    return frame.reformat(width=width, height=height, format=rgb).to_ndarray()


def open_container(path: str) -> av.container.InputContainer:
    """The media container, or MediaError naming the file and FFmpeg's reason (an empty file said as such)."""
    try:
        return av.open(path)
    except (av.FFmpegError, OSError) as error:
        raise unreadable(path, "cannot open", error) from error


def video_stream(container: av.container.InputContainer, path: str, threads: int = 0) -> av.video.VideoStream:
    """The container's first video stream set to decode on `threads` FFmpeg threads (0: as many as FFmpeg likes), or
    MediaError naming the file that has none."""
    if not container.streams.video:
        raise MediaError(path, "no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    stream.thread_count = threads
    return stream


def sample_video(path: str, sampling: FrameSampling, threads: int = 0) -> Clip:
    """Decodes `path` once, front to back, keeping the first frame at or after each target time (and the clips that
    start there, see FrameSampling), on `threads` FFmpeg threads (0: as many as FFmpeg likes)."""
    with open_container(path) as container:
        stream = video_stream(container, path, threads)
        codec = stream.codec_context
        targets = sampling.targets()
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        fallback_rate = float(stream.average_rate or 25)
        kept, times, next_target, rgb, last, rotation, index = [], [], 0, None, None, 0, 0
        clips: list[list[np.ndarray]] = []  # one per key frame kept, filled until `sampling.clip` long
        done = False

        def collecting() -> bool:
            return bool(clips) and len(clips[-1]) < sampling.clip

        try:
            for packet in container.demux(stream):
                # Until the first key frame is kept, every frame may become the stand-in last frame of a short clip;
                # a clip being collected needs every frame, reference or not.
                if kept and packet.pts is not None and not collecting():  # past the last target only a clip reads on
                    early = float(packet.pts * stream.time_base) - start + 1e-6 < targets[next_target]
                    codec.skip_frame = "NONREF" if early else "DEFAULT"
                for frame in codec.decode(packet):
                    t = frame.time - start if frame.time is not None else index / fallback_rate
                    index += 1
                    rgb = rgb or _rgb_format(frame.format)
                    for open_clip in clips:  # clips longer than a sampling period overlap the next key frames
                        if len(open_clip) < sampling.clip:
                            open_clip.append(_clip_frame(frame, sampling.clip_side, rgb))
                    if next_target < len(targets) and t + 1e-6 >= targets[next_target]:
                        rotation = frame.rotation
                        kept.append(frame.to_ndarray(format=rgb))
                        times.append(t)
                        if sampling.clip > 1:
                            clips.append([_clip_frame(frame, sampling.clip_side, rgb)])
                        # A frame can cover several targets in very low frame-rate video; it is kept once.
                        next_target = int(np.searchsorted(targets, t + 1e-6, side="right"))
                    elif not kept:
                        last = (frame, t)
                    done = next_target >= len(targets) and not collecting()
                    if done:
                        break
                if done:
                    break
        except av.FFmpegError as error:
            if not kept:
                raise MediaError(path, f"decoding failed before the first key frame ({error})") from error
        if not kept and last is not None:  # the clip ends before the first target time: its last frame stands in
            kept, times = [last[0].to_ndarray(format=_rgb_format(last[0].format))], [last[1]]
            rotation = last[0].rotation
        if not kept:
            raise MediaError(path, "no decodable video frame")
        frames = upright(np.stack(kept), rotation)
        whole = [upright(np.stack(c), rotation) for c in clips if len(c) == sampling.clip]
        stacked = None
        if sampling.clip > 1:
            stacked = np.stack(whole) if whole else np.empty((0, sampling.clip, 0, 0, 3), frames.dtype)
        info = {
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "pix_fmt": stream.codec_context.pix_fmt,
            "codec": stream.codec_context.name,
            "rotation": rotation,
            "fps": float(stream.average_rate or 0.0),
        }
    return Clip(frames=frames, times=np.asarray(times, dtype=np.float32), info=info, clips=stacked)


def upright(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Frames as displayed: phones store portrait video landscape with a display-matrix rotation (degrees
    counter-clockwise), and a model should see what the raters saw."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(frames, turns, axes=(1, 2))) if turns else frames


# --- images -----------------------------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXIF_ORIENTATION = 0x0112
# EXIF orientation -> how to turn the stored array [H, W, C] upright (the transforms of PIL's exif_transpose).
_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def _is_16bit_png(path: str) -> bool:
    """From the IHDR chunk, which a valid PNG must start with: signature, length, "IHDR", width, height, bit depth."""
    with open(path, "rb") as handle:
        head = handle.read(25)
    return head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR" and head[24] == 16


def on_white(rgba: np.ndarray) -> np.ndarray:
    """[H, W, 4] -> [H, W, 3], composited over white in integer arithmetic (exact, and no float copy of the image).

    White, not black: transparent regions of portraits and product shots are meant to be seen on a light page, and
    dropping alpha would show whatever colour the encoder left under it."""
    top = np.iinfo(rgba.dtype).max
    alpha = rgba[..., 3:].astype(np.uint32)
    mixed = rgba[..., :3] * alpha + top * (top - alpha) + top // 2
    return (mixed // top).astype(rgba.dtype)


def _pillow_pixels(image: Image.Image) -> np.ndarray:
    """[H, W, 3] uint8, or uint16 for 16-bit greyscale; palettes expanded, CMYK and other modes converted to RGB."""
    if image.mode.startswith("I"):  # 16-bit greyscale ("I;16", or "I" holding 16-bit values): keep every bit
        grey = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
        return np.repeat(grey[..., None], 3, axis=2)
    has_alpha = "A" in image.mode or "transparency" in image.info
    if has_alpha:
        return on_white(np.asarray(image.convert("RGBA")))
    return np.array(image if image.mode == "RGB" else image.convert("RGB"))  # a writable copy, as torch wants


def _pyav_pixels(path: str) -> np.ndarray:
    """The first frame of a 16-bit PNG as [H, W, 3] uint16 (alpha composited over white)."""
    with av.open(path) as container:
        frame = next(container.decode(video=0), None)
        if frame is None:
            raise MediaError(path, "no decodable image in the PNG")
        alpha = any(component.is_alpha for component in frame.format.components)
        pixels = frame.to_ndarray(format="rgba64le" if alpha else "rgb48le")
    return on_white(pixels) if alpha else pixels


def read_image(path: str) -> Clip:
    """One image as a clip of one frame, upright by its EXIF orientation; unreadable files raise MediaError."""
    try:
        with Image.open(path) as image:
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
            info = {"width": image.width, "height": image.height, "mode": image.mode, "format": image.format}
            pixels = _pyav_pixels(path) if _is_16bit_png(path) else _pillow_pixels(image)
    except (OSError, SyntaxError, ValueError, av.FFmpegError, Image.DecompressionBombError) as error:
        raise unreadable(path, "cannot read image", error) from error
    if orientation in _UPRIGHT:
        pixels = np.ascontiguousarray(_UPRIGHT[orientation](pixels))
    return Clip(frames=pixels[None], times=np.zeros(1, dtype=np.float32), info=info)


# --- probing ----------------------------------------------------------------------------------------------------------


def probe_video(path: str) -> None:
    """Opens the container and finds a video stream, decoding nothing: a check of thousands of files in seconds."""
    with open_container(path) as container:
        if not container.streams.video:
            raise MediaError(path, "no video stream")


def probe_image(path: str) -> None:
    """Reads the image's header (format and size), decoding no pixel."""
    try:
        with Image.open(path) as image:
            image.size  # noqa: B018 - the header is parsed on open; this keeps the intent visible
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise unreadable(path, "cannot read image", error) from error


# --- the decoder of each media type -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decoder:
    """How a track's media become a clip: `read(path, sampling, threads)`, `threads` 0 leaving the count to the
    library; `identity` goes into the cache key, so a change of decoding is a new key (the thread count changes no
    pixel and is not in it)."""

    read: Callable[[str, FrameSampling, int], Clip]
    identity: str
    time_axis: bool  # whether its media have frames in time (key frames to sample, clips, temporal offsets)
    probe: Callable[[str], None]  # a fast check that a file is media of this type (MediaError if not)
    lights: tuple[str, ...] = ()  # the representations of light it can give (FrameSampling.light), its own first
    # Facts it reads per file, as a table with a `path` column (the colour tags of HDR media and where they came
    # from): written beside the cache by each extraction and summarised in its table. None: nothing to record.
    facts: Callable[[Sequence[str]], pd.DataFrame] | None = None


def _image_clip(path: str, sampling: FrameSampling, threads: int = 0) -> Clip:
    """`read_image` under the decoders' signature (a module function, so DataLoader workers can pickle it)."""
    return read_image(path)


DECODERS: Registry[Decoder] = Registry("media type")
DECODERS.register("video")(Decoder(sample_video, "pyav rgb24, rgb48le above 8 bits", True, probe_video))
IMAGE_DECODING = "pillow rgb; 16-bit png through pyav rgb48le; alpha over white; exif orientation"
DECODERS.register("image")(Decoder(_image_clip, IMAGE_DECODING, False, probe_image))
