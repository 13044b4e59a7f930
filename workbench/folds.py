"""Grouped k-fold assignment that depends only on (track, k, seed) and the set of groups.

Every run and every sweep trial of a track gets the same folds, so their out-of-fold predictions can be blended;
a group (a source and its processed versions) never straddles two folds, so validation never sees a sibling of a
training video. The order of rows does not matter: groups are sorted before the seeded shuffle. Groups holding
near-duplicates of one another are joined first (`join_near_duplicates`), so that holds for copies the lists file
under other sources too.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from features.duplicates import clusters as components
from features.duplicates import near_duplicate_clusters


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


def join_near_duplicates(groups: pd.Series | np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Each row's group, the groups that share a cluster of near-duplicates (features.duplicates) joined under the
    least of their names, transitively: a copy of a video under another source's name would otherwise put the same
    picture on both sides of a fold. Groups that share no cluster keep their names, so their folds are unchanged."""
    names, group_of = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    _, cluster_of = np.unique(np.asarray(clusters), return_inverse=True)
    nodes = len(names) + cluster_of.max(initial=-1) + 1  # groups, then clusters: each row joins its two
    component = components(nodes, group_of, len(names) + cluster_of)[: len(names)]
    first = pd.Series(names).groupby(component).transform("min").to_numpy()  # names are sorted: the least
    return first[group_of]


def media_groups(items: pd.DataFrame, decoder: str, memo_dir: str | None = None) -> np.ndarray:
    """Each item's group as the folds take it: the groups holding near-duplicates of one another's media joined
    (`join_near_duplicates`), the key frames' hashes memoised in `memo_dir`."""
    clusters = near_duplicate_clusters(items["path"].tolist(), decoder, memo_dir)
    return join_near_duplicates(items["group"].astype(str).to_numpy(), clusters)
