"""Unlabelled media and pseudo-labels (workbench.pseudo): unlabelled items stay out of folds, test lists and
submissions; a label set records its provenance; a student of other folds is refused; and the leak guard, shown on a
case built to leak: every unlabelled face is an exact copy of a labelled face of the same photo, and the features are
pure noise, so only a leak can score out of fold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from features.backbones import QualityStats
from features.cache import cache_dir, ensure_manifest, part_schema, write_part
from features.fingerprint import file_digest
from synth.dataset import WITHHELD_DIR
from tracks import get_track
from workbench import demo, pseudo
from workbench.cli import main
from workbench.config import FeatureConfig, parse_words
from workbench.data import UNLABELLED_FOLD
from workbench.runs import Run

PHOTOS, FACES, DIM = 30, 2, QualityStats.dim  # quality_stats's width, as the readme's timing runs the real encoder
WORDS = ["track=fiqa", "frames=1", "size=32", "unlabelled=extra", "folds=5", "epochs=40", "lr=0.01", "head=mlp"]
# The leak guard's students: 2 heads a fold each, and 4 epochs leave the margins of 40 (0.31 and 0.76 against 0.36 and
# 0.82), in a tenth of the time.
STUDENT = "epochs=4"


@pytest.fixture(scope="module")
def semi(tmp_path_factory) -> list[str]:
    """A FIQA layout of 60 labelled faces (two per photo), 60 unlabelled faces (extra/, each a copy of a labelled
    face's features, of the same photo) and 6 test faces, with noise features written straight into the cache."""
    folder = tmp_path_factory.mktemp("semi")
    data, cache = folder / "data", folder / "cache"
    for sub in ("train", "val", "extra"):
        (data / sub).mkdir(parents=True)
    rng = np.random.default_rng(5)
    labelled = [f"{p}_{k}.png" for p in range(PHOTOS) for k in range(FACES)]
    scores = rng.uniform(0, 1, len(labelled))
    pd.DataFrame({0: labelled, 1: scores}).to_csv(data / "train.csv", header=False, index=False)
    copies = [f"{p}_{k + FACES}.png" for p in range(PHOTOS) for k in range(FACES)]  # same photo: same group
    tests = [f"9{k}_0.png" for k in range(6)]
    paths = {}
    for name in labelled:
        paths[name] = data / "train" / name
    for name in copies:
        paths[f"unlabelled/{name}"] = data / "extra" / name
    for name in tests:
        paths[name] = data / "val" / name
    for name, path in paths.items():
        if name in tests:  # real images: submit's readme times the predictor on a few test items
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
        else:  # decoded by nobody: the features are in the cache
            path.write_bytes(rng.bytes(32))
    noise = rng.normal(size=(len(labelled), DIM))
    vectors = {**dict(zip(labelled, noise)), **{f"unlabelled/{c}": v for c, v in zip(copies, noise)}}
    vectors |= {name: rng.normal(size=DIM) for name in tests}
    (spec,) = FeatureConfig(track="fiqa", frames=1, size=32).all_specs("image")
    target = cache_dir(cache, "fiqa", spec)
    ensure_manifest(target, spec, {"name": "synthetic"}, DIM, {})
    ids = list(paths)
    views = ("center", "hflip")
    write_part(
        target,
        {
            "item_id": np.repeat(ids, len(views)),
            "fingerprint": np.repeat([file_digest(paths[i]) for i in ids], len(views)),
            "view": np.tile(views, len(ids)),
            "t": np.zeros(len(ids) * len(views), dtype=np.int64),
            "time": np.zeros(len(ids) * len(views), dtype=np.float32),
            "feature": np.repeat(np.array([vectors[i] for i in ids], dtype=np.float32), len(views), axis=0),
        },
        part_schema(DIM, "float32"),
    )
    return [f"data={data}", f"cache={cache}"]


def _train(words: list[str], runs: Path, *extra: str) -> Run:
    """A run of WORDS and `extra`, an `extra` word replacing the WORDS word of the same key."""
    replaced = {word.partition("=")[0] for word in extra}
    kept = [word for word in WORDS if word.partition("=")[0] not in replaced]
    assert main(["train", *words, *kept, f"runs_dir={runs}", *extra]) == 0
    newest = max((runs / "fiqa").iterdir(), key=lambda p: p.stat().st_mtime)
    return Run(newest)


@pytest.fixture(scope="module")
def teacher_runs(semi, tmp_path_factory) -> Path:
    """A runs folder holding one run of WORDS on `semi`, the teacher most tests start from, trained once."""
    runs = tmp_path_factory.mktemp("teacher") / "runs"
    _train(semi, runs)
    return runs


def _teacher(teacher_runs: Path, runs: Path) -> Run:
    """`_train(semi, runs)` on an empty `runs`: the module's teacher, copied there (its id and files do not depend on
    the folder it was trained in)."""
    shutil.copytree(teacher_runs, runs)
    (path,) = (runs / "fiqa").iterdir()
    return Run(path)


def _oof(run: Run) -> float:
    return json.loads((run.path / "scores.json").read_text())["oof"]["score"]


def test_unlabelled_items_are_in_no_fold_no_test_list_and_no_submission(semi, teacher_runs, tmp_path):
    run = _teacher(teacher_runs, tmp_path / "runs")
    folds = pd.read_parquet(run.path / "folds.parquet").set_index("item_id")["fold"]
    unlabelled = folds[folds.index.str.startswith("unlabelled/")]
    assert len(unlabelled) == PHOTOS * FACES and (unlabelled == UNLABELLED_FOLD).all()
    assert not run.predictions("test")["item_id"].str.startswith("unlabelled/").any()
    assert set(run.predictions("unlabelled")["item_id"]) == set(unlabelled.index)  # every fold model predicts them
    assert main(["submit", "track=fiqa", semi[0], f"runs_dir={tmp_path / 'runs'}", f"out={tmp_path / 'subs'}"]) == 0
    (zip_path,) = (tmp_path / "subs").glob("*/*.zip")
    submitted = get_track("fiqa").submission.read(zip_path, ("score",))
    assert len(submitted) == 6 and not submitted.index.str.startswith("unlabelled/").any()


def test_a_label_set_says_where_it_came_from_and_a_student_of_other_folds_is_refused(semi, teacher_runs, tmp_path):
    runs = tmp_path / "runs"
    teacher = _teacher(teacher_runs, runs)
    assert main(["pseudo-label", semi[0], "track=fiqa", f"runs_dir={runs}", f"runs={teacher.id}", "name=t"]) == 0
    folder = pseudo.label_set_dir(runs, "fiqa", "t")
    provenance = json.loads((folder / pseudo.PROVENANCE).read_text())
    assert provenance["runs"] == [teacher.id] and provenance["unlabelled"] == "extra" and provenance["blend"] == "best"
    labels = pd.read_parquet(folder / pseudo.LABELS)
    assert len(labels) == PHOTOS * FACES and {"score", "score@0", "score@4", "group"} <= set(labels.columns)
    assert main(["train", *semi, *WORDS, f"runs_dir={runs}", "pseudo=t", "folds=4"]) == 2  # other folds: refused
    assert main(["train", *semi, *WORDS, f"runs_dir={runs}", "pseudo=t:0"]) == 2  # a weight must be above 0
    assert main(["pseudo-label", semi[0], "track=fiqa", f"runs_dir={runs}", f"runs={teacher.id}", "unlabelled=x"]) == 2


def test_the_leak_guard_keeps_a_students_out_of_fold_score_honest(semi, teacher_runs, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    teacher = _teacher(teacher_runs, runs)
    assert main(["pseudo-label", semi[0], "track=fiqa", f"runs_dir={runs}", f"runs={teacher.id}", "name=t"]) == 0
    guarded = _oof(_train(semi, runs, "pseudo=t", STUDENT))

    # Without the guard: every copy trains every fold, on the full blend's labels (which saw the held-out faces).
    monkeypatch.setattr(
        "workbench.data.eligible", lambda labels, pseudo_groups, held: np.ones(len(pseudo_groups), bool)
    )
    read = pseudo.PseudoLabels.targets
    monkeypatch.setattr(pseudo.PseudoLabels, "targets", lambda self, ids, targets, fold: read(self, ids, targets, None))
    leaky = _oof(_train(semi, runs, "pseudo=t", "run=leaky", STUDENT))
    # Noise features: an honest score is chance, give or take the checkpoint picked on the fold (0.31 here); the
    # leak reads the held-out labels back through their copies (0.76 here).
    assert guarded < 0.5 and leaky > guarded + 0.3, (guarded, leaky)


def test_a_teacher_can_keep_its_last_epoch_rather_than_one_chosen_on_the_fold(semi, tmp_path):
    run = _train(semi, tmp_path / "runs", "select=last", "epochs=6")
    for fold in run.folds_done():
        kept = torch.load(run.fold_dir(fold) / "best.ckpt", weights_only=True, map_location="cpu")
        assert kept["epoch"] == 5  # the last of 6, whatever the fold scored
    assert main(["train", *semi, *WORDS, f"runs_dir={tmp_path / 'runs'}", "select=first"]) == 2


def test_the_student_demo_trains_a_teacher_a_student_alone_and_one_distilled_from_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo's submissions go to ./submissions
    words = ["track=fiqa", "items=40", "width=64", "height=80", "epochs=3", "folds=3", "student.size=32"]
    words += [f"data={tmp_path / 'data'}", f"cache={tmp_path / 'cache'}", f"runs_dir={tmp_path / 'runs'}"]
    (teacher, alone, distilled), judged, status = demo.student_demo(parse_words(words))
    assert status == 0  # every face extracted
    assert teacher.run.config["view"] == "resize+native" and teacher.run.config["select"] == "last"
    assert alone.run.config["size"] == distilled.run.config["size"] == 32 and not alone.run.config["pseudo"]
    folder = pseudo.label_set_dir(tmp_path / "runs", "fiqa", distilled.run.config["pseudo"])
    assert json.loads((folder / pseudo.PROVENANCE).read_text())["runs"] == [teacher.run.id]
    assert judged["items"] == len(list((tmp_path / "data" / WITHHELD_DIR).iterdir()))  # every withheld face judged
    assert alone.cost.flops == distilled.cost.flops < teacher.cost.flops
    for role in (teacher, alone, distilled):
        assert -1 <= role.out_of_fold <= 1 and -1 <= role.test <= 1
    assert main(["demo-student", "track=kvq"]) == 2  # no student demo declared
    assert main(["demo-student", *words, "students.size=32"]) == 2  # no such role
    assert main(["demo-student", *words, "student.pseudo=x"]) == 2  # the demo makes the label set itself
