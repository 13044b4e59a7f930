"""Training heads fold by fold on the feature cache.

`HeadRegressor` is the Lightning recipe (loss, optimiser, validation by the track's own score) around a plain
`StreamHead`; `CachedFeatures` serves one fold's tensors (an x and a mask per feature stream), already in memory;
`train_folds` runs the folds of a run, skipping those already finished, and writes out-of-fold and per-view test
predictions.

A step of a head on cached features takes about a millisecond, so anything the framework does per step shows:
batches are gathered from the in-memory tensors in one indexing call each (not sample by sample and stacked), and
the training loss is summed on the side and logged once per epoch, not through Lightning's per-step logging.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from common.tables import Table
from ensembles.calibrate import CALIBRATION, Calibration
from ensembles.report import write_report
from features.cache import Features, Streams, cache_dir, concat_features, read_features, read_manifest
from features.clip import prompt_alignment
from features.fingerprint import item_fingerprints
from features.inputs import Category, Text
from features.metadata import CONTAINER_FACTS, CONTAINER_VERSION, container_metadata, one_hot, training_categories
from features.text import EncodedText, text_features
from features.views import split_variants, view_family
from tracks import LayoutError, Track, get_track
from tracks.base import UNLABELLED, unlabelled_items
from workbench.config import FeatureConfig, TrainConfig, as_dict
from workbench.folds import grouped_folds
from workbench.heads import StreamHead, create_head
from workbench.losses import CombinedLoss
from workbench.pseudo import PseudoLabels, eligible
from workbench.runs import FOLDS, Run, run_id

Scorer = Callable[[np.ndarray], dict[str, float]]
TEST_FOLD, UNLABELLED_FOLD = -1, -2  # the fold column of the items no fold holds


def quiet_lightning() -> None:
    """Lightning's per-Trainer banners (accelerator found, etc.) drown the tables users read."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # A fold's folder holds its out-of-fold and test-time checkpoints under pseudo-labels, and its outputs: by design.
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")


class HeadRegressor(pl.LightningModule):
    """Trains a head with a combined loss; validation averages each item's views and applies the track's score."""

    def __init__(
        self,
        head: StreamHead,
        loss: CombinedLoss,
        lr: float,
        wd: float,
        epochs: int,
        views: int,
        scorer: Scorer,
        pseudo_weight: float = 1.0,
    ):
        super().__init__()
        self.head = head
        self.loss = loss
        self.lr = lr
        self.wd = wd
        self.epochs = epochs
        self.views = views
        self.scorer = scorer
        self.pseudo_weight = pseudo_weight
        self._val: list[torch.Tensor] = []
        self._loss_sum, self._loss_count = torch.zeros(()), 0

    def forward(self, *streams: torch.Tensor) -> torch.Tensor:
        return self.head(*streams)

    def training_step(self, batch, batch_idx):
        *streams, y, pseudo = batch
        pred = self(*streams)
        if not bool(pseudo.any()):
            loss = self.loss(pred, y)
        else:  # the labels' loss and the pseudo-labels', weighted; a part of fewer than 2 rows has no correlation
            parts = [(m, w) for m, w in ((~pseudo, 1.0), (pseudo, self.pseudo_weight)) if int(m.sum()) >= 2]
            loss = sum(w * self.loss(pred[m], y[m]) for m, w in parts) / sum(w for _, w in parts)
        self._loss_sum, self._loss_count = self._loss_sum + loss.detach(), self._loss_count + 1
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train_loss", self._loss_sum / max(self._loss_count, 1))
        self._loss_sum, self._loss_count = torch.zeros(()), 0

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch, batch_idx):
        *streams, _, _ = batch
        self._val.append(self(*streams).detach().cpu())

    def on_validation_epoch_end(self) -> None:
        pred = torch.cat(self._val).numpy()
        pred = pred.reshape(-1, self.views, pred.shape[-1]).mean(1)
        parts = self.scorer(pred)
        self.log("val_score", float(parts["score"]), prog_bar=True)

    def parameter_groups(self) -> list[dict]:
        return [{"params": list(self.head.parameters())}]

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=self.lr, weight_decay=self.wd)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(self.epochs, 1))
        return {"optimizer": optimizer, "lr_scheduler": schedule}


class TensorBatches(Dataset):
    """Tensors indexed a whole batch at a time (by a BatchSampler): one gather per tensor instead of one
    `__getitem__` per sample and a stack."""

    def __init__(self, *tensors: torch.Tensor):
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: list[int]) -> tuple[torch.Tensor, ...]:
        return tuple(tensor[index] for tensor in self.tensors)


def batches(dataset: TensorBatches, batch_size: int, shuffle: bool = False, drop_last: bool = False) -> DataLoader:
    sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, sampler=BatchSampler(sampler, batch_size, drop_last), batch_size=None)


def stream_tensors(streams: Streams) -> list[torch.Tensor]:
    """x_1 [items, views, T_1, D_1], mask_1, x_2, mask_2, ...: what a head takes, per (item, view) once flattened."""
    return [torch.from_numpy(a) for part in streams.parts for a in (part.x, part.mask)]


class CachedFeatures(pl.LightningDataModule):
    """One fold's tensors (see stream_tensors). Training samples are (item, view) pairs, so cached views double as
    augmentation; evaluation keeps items whole, views in a fixed order, so predictions reshape to [items, views].
    `pseudo` marks the rows whose labels are a teacher's, which the recipe weighs apart."""

    def __init__(
        self,
        tensors: list[torch.Tensor],
        y: torch.Tensor,
        train: np.ndarray,
        val: np.ndarray,
        batch_size: int,
        pseudo: np.ndarray | None = None,
    ):
        super().__init__()
        self.tensors, self.y = tensors, y
        self.train_index, self.val_index = train, val
        self.batch_size = batch_size
        self.pseudo = torch.zeros(len(y), dtype=torch.bool) if pseudo is None else torch.from_numpy(pseudo)

    def flat(self, index: np.ndarray) -> TensorBatches:
        views = self.tensors[0].shape[1]
        flat = [tensor[index].flatten(0, 1) for tensor in self.tensors]
        rows = (self.y[index], self.pseudo[index])
        return TensorBatches(*flat, *(row.repeat_interleave(views, dim=0) for row in rows))

    def train_dataloader(self) -> DataLoader:
        data = self.flat(self.train_index)
        return batches(data, self.batch_size, shuffle=True, drop_last=len(data) > self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return batches(self.flat(self.val_index), 4096)


@dataclass
class TrainingData:
    """Everything the folds of one run share: the track, its items, the cached features, labels and folds."""

    track: Track
    items: pd.DataFrame  # every item with features, train and test
    features: Streams
    labels: np.ndarray  # [items, targets], NaN for test items
    folds: np.ndarray  # fold of each item, -1 for test items
    feature_key: str
    dropped: list[str]  # items without any cached frame
    pseudo: PseudoLabels | None = None  # the label set a student trains on beside the labels (workbench.pseudo)

    @property
    def media_digest(self) -> str:
        """One digest of every item's file fingerprint: a run trained on other bytes under the same ids is another
        run."""
        pairs = sorted(zip(self.items["item_id"], self.items["media"]))
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
        """The items with `labels` ([items, targets]; the true ones by default) in the target columns (NaN for test
        items)."""
        labels = self.labels if labels is None else labels
        return self.items.assign(**{t: labels[:, i] for i, t in enumerate(self.track.targets)})


def oof_score(run: Run, data: TrainingData) -> float:
    """The track's score of the out-of-fold predictions of the run's finished folds pooled, views averaged."""
    return float(
        data.track.selection_score(view_mean(run.predictions("oof"), data.track.targets), data.labelled())["score"]
    )


def read_streams(cfg: TrainConfig, track: Track, items: pd.DataFrame) -> tuple[Streams, str]:
    """The feature streams of `cfg` for `items` (item_id, media: their files' fingerprints now): per cached stream
    its feature sets side by side (see concat_features), then the streams made from the items table and the files
    (text, alignment, metadata), the streams' views paired; and the joined keys. Rows made from other bytes are
    refused (StaleFeatures)."""
    specs = cfg.all_specs(track.media)
    families = [view_family(spec) for spec in specs]
    chosen = iter(split_variants(families, cfg.views) if cfg.views else [None] * len(specs))
    streams, keys, manifests = [], [], []
    ids, media = items["item_id"].tolist(), items["media"].tolist()
    for stream in cfg.streams(track.media):
        sets = []
        for spec in stream:
            folder, views = cache_dir(cfg.cache, track.name, spec), next(chosen)
            manifests.append(read_manifest(folder, spec))
            sets.append(read_features(folder, ids, list(views) if views else None, spec.frames, media))
            keys.append(folder.name)
        streams.append(concat_features(sets))
        if len(streams) == 1:
            key_frames = sets[0]  # the first view family's, in the backbone's own space (for alignment)
    train = (items["split"] == "train").to_numpy()
    texts = {}
    for column in text_columns(cfg, track):
        encoded = text_features(cfg.text, items[column].fillna("").astype(str).tolist(), train, cfg.seed,
                                cfg.text_weights, cfg.cache)  # fmt: skip
        texts[column] = encoded.vectors
        keys.append(f"text-{column}-{encoded.key}")
        if cfg.align:
            check_alignment(manifests[0], encoded, cfg)
            keys.append(f"align-{column}-{encoded.key}")
    categories = track_categories(track, items, train) if cfg.meta else {}
    if cfg.meta:
        keys.append(metadata_key(categories))
    streams += loaded_sets(cfg, track, items, key_frames, texts, categories, cfg.cache)
    return Streams.pair(streams), "+".join(keys)


def text_columns(cfg: FeatureConfig, track: Track) -> list[str]:
    """The track's text columns a run encodes (none without `text=`)."""
    return [kind.column for kind in track.inputs if isinstance(kind, Text)] if cfg.text else []


def loaded_sets(
    cfg: TrainConfig,
    track: Track,
    items: pd.DataFrame,
    key_frames: Features,
    texts: dict[str, np.ndarray],
    categories: dict[str, list[str]],
    cache: str | None,
) -> list[Features]:
    """The sets made when a run loads, in the run's order: per text column its vectors (`texts`) and, with `align`,
    their cosine with the key frames; then the metadata. What training reads and the exported predictor makes."""
    ids, sets = items["item_id"].astype(str).tolist(), []
    for vectors in texts.values():
        sets.append(per_item(vectors, ids))
        if cfg.align:
            sets.append(prompt_alignment(key_frames, vectors[:, :-1]))  # the last feature is the empty flag
    if cfg.meta:
        sets.append(metadata_stream(track, items, categories, cache))
    return sets


def per_item(vectors: np.ndarray, ids: list[str]) -> Features:
    """One vector per item as a stream of one frame and one view; a row of NaN is an item without it."""
    present = ~np.isnan(vectors).any(axis=1)
    return Features(np.nan_to_num(vectors)[:, None, None, :], present[:, None, None], ids, ["center"])


def check_alignment(manifest: dict, text: EncodedText, cfg: TrainConfig) -> None:
    """The cosine of a text's embedding with a key frame's means something only between one model's two towers."""
    space = manifest.get("backbone", {}).get("space")
    if space is None or space != text.identity.get("space"):
        raise ValueError(
            f"align={cfg.align} needs the backbone and the text encoder to be the two towers of one model in one "
            f"embedding space (e.g. backbone=open_clip:ViT-B-32 text=open_clip:ViT-B-32 with the same weights); "
            f"got backbone={cfg.backbone} weights={cfg.weights}, text={cfg.text} text_weights={cfg.text_weights}"
        )


def track_categories(track: Track, items: pd.DataFrame, train: np.ndarray) -> dict[str, list[str]]:
    """Per Category input of the track, the categories of the training split."""
    columns = [kind.column for kind in track.inputs if isinstance(kind, Category)]
    return {column: training_categories(items[column].astype(str).tolist(), train) for column in columns}


def metadata_stream(track: Track, items: pd.DataFrame, categories: dict[str, list[str]], cache: str | None) -> Features:
    """The container facts of each item's file (memoised under `cache`, where there is one) and the one-hot of the
    track's categories over `categories`."""
    media = items["media"].tolist() if "media" in items else items["path"].tolist()
    parts = [container_metadata(items["path"].tolist(), media, cache)]
    parts += [one_hot(items[column].astype(str).tolist(), names) for column, names in categories.items()]
    return per_item(np.concatenate(parts, axis=1), items["item_id"].astype(str).tolist())


def metadata_key(categories: dict[str, list[str]]) -> str:
    named = [[column, names] for column, names in categories.items()]
    digest = hashlib.sha256(json.dumps([CONTAINER_FACTS, CONTAINER_VERSION, named]).encode()).hexdigest()[:10]
    return f"meta-container__{digest}"


def items_of(cfg: FeatureConfig, track: Track) -> pd.DataFrame:
    """The track's items under `cfg.data_dir`, and the media `unlabelled=` declares as a split of their own."""
    items = track.read_items(cfg.data_dir)
    if not cfg.unlabelled:
        return items
    extra = unlabelled_items(track, cfg.unlabelled, cfg.data_dir)
    clash = sorted(set(extra["path"]) & set(items["path"]))
    if clash:
        raise LayoutError(f"unlabelled={cfg.unlabelled}: {len(clash)} file(s) the lists already name, e.g. {clash[0]}")
    return pd.concat([items, extra[items.columns]], ignore_index=True)


def load_training_data(cfg: TrainConfig) -> TrainingData:
    track = get_track(cfg.track)
    items = items_of(cfg, track)
    items["media"] = item_fingerprints(items, cfg.cache)
    features, feature_key = read_streams(cfg, track, items)
    present = features.present()
    dropped = items.loc[~present, "item_id"].tolist()
    items = items[present].reset_index(drop=True)
    features = features.take(present)
    labels = np.array(items[list(track.targets)], dtype=np.float32)  # writable: torch shares its memory
    train = (items["split"] == "train").to_numpy()
    folds = np.where(items["split"] == UNLABELLED, UNLABELLED_FOLD, TEST_FOLD)
    folds[train] = grouped_folds(items.loc[train, "group"], cfg.folds, track.name, cfg.seed)
    pseudo = None
    if cfg.pseudo:
        pseudo = PseudoLabels.read(cfg.pseudo, cfg.runs_dir, track.name)
        pseudo.check_folds(pd.Series(folds[train], index=items.loc[train, "item_id"]))
        feature_key += f"+pseudo-{pseudo.digest}"
    return TrainingData(track, items, features, labels, folds, feature_key, dropped, pseudo)


def open_or_create_run(cfg: TrainConfig, data: TrainingData) -> Run:
    config = as_dict(cfg)
    run = Run(Path(cfg.runs_dir) / data.track.name / (cfg.run or run_id(config, data.feature_key, data.media_digest)))
    resolved = {
        **config,
        "run": run.id,
        "feature_key": data.feature_key,
        "media": data.media_digest,
        "views": data.features.views,
    }
    if run.path.joinpath("config.json").is_file():
        previous = {k: v for k, v in run.config.items() if k != "fold"}
        if previous != {k: v for k, v in resolved.items() if k != "fold"}:
            raise ValueError(f"{run.path} was trained with another configuration; pass a new run=<name>")
        return run
    run.path.mkdir(parents=True, exist_ok=True)
    folds = pd.DataFrame({"item_id": data.items["item_id"], "fold": data.folds, "media": data.items["media"]})
    run.write_parquet(FOLDS, folds)
    run.write_json("config.json", resolved)
    return run


def _long(pred: np.ndarray, item_ids: Iterable[str], views: list[str], targets: tuple[str, ...]) -> pd.DataFrame:
    """[items, views, targets] -> rows item_id, view, <targets>."""
    items, n_views, _ = pred.shape
    table = pd.DataFrame(pred.reshape(items * n_views, -1), columns=list(targets))
    table.insert(0, "view", np.tile(views, items))
    table.insert(0, "item_id", np.repeat(np.asarray(list(item_ids)), n_views))
    return table


def view_mean(table: pd.DataFrame, targets: tuple[str, ...]) -> pd.DataFrame:
    return table.groupby("item_id", sort=False)[list(targets)].mean()


@torch.no_grad()
def predict(head: StreamHead, tensors: list[torch.Tensor], batch: int = 4096) -> np.ndarray:
    """Stream tensors of [items, views, ...] (see stream_tensors) -> [items, views, targets]."""
    head.eval()
    items, views = tensors[0].shape[:2]
    flat = [tensor.flatten(0, 1).split(batch) for tensor in tensors]
    out = torch.cat([head(*chunk) for chunk in zip(*flat)])
    return out.reshape(items, views, -1).numpy()


def fold_streams(tensors: list[torch.Tensor], index: np.ndarray) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per stream, (x [N*views, T, D], mask [N*views, T]) of the items in `index`: what standardisation is fitted on."""
    pairs = zip(tensors[::2], tensors[1::2], strict=True)
    return [(x[index].flatten(0, 1), mask[index].flatten(0, 1)) for x, mask in pairs]


def load_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """A Lightning checkpoint's weights, unpickled with `weights_only`: a checkpoint can never run code."""
    return torch.load(checkpoint, weights_only=True, map_location="cpu")["state_dict"]


def train_fold(cfg: TrainConfig, data: TrainingData, run: Run, fold: int, progress: bool = False) -> dict[str, float]:
    """Trains one fold, keeps the checkpoint with the best validation score, writes its predictions. With
    pseudo-labels, two heads: the out-of-fold one learns the teacher's fold-k labels (honest on fold k), the test-time
    one (the fold's checkpoint, what submit and export use) the teacher's full blend."""
    if cfg.finetune:
        from workbench.finetune import finetune_fold  # it builds on this module's recipe

        return finetune_fold(cfg, data, run, fold, progress)
    train_idx, val_idx = data.index(fold)
    y = torch.from_numpy(data.labels)
    if cfg.shuffle_labels:  # the control: same pipeline, labels permuted among training items
        rng = np.random.default_rng(cfg.seed)
        y = y.clone()
        labelled = np.flatnonzero(data.folds >= 0)
        y[labelled] = y[rng.permutation(labelled)]
    tensors = stream_tensors(data.features)
    targets, views = data.track.targets, data.features.views
    val_ids = data.items["item_id"].to_numpy()[val_idx]
    fit = FoldFit(cfg, data, run, fold, tensors, val_ids, progress)
    oof_head, test_head = fold_models(data, fold, y, lambda rows, labels, name: fit(rows, val_idx, labels, name))
    ids = data.items["item_id"].to_numpy()

    def predicted(head: StreamHead, index: np.ndarray) -> pd.DataFrame:
        return _long(predict(head, [t[index] for t in tensors]), ids[index], views, targets)

    return write_fold(run, fold, data, fit, predicted, oof_head, test_head)


def fold_models(data: TrainingData, fold: int, y: torch.Tensor, fit: Callable) -> tuple:
    """The fold's out-of-fold and test-time models from `fit(rows, labels, checkpoint name)`: one model, or with
    pseudo-labels one on the teacher's fold-k labels (honest on fold k) and one on its full blend (the checkpoint
    submit and export use), both on the labelled rows plus the pseudo-labelled ones fold k may take."""
    train_idx, _ = data.index(fold)
    if data.pseudo is None:
        model = fit(train_idx, y, "best")
        return model, model
    rows, fold_labels, full_labels = data.pseudo_rows(fold)
    everything = np.concatenate([train_idx, rows])
    oof_model = fit(everything, _with(y, rows, fold_labels), "best-oof")
    return oof_model, fit(everything, _with(y, rows, full_labels), "best")


def write_fold(
    run: Run, fold: int, data: TrainingData, fit: FoldFit, predicted: Callable, oof_model, test_model
) -> dict[str, float]:
    """A fold's outputs from `predicted(model, index) -> long predictions`: out of fold (the out-of-fold model),
    test (the test-time one), unlabelled (what a teacher's fold-k model says of them, workbench.pseudo), and last
    its scores, which mark the fold finished."""
    _, val_idx = data.index(fold)
    oof = predicted(oof_model, val_idx)
    run.write_parquet(f"fold-{fold}/oof.parquet", oof)
    run.write_parquet(f"fold-{fold}/test.parquet", predicted(test_model, data.test_index))
    if len(data.unlabelled_index):
        run.write_parquet(f"fold-{fold}/{UNLABELLED}.parquet", predicted(oof_model, data.unlabelled_index))
    targets = data.track.targets
    parts = fit.scorer(data.labels)(view_mean(oof, targets).loc[fit.val_ids].to_numpy())
    parts["items"] = len(val_idx)
    run.write_json(f"fold-{fold}/score.json", parts)
    return parts


SELECTIONS = ("best", "last")


def fold_checkpoint(cfg: TrainConfig, run: Run, fold: int, name: str) -> ModelCheckpoint:
    """The weights a fold keeps: its epoch scoring best on the fold (`select=best`), or its last (`select=last`), for
    a teacher: a student learning its fold-k model's predictions is scored on fold k again, and would inherit an
    epoch chosen on fold k's labels."""
    if cfg.select not in SELECTIONS:
        raise ValueError(f"select={cfg.select!r}: expected one of {', '.join(SELECTIONS)}")
    chosen = {"monitor": "val_score", "mode": "max"} if cfg.select == "best" else {}  # no monitor: the latest epoch
    return ModelCheckpoint(
        dirpath=run.fold_dir(fold), filename=name, save_weights_only=True, enable_version_counter=False, **chosen
    )


def _with(y: torch.Tensor, rows: np.ndarray, labels: np.ndarray) -> torch.Tensor:
    """The labels with `rows` set to `labels` (the pseudo-labelled items, unlabelled until now)."""
    y = y.clone()
    y[rows] = torch.from_numpy(labels)
    return y


@dataclass
class FoldFit:
    """One fold's training recipe: a head fitted on some rows' labels, its checkpoint selected on the fold's own."""

    cfg: TrainConfig
    data: TrainingData
    run: Run
    fold: int
    tensors: list[torch.Tensor]
    val_ids: np.ndarray
    progress: bool

    def scorer(self, labels: np.ndarray) -> Scorer:
        labelled = self.data.labelled(labels)
        targets = list(self.data.track.targets)
        return lambda pred: self.data.track.selection_score(
            pd.DataFrame(pred, index=self.val_ids, columns=targets), labelled
        )

    def __call__(self, train_idx: np.ndarray, val_idx: np.ndarray, y: torch.Tensor, name: str) -> StreamHead:
        """Checkpoints are selected on the labels the head was trained on (permuted ones for the control), so the
        control never sees the truth; the fold's reported score is always against the true labels."""
        cfg, data = self.cfg, self.data
        pl.seed_everything(cfg.seed * 1000 + self.fold, verbose=False)
        head = create_head(
            cfg.head, data.features.dims, out=len(data.track.targets), hidden=cfg.hidden, dropout=cfg.dropout
        )
        head.fit_standardization(fold_streams(self.tensors, train_idx), y[train_idx])
        pseudo = data.folds == UNLABELLED_FOLD
        module = HeadRegressor(
            head, CombinedLoss.from_spec(cfg.loss), cfg.lr, cfg.wd, cfg.epochs, len(data.features.views),
            self.scorer(y.numpy()), data.pseudo_weight,
        )  # fmt: skip
        checkpoint = fold_checkpoint(cfg, self.run, self.fold, name)
        trainer = pl.Trainer(
            max_epochs=cfg.epochs,
            accelerator="cpu",
            logger=False,
            callbacks=[checkpoint],
            enable_progress_bar=self.progress,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            deterministic=True,
        )
        datamodule = CachedFeatures(self.tensors, y, train_idx, val_idx, cfg.batch, pseudo)
        trainer.fit(module, datamodule=datamodule)
        module.load_state_dict(load_state(Path(checkpoint.best_model_path)))
        return head


def run_summary(run: Run, data: TrainingData) -> dict:
    """Pooled out-of-fold score (views averaged) next to each fold's own score; for a track that calibrates, the
    map fitted on those predictions (written to the run) and the score after it, which is in sample for the map's few
    parameters. The run's report (scatter, fold bars, this table) lands in its folder."""
    targets = data.track.targets
    oof, labelled = view_mean(run.predictions("oof"), targets), data.labelled()
    summary = {"oof": data.track.selection_score(oof, labelled), "folds": run.fold_scores(), "run": run.id}
    truth = labelled.set_index("item_id")
    if data.track.calibrate != "none":
        calibration = Calibration.fit(data.track.calibrate, oof, truth, targets)
        run.write_json(CALIBRATION, calibration.to_json())
        oof = calibration.apply(oof)
        summary["oof_calibrated"] = data.track.selection_score(oof, labelled)
    run.write_json("scores.json", summary)
    fold_scores = {k: parts["score"] for k, parts in summary["folds"].items()}
    title = f"run {run.id}" + (
        f", {data.track.calibrate} calibrated (in sample)" if "oof_calibrated" in summary else ""
    )
    write_report(run.path, title, oof, truth, fold_scores, summary["oof"]["score"], [summary_table(run, summary)])
    return summary


def summary_table(run: Run, summary: dict) -> Table:
    """Each fold's metrics, then the pooled out-of-fold ones (and after calibration, where the track calibrates)."""
    names = next(iter(summary["folds"].values()))
    metrics = ["score", *sorted(m for m in names if m not in ("score", "items"))]
    rows = [
        [f"fold {k}", *(parts[m] for m in metrics), parts["items"]] for k, parts in sorted(summary["folds"].items())
    ]
    items = sum(p["items"] for p in summary["folds"].values())
    for key, label in (("oof", "out of fold"), ("oof_calibrated", "out of fold, calibrated")):
        if key in summary:
            rows.append([label, *(summary[key][m] for m in metrics), items])
    return f"run {run.id} ({run.path})", ["", *metrics, "items"], rows
