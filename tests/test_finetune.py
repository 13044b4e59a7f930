"""Fine-tuned students (workbench.finetune): a run whose backbone is tuned end to end from the media fold by fold, its
tuned weights saved per fold, submitted like any run, exported and run by `predict` with each fold's own backbone,
scoring as the zip does; and the configurations it cannot tune refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from features.backbones import create_backbone
from features.decode import DECODERS
from features.spec import FeatureSpec
from features.views import view_family
from synth import synthesize
from tracks import get_track
from workbench import finetune
from workbench.cli import main
from workbench.predictor import Predictor
from workbench.predictor import main as predict
from workbench.runs import BACKBONE_FILE, Run

TRACK = get_track("fiqa")
STUDENT = ["backbone=test_resnet", "size=32", "views=center,hflip"]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> tuple[Path, list[str], Run]:
    folder = tmp_path_factory.mktemp("tuned")
    synthesize(TRACK, folder / "data", items=36, seed=2, width=64, height=64)
    where = ["track=fiqa", f"data={folder / 'data'}", f"cache={folder / 'cache'}"]
    runs = f"runs_dir={folder / 'runs'}"
    assert main(["extract", *where, *STUDENT, "workers=0"]) == 0
    assert main(["train", *where, runs, *STUDENT, "finetune=true", "folds=2", "epochs=2", "batch=8"]) == 0
    (run,) = (Run(p) for p in (folder / "runs" / "fiqa").iterdir())
    return folder, [*where, runs], run


def test_a_tuned_run_has_each_folds_backbone_and_its_head(tuned):
    _, _, run = tuned
    assert run.is_complete() and run.config["finetune"] == "true"
    for fold in run.folds_done():
        assert (run.fold_dir(fold) / BACKBONE_FILE).stat().st_size > 0
    oof = run.predictions("oof")
    assert set(oof["view"]) == {"center", "hflip"} and np.isfinite(oof["score"]).all()


def test_the_backbone_trains_in_train_mode(tuned):
    """Batch norm's running statistics move only in train mode: a backbone left in eval mode (as frozen encoders
    are made) would be tuned with its initial statistics and keep them."""
    _, _, run = tuned
    start = create_backbone("test_resnet", "random", 0).model.state_dict()
    tuned_state = load_file(str(run.fold_dir(0) / BACKBONE_FILE))
    stats = [key for key in start if key.endswith("running_mean")]
    assert stats and all(not torch.equal(tuned_state[key], start[key]) for key in stats)


def test_the_exported_student_runs_each_folds_backbone_and_scores_as_the_zip(tuned, tmp_path):
    folder, words, run = tuned
    assert main(["submit", *words[:2], words[3], f"out={tmp_path / 'subs'}"]) == 0
    assert main(["export", *words[:2], words[3], f"out={tmp_path / 'exports'}"]) == 0
    (exported,) = (p for p in (tmp_path / "exports").iterdir() if p.is_dir())
    predictor = Predictor.load(exported)
    (member,) = predictor.members
    assert len(member.fold_weights) == 2 and all(Path(w).is_relative_to(exported) for w in member.fold_weights)
    items = TRACK.read_items(folder / "data")
    test = items[items["split"] == "test"]
    (zip_path,) = (tmp_path / "subs").glob("*/*.zip")
    submitted = TRACK.submission.read(zip_path, TRACK.targets)
    scores = predictor.predict(test)
    np.testing.assert_allclose(scores.loc[submitted.index, "score"], submitted["score"], rtol=1e-4, atol=1e-5)
    one = test["path"].iloc[0]
    assert predict([one, str(tmp_path / "result")], exported) == 0
    assert float((tmp_path / "result").read_text()) == pytest.approx(submitted.loc[test["item_id"].iloc[0], "score"])


def test_what_cannot_be_tuned_is_refused(tuned, capsys):
    _, words, _ = tuned
    weight_free = ["backbone=quality_stats", "size=32", "views=center,hflip"]
    assert main(["extract", *words[:3], *weight_free, "workers=0"]) == 0
    cases = {
        "one backbone on one view family": [*STUDENT, "meta=container"],
        "no shuffled-label control": [*STUDENT, "shuffle_labels=true"],
        "tunes a timm backbone": weight_free,
    }
    for reason, extra in cases.items():
        capsys.readouterr()
        assert main(["train", *words, "finetune=true", "folds=2", "epochs=1", *extra]) == 2
        assert reason in capsys.readouterr().err


def test_media_views_cut_each_view_as_extraction_does(tuned):
    folder, _, _ = tuned
    items = TRACK.read_items(folder / "data")
    spec = FeatureSpec("test_resnet", decoder="image", frames=1, size=32)
    labels = torch.arange(len(items), dtype=torch.float32)[:, None]
    pseudo = torch.zeros(len(items), dtype=torch.bool)
    views = finetune.MediaViews(
        items["path"].tolist(), np.array([0, 1]), ["center", "hflip"], DECODERS.get("image"), spec.sampling(),
        view_family(spec), labels, pseudo,
    )  # fmt: skip
    centre, mask, y, is_pseudo = views[0]
    assert len(views) == 4 and centre.shape == (1, 3, 32, 32) and mask.all() and float(y) == 0.0 and not is_pseudo
    np.testing.assert_allclose(views[1][0].numpy(), centre.flip(-1).numpy(), atol=1e-6)  # hflip: the mirror
