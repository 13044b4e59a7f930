"""What names a feature set: `FeatureSpec`, everything that changes a cached vector, and its key.

The key, `<backbone>__<view family><side>__<hash>`, names the set's folder in the cache (features.cache). The hash
covers the spec's identity (the backbone and its weights, the decoder, the sampling, the view family's geometry, the
dtype, the cache's schema), so two configurations never share a folder. The variants of a view family (`center`,
`hflip`, corner crops, fragment draws, temporal offsets) are rows, not part of the key, so asking for more of them
later adds rows to the same set: given the spec, a variant's name fully determines its pixels (see features.views).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from features.decode import DECODERS, FrameSampling
from features.fingerprint import bound_fingerprints, file_sha256
from features.hdr import LIGHTS  # noqa: F401 - registers the hdr decoder a spec may name
from features.pairs import PairCrops  # noqa: F401 - registers the pair families a spec may name
from features.views import DEFAULT_FAMILY, FAMILIES, view_family

SCHEMA_VERSION = 4  # 4: the column `fingerprint`, the key `decoder` (3: rows bound to their files' fingerprints as
# `media`; 2: vectors as fixed-size binary; 1: fixed-size lists)
DTYPES = ("float32", "float16")
# What feature sets extracted together share: one decode of the media (features.encoding.shared_sampling), hence the
# decoding words every extracted stream family passes on to its sets (features.streams.key_frames.decoding).
SHARED_DECODE = ("decoder", "frames", "fps", "phase", "dtype", "light")


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that changes a cached vector: the backbone and its weights, the media type (its decoder), the frame
    sampling of video, the view family with its geometry, and the stored dtype. A family's variants are rows, not
    part of the key; the geometry fields a family does not use are left out of the key.

    With `clip` > 1 the set is made of clips: that many consecutive frames from each key frame, their short side
    decoded at `size`, for the view families that take them (a motion stream's `clip`, encoded by a motion encoder of
    features.motion; a sync stream's `sync`, by a sync encoder of features.sync), one vector per clip."""

    backbone: str
    weights: str = "random"
    decoder: str = "video"
    frames: int = 8
    fps: float = 1.0
    phase: float = 0.0
    view: str = DEFAULT_FAMILY
    size: int = 224
    grid: int = 7
    patch: int = 32
    fragment_seed: int = 0
    dtype: str = "float32"
    clip: int = 1
    audio_seconds: float = 0.0
    light: str = ""  # what the decoder's pixels hold, where it offers a choice (features.hdr.LIGHTS); "": its own
    options: str = ""  # the encoder's own settings as JSON (an LMM's prompts, levels, layers), passed to its family
    binds: tuple[str, ...] = ()  # text columns whose values each row is made from too (features.fingerprint.BOUND)

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}: expected one of {', '.join(DTYPES)}")
        decoder = DECODERS.get(self.decoder)
        if self.light and self.light not in decoder.lights:
            offered = f"one of {', '.join(decoder.lights)}" if decoder.lights else "none (only the hdr decoder does)"
            raise ValueError(f"light={self.light!r}: {self.decoder} media offer {offered}")
        family = FAMILIES.get(self.view)
        if family.clips != (self.clip > 1):
            raise ValueError(
                f"view={self.view!r} with clip={self.clip}: clips of consecutive frames (clip >= 2) go with the views "
                f"that take them ({', '.join(n for n in FAMILIES.names() if FAMILIES.get(n).clips)}), and only them"
            )
        if family.audio != (self.audio_seconds > 0):
            raise ValueError(
                f"view={self.view!r} with audio_seconds={self.audio_seconds}: audio windows (audio_seconds > 0) go "
                f"with the views that take them ({', '.join(n for n in FAMILIES.names() if FAMILIES.get(n).audio)})"
            )
        if (family.clips or family.audio) and not decoder.time_axis:
            raise ValueError(f"view={self.view!r}: {self.decoder} media have no time axis to take clips or audio from")
        view_family(self)

    @property
    def time_axis(self) -> bool:
        return DECODERS.get(self.decoder).time_axis

    @property
    def rows(self) -> int:
        """Rows per item and variant: one per key frame (or its clip) of a video; one for an image, and for a family
        whose encoder takes an item's key frames in one pass (ViewFamily.whole_item)."""
        return self.frames if self.time_axis and not FAMILIES.get(self.view).whole_item else 1

    def sampling(self) -> FrameSampling:
        """How the decoder samples the media for this set (clips scaled to the family's size at decode, audio windows
        of `audio_seconds` at the key frames)."""
        side = self.size if self.clip > 1 else 0
        return FrameSampling(self.frames, self.fps, self.phase, self.clip, side, self.audio_seconds, self.light)

    def identity(self) -> dict:
        """The hashed description; a weights file is identified by its content, not its path."""
        weights = self.weights
        if weights not in ("random", "hub", "none") and Path(weights).is_file():
            weights = f"sha256:{file_sha256(weights)}"
        ident = {
            "backbone": self.backbone,
            "weights": weights,
            "decoder": self.decoder,
            "decode": DECODERS.get(self.decoder).identity,
            "view": self.view,
            "geometry": dataclasses.asdict(view_family(self)),
            "dtype": self.dtype,
            "schema": SCHEMA_VERSION,
        }
        if self.time_axis:  # an image is one frame whatever the sampling says
            ident["sampling"] = {"frames": self.frames, "fps": self.fps, "phase": self.phase}
            if self.clip > 1:  # absent for key frames, so their keys stay as they were
                ident["sampling"]["clip"] = self.clip
            if self.audio_seconds > 0:
                ident["sampling"]["audio_seconds"] = self.audio_seconds
        if DECODERS.get(self.decoder).lights:  # absent for decoders without a choice, so their keys stay as they were
            ident["light"] = self.light or DECODERS.get(self.decoder).lights[0]
        if self.options:  # absent for encoders without options, so their keys stay as they were
            ident["options"] = json.loads(self.options)
        if self.binds:
            ident["binds"] = list(self.binds)
        return ident

    def bound(self, items, fingerprints: Sequence[str]) -> list[str]:
        """The fingerprints this set's rows carry for `items`: their files' (`fingerprints`), bound to the texts the
        set also reads where it `binds` any (features.fingerprint.bound_fingerprints)."""
        return bound_fingerprints(items, fingerprints, self.binds)

    def key(self) -> str:
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:10]
        backbone = re.sub(r"[^A-Za-z0-9._-]+", "-", self.backbone)
        return f"{backbone}__{self.view}{view_family(self).side}__{digest}"
