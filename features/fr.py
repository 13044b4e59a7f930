"""Full-reference metrics of frame pairs through FFmpeg's own filters (ssim, psnr, xpsnr, vif, msad), in PyAV.

Why FFmpeg's filters: the organisers' VMAF baseline runs in an FFmpeg filter graph that upscales the distorted to
the reference's size with Lanczos; computing the elementary metrics in the same kind of graph, with the same scaler
settings, keeps our features on the baseline's footing although PyAV's FFmpeg has no libvmaf. Everything runs at 16
bits: planes go in as gray16le (10-bit codes shifted up, or a perceptually uniform luminance times 65535) and never
pass through 8 bits. A leaf: numpy and av only.

Facts used (FFmpeg 8.1 as bundled by PyAV 18.1, found by experiment and in libavfilter's sources):
- All five filters accept gray16le, so none is skipped. ssim, psnr, vif and msad read it as it is: ssim's constants
  and psnr's peak follow the depth (65535), vif rescales samples to the 8-bit range first (so its noise variance
  sigma_N^2 = 2 keeps its meaning), msad normalises by the peak.
- xpsnr gets gray14le: vf_xpsnr reads high-depth samples as int16_t, so at 16 bits values above 32767 wrap
  negative and a picture crossing mid-scale gets false edges in its activity weights (the same picture scored 35.5
  dB offset by 32768 and 32.7 dB offset by 20000). The conversion has no dither (`sws_dither=none`, which rounds
  half up: (v + 2) >> 2); swscale's default dither adds noise. 10-bit codes lose nothing.
- xpsnr divides by its block size, which is 0 below 2025 pixels (4 * int(32 * sqrt(w h / 3840 / 2160) + 0.5)): the
  process dies of SIGFPE. Below that size the filter is left out and its column holds the PSNR, which is what
  vf_xpsnr means to report for pictures too small to weight ("nonweighted PSNR").
- xpsnr's weights include the reference's temporal activity against the previous pair of the same call (first-order
  difference: the buffer sources carry no frame rate, read as under 32 fps); the first pair is compared with a zero
  frame. Pass consecutive frames, in order, for its column to mean what it does in FFmpeg.
- Input order: ssim, psnr and msad are symmetric; vif's first input is the distorted ("main") and its second the
  reference, whose variance the information is measured against; xpsnr's first input is the original, whose activity
  weights the error, so it gets (reference, distorted).
- Metadata keys per frame: lavfi.ssim.Y, lavfi.psnr.mse.y, lavfi.xpsnr.xpsnr.y ("inf" for identical planes),
  lavfi.vif.scale.0..3, lavfi.msad.msad.Y. The metric filters pass frames on as they come (framesync emits pair k
  once frame k of both inputs is in); rows are placed by pts and every sink must return each pts once.
- PSNR is recomputed from the MSE with a floor, so it tops out at PSNR_CAP_DB (100 dB); a difference of one 16-bit
  code value everywhere is 96.3 dB, below the cap. xpsnr is capped at the same value.
- vif reads 1 at a scale whose denominator (the reference's information) is zero, FFmpeg's convention; on flat
  references it means nothing (0 or 1 by float rounding). Every other value is finite as it comes.

Cost on this 2-core machine (filters thread automatically), per frame pair in a call of 20 pairs, a 960x540
distorted against a textured reference, graph set-up and numpy-to-frame copies included: 0.21-0.26 s at 1920x1080,
0.85-0.88 s at 3840x2160 (a lone pair: 0.27 s and 1.1 s). vif is most of it (about 0.20 s and 0.83 s); ssim, psnr,
msad, xpsnr and the upscale together take about 0.03 s and 0.1 s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import av
import av.filter
import numpy as np

FR_METRICS: tuple[str, ...] = ("ssim", "psnr", "xpsnr", "vif_s0", "vif_s1", "vif_s2", "vif_s3", "msad")

PEAK = 65535
PSNR_CAP_DB = 100.0
MIN_SIDE = 16  # vif mirrors its windows at the edges, which at its 1/8 scale needs 2 rows and columns
XPSNR_MIN_PIXELS = 2025  # below it vf_xpsnr's block size is 0 (see above)
# The organisers' VMAF baseline upscaling: Lanczos with alpha 5 (param0; swscale's default is 3), accurate rounding.
UPSCALE = "flags=lanczos+accurate_rnd+full_chroma_int:param0=5"

_MSE_FLOOR = PEAK**2 / 10 ** (PSNR_CAP_DB / 10)
_TIME_BASE = Fraction(1, 25)
# Metric filter -> (its metadata keys, in column order; the columns they fill).
_KEYS = {
    "ssim": (("lavfi.ssim.Y",), ("ssim",)),
    "psnr": (("lavfi.psnr.mse.y",), ("psnr",)),
    "xpsnr": (("lavfi.xpsnr.xpsnr.y",), ("xpsnr",)),
    "vif": (tuple(f"lavfi.vif.scale.{i}" for i in range(4)), tuple(f"vif_s{i}" for i in range(4))),
    "msad": (("lavfi.msad.msad.Y",), ("msad",)),
}


def _psnr(mse: float) -> float:
    return 10 * math.log10(PEAK**2 / max(mse, _MSE_FLOOR))


def _checked_planes(frames: Sequence[np.ndarray], role: str) -> tuple[list[np.ndarray], tuple[int, int]]:
    """The planes as contiguous little-endian uint16 and their one (height, width); ValueError otherwise."""
    planes = [np.asarray(frame) for frame in frames]
    for index, plane in enumerate(planes):
        if plane.ndim != 2 or plane.dtype != np.uint16:
            raise ValueError(f"{role} frame {index}: expected a uint16 [h, w] plane, got {plane.dtype} {plane.shape}")
    shapes = sorted({plane.shape for plane in planes})
    if len(shapes) > 1:
        raise ValueError(f"{role} frames differ in size: {', '.join(f'{w}x{h}' for h, w in shapes)}")
    return [np.ascontiguousarray(plane, dtype="<u2") for plane in planes], shapes[0]


def _gray16_frame(plane: np.ndarray, index: int) -> av.VideoFrame:
    """from_ndarray honours the frame's line_size padding and round-trips gray16le exactly (odd widths included)."""
    frame = av.VideoFrame.from_ndarray(plane, format="gray16le")
    frame.pts = index
    return frame


def _to_14_bits(graph: av.filter.Graph, source: tuple[av.filter.FilterContext, int]) -> tuple:
    """xpsnr's copy of a branch: 14 bits, undithered (see above)."""
    scale, fmt = graph.add("scale", "flags=accurate_rnd:sws_dither=none"), graph.add("format", "gray14le")
    source[0].link_to(scale, source[1], 0)
    scale.link_to(fmt)
    return fmt, 0


def _build_metric_graph(graph: av.filter.Graph, distorted: tuple[int, int], reference: tuple[int, int]):
    """Two gray16le sources; the distorted upscaled to the reference's size; both split into one copy per metric
    filter, each into its own sink. Returns (distorted source, reference source, {filter: sink}). The caller holds
    the graph: its filter contexts do not keep it alive, and pushing into a freed graph segfaults."""
    (dh, dw), (rh, rw) = distorted, reference
    dis = graph.add_buffer(width=dw, height=dh, format="gray16le", time_base=_TIME_BASE)
    ref = graph.add_buffer(width=rw, height=rh, format="gray16le", time_base=_TIME_BASE)
    names = [name for name in _KEYS if name != "xpsnr" or rw * rh >= XPSNR_MIN_PIXELS]
    upscale = graph.add("scale", f"{rw}:{rh}:{UPSCALE}")
    dis_split, ref_split = graph.add("split", str(len(names))), graph.add("split", str(len(names)))
    dis.link_to(upscale)
    upscale.link_to(dis_split)
    ref.link_to(ref_split)
    sinks = {}
    for output, name in enumerate(names):
        inputs = [(dis_split, output), (ref_split, output)]
        if name == "xpsnr":
            inputs = [_to_14_bits(graph, source) for source in reversed(inputs)]
        metric = graph.add(name)
        for pad, (context, source_output) in enumerate(inputs):
            context.link_to(metric, source_output, pad)
        sinks[name] = graph.add("buffersink")
        metric.link_to(sinks[name])
    graph.configure()
    return dis, ref, sinks


def _drain(sinks: dict, results: dict[str, dict[int, dict]]) -> None:
    for name, sink in sinks.items():
        while True:
            try:
                frame = sink.pull()
            except (BlockingIOError, EOFError):
                break
            results[name][frame.pts] = dict(frame.metadata)


def pair_metrics(distorted: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> np.ndarray:
    """[T, len(FR_METRICS)] float64: per frame pair, the metrics of the distorted plane against the reference's.

    Planes are uint16 [h, w] on the full 16-bit scale; the distorted ones share a size, the reference ones another,
    at least as large on both axes and at least MIN_SIDE; the distorted is upscaled to it with Lanczos. ValueError
    for anything else, or for no pairs. Every value is finite (PSNR and xpsnr capped at PSNR_CAP_DB)."""
    if len(distorted) != len(reference):
        raise ValueError(f"{len(distorted)} distorted frames but {len(reference)} reference frames")
    if not len(distorted):
        raise ValueError("no frame pairs")
    dis_planes, dis_shape = _checked_planes(distorted, "distorted")
    ref_planes, ref_shape = _checked_planes(reference, "reference")
    sizes = f"distorted {dis_shape[1]}x{dis_shape[0]}, reference {ref_shape[1]}x{ref_shape[0]}"
    if ref_shape[0] < dis_shape[0] or ref_shape[1] < dis_shape[1]:
        raise ValueError(f"the reference is smaller than the distorted ({sizes}): only upscaling is supported")
    if min(*dis_shape, *ref_shape) < MIN_SIDE:
        raise ValueError(f"planes must be at least {MIN_SIDE} pixels on each side ({sizes})")

    graph = av.filter.Graph()
    dis, ref, sinks = _build_metric_graph(graph, dis_shape, ref_shape)
    results: dict[str, dict[int, dict]] = {name: {} for name in sinks}
    for index, (dis_plane, ref_plane) in enumerate(zip(dis_planes, ref_planes)):
        dis.push(_gray16_frame(dis_plane, index))
        ref.push(_gray16_frame(ref_plane, index))
        _drain(sinks, results)
    dis.push(None)
    ref.push(None)
    _drain(sinks, results)

    count = len(dis_planes)
    out = np.empty((count, len(FR_METRICS)))
    for name, by_pts in results.items():
        if sorted(by_pts) != list(range(count)):
            raise RuntimeError(f"the {name} filter returned frames {sorted(by_pts)} for {count} pairs")
        keys, columns = _KEYS[name]
        for index, metadata in by_pts.items():
            for key, column in zip(keys, columns):
                out[index, FR_METRICS.index(column)] = float(metadata[key])
    psnr, xpsnr = FR_METRICS.index("psnr"), FR_METRICS.index("xpsnr")
    out[:, psnr] = [_psnr(mse) for mse in out[:, psnr]]
    if "xpsnr" in sinks:
        out[:, xpsnr] = np.minimum(out[:, xpsnr], PSNR_CAP_DB)
    else:
        out[:, xpsnr] = out[:, psnr]
    return out
