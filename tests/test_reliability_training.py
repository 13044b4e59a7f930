"""Training survives a kill: a rerun redoes only the unfinished folds. Checkpoints load without running code."""

from __future__ import annotations

import pickle

import pytest
import torch

from workbench.cli import main
from workbench.heads import load_state

WORDS = ["frames=2", "size=32", "folds=3", "head=mlp", "hidden=256"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reliable")
    data, cache = folder / "data", folder / "cache"
    assert main(["synth", f"out={data}", "items=24", "seed=5", "width=64", "height=48"]) == 0
    assert main(["extract", f"data={data}", f"cache={cache}", "frames=2", "size=32", "views=center"]) == 0
    return folder, [f"data={data}", f"cache={cache}", f"runs_dir={folder / 'runs'}"]


def test_a_killed_training_run_redoes_only_unfinished_folds(prepared, kill_cli_when):
    folder, common = prepared
    words = [*common, *WORDS, "epochs=40"]  # long enough folds that the kill lands before two more finish
    runs = folder / "runs" / "kvq"
    kill_cli_when(["train", *words], runs, "*/fold-0/score.json")
    (run,) = runs.iterdir()
    finished = {p.parent.name for p in run.glob("fold-*/score.json")}
    assert "fold-0" in finished and len(finished) < 3, "the kill must land mid-run"
    kept = {name: (run / name / "score.json").stat().st_mtime_ns for name in finished}

    assert main(["train", *words]) == 0
    assert {p.parent.name for p in run.glob("fold-*/score.json")} == {"fold-0", "fold-1", "fold-2"}
    assert {name: (run / name / "score.json").stat().st_mtime_ns for name in finished} == kept
    assert (run / "scores.json").is_file()


class Payload:
    def __reduce__(self):
        return (print, ("this checkpoint ran code",))


def test_a_checkpoint_with_pickled_code_is_refused(tmp_path):
    evil = tmp_path / "best.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Payload()}, evil)
    with pytest.raises(pickle.UnpicklingError):
        load_state(evil)
    fine = tmp_path / "fine.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, fine)
    assert torch.equal(load_state(fine)["w"], torch.ones(2))


def test_the_newest_run_submitted_by_default_is_never_a_shuffled_label_control(tmp_path):
    import json
    import os

    from workbench.runs import newest_complete_run

    for name, control, when in (("run", False, 1000), ("control", True, 2000)):
        folder = tmp_path / "kvq" / name
        (folder / "fold-0").mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"folds": 1, "shuffle_labels": control}))
        (folder / "fold-0" / "score.json").write_text("{}")
        (folder / "scores.json").write_text("{}")
        os.utime(folder / "scores.json", (when, when))
    assert newest_complete_run(tmp_path, "kvq").id == "run"  # the control is newer, as `just demo` trains it


def test_a_run_trained_before_the_fingerprint_column_was_named_so_is_still_checked(tmp_path):
    import pandas as pd

    from workbench.runs import FOLDS, Run

    for column in ("fingerprint", "media"):  # `media`: the folds table of runs trained before the rename
        run = Run(tmp_path / column)
        run.write_parquet(FOLDS, pd.DataFrame({"item_id": ["a", "b"], "fold": [0, -1], column: ["f1", "f2"]}))
        assert run.stale_items({"a": "f1", "b": "f2"}) == []
        assert run.stale_items({"a": "f1", "b": "changed"}) == ["b"]
