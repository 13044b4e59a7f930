"""Colour maths in numpy, each formula testable against the standards' own numbers: Y'CbCr -> R'G'B' by a matrix
and range, the transfer functions (SMPTE ST 2084 PQ, BT.1886) and PU encoding, primaries, and BT.2100 ICtCp.

A leaf of numpy alone, so that the HDR decoder (features.hdr), full-reference measures (features.pairs) and the
synthetic HDR data (synth.hdr) share one copy of every formula, and none of them needs a decoder to use it.

Facts used:
- Limited ("MPEG", studio) range at bit depth b: Y' = 16..235 and Cb/Cr = 16..240 (128 neutral), scaled by 2^(b-8),
  so 10-bit black is 64, white 940, neutral chroma 512. Full ("JPEG") range: Y' = (2^b - 1)·E'Y and
  C = (2^b - 1)·E'C + 2^(b-1) (H.273, equations for video_full_range_flag = 1).
- Non-constant-luminance Y'CbCr: E'Y = Kr R' + (1 - Kr - Kb) G' + Kb B', E'Cb = (B' - E'Y) / (2 (1 - Kb)),
  E'Cr = (R' - E'Y) / (2 (1 - Kr)); BT.709 Kr/Kb = 0.2126/0.0722, BT.2020 0.2627/0.0593, BT.601 0.299/0.114.
"""

from __future__ import annotations

import numpy as np

# --- Y'CbCr -> R'G'B' -------------------------------------------------------------------------------------------------

# (Kr, Kb) of the non-constant-luminance matrices (BT.709 Table 3, BT.2020 Table 4, BT.601 2.5.1).
LUMA_WEIGHTS = {
    "bt709": (0.2126, 0.0722),
    "bt2020nc": (0.2627, 0.0593),
    "bt470bg": (0.299, 0.114),
    "smpte170m": (0.299, 0.114),
}


def _up2(c: np.ndarray, axis: int, cosited: bool) -> np.ndarray:
    """Doubles `c` along `axis` by linear interpolation, edges replicated. Co-sited: chroma sample k sits on luma
    sample 2k, so luma 2k+1 is the mean of k and k+1. Interstitial: sample k sits between luma 2k and 2k+1, so
    those get 3/4 of k and 1/4 of the neighbour on their side."""
    c = np.moveaxis(c, axis, 0)
    following = np.concatenate([c[1:], c[-1:]])
    preceding = np.concatenate([c[:1], c[:-1]])
    out = np.empty((2 * c.shape[0], *c.shape[1:]), c.dtype)
    if cosited:
        out[0::2], out[1::2] = c, 0.5 * (c + following)
    else:
        out[0::2], out[1::2] = 0.75 * c + 0.25 * preceding, 0.75 * c + 0.25 * following
    return np.moveaxis(out, 0, axis)


def upsample_chroma(c: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A chroma plane brought to the luma plane's `shape` [H, W] by bilinear interpolation at the chroma siting
    that H.264 and HEVC assume when the stream says nothing (chroma_sample_loc_type 0, "left", what x265 writes):
    horizontally co-sited with the even luma columns, vertically halfway between two luma rows. Bilinear rather
    than nearest: nearest shifts chroma by up to half a luma pixel and makes staircase colour edges that a
    full-reference comparison would count as distortion; on flat colour both are exact (the weights sum to 1)."""
    for axis, cosited in ((0, False), (1, True)):
        if c.shape[axis] == shape[axis]:
            continue
        if c.shape[axis] != -(-shape[axis] // 2):
            raise ValueError(f"chroma size {c.shape} is not the luma size {shape} or its half (rounded up)")
        c = _up2(c, axis, cosited)[(slice(None),) * axis + (slice(0, shape[axis]),)]
    return c


def yuv_to_rgb(
    y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: str, range: str, bit_depth: int, *, clip: bool = True
) -> np.ndarray:
    """Integer Y'CbCr planes (chroma at its own resolution) -> non-linear R'G'B' float32 [3, H, W] in [0, 1].

    Normalisation (H.273): limited range E'Y = (Y - 16·2^(b-8)) / (219·2^(b-8)), E'C = (C - 128·2^(b-8)) /
    (224·2^(b-8)); full range E'Y = Y / (2^b - 1), E'C = (C - 2^(b-1)) / (2^b - 1). Then R' = E'Y + 2(1-Kr) E'Cr,
    B' = E'Y + 2(1-Kb) E'Cb, G' = (E'Y - Kr R' - Kb B') / (1 - Kr - Kb), with (Kr, Kb) of `matrix` ("bt709",
    "bt2020nc", "bt470bg"/"smpte170m" for BT.601). Chroma is upsampled bilinearly (upsample_chroma). With `clip`,
    limited range's foot- and headroom and out-of-gamut combinations are clipped to [0, 1], the domain of the EOTFs.
    Our own arithmetic, not swscale's (see features.hdr)."""
    if matrix not in LUMA_WEIGHTS:
        raise ValueError(f"matrix {matrix!r} is not supported (only {sorted(LUMA_WEIGHTS)}; constant luminance no)")
    kr, kb = LUMA_WEIGHTS[matrix]
    if range == "limited":
        scale = 2.0 ** (bit_depth - 8)
        y_offset, y_span, c_span = 16 * scale, 219 * scale, 224 * scale
    elif range == "full":
        y_offset, y_span, c_span = 0.0, 2.0**bit_depth - 1, 2.0**bit_depth - 1
    else:
        raise ValueError(f"range {range!r} is neither 'limited' nor 'full'")
    c_offset = 2.0 ** (bit_depth - 1)
    luma = (np.asarray(y, np.float32) - np.float32(y_offset)) / np.float32(y_span)
    shape = luma.shape
    cb = (upsample_chroma(np.asarray(u, np.float32), shape) - np.float32(c_offset)) / np.float32(c_span)
    cr = (upsample_chroma(np.asarray(v, np.float32), shape) - np.float32(c_offset)) / np.float32(c_span)
    r = luma + np.float32(2 * (1 - kr)) * cr
    b = luma + np.float32(2 * (1 - kb)) * cb
    g = (luma - np.float32(kr) * r - np.float32(kb) * b) / np.float32(1 - kr - kb)
    rgb = np.stack([r, g, b])
    return np.clip(rgb, 0.0, 1.0, out=rgb) if clip else rgb


# --- transfer functions -----------------------------------------------------------------------------------------------

# SMPTE ST 2084 (and BT.2100 Table 4) constants; the peak is 10000 cd/m^2.
PQ_M1 = 2610 / 16384  # 0.1593017578125
PQ_M2 = 2523 / 4096 * 128  # 78.84375
PQ_C1 = 3424 / 4096  # 0.8359375 = c3 - c2 + 1
PQ_C2 = 2413 / 4096 * 32  # 18.8515625
PQ_C3 = 2392 / 4096 * 32  # 18.6875
PQ_PEAK = 10000.0


def _as_float(x) -> np.ndarray:
    """float32 stays float32 (views at 4K), anything else computes in float64."""
    x = np.asarray(x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)


def pq_eotf(code) -> np.ndarray:
    """ST 2084 EOTF: non-linear code value N in [0, 1] -> absolute luminance in cd/m^2 (0..10000):
    L = 10000 · (max(N^(1/m2) - c1, 0) / (c2 - c3 N^(1/m2)))^(1/m1). Inputs are clipped to [0, 1]."""
    n = np.clip(_as_float(code), 0, 1)
    p = n ** (1 / PQ_M2)
    return PQ_PEAK * (np.maximum(p - PQ_C1, 0) / (PQ_C2 - PQ_C3 * p)) ** (1 / PQ_M1)


def pq_inverse_eotf(luminance) -> np.ndarray:
    """ST 2084 inverse EOTF: absolute luminance in cd/m^2 -> code value in [0, 1]:
    N = ((c1 + c2 Y^m1) / (1 + c3 Y^m1))^m2 with Y = L / 10000 clipped to [0, 1]."""
    ym = np.clip(_as_float(luminance) / PQ_PEAK, 0, 1) ** PQ_M1
    return ((PQ_C1 + PQ_C2 * ym) / (1 + PQ_C3 * ym)) ** PQ_M2


def bt1886_eotf(code, peak: float = 100.0, black: float = 0.0) -> np.ndarray:
    """BT.1886 reference display EOTF for SDR (BT.709/BT.601/BT.2020 SDR signals): L = a · max(V + b, 0)^2.4 with
    a = (Lw^(1/2.4) - Lb^(1/2.4))^2.4 and b = Lb^(1/2.4) / (Lw^(1/2.4) - Lb^(1/2.4)); with black 0 it is
    L = peak · V^2.4. In cd/m^2, so SDR lands on the same absolute axis as PQ (100 cd/m^2 SDR white = PQ 0.508)."""
    gamma = 2.4
    span = peak ** (1 / gamma) - black ** (1 / gamma)
    a, b = span**gamma, black ** (1 / gamma) / span
    return a * np.maximum(np.clip(_as_float(code), 0, 1) + b, 0) ** gamma


def bt1886_inverse_eotf(luminance, peak: float = 100.0, black: float = 0.0) -> np.ndarray:
    """The inverse of bt1886_eotf: cd/m^2 -> code value V in [0, 1]."""
    gamma = 2.4
    span = peak ** (1 / gamma) - black ** (1 / gamma)
    a, b = span**gamma, black ** (1 / gamma) / span
    return np.clip((np.maximum(_as_float(luminance), 0) / a) ** (1 / gamma) - b, 0, 1)


def pu_encode(luminance) -> np.ndarray:
    """Perceptually uniform encoding of absolute luminance (cd/m^2) into [0, 1]: PQ's inverse EOTF.

    Why PQ: its curve was fitted to Barten's contrast-sensitivity model so that one 12-bit code step stays just below
    a just-noticeable difference from 0.001 to 10000 cd/m^2 (Miller et al. 2013), which is the property a PU
    encoding is meant to have; it is the one BT.2100 standardises, so HDR10 luma is already (almost) in it and only
    SDR needs mapping (BT.1886 to cd/m^2, then this); and it needs no fitted parameters, unlike PU21. Gamma or log
    encodings are not uniform over that range (gamma wastes codes in the highlights, log in the deep shadows)."""
    return pq_inverse_eotf(luminance)


# --- primaries --------------------------------------------------------------------------------------------------------

# CIE xy of the R, G, B primaries (BT.709 Table 1, BT.2020 Table 3, BT.601 / SMPTE 170M, SMPTE EG 432-1 P3-D65);
# all with the D65 white point (0.3127, 0.3290).
CHROMATICITIES = {
    "bt709": ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060)),
    "bt2020": ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046)),
    "bt470bg": ((0.640, 0.330), (0.290, 0.600), (0.150, 0.060)),
    "smpte170m": ((0.630, 0.340), (0.310, 0.595), (0.155, 0.070)),
    "smpte240m": ((0.630, 0.340), (0.310, 0.595), (0.155, 0.070)),
    "smpte432": ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060)),
}
D65 = (0.3127, 0.3290)


def rgb_to_xyz_matrix(primaries: str) -> np.ndarray:
    """The 3x3 matrix from linear RGB in `primaries` to CIE XYZ (Y = relative luminance), white (1,1,1) -> D65 with
    Y = 1 (SMPTE RP 177)."""
    if primaries not in CHROMATICITIES:
        raise ValueError(f"primaries {primaries!r} are not supported (only {sorted(CHROMATICITIES)})")
    xyz = np.array([[x / y, 1.0, (1 - x - y) / y] for x, y in CHROMATICITIES[primaries]]).T
    white = np.array([D65[0] / D65[1], 1.0, (1 - D65[0] - D65[1]) / D65[1]])
    return xyz * np.linalg.solve(xyz, white)


def primaries_matrix(source: str, target: str = "bt2020") -> np.ndarray:
    """Linear RGB in `source` primaries -> linear RGB in `target` (BT.709 -> BT.2020 is BT.2087's matrix)."""
    return np.linalg.solve(rgb_to_xyz_matrix(target), rgb_to_xyz_matrix(source))


# --- ICtCp ------------------------------------------------------------------------------------------------------------

# BT.2100 Table 6/7: linear BT.2020 RGB -> LMS, and PQ-coded L'M'S' -> I, Ct, Cp (the integers are /4096).
ICTCP_LMS = np.array([[1688, 2146, 262], [683, 2951, 462], [99, 309, 3688]]) / 4096
ICTCP_ICTCP = np.array([[2048, 2048, 0], [6610, -13613, 7003], [17933, -17390, -543]]) / 4096


def ictcp(nits: np.ndarray) -> np.ndarray:
    """BT.2100 ICtCp [3, H, W] of absolute linear BT.2020 RGB in cd/m^2 [3, H, W]: PQ (pu_encode) applied to
    cone-like LMS responses, then I in [0, 1] the intensity, Ct and Cp (about -0.5..0.5) the chroma; for a grey
    (R=G=B) Ct = Cp = 0 and I = pu_encode(luminance) exactly."""
    lms = pu_encode(np.maximum(np.einsum("ij,jhw->ihw", ICTCP_LMS, nits), 0))
    return np.einsum("ij,jhw->ihw", ICTCP_ICTCP, lms)
