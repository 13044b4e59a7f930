"""Decoding media into the frames a view needs, and nothing more.

Video goes through PyAV (FFmpeg in the wheel). Every frame must be decoded (inter-frame coding), but only the key
frames we keep are converted to RGB: colour conversion, not decoding, dominates the cost of 1-fps sampling.
High-bit-depth video (10-bit HDR10, for instance) is converted to 16-bit RGB, never silently to 8 bits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import av
import numpy as np


class MediaError(Exception):
    """A media file that cannot give the frames asked for; the message names the file and the reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class FrameSampling:
    """Key frames at `fps` per second, the k-th at time (k + phase) / fps: phase 0 takes the first frame of each
    second (as the KVQ winners did), 0.5 the middle one. At most `frames` are kept; shorter videos give fewer."""

    frames: int = 8
    fps: float = 1.0
    phase: float = 0.0

    def __post_init__(self):
        if self.frames < 1 or self.fps <= 0 or not 0.0 <= self.phase < 1.0:
            raise ValueError(f"invalid sampling {self}: need frames >= 1, fps > 0 and 0 <= phase < 1")

    def targets(self) -> np.ndarray:
        return (np.arange(self.frames) + self.phase) / self.fps


@dataclass
class Clip:
    """Sampled frames [T, H, W, 3] (uint8, or uint16 for high-bit-depth sources) and their times in seconds."""

    frames: np.ndarray
    times: np.ndarray
    info: dict = field(default_factory=dict)


def _rgb_format(video_format: av.VideoFormat) -> str:
    """From the components' bit depth, not the name: 8-bit nv12 and yuv410p have "12" and "10" in theirs."""
    high_bit_depth = max(component.bits for component in video_format.components) > 8
    return "rgb48le" if high_bit_depth else "rgb24"


def sample_video(path: str, sampling: FrameSampling) -> Clip:
    """Decodes `path` once, front to back, keeping the first frame at or after each target time."""
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError) as error:
        raise MediaError(path, f"cannot open ({type(error).__name__}: {error})") from error
    with container:
        if not container.streams.video:
            raise MediaError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        targets = sampling.targets()
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        fallback_rate = float(stream.average_rate or 25)
        kept, times, next_target, rgb, last, rotation = [], [], 0, None, None, 0
        try:
            for index, frame in enumerate(container.decode(stream)):
                t = frame.time - start if frame.time is not None else index / fallback_rate
                if t + 1e-6 < targets[next_target]:
                    last = (frame, t)
                    continue
                rgb = rgb or _rgb_format(frame.format)
                rotation = frame.rotation
                kept.append(frame.to_ndarray(format=rgb))
                times.append(t)
                # A frame can cover several targets in very low frame-rate video; it is kept once.
                next_target = int(np.searchsorted(targets, t + 1e-6, side="right"))
                if next_target >= len(targets):
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
        info = {
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "pix_fmt": stream.codec_context.pix_fmt,
            "codec": stream.codec_context.name,
            "rotation": rotation,
        }
    return Clip(frames=frames, times=np.asarray(times, dtype=np.float32), info=info)


def upright(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Frames as displayed: phones store portrait video landscape with a display-matrix rotation (degrees
    counter-clockwise), and a model should see what the raters saw."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(frames, turns, axes=(1, 2))) if turns else frames
