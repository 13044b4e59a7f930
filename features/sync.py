"""Audio-video sync encoders: how the mouth's movement follows the speech, per key frame's clip.

A talking head whose lips lead or lag its voice, or move through a pause, is rated down (THQA's distortions), and
neither an image, a motion nor an audio encoder alone can see it: the signal is in how two series relate. The input
is, per clip, the mouth region's mean luma over the clip's frames beside the audio's loudness over the same frames
(features.views.SyncSeries); the encoder returns their normalised cross-correlation over a range of lags, its peak
and the lag of the peak, the correlation at lag 0, and how much each series moves.
"""

from __future__ import annotations

from typing import Any

import torch

from features.backbones import EncoderRegistry, FrozenEncoder

_EPS = 1e-6


class SyncEncoder(FrozenEncoder):
    """[B, 2, L] (mouth series, loudness series) -> [B, dim] float32."""

    def check(self, series: torch.Tensor) -> None:
        if series.ndim != 3 or series.shape[1] != 2 or series.shape[2] < 2 or not series.is_floating_point():
            raise ValueError(
                f"{type(self).__name__} expects float series shaped [B,2,L] (mouth, loudness), L >= 2; "
                f"got {series.dtype} {tuple(series.shape)}"
            )


SYNC_ENCODERS = EncoderRegistry("sync encoder")
create_sync_encoder = SYNC_ENCODERS.create


class CrossCorrelation(SyncEncoder):
    """The correlation of the standardised series at lags -K..K frames (the mouth shifted against the sound), its
    peak, the peak's lag in frames, and the spread of each series; a flat series correlates 0 at every lag."""

    def __init__(self, max_lag: int = 3):
        super().__init__()
        self.max_lag = max_lag
        self.dim = (2 * max_lag + 1) + 4

    def identity(self) -> dict[str, Any]:
        return {"name": "av_sync", "max_lag": self.max_lag, "version": 1}

    def encode(self, series: torch.Tensor) -> torch.Tensor:
        mouth, loud = series[:, 0], series[:, 1]
        spread = torch.stack([mouth.std(dim=1, correction=0), loud.std(dim=1, correction=0)], dim=1)
        z = (series - series.mean(dim=2, keepdim=True)) / (series.std(dim=2, correction=0, keepdim=True) + _EPS)
        length = series.shape[2]
        lags = range(-self.max_lag, self.max_lag + 1)
        correlations = []
        for lag in lags:  # mouth at t + lag against loudness at t
            if abs(lag) >= length:
                correlations.append(torch.zeros(len(series)))
                continue
            a = z[:, 0, max(lag, 0) : length + min(lag, 0)]
            b = z[:, 1, max(-lag, 0) : length - max(lag, 0)]
            correlations.append((a * b).mean(dim=1))
        correlation = torch.stack(correlations, dim=1)
        peak, where = correlation.max(dim=1)
        lag_of_peak = (where - self.max_lag).float()
        return torch.cat([correlation, peak[:, None], lag_of_peak[:, None], spread], dim=1)


@SYNC_ENCODERS.register("av_sync")
def av_sync(weights: str, seed: int) -> SyncEncoder:
    if weights not in ("none", "random"):
        raise ValueError(f"av_sync has no weights (it is weight-free): use weights='none', got {weights!r}")
    return CrossCorrelation()
