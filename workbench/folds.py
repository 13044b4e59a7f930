"""Grouped k-fold assignment that depends only on (track, k, seed) and the set of groups.

Every run and every sweep trial of a track gets the same folds, so their out-of-fold predictions can be blended;
a group (a source and its processed versions) never straddles two folds, so validation never sees a sibling of a
training video. The order of rows does not matter: groups are sorted before the seeded shuffle.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd


def fold_seed(track: str, k: int, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{track}/{k}/{seed}".encode()).digest()[:8], "little")


def grouped_folds(groups: pd.Series | np.ndarray, k: int, track: str, seed: int) -> np.ndarray:
    """Fold number (0..k-1) of each row. Groups are shuffled, then placed largest first into the smallest fold,
    which balances fold sizes when groups differ in size."""
    groups = pd.Series(np.asarray(groups)).astype(str)
    names, inverse = np.unique(groups.to_numpy(), return_inverse=True)
    if k < 2 or k > len(names):
        raise ValueError(f"folds={k}: need 2 <= folds <= number of groups ({len(names)})")
    sizes = np.bincount(inverse)
    rng = np.random.default_rng(fold_seed(track, k, seed))
    order = rng.permutation(len(names))
    order = order[np.argsort(-sizes[order], kind="stable")]  # largest first, ties in shuffled order
    load = np.zeros(k, dtype=np.int64)
    fold_of_group = np.empty(len(names), dtype=np.int64)
    for g in order:  # one step per group, not per row
        target = int(np.argmin(load))
        fold_of_group[g] = target
        load[target] += sizes[g]
    return fold_of_group[inverse]
