"""The quality model shared by synthetic media: distortions of known severity -> perceived quality in [0, 1].

Each medium (video, image) names its distortions, their severities and the severity at which each alone halves
perceived quality; how severities combine, and how a random processed version is drawn, is the same for all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

# Exponent on relative severity: > 1 keeps quality flat near pristine (sub-threshold changes go unnoticed) and
# steep once a distortion is visible, the usual shape of psychometric curves.
SHAPE = 2.0

Sampler = Callable[[np.random.Generator], int | float]


def combined_quality(severities: Mapping[str, float], half_quality: Mapping[str, float]) -> float:
    """Each distortion alone gives 0.5 ** ((severity / half_quality) ** SHAPE) and distortions multiply, i.e. their
    impairments add on a log-quality scale, so two moderate distortions are worse than either one."""
    return 0.5 ** sum((severity / half_quality[name]) ** SHAPE for name, severity in severities.items())


def sample_distortions(rng: np.random.Generator, samplers: Mapping[str, Sampler]) -> dict[str, int | float]:
    """One or two distortions of random severity, each from a range that spans good to bad quality."""
    kinds = rng.choice(list(samplers), size=int(rng.integers(1, 3)), replace=False)
    return {str(kind): samplers[str(kind)](rng) for kind in kinds}
