"""The exported predictor: a folder and zip that score raw media with neither the cache, the runs nor the data, as
the submission of the same runs did; its command's arguments, errors and atomic results."""

from __future__ import annotations

import json
import runpy
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ensembles.calibrate import Calibration
from ensembles.combine import fold_ensemble
from features.weights import LEDGER
from tracks import get_track, list_tracks
from workbench.cli import main
from workbench.predictor import MANIFEST, README, Predictor
from workbench.runs import Run

KVQ = get_track("kvq")


def _submitted(zip_path: Path) -> pd.DataFrame:
    return KVQ.submission.read(zip_path, KVQ.targets)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny KVQ run submitted and exported from copies of its data, cache and runs, which are then removed: the
    export must stand alone. Returns (export folder, the zip's predictions, the test items' paths by id)."""
    root = tmp_path_factory.mktemp("exported")
    where = [f"data={root / 'data'}", f"cache={root / 'cache'}"]
    runs = f"runs_dir={root / 'runs'}"
    assert main(["synth", f"out={root / 'data'}", "items=24", "seed=3", "width=64", "height=48"]) == 0
    assert main(["extract", *where, "size=32", "frames=3", "views=center,hflip", "workers=0"]) == 0
    assert main(["train", *where, runs, "size=32", "frames=3", "folds=2", "epochs=3"]) == 0
    assert main(["submit", where[0], runs, f"out={root / 'subs'}"]) == 0
    assert main(["export", where[0], runs, f"out={root / 'exports'}"]) == 0
    (zip_path,) = (root / "subs").glob("*/*.zip")
    (folder,) = (p for p in (root / "exports").iterdir() if p.is_dir())
    items = KVQ.read_items(root / "data")
    test = items[items["split"] == "test"]
    media = root / "media"  # the test files moved out of the data folder, which goes with the cache and runs
    paths = {}
    for item, path in zip(test["item_id"], test["path"]):
        paths[item] = media / item
        paths[item].parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, paths[item])
    for gone in ("data", "cache", "runs"):
        shutil.rmtree(root / gone)
    return folder, _submitted(zip_path), paths


def _run(folder: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(folder / "predict"), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _run_here(folder: Path, *args: str, cwd: Path, monkeypatch, capfd) -> subprocess.CompletedProcess:
    """The exported `predict` script itself, run in this process (as `_run` would, less the interpreter's start, which
    costs seconds per call here): its exit status and what it printed."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [str(folder / "predict"), *args])
    capfd.readouterr()
    try:
        runpy.run_path(str(folder / "predict"), run_name="__main__")
        status = 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else 1
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(sys.argv, status, out, err)


# Run before the exported script: any import of Lightning's trainer, of the workbench's training, of a model zoo the
# run's weight-free backbone does not use, or of the blends' fitting code fails (each zoo costs seconds of the start).
WITHOUT_TRAINING = """
import runpy, sys
UNUSED = ("workbench.train", "workbench.fold", "timm", "open_clip", "torchvision.models", "sklearn.linear_model")
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[:3] == ["lightning", "pytorch", "trainer"] or name.startswith(UNUSED):
            raise ImportError(f"{name} is unimportable in this test")
sys.meta_path.insert(0, Refuse())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_predict_in_a_fresh_process_elsewhere_without_training_code_scores_an_item_as_the_submission(
    exported, tmp_path
):
    folder, submitted, paths = exported
    item = submitted.index[0]
    command = [sys.executable, "-c", WITHOUT_TRAINING, str(folder / "predict"), str(paths[item]), "score.txt"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (line,) = (tmp_path / "score.txt").read_text().splitlines()
    assert float(line) == pytest.approx(submitted.loc[item, "score"], rel=1e-5, abs=1e-6)
    assert list(tmp_path.iterdir()) == [tmp_path / "score.txt"]  # nothing else written, no temporary left


def test_predict_a_list_in_one_process_and_the_zip_holds_the_folder(exported, tmp_path):
    folder, submitted, paths = exported
    listed = pd.DataFrame({"item_id": list(paths), "path": [str(p) for p in paths.values()]})
    listed.to_csv(tmp_path / "items.csv", index=False)
    done = _run(folder, "--list", str(tmp_path / "items.csv"), str(tmp_path / "out.csv"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    scores = pd.read_csv(tmp_path / "out.csv", index_col="item_id")
    np.testing.assert_allclose(scores.loc[submitted.index, "score"], submitted["score"], rtol=1e-5, atol=1e-6)
    with zipfile.ZipFile(folder.with_suffix(".zip")) as archive:
        names = set(archive.namelist())
        assert {f"{folder.name}/predict", f"{folder.name}/{MANIFEST}", f"{folder.name}/{README}"} <= names
        assert archive.getinfo(f"{folder.name}/predict").external_attr >> 16 & 0o111  # still executable


def test_the_export_carries_the_licence_ledger(exported):
    folder = exported[0]
    (workbench,) = json.loads((folder / LEDGER).read_text())  # a weight-free run: the workbench alone
    assert workbench["component"] == "workbench" and workbench["licence"] == "Apache-2.0" and not workbench["flag"]
    assert f"- workbench {workbench['name']}: Apache-2.0\n" in (folder / README).read_text()


def test_wrong_arguments_an_unreadable_item_and_an_unwritable_result_are_refused(
    exported, tmp_path, monkeypatch, capfd
):
    """The first case runs the executable in a process of its own; the others run the same script in this one (the
    fresh-process tests above cover the executable's start), as each interpreter's start costs seconds here."""
    folder, _, paths = exported
    video = str(next(iter(paths.values())))
    done = _run(folder, cwd=tmp_path)
    assert done.returncode == 2 and "usage: predict MEDIA RESULT_FILE" in done.stderr

    def here(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        return _run_here(*args, cwd=cwd, monkeypatch=monkeypatch, capfd=capfd)

    for args in ([], [video], [video, "a", "b"], ["--list", "items.csv"]):
        done = here(folder, *args, cwd=tmp_path)
        assert done.returncode == 2 and "usage: predict MEDIA RESULT_FILE" in done.stderr, args
    (tmp_path / "notes.mp4").write_text("not a video")
    done = here(folder, str(tmp_path / "notes.mp4"), "out.txt", cwd=tmp_path)
    assert done.returncode == 1 and "notes.mp4" in done.stderr and not (tmp_path / "out.txt").exists()
    done = here(folder, str(tmp_path / "absent.mp4"), "out.txt", cwd=tmp_path)
    assert done.returncode == 1 and "absent.mp4: no such file" in done.stderr
    (tmp_path / "taken").write_text("a file where a folder should be")
    done = here(folder, video, str(tmp_path / "taken" / "out.txt"), cwd=tmp_path)
    assert done.returncode == 1 and "taken/out.txt: cannot write the result" in done.stderr
    (tmp_path / "old.txt").write_text("an older result\n")
    assert here(folder, video, "old.txt", cwd=tmp_path).returncode == 0
    assert len((tmp_path / "old.txt").read_text().splitlines()) == 1  # replaced whole


def test_a_blend_of_two_runs_exports_as_submitted(two_kvq_runs, tmp_path):
    words, runs = two_kvq_runs
    chosen = [f"runs={','.join(runs)}", "blend=weights"]
    assert main(["submit", *words, *chosen, f"out={tmp_path / 'subs'}"]) == 0
    assert main(["export", *words, *chosen, f"out={tmp_path / 'exports'}"]) == 0
    (zip_path,) = (tmp_path / "subs").glob("*/*.zip")
    (folder,) = (p for p in (tmp_path / "exports").iterdir() if p.is_dir())
    predictor = Predictor.load(folder)
    assert [m.run for m in predictor.members] == runs and predictor.blend["name"] == "weights"
    items = KVQ.read_items(Path(words[0].split("=", 1)[1]))
    scores = predictor.predict(items[items["split"] == "test"])
    submitted = _submitted(zip_path)
    np.testing.assert_allclose(scores.loc[submitted.index, "score"], submitted["score"], rtol=1e-5, atol=1e-6)


def test_a_backbones_weights_file_travels_with_the_export(tmp_path, capsys, log_console):
    import timm

    torch.manual_seed(0)
    weights = tmp_path / "elsewhere" / "test_resnet.pth"
    weights.parent.mkdir()
    torch.save(timm.create_model("test_resnet", num_classes=0).state_dict(), weights)
    (weights.parent / "README.md").write_text("---\nlicense: cc-by-nc-sa-4.0\n---\n")  # its model card
    where = [f"data={tmp_path / 'data'}", f"cache={tmp_path / 'cache'}"]
    model = ["backbone=test_resnet", f"weights={weights}", "size=32", "frames=2", "views=center"]
    runs = f"runs_dir={tmp_path / 'runs'}"
    assert main(["synth", f"out={tmp_path / 'data'}", "items=32", "width=64", "height=48"]) == 0
    assert main(["extract", *where, *model, "workers=0"]) == 0
    assert main(["train", *where, runs, *model[:-1], "folds=2", "epochs=2"]) == 0
    # The submission's test predictions without calibration: the fold models' mean (random features of a 32-pixel
    # view put them outside KVQ's range, which `submit` would refuse; the export packs them all the same).
    assert main(["export", where[0], runs, "calibration=none", f"out={tmp_path / 'exports'}"]) == 0
    (folder,) = (p for p in (tmp_path / "exports").iterdir() if p.is_dir())
    assert "test_resnet (non-commercial)" in capsys.readouterr().out  # flagged in the export's table
    ledger = json.loads((folder / LEDGER).read_text())
    assert [row["licence"] for row in ledger if row["name"] == "test_resnet"] == ["cc-by-nc-sa-4.0"]
    assert (
        "- timm weights (backbone) test_resnet: cc-by-nc-sa-4.0 (**non-commercial licence"
        in (folder / README).read_text()
    )
    shutil.rmtree(weights.parent)
    copied = list((folder / "weights").rglob("test_resnet.pth"))
    assert len(copied) == 1 and str(folder) not in (folder / MANIFEST).read_text()  # named relative to the folder
    items = KVQ.read_items(tmp_path / "data")
    scores = Predictor.load(folder).predict(items[items["split"] == "test"])
    (run,) = (tmp_path / "runs" / "kvq").iterdir()
    expected = fold_ensemble(Run(run).predictions("test"), KVQ.targets)
    np.testing.assert_allclose(scores.loc[expected.index, "score"], expected["score"], rtol=1e-4, atol=1e-4)


def test_a_challenge_that_passes_a_reference_gets_it_in_its_order_and_a_no_reference_model_ignores_it(
    exported, tmp_path, monkeypatch, capsys
):
    from workbench.predictor import main as predict

    folder, submitted, paths = exported
    item = submitted.index[0]
    monkeypatch.setattr(type(KVQ), "reference_argument", True)
    assert predict([str(paths[item]), "/nowhere/reference.mp4", str(tmp_path / "out.txt")], folder) == 0
    assert float((tmp_path / "out.txt").read_text()) == pytest.approx(submitted.loc[item, "score"], rel=1e-5)
    assert predict([str(paths[item]), str(tmp_path / "two.txt")], folder) == 2
    assert "usage: predict DISTORTED REFERENCE RESULT_FILE" in capsys.readouterr().err


@pytest.mark.parametrize("name", list_tracks())
def test_the_manifest_and_readme_state_each_targets_range_and_direction(name, tmp_path):
    track = get_track(name)
    if track.bounded:  # as `submit score_range=0,100` answers ICME's template
        track = track.with_range(0.0, 100.0)
    pred = pd.DataFrame({t: [0.5, 0.7] for t in track.targets}, index=["a", "b"])
    folder = Predictor(track, [], {}, Calibration("none", {}), track.range_map(pred)).save(tmp_path)
    output = json.loads((folder / MANIFEST).read_text())["output"]
    readme = (folder / README).read_text()
    assert list(output) == list(track.targets)
    for target, (low, high) in track.ranges().items():
        assert output[target] == {"low": low, "high": high, "bounded": track.bounded, "higher_is_better": True}
        (line,) = (line for line in readme.splitlines() if line.startswith(f"- `{target}`: higher is better; "))
        assert (f"strictly inside ({low}, {high})" if track.bounded else f"accepts [{low}, {high}]") in line
