"""The runnable predictor: one item's raw media in, its score out, with neither the cache, the runs nor the data.

An exported folder holds `predictor.json` (the track, each run's configuration, its test-time views, its fitted text
encoders and categories, the blend, the calibration, the range map and each target's output range and direction,
which `README.md` states in words), every fold's head (`heads/`), the encoders'
weight files (`weights/`), the ledger of every component's licence (`licences.json`, features.weights) and an
executable `predict` at its root. It runs the code that made the training features
(features.encoding.render_item, the same encoders, the same view pairing as features.reader), so the predictor and
the submission agree by construction rather than by a second implementation kept in step; the price is that it
needs the installed workbench (`pip install` of this project, which brings torch, timm, PyAV and the rest), not
torch and PyAV alone. A challenge's Docker image needs that install, the folder, and `predict` as its entry point.

`predict MEDIA RESULT_FILE` writes the item's score (one float per target, comma-separated, in the track's order);
a track whose challenge runs programs on pairs (`Track.reference_argument`) takes `predict DISTORTED REFERENCE
RESULT_FILE` in the organisers' order, a no-reference model accepting the reference and ignoring it.
`predict --list ITEMS.csv OUT.csv` scores many items in one process (a `path` column, the track's text columns,
an optional `item_id`). Results are written atomically; an unreadable item or an unwritable result path exits 1
naming it, wrong arguments print the usage and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from common.atomic import atomic_path, write_text
from ensembles.blend import restore_blender
from ensembles.calibrate import Calibration
from features import streams as stream_families
from features.decode import MediaError
from features.encoding import create_encoders, encode_media
from features.fingerprint import REFERENCE
from features.inputs import Category, Text
from features.reader import Features, Streams, concat_features, family_variants
from features.spec import FeatureSpec
from features.weights import LEDGER, components, ledger
from tracks import Track, get_track
from tracks.ranges import RangeMap
from workbench.config import ExtractConfig, TrainConfig, as_dict, build
from workbench.heads import StreamHead, create_head, load_state, predict_views, stream_tensors
from workbench.runs import ADAPTERS_DIR, BACKBONE_FILE, TUNED_BACKBONE, TUNED_LMM, Run
from workbench.tuned_lmm import TunedLmm, lmm_set, load_lmm_of

MANIFEST = "predictor.json"
README = "README.md"
WEIGHTS = "weights"
VERSION = 2  # 2: what the streams made at load learned, per stream family (1: text encoders and categories apart)


class PredictError(RuntimeError):
    """An item or a path the predictor cannot use; the message names it."""


@dataclass
class Member:
    """One run inside a predictor: its configuration, the paired views the submission averages, each fold's head,
    and what its streams made at load learned from its training split (per stream family: features.streams)."""

    run: str
    config: TrainConfig
    views: list[str]
    heads: list[StreamHead]
    fitted: dict[str, object] = field(default_factory=dict)
    # A fine-tuned run's backbone weights, one file per fold (workbench.finetune): each fold's head runs on its own.
    fold_weights: list[str] = field(default_factory=list)
    # A LoRA-tuned run's adapter folders, one per fold (workbench.lora): each fold's head runs on the pooled state of
    # the run's LMM with its own fold's adapters merged.
    fold_adapters: list[str] = field(default_factory=list)
    workers: int = ExtractConfig.workers  # processes decoding ahead of the encoders, as `just extract` has them
    _encoders: dict = field(default_factory=dict, init=False, repr=False)

    def fold_configs(self) -> list[TrainConfig]:
        """The configuration each fold's head reads its streams under: the run's, or one per fold's tuned weights."""
        if not self.fold_weights:
            return [self.config] * len(self.heads)
        return [dataclasses.replace(self.config, weights=weights) for weights in self.fold_weights]

    def encoders_for(self, specs: Sequence[FeatureSpec]) -> list:
        """The sets' encoders, built once per member and weights (a list scored in batches reuses them)."""
        key = tuple(spec.weights for spec in specs)
        if key not in self._encoders:
            self._encoders[key] = create_encoders(specs)
        return self._encoders[key]

    def streams(self, track: Track, items: pd.DataFrame, config: TrainConfig | None = None) -> Streams:
        """The head's streams for `items` (item_id, path, the track's text and category columns) from their media,
        under `config` (the run's by default; a fold's, for a fine-tuned run)."""
        config = config or self.config
        specs = config.all_specs(track.decoder)
        cached = len(specs)
        variants = family_variants(self.views, cached)
        try:
            vectors = encode_media(items, specs, self.encoders_for(specs), variants, self.workers, ExtractConfig.batch)
        except MediaError as error:
            raise PredictError(str(error)) from error
        ids = items["item_id"].astype(str).tolist()
        components = [name.split("+") for name in self.views]
        sets = [_padded_set(vectors[s], [c[s] for c in components], spec.rows, ids) for s, spec in enumerate(specs)]
        loading = stream_families.Loading(items, track.inputs, sets[0], None, None, fitted=dict(self.fitted))
        loaded, _ = stream_families.load(self.config, loading)
        sets += [_repeated_per_view(features, len(self.views)) for features in loaded]
        grouped, start = [], 0
        for size in [len(stream) for stream in self.config.streams(track.decoder)] + [1] * (len(sets) - cached):
            grouped.append(concat_features(sets[start : start + size]))  # every set on the paired views already
            start += size
        return Streams(grouped)

    def predict(self, track: Track, items: pd.DataFrame) -> np.ndarray:
        """[items, targets]: each fold's head on every view, the views' mean, then the folds' (as fold_ensemble)."""
        if self.fold_adapters:
            return self.predict_tuned_lmm(track, items)
        streams: dict[str, list[torch.Tensor]] = {}
        folds = []
        for head, config in zip(self.heads, self.fold_configs(), strict=True):
            if config.weights not in streams:
                streams[config.weights] = stream_tensors(self.streams(track, items, config))
            folds.append(predict_views(head, streams[config.weights]).mean(axis=1))
        return np.mean(folds, axis=0)

    def predict_tuned_lmm(self, track: Track, items: pd.DataFrame) -> np.ndarray:
        """A LoRA-tuned run (workbench.lora): per fold, that fold's adapters merged into the one base LMM, its pooled
        state of every item and paired view (the LMM set's variant of it) under the fold's head, the views' mean;
        then the folds' mean. The media are decoded once per fold: the adapters change between passes, never while
        encode_media's threads run."""
        spec, position, _ = lmm_set(self.config, track.decoder)
        spec = dataclasses.replace(spec, dtype="float32")  # the pooled state as the run's heads saw it, not rounded
        if "lora" not in self._encoders:
            base = load_lmm_of(spec, self.config.seed)
            self._encoders["lora"] = TunedLmm(base, self.fold_adapters)
        tuned: TunedLmm = self._encoders["lora"]
        if len(self.heads) != len(self.fold_adapters):
            raise PredictError(f"run {self.run}: {len(self.heads)} fold heads but {len(self.fold_adapters)} adapters")
        ids = items["item_id"].astype(str).tolist()
        components = [view.split("+")[position] for view in self.views]
        variants = [tuple(dict.fromkeys(components))]
        folds = []
        for fold, head in enumerate(self.heads):
            with tuned.fold(fold):
                try:
                    (vectors,) = encode_media(items, [spec], [tuned], variants, self.workers, ExtractConfig.batch)
                except MediaError as error:
                    raise PredictError(str(error)) from error
            pooled = Streams([_padded_set(vectors, components, spec.rows, ids)])
            folds.append(predict_views(head, stream_tensors(pooled)).mean(axis=1))
        return np.mean(folds, axis=0)


def _padded_set(vectors: dict[tuple[str, str], np.ndarray], views: list[str], frames: int, ids: list[str]) -> Features:
    """One feature set of `ids` on `views` (one per paired view), frames padded to `frames` and masked."""
    dim = next(iter(vectors.values())).shape[-1]
    x = np.zeros((len(ids), len(views), frames, dim), dtype=np.float32)
    mask = np.zeros((len(ids), len(views), frames), dtype=bool)
    for i, item in enumerate(ids):
        for v, view in enumerate(views):
            found = vectors.get((item, view), np.empty((0, dim), np.float32))[:frames]
            x[i, v, : len(found)] = found
            mask[i, v, : len(found)] = True
    return Features(x, mask, ids, list(views))


def _repeated_per_view(features: Features, views: int) -> Features:
    """A set on every paired view: a one-view set (text, metadata) repeated, as the pairing cycles it."""
    if features.x.shape[1] == views:
        return features
    return Features(np.repeat(features.x, views, 1), np.repeat(features.mask, views, 1), features.item_ids, ["center"])


@dataclass
class Predictor:
    """Runs (members) blended, calibrated and mapped into the track's range: a submission's test predictions item by
    item."""

    track: Track
    members: list[Member]
    blend: dict  # ensembles.blend.blender_state
    calibration: Calibration
    range_map: RangeMap
    licences: list[dict[str, str]] = field(default_factory=list)  # the ledger (features.weights), set on export

    def predict(self, items: pd.DataFrame) -> pd.DataFrame:
        """One row per item (index item_id), one column per target."""
        targets = list(self.track.targets)
        stacked = np.stack([member.predict(self.track, items) for member in self.members])
        blended = restore_blender(self.blend).predict(stacked)
        frame = pd.DataFrame(blended, index=pd.Index(items["item_id"], name="item_id"), columns=targets)
        return self.range_map.apply(self.calibration.apply(frame))

    def seconds_per_item(self, items: pd.DataFrame) -> float:
        """Wall time per item of the whole pipeline (decode, views, encoders, heads, blend) on this machine, the
        first item run once before, so one-off initialisation is not counted."""
        self.predict(items.head(1))
        started = time.perf_counter()
        for k in range(len(items)):
            self.predict(items.iloc[k : k + 1])
        return (time.perf_counter() - started) / max(len(items), 1)

    # --- the folder ---------------------------------------------------------------------------------------------

    def save(self, folder: Path) -> Path:
        """Writes the predictor's folder (manifest, heads, weights, text states, `predict`)."""
        folder.mkdir(parents=True, exist_ok=True)
        members = []
        for m, member in enumerate(self.members):
            heads = []
            for k, head in enumerate(member.heads):
                relative = f"heads/{m}-{member.run}/fold-{k}.pt"
                with atomic_path(folder / relative) as tmp:
                    torch.save(head.state_dict(), tmp)
                heads.append(relative)
            fitted = stream_families.save_states(member.fitted, folder, f"fitted/{m}-{member.run}")
            members.append(
                {
                    "run": member.run,
                    "config": as_dict(member.config),
                    "views": member.views,
                    "dims": member.heads[0].dims if member.heads else [],
                    "heads": heads,
                    "fitted": fitted,
                    "fold_weights": member.fold_weights,
                    "fold_adapters": member.fold_adapters,
                }
            )
        manifest = {
            "version": VERSION,
            "track": self.track.name,
            "targets": list(self.track.targets),
            "members": members,
            "blend": self.blend,
            "calibration": self.calibration.to_json(),
            "range_map": self.range_map.to_json(),
            "output": self.output(),
        }
        write_text(folder / README, self.readme())
        write_text(folder / LEDGER, json.dumps(self.licences, indent=2))
        write_text(folder / MANIFEST, json.dumps(manifest, indent=2))
        script = folder / "predict"
        write_text(script, PREDICT_SCRIPT)
        script.chmod(0o755)
        return folder

    def output(self) -> dict[str, dict]:
        """Each target's range and direction, for whoever runs the predictor without the workbench: a bounded track's
        predictions lie strictly inside the range its map takes them into (`submit score_range=` included); the
        others are on the labels' scale, unclipped, and a submission accepts them within the track's range. Higher
        is better on every track: quality (MOS, JOD, each XGC dimension) and engagement (ECR) alike."""
        ranges = self.track.ranges()
        output = {}
        for target in self.track.targets:
            mapped = self.range_map.targets.get(target)
            low, high = (mapped.low, mapped.high) if mapped else ranges[target]
            output[target] = {"low": low, "high": high, "bounded": bool(mapped), "higher_is_better": True}
        return output

    def readme(self) -> str:
        """The folder's README: what it scores, how to run it, and what each number it writes means."""
        runs = ", ".join(member.run for member in self.members)
        lines = [
            f"# {self.track.title}: exported predictor",
            "",
            f"Run(s) {runs} of the vqa-workbench, which must be installed to run it.",
            f"Usage: `{usage(self.track)}`. It writes one float per target, comma-separated, in this order:",
            "",
        ]
        for target, out in self.output().items():
            where = (
                f"always strictly inside ({out['low']}, {out['high']})"
                if out["bounded"]
                else f"on the labels' scale, unclipped (a submission accepts [{out['low']}, {out['high']}])"
            )
            lines.append(f"- `{target}`: higher is better; {where}")
        lines += ["", f"## Licences ({LEDGER} says where each was read)", ""] if self.licences else []
        for row in self.licences:
            flag = f" (**{row['flag']} licence: check its terms before use**)" if row["flag"] else ""
            lines.append(f"- {row['component']} {row['name']}: {row['licence']}{flag}")
        return "\n".join(lines) + "\n"

    @classmethod
    def load(cls, folder: Path) -> Predictor:
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest.get("version") != VERSION:
            found = manifest.get("version")
            raise PredictError(f"{folder / MANIFEST}: version {found}; this workbench reads version {VERSION}")
        track = get_track(manifest["track"])
        members = []
        for entry in manifest["members"]:
            config = build(TrainConfig, {k: _absolute_weights(folder, v) for k, v in entry["config"].items()})
            heads = []
            for relative in entry["heads"]:
                head = create_head(config.head, entry["dims"], out=len(track.targets), hidden=config.hidden)
                head.load_state_dict(torch.load(folder / relative, weights_only=True))
                heads.append(head.eval())
            fitted = stream_families.restore_states(config, entry["fitted"], folder)
            fold_weights = [_absolute_weights(folder, weights) for weights in entry["fold_weights"]]
            adapters = [_absolute_weights(folder, adapter) for adapter in entry.get("fold_adapters", [])]
            members.append(Member(entry["run"], config, entry["views"], heads, fitted, fold_weights, adapters))
        return cls(
            track,
            members,
            manifest["blend"],
            Calibration.from_json(manifest["calibration"]),
            RangeMap.from_json(manifest["range_map"]),
        )


def _absolute_weights(folder: Path, value: object) -> object:
    """A configuration value naming exported weights (`weights/...`, `hf:weights/...`) made absolute; the others
    as they are."""
    if isinstance(value, str) and value.removeprefix("hf:").startswith(f"{WEIGHTS}/"):
        prefix = "hf:" if value.startswith("hf:") else ""
        return prefix + str(folder / value.removeprefix("hf:"))
    return value


# --- weights that travel ------------------------------------------------------------------------------------------


def copy_weights(source: Path, folder: Path) -> str:
    """Copies a weights file or model folder into `folder/weights/<k>/`, returning its path relative to `folder`."""
    slot = folder / WEIGHTS / str(len(list((folder / WEIGHTS).glob("*"))) if (folder / WEIGHTS).is_dir() else 0)
    target = slot / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, symlinks=False)
    else:
        shutil.copy2(source, target)
    return str(target.relative_to(folder))


def portable(config: TrainConfig, folder: Path) -> TrainConfig:
    """The configuration with every weights file or model folder its streams load copied under `folder/weights/`
    and named there (a `hf:` model by its folder, its name)."""
    changes = {}
    for word, source in stream_families.weight_sources(config):
        relative = copy_weights(source, folder)
        changes[word] = f"hf:{relative}" if str(getattr(config, word)).startswith("hf:") else relative
    return dataclasses.replace(config, **changes)


def fold_heads(run: Run, config: TrainConfig, targets: int) -> list[StreamHead]:
    """Every fold's head from its best checkpoint, the stream widths read off its standardisation buffers."""
    heads = []
    for fold in run.folds_done():
        checkpoint = load_state(run.fold_dir(fold) / "best.ckpt")  # a fine-tuned run's holds its backbone too
        state = {k.removeprefix("head."): v for k, v in checkpoint.items() if k.startswith("head.")}
        dims = [int(state[f"mean_{k}"].shape[0]) for k in range(sum(1 for key in state if key.startswith("mean_")))]
        head = create_head(config.head, dims, out=targets, hidden=config.hidden, dropout=config.dropout)
        head.load_state_dict(state)
        heads.append(head.eval())
    return heads


def member_of(run: Run, config: TrainConfig, views: list[str], track: Track, items: pd.DataFrame) -> Member:
    """A run as a predictor's member; what its streams made at load learn, learned on the training split as the
    run's were (features.streams.fit)."""
    fitted = stream_families.fit(config, track.inputs, items)
    paired = views or list(run.config["views"])
    done = run.folds_done()
    tuned = [str(run.fold_dir(k) / BACKBONE_FILE) for k in done] if config.finetune in TUNED_BACKBONE else []
    adapters = [str(run.fold_dir(k) / ADAPTERS_DIR) for k in done] if config.finetune == TUNED_LMM else []
    return Member(run.id, config, paired, fold_heads(run, config, len(track.targets)), fitted, tuned, adapters)


def export_folder(predictor: Predictor, folder: Path) -> Path:
    """The predictor saved in `folder` (its encoders' weights copied in, with the ledger of their licences, read where
    they came from) and zipped beside it as `<folder>.zip`, the zip written whole before it takes its name."""
    if folder.exists():
        shutil.rmtree(folder)
    members = [
        dataclasses.replace(
            m,
            config=portable(m.config, folder),
            fold_weights=[copy_weights(Path(weights), folder) for weights in m.fold_weights],
            fold_adapters=[copy_weights(Path(adapters), folder) for adapters in m.fold_adapters],
        )
        for m in predictor.members
    ]
    parts = {(p.store, p.expected, p.name): p for m in predictor.members for p in components(m.config)}
    dataclasses.replace(predictor, members=members, licences=ledger(parts.values())).save(folder)
    archive = folder.with_name(f"{folder.name}.zip")  # a run id may hold a dot (test_vit.r160_in1k-...)
    with atomic_path(archive) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                info = zipfile.ZipInfo.from_file(path, f"{folder.name}/{path.relative_to(folder)}")
                with open(path, "rb") as handle:
                    zipped.writestr(info, handle.read(), zipfile.ZIP_DEFLATED)
    return archive


# --- the command ------------------------------------------------------------------------------------------------


PREDICT_SCRIPT = '''#!/usr/bin/env python3
"""Scores media with the predictor exported beside this file (vqa-workbench); run it with no argument for usage."""
import sys
from pathlib import Path

from workbench.predictor import main

sys.exit(main(sys.argv[1:], Path(__file__).resolve().parent))
'''


def _write_result(path: str, text: str) -> None:
    try:
        write_text(path, text)
    except OSError as error:
        raise PredictError(f"{path}: cannot write the result ({error.strerror or error})") from error


def _listed_items(
    track: Track, paths: Sequence[str], texts: dict[str, list[str]], ids: Sequence[str], references: Sequence[str]
) -> pd.DataFrame:
    """The items table of media given on the command line; `references` are used where the track compares a pair
    (a no-reference track accepts and ignores them, as the challenge's dummy reference argument)."""
    items = pd.DataFrame({"item_id": list(ids), "path": list(paths)})
    files = list(paths)
    for kind in track.inputs:
        if isinstance(kind, Text):
            items[kind.column] = texts.get(kind.column, [""] * len(items))
        elif isinstance(kind, Category):
            items[kind.column] = [kind.parse(Path(p).name) for p in paths]
        elif getattr(kind, "reference", False):
            if len(references) != len(paths) or not all(references):
                raise PredictError(f"track {track.name} compares each video with its reference: give both")
            items[kind.column] = list(references)
            files += references
    for path in files:
        if not Path(path).is_file():
            raise PredictError(f"{path}: no such file")
    return items


def _result_line(row: Sequence[float]) -> str:
    return ",".join(repr(float(v)) for v in row)


def usage(track: Track) -> str:
    media = "DISTORTED REFERENCE" if track.reference_argument else "MEDIA"
    texts = " [--text COLUMN=TEXT ...]" if any(isinstance(kind, Text) for kind in track.inputs) else ""
    return f"predict {media} RESULT_FILE{texts} | predict --list ITEMS.csv OUT.csv"


def _argument_parser(track: Track) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="predict", usage=usage(track), description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="the media (and, where the challenge passes one, its reference), then "
                        "the result file")  # fmt: skip
    parser.add_argument("--list", nargs=2, metavar=("ITEMS.csv", "OUT.csv"), help="score many items in one process")
    parser.add_argument(
        "--text", action="append", default=[], dest="texts", metavar="COLUMN=TEXT", help="a text input's value"
    )
    return parser


def main(argv: Sequence[str], folder: Path) -> int:
    """The `predict` command of the folder's predictor; returns the exit status."""
    try:
        predictor = Predictor.load(folder)
        track = predictor.track
        parser = _argument_parser(track)
        args = parser.parse_args(list(argv))
        media_count = 2 if track.reference_argument else 1
        if args.list and (args.paths or args.texts):
            parser.error("--list takes no other argument")
        if not args.list and len(args.paths) != media_count + 1:
            parser.error(f"expected {media_count + 1} paths, got {len(args.paths)}")
        if args.list:
            listed = pd.read_csv(args.list[0], dtype=str, keep_default_na=False)
            if "path" not in listed:
                raise PredictError(f"{args.list[0]}: no `path` column (found {', '.join(listed.columns) or 'none'})")
            ids = listed["item_id"] if "item_id" in listed else [Path(p).name for p in listed["path"]]
            texts = {c: listed[c].tolist() for c in listed.columns if c not in ("path", "item_id", REFERENCE)}
            references = listed[REFERENCE].tolist() if REFERENCE in listed else []
            scores = predictor.predict(_listed_items(track, listed["path"].tolist(), texts, ids, references))
            lines = ["item_id," + ",".join(track.targets)]
            lines += [f"{item},{_result_line(row)}" for item, row in zip(scores.index, scores.to_numpy())]
            _write_result(args.list[1], "\n".join(lines) + "\n")
            return 0
        texts = {}
        for pair in args.texts:
            column, equals, text = pair.partition("=")
            if not equals:
                parser.error(f"--text {pair!r}: expected COLUMN=TEXT")
            texts[column] = [text]
        media, result = args.paths[0], args.paths[-1]
        scores = predictor.predict(_listed_items(track, [media], texts, [Path(media).name], args.paths[1:-1]))
        _write_result(result, _result_line(scores.to_numpy()[0]) + "\n")
        return 0
    except SystemExit as stop:  # argparse's usage errors (2) and --help (0)
        return int(stop.code or 0)
    except (PredictError, OSError) as error:
        print(f"predict: {error}", file=sys.stderr)
        return 1
