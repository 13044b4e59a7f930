"""The run directory: `runs/<track>/<run-id>/` with the resolved config, the fold assignment and one folder per fold.

A fold is finished when its `score.json` exists: it is written last, atomically, after the checkpoint and the
prediction files, so a rerun redoes exactly the folds that were not finished. A run's id is derived from its
configuration, so training the same configuration again (or fold by fold) lands in the same run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from common.atomic import atomic_path, write_text
from features.streams.lmm import Lmm

CONFIG = "config.json"
SCORES = "scores.json"
FOLD_SCORE = "score.json"  # in each fold's folder, written last: the fold is finished
FOLD_TIME = "time.json"  # in each fold's folder: the seconds its training took
FOLDS = "folds.parquet"
# Words that do not make another run: where it is, which fold, where its curves are logged (workbench.loggers).
NOT_HASHED = ("run", "runs_dir", "fold", "logger", "tracking_uri")
BACKBONE_FILE = "backbone.safetensors"  # a fine-tuned run's backbone, in each of its fold folders (workbench.finetune)
ADAPTERS_DIR = "adapters"  # a LoRA-tuned run's adapters (peft's save_pretrained), in each fold folder (workbench.lora)
# The `finetune=` words of the recipes that tune from the media: the key-frame backbone (timm), or LoRA adapters of
# the LMM stream's model, whose word is that stream family's name.
TUNED_BACKBONE = ("true", "backbone")
TUNED_LMM = Lmm.name


@dataclass(frozen=True)
class Run:
    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def config(self) -> dict:
        return json.loads((self.path / CONFIG).read_text())

    def fold_dir(self, fold: int) -> Path:
        return self.path / f"fold-{fold}"

    def folds_done(self) -> list[int]:
        return sorted(int(p.parent.name.split("-")[1]) for p in self.path.glob(f"fold-*/{FOLD_SCORE}"))

    def is_complete(self) -> bool:
        return (self.path / CONFIG).is_file() and len(self.folds_done()) == self.config["folds"]

    def train_seconds(self) -> float:
        """The seconds its finished folds took to train (nan where none recorded its time)."""
        times = [self.fold_dir(k) / FOLD_TIME for k in self.folds_done()]
        found = [json.loads(path.read_text())["seconds"] for path in times if path.is_file()]
        return float(sum(found)) if found else float("nan")

    def fold_scores(self) -> dict[int, dict]:
        return {k: json.loads((self.fold_dir(k) / FOLD_SCORE).read_text()) for k in self.folds_done()}

    def predictions(self, kind: str) -> pd.DataFrame:
        """`oof` or `test` predictions of every finished fold, long format with a `fold` column."""
        frames = [pd.read_parquet(self.fold_dir(k) / f"{kind}.parquet").assign(fold=k) for k in self.folds_done()]
        if not frames:
            raise FileNotFoundError(f"{self.path}: no finished fold")
        return pd.concat(frames, ignore_index=True)

    def stale_items(self, fingerprints: dict[str, str]) -> list[str]:
        """The run's items whose file's fingerprint now (`fingerprints`, item id -> fingerprint) is not the one it
        was trained or predicted on. A run trained before the column was renamed has it as `media`."""
        table = pd.read_parquet(self.path / FOLDS).rename(columns={"media": "fingerprint"})
        return table.loc[table["item_id"].map(fingerprints) != table["fingerprint"], "item_id"].tolist()

    def folds(self) -> pd.Series:
        """The fold of every labelled item, indexed by item id (test items, fold -1, left out)."""
        table = pd.read_parquet(self.path / FOLDS)
        return table[table["fold"] >= 0].set_index("item_id")["fold"]

    def write_json(self, name: str, payload: dict) -> None:
        write_text(self.path / name, json.dumps(payload, indent=2, sort_keys=True, default=str))

    def write_parquet(self, name: str | Path, table: pd.DataFrame) -> None:
        with atomic_path(self.path / name) as tmp:
            table.to_parquet(tmp, index=False)


def run_id(config: dict, feature_key: str, fingerprints: str) -> str:
    """From the configuration (but the words that name where it is and which fold: NOT_HASHED), the feature sets and
    the digest of the fingerprints of the files they were made from."""
    hashed = {k: v for k, v in config.items() if k not in NOT_HASHED}
    payload = [hashed, feature_key, fingerprints]
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{config['backbone']}-{config['head']}-{digest}".replace("/", "-")


def open_run(runs_root: str | Path, track: str, run: str) -> Run:
    path = Path(runs_root) / track / run
    if not (path / CONFIG).is_file():
        raise FileNotFoundError(f"no run {run!r} in {path.parent} (no {CONFIG})")
    return Run(path)


def newest_complete_run(runs_root: str | Path, track: str) -> Run:
    """The newest finished run, shuffled-label controls left out: a control is trained after the run it checks (as
    `just demo` does) and must never be submitted for it."""
    runs = [Run(p.parent) for p in (Path(runs_root) / track).glob(f"*/{CONFIG}")]
    complete = [r for r in runs if r.is_complete() and not r.config.get("shuffle_labels")]
    if not complete:
        raise FileNotFoundError(f"no finished run of {track} under {Path(runs_root) / track}: run `just train` first")
    return max(complete, key=lambda r: (r.path / SCORES).stat().st_mtime if (r.path / SCORES).exists() else 0.0)
