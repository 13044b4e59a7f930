"""A run's data: the track's items, their cached and loaded feature streams, labels and folds, and the run folder.

`load_training_data` reads everything the folds of one run share (`TrainingData`): the items as the label files
name them now, each bound to its file's fingerprint, the cached streams served only for those very files, the streams
made at load (features.streams), the labels and the grouped folds (groups holding near-duplicates joined);
`open_or_create_run` finds or makes the run folder its configuration names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features import streams as stream_families
from features.cache import cache_dir, read_manifest
from features.fingerprint import item_fingerprints
from features.reader import Streams, concat_features, read_features
from features.views import split_variants, view_family
from tracks import LayoutError, Track, get_track
from tracks.unlabelled import UNLABELLED, unlabelled_items
from workbench.config import FeatureConfig, TrainConfig, as_dict
from workbench.folds import grouped_folds, media_groups
from workbench.pseudo import PseudoLabels, eligible
from workbench.runs import CONFIG, FOLDS, NOT_HASHED, Run, run_id

TEST_FOLD, UNLABELLED_FOLD = -1, -2  # the fold column of the items no fold holds


@dataclass
class TrainingData:
    """Everything the folds of one run share: the track, its items, the cached features, labels and folds."""

    track: Track
    items: pd.DataFrame  # every item with features, train and test
    features: Streams
    labels: np.ndarray  # [items, targets], NaN for test and unlabelled items
    folds: np.ndarray  # fold of each item, TEST_FOLD (-1) for test items, UNLABELLED_FOLD (-2) for unlabelled ones
    feature_key: str
    dropped: list[str]  # items without any cached frame
    pseudo: PseudoLabels | None = None  # the label set a student trains on beside the labels (workbench.pseudo)

    @property
    def fingerprints_digest(self) -> str:
        """One digest of every item's file fingerprint: a run trained on other bytes under the same ids is another
        run."""
        pairs = sorted(zip(self.items["item_id"], self.items["fingerprint"]))
        return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]

    def index(self, fold: int) -> tuple[np.ndarray, np.ndarray]:
        return np.flatnonzero((self.folds >= 0) & (self.folds != fold)), np.flatnonzero(self.folds == fold)

    @property
    def test_index(self) -> np.ndarray:
        return np.flatnonzero(self.folds == TEST_FOLD)

    @property
    def pseudo_weight(self) -> float:
        """The weight of the pseudo-labelled rows' loss against the labels' (1 without a label set)."""
        return self.pseudo.weight if self.pseudo is not None else 1.0

    @property
    def unlabelled_index(self) -> np.ndarray:
        return np.flatnonzero(self.folds == UNLABELLED_FOLD)

    def pseudo_rows(self, fold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pseudo-labelled items fold `fold` trains on (workbench.pseudo.eligible) and their labels: the
        teacher's fold-`fold` models' (for the out-of-fold model) and its full blend's (for the test-time one)."""
        ids = self.items["item_id"].to_numpy()
        candidates = self.unlabelled_index
        candidates = candidates[np.isin(ids[candidates], self.pseudo.labels.index)]
        groups = self.items["group"].to_numpy()
        labelled = np.flatnonzero(self.folds >= 0)
        keep = eligible(groups[labelled], groups[candidates], self.folds[labelled] == fold)
        rows = candidates[keep]
        targets = self.track.targets
        return rows, self.pseudo.targets(ids[rows], targets, fold), self.pseudo.targets(ids[rows], targets, None)

    def labelled(self, labels: np.ndarray | None = None) -> pd.DataFrame:
        """The items with `labels` ([items, targets]; by default the true ones, NaN for test and unlabelled items) in
        the target columns."""
        labels = self.labels if labels is None else labels
        return self.items.assign(**{t: labels[:, i] for i, t in enumerate(self.track.targets)})


def oof_score(run: Run, data: TrainingData) -> float:
    """The track's score of the out-of-fold predictions of the run's finished folds pooled, views averaged."""
    return float(
        data.track.selection_score(view_mean(run.predictions("oof"), data.track.targets), data.labelled())["score"]
    )


def read_streams(cfg: TrainConfig, track: Track, items: pd.DataFrame) -> tuple[Streams, str]:
    """The feature streams of `cfg` for `items` (item_id, fingerprint: their files' now): per cached stream
    its feature sets side by side (see concat_features), then the streams made at load (features.streams.load), the
    streams' views paired; and the joined keys. Rows made from other bytes are refused (StaleFeatures)."""
    specs = cfg.all_specs(track.decoder)
    families = [view_family(spec) for spec in specs]
    chosen = iter(split_variants(families, cfg.views) if cfg.views else [None] * len(specs))
    streams, keys, manifests = [], [], []
    ids, fingerprints = items["item_id"].tolist(), items["fingerprint"].tolist()
    for stream in cfg.streams(track.decoder):
        sets = []
        for spec in stream:
            folder, views = cache_dir(cfg.cache, track.name, spec), next(chosen)
            manifests.append(read_manifest(folder, spec))
            bound = spec.bound(items, fingerprints)
            sets.append(read_features(folder, ids, list(views) if views else None, spec.rows, bound))
            texts = hashlib.sha256(json.dumps(bound).encode()).hexdigest()[:10] if spec.binds else ""
            keys.append(f"{folder.name}@{texts}" if texts else folder.name)  # other texts read: another run
        streams.append(concat_features(sets))
        if len(streams) == 1:
            key_frames = sets[0]  # the first view family's, in the backbone's own space (for alignment)
    loading = stream_families.Loading(items, track.inputs, key_frames, manifests[0], cfg.cache)
    loaded, loaded_keys = stream_families.load(cfg, loading)
    return Streams.paired(streams + loaded), "+".join(keys + loaded_keys)


def items_of(cfg: FeatureConfig, track: Track) -> pd.DataFrame:
    """The track's items under `cfg.data_dir`, and the media `unlabelled=` declares as a split of their own."""
    return with_unlabelled(track.read_items(cfg.data_dir), track, cfg.unlabelled, cfg.data_dir)


def with_unlabelled(items: pd.DataFrame, track: Track, unlabelled: str, data_dir: Path) -> pd.DataFrame:
    """A layout's `items` and, after them, the media `unlabelled=` declares beside it (none where it is empty)."""
    if not unlabelled:
        return items
    extra = unlabelled_items(track, unlabelled, data_dir)
    clash = sorted(set(extra["path"]) & set(items["path"]))
    if clash:
        raise LayoutError(f"unlabelled={unlabelled}: {len(clash)} file(s) the lists already name, e.g. {clash[0]}")
    return pd.concat([items, extra[items.columns]], ignore_index=True)


def load_training_data(cfg: TrainConfig) -> TrainingData:
    track = get_track(cfg.track)
    items = items_of(cfg, track)
    items["fingerprint"] = item_fingerprints(items, cfg.cache)
    features, feature_key = read_streams(cfg, track, items)
    present = features.present()
    dropped = items.loc[~present, "item_id"].tolist()
    items = items[present].reset_index(drop=True)
    features = features.take(present)
    labels = np.array(items[list(track.targets)], dtype=np.float32)  # writable: torch shares its memory
    train = (items["split"] == "train").to_numpy()
    folds = np.where(items["split"] == UNLABELLED, UNLABELLED_FOLD, TEST_FOLD)
    groups = items.loc[train, "group"].astype(str).to_numpy()
    joined = media_groups(items[train], track.decoder, cfg.cache)
    folds[train] = grouped_folds(joined, cfg.folds, track.name, cfg.seed)
    if (joined != groups).any():  # folds other than the lists' groups give: another run (none joined: the same)
        joins = json.dumps(sorted(set(zip(groups, joined))))
        feature_key += "+joined-" + hashlib.sha256(joins.encode()).hexdigest()[:10]
    pseudo = None
    if cfg.pseudo:
        pseudo = PseudoLabels.read(cfg.pseudo, cfg.runs_dir, track.name)
        pseudo.check_folds(pd.Series(folds[train], index=items.loc[train, "item_id"]))
        feature_key += f"+pseudo-{pseudo.digest}"
    return TrainingData(track, items, features, labels, folds, feature_key, dropped, pseudo)


def open_or_create_run(cfg: TrainConfig, data: TrainingData) -> Run:
    config = as_dict(cfg)
    run = Run(
        Path(cfg.runs_dir) / data.track.name / (cfg.run or run_id(config, data.feature_key, data.fingerprints_digest))
    )
    resolved = {
        **config,
        "run": run.id,
        "feature_key": data.feature_key,
        "fingerprints": data.fingerprints_digest,
        "views": data.features.views,
    }
    if run.path.joinpath(CONFIG).is_file():
        previous = {k: v for k, v in run.config.items() if k not in NOT_HASHED}  # a logger does not change the run
        if previous != {k: v for k, v in resolved.items() if k not in NOT_HASHED}:
            raise ValueError(f"{run.path} was trained with another configuration; pass a new run=<name>")
        return run
    run.path.mkdir(parents=True, exist_ok=True)
    folds = pd.DataFrame(
        {"item_id": data.items["item_id"], "fold": data.folds, "fingerprint": data.items["fingerprint"]}
    )
    run.write_parquet(FOLDS, folds)
    run.write_json(CONFIG, resolved)
    return run


def long_predictions(
    pred: np.ndarray, item_ids: Iterable[str], views: list[str], targets: tuple[str, ...]
) -> pd.DataFrame:
    """[items, views, targets] -> rows item_id, view, <targets>."""
    items, n_views, _ = pred.shape
    table = pd.DataFrame(pred.reshape(items * n_views, -1), columns=list(targets))
    table.insert(0, "view", np.tile(views, items))
    table.insert(0, "item_id", np.repeat(np.asarray(list(item_ids)), n_views))
    return table


def view_mean(table: pd.DataFrame, targets: tuple[str, ...]) -> pd.DataFrame:
    return table.groupby("item_id", sort=False)[list(targets)].mean()
