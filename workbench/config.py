"""Configuration from `key=value` words.

Each command has a frozen dataclass; a value comes from the user's words, else the track's `defaults`, else the
dataclass default. Types follow the annotations (int, float, str, bool, comma-separated tuples), and an unknown key
is an error that suggests the closest known one.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from features import streams as stream_families
from features.spec import FeatureSpec

T = TypeVar("T")


class ConfigError(ValueError):
    """A word on the command line that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class TrackConfig:
    track: str = "kvq"
    data: str = ""  # the organiser's layout; empty means the demo data of the track

    @property
    def data_dir(self) -> Path:
        return Path(self.data or f"data/demo/{self.track}")


@dataclass(frozen=True)
class DecodeConfig(TrackConfig):
    """What every cached stream of a run shares: the decode (key-frame sampling, stored dtype, light), the cache and
    the media declared beside the layout."""

    frames: int = 8
    fps: float = 1.0
    phase: float = 0.0
    dtype: str = "float32"
    light: str = ""  # hdr media: code | linear | perceptual (features.hdr.LIGHTS); empty: code values
    cache: str = "cache"
    # Media without labels (a folder, or a list of paths) beside the layout: extracted, predicted by every fold
    # model, pseudo-labelled by `just pseudo-label`; never in folds, test lists or submissions.
    unlabelled: str = ""


class StreamsOf:
    """The feature streams a configuration names, as the stream families (features.streams) make them."""

    def streams(self, decoder: str) -> tuple[tuple[FeatureSpec, ...], ...]:
        """The cached feature streams a run reads, each a tuple of feature sets joined on the feature axis: the key
        frames' view families, then every other extracted family named (the families made at load are made when a
        run loads: features.streams.load)."""
        try:
            return stream_families.cached_streams(self, decoder)
        except stream_families.StreamError as error:
            raise ConfigError(str(error)) from None

    def all_specs(self, decoder: str) -> tuple[FeatureSpec, ...]:
        """Every feature set of every stream: what one extraction fills from one decode."""
        return tuple(spec for stream in self.streams(decoder) for spec in stream)

    def extra_streams(self) -> list[str]:
        """The encoders named for the streams beside the key frames, in stream order."""
        return stream_families.other_streams(self)

    def key_frames_alone(self) -> typing.Self:
        """The same configuration without the streams beside the key frames."""
        return dataclasses.replace(self, **stream_families.others_off())


# What identifies the feature sets in the cache (features.spec.FeatureSpec) and the streams made at load: the shared
# decode, then every stream family's words, declared by the families themselves.
FeatureConfig = dataclasses.make_dataclass(
    "FeatureConfig",
    [(word.name, type(word.default), dataclasses.field(default=word.default)) for word in stream_families.words()],
    bases=(DecodeConfig, StreamsOf),
    frozen=True,
    namespace={"__module__": __name__, "__doc__": "The decode and every stream family's words (features.streams)."},
)


@dataclass(frozen=True)
class ExtractConfig(FeatureConfig):
    views: tuple[str, ...] = ()  # variants, each view family taking those it knows; empty: the track's tta_views
    batch: int = 4  # items per batch
    workers: int = 2  # DataLoader processes decoding ahead of the model, one decoder thread each
    devices: int = 1
    accelerator: str = "auto"
    strategy: str = "auto"


@dataclass(frozen=True)
class ZeroShotConfig(ExtractConfig):
    """An LMM's answers scored against the labels before any training (workbench.zeroshot)."""

    folds: int = 5  # the grouped folds of `train`, for the out-of-fold map onto the label scale
    seed: int = 0


@dataclass(frozen=True)
class HeadConfig:
    head: str = "linear"
    hidden: int = 128
    dropout: float = 0.0


@dataclass(frozen=True)
class TrainConfig(HeadConfig, FeatureConfig):
    folds: int = 5
    seed: int = 0
    fold: int = -1  # one fold for train-fold; -1 trains every fold
    loss: str = "mse:1,plcc:1"
    lr: float = 1e-3
    wd: float = 1e-4
    epochs: int = 30
    batch: int = 32
    views: tuple[str, ...] = ()  # cached variants to train and predict on; empty means all of them
    shuffle_labels: bool = False  # the control run: training labels permuted, so its score shows chance level
    pseudo: str = ""  # <label set>[:weight] from `just pseudo-label`: its items trained on beside the labels
    # Train end to end from the media: `true` (or `backbone`) tunes the key-frame backbone with the head
    # (workbench.finetune), `lmm` LoRA adapters of the LMM stream's model with it (workbench.lora); empty: frozen.
    finetune: str = ""
    select: str = "best"  # a fold's kept weights: best (its epoch best on the fold) | last (a teacher's, see pseudo)
    run: str = ""  # empty starts a new run (train) or uses the newest (train-fold)
    runs_dir: str = "runs"  # the root folder of run folders
    logger: str = "csv"  # each fold's curves per epoch: csv | tensorboard | mlflow | none (workbench.loggers)
    tracking_uri: str = ""  # logger=mlflow: empty is the SQLite store runs_dir/mlflow.db; else any MLflow tracking URI


@dataclass(frozen=True)
class StudyConfig(TrackConfig):
    """Where a sweep's study lives (see workbench.studies.open_storage)."""

    storage: str = ""  # empty: runs_dir/<track>/sweeps.db (SQLite); a database URL; journal:<file> or <file>.log
    study: str = ""  # empty: <track>-sweep
    heartbeat: int = 30  # seconds between a running trial's heartbeats; silent for twice as long, it is marked FAIL
    cache: str = "cache"
    runs_dir: str = "runs"


@dataclass(frozen=True)
class SweepConfig(StudyConfig, TrainConfig):
    """The words of `train` give the default configuration, trial 0 of a new study and the centre of its ranges."""

    trials: int = 20  # trials this worker runs; workers on one study add up
    prune_after: int = 3  # finished trials before the pruner starts comparing folds
    sampler_seed: int = -1  # -1: drawn per worker, so two workers do not propose the same trials


@dataclass(frozen=True)
class SweepBestConfig(StudyConfig):
    pass


@dataclass(frozen=True)
class ProfileConfig(HeadConfig, FeatureConfig):
    views: tuple[
        str, ...
    ] = ()  # the test-time variants, one backbone pass per frame each; empty: the track's tta_views


@dataclass(frozen=True)
class SubmitConfig(TrackConfig):
    runs: tuple[str, ...] = ()  # run ids to blend (they must share folds); empty means the newest complete run
    blend: str = "auto"  # auto (the best run unless a blend beats it by more than noise) | best | mean | rank | ...
    calibration: str = ""  # none | logistic4 | logistic5; empty means the track's own (Track.calibrate)
    runs_dir: str = "runs"  # the root folder of run folders
    out: str = "submissions"
    tta: tuple[str, ...] = ()  # views averaged at test time; empty means every view the run predicted
    extra_data: bool = False  # for the readme: trained with data beyond the challenge's
    score_range: tuple[str, ...] = ()  # low,high: a bounded track's answers mapped there instead (ICME: 0,100)


@dataclass(frozen=True)
class ExportConfig(SubmitConfig):
    out: str = "exports"


@dataclass(frozen=True)
class PseudoLabelConfig(SubmitConfig):
    """The teacher runs (blended as submit blends them) and the unlabelled media they predicted when they trained."""

    unlabelled: str = ""  # empty: the one the teacher runs were trained with
    name: str = ""  # the label set's name; empty: pseudo-<teacher runs' digest>


@dataclass(frozen=True)
class CheckConfig(FeatureConfig):
    """The stream words say which weights the check looks for (an LMM named by `lmm=` must be on this machine)."""

    media: bool = True  # probe every media file (false: the label files alone)
    threads: int = 8  # files probed at once: opening a header is waiting on the disk more than working


@dataclass(frozen=True)
class WeightsConfig(TrainConfig, ExtractConfig):
    """The words of extract and train name the pretrained components `just weights` lists (features.weights)."""

    fetch: bool = False  # download what is missing into the caches read (HF_ENDPOINT, HF_HOME, TORCH_HOME apply)
    bundle: str = ""  # a folder to copy every present component into, laid out as HF_HOME and TORCH_HOME


@dataclass(frozen=True)
class ScoreConfig(TrackConfig):
    preds: str = ""
    truth: str = ""


@dataclass(frozen=True)
class RunsConfig(TrackConfig):
    """Which runs `just runs` lists (workbench.compare)."""

    runs_dir: str = "runs"
    top: int = 20
    where: tuple[str, ...] = ()  # setting=value conditions, all of them met (where=head=mlp)
    sort: str = "score"  # score | when | cost | time


@dataclass(frozen=True)
class CompareConfig(TrackConfig):
    runs_dir: str = "runs"
    runs: tuple[str, ...] = ()  # a,b: b is compared against a
    resamples: int = 1000  # paired resamples of the groups
    seed: int = 0


@dataclass(frozen=True)
class LeaderboardConfig(TrackConfig):
    """A leaderboard result of a submission (workbench.leaderboard)."""

    runs_dir: str = "runs"
    out: str = "submissions"  # where submit wrote the submission's folder
    submission: str = ""  # its name (the zip's stem) or the zip's path
    score: float = float("nan")
    phase: str = "test"  # val | test
    note: str = ""


@dataclass(frozen=True)
class SynthConfig(TrackConfig):
    out: str = ""  # empty means data/demo/<track>
    items: int = 120
    seed: int = 0
    width: int = 0  # media size; 0 means the track's own default
    height: int = 0
    withhold: float = 0.0  # the share of training groups whose labels are withheld, their media for `unlabelled=`

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else self.data_dir


@dataclass(frozen=True)
class CacheConfig:
    """The feature caches to list (`cache`) or prune (`cache prune`)."""

    track: str = ""  # empty: every track's
    cache: str = "cache"


@dataclass(frozen=True)
class PruneConfig(CacheConfig):
    """What `cache prune` removes, a version going where any of these names it (features.inventory)."""

    keep: tuple[str, ...] = ()  # data folders: every version they do not hold goes, in the tracks they are folders of
    unlabelled: str = ""  # media declared beside each keep folder as `train` takes them: kept with the folder's
    older: float = 0.0  # days: versions last read longer ago go; 0: no age rule
    size: float = 0.0  # GB: the least recently read versions go until the caches pruned fit; 0: no size rule


def parse_words(words: Iterable[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise ConfigError(f"{word!r} is not a key=value word (for example track=kvq)")
        if key in values:
            raise ConfigError(f"{key} is given twice ({values[key]!r} and {value!r})")
        values[key] = value
    return values


def known_keys(*classes: type) -> set[str]:
    return {f.name for cls in classes for f in dataclasses.fields(cls)}


def check_keys(values: Mapping[str, str], allowed: set[str], command: str) -> None:
    for key in values:
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            meaning = stream_families.word_help(hint[0]) if hint else ""
            suggestion = f" Did you mean {hint[0]}=" + (f" ({meaning})?" if meaning else "?") if hint else ""
            raise ConfigError(f"{command} takes no key {key!r}; it takes {', '.join(sorted(allowed))}.{suggestion}")


def _convert(key: str, raw: object, kind: object) -> object:
    if not isinstance(raw, str):
        return raw  # a track default, already typed
    try:
        if kind is bool:
            if raw.lower() not in {"1", "0", "true", "false", "yes", "no"}:
                raise ValueError(raw)
            return raw.lower() in {"1", "true", "yes"}
        if kind in (int, float):
            return kind(raw)
        if typing.get_origin(kind) is tuple:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{key}={raw!r}: expected {getattr(kind, '__name__', kind)}") from None
    return raw


def build(cls: type[T], values: Mapping[str, str], track_defaults: Mapping[str, object] = ()) -> T:
    """An instance of the config dataclass `cls` from the words that concern it, over the track's defaults."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    merged = {k: v for k, v in dict(track_defaults).items() if k in fields}
    merged.update({k: v for k, v in values.items() if k in fields})
    return cls(**{key: _convert(key, raw, hints[key]) for key, raw in merged.items()})


def as_dict(config: object) -> dict[str, object]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
