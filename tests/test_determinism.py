"""The same configuration trained twice gives the same out-of-fold and test predictions, to the last bit: runs are
compared and blended on these numbers, so a difference between two trainings of one configuration would be noise
read as signal."""

from __future__ import annotations

import pandas as pd

from workbench.cli import main
from workbench.runs import Run

WORDS = ["folds=3", "epochs=6", "head=mlp", "hidden=32", "dropout=0.3"]  # dropout: a random draw every step


def trained(cached_kvq: list[str], runs_dir) -> Run:
    assert main(["train", *cached_kvq, f"runs_dir={runs_dir}", *WORDS]) == 0
    (run,) = (runs_dir / "kvq").iterdir()
    return Run(run)


def test_the_same_configuration_trained_twice_predicts_the_same(cached_kvq, tmp_path):
    first, second = trained(cached_kvq, tmp_path / "a"), trained(cached_kvq, tmp_path / "b")
    assert first.id == second.id  # the run id is the configuration's, so both trainings are of the same one
    for kind in ("oof", "test"):
        assert len(first.predictions(kind)), kind
        pd.testing.assert_frame_equal(first.predictions(kind), second.predictions(kind), check_exact=True, obj=kind)
