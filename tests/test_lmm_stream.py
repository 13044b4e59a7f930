"""The `lmm` stream (features.streams.lmm) through the workbench: extracted beside the key frames from one decode,
its rows bound to the item's text as well as its file, trained on, exported, scored zero-shot, checked and costed,
and an LMM run teaching a budgeted student. A tiny random Qwen2-VL (synth.tiny_lmm) stands in for a real model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("transformers")

from ensembles.combine import fold_ensemble  # noqa: E402
from features.cache import cache_dir  # noqa: E402
from features.fingerprint import BOUND, item_fingerprints  # noqa: E402
from features.reader import StaleFeatures, read_features  # noqa: E402
from synth.tiny_lmm import save_tiny_qwen2vl  # noqa: E402
from tracks import get_track  # noqa: E402
from workbench import demo, pseudo  # noqa: E402
from workbench.cli import main  # noqa: E402
from workbench.config import ExtractConfig, ProfileConfig, build, parse_words  # noqa: E402
from workbench.console import EXIT_FAILURES  # noqa: E402
from workbench.predictor import Predictor  # noqa: E402
from workbench.profile import profiled  # noqa: E402
from workbench.runs import Run  # noqa: E402
from workbench.zeroshot import out_of_fold  # noqa: E402

AIGV = get_track("xgc_aigv")
# 56 x 56 frames (four visual tokens each), computed in float32 as the tiny model's weights are stored.
LMM = ["lmm_pixels=3136", "lmm_dtype=float32"]
SMALL = ["frames=2", "size=32"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(save_tiny_qwen2vl(tmp_path_factory.mktemp("lmm") / "tiny-qwen2-vl"))


@pytest.fixture(scope="module")
def aigv(model, tmp_path_factory) -> dict:
    """A small AIGV set (videos with prompts) extracted with the key frames and the LMM stream, one run trained."""
    root = tmp_path_factory.mktemp("aigv")
    where = [f"data={root / 'data'}", f"cache={root / 'cache'}", "track=xgc_aigv"]
    words = [*where, f"lmm={model}", *LMM, *SMALL]
    assert main(["synth", "track=xgc_aigv", f"out={root / 'data'}", "items=24", "width=64", "height=48"]) == 0
    assert main(["extract", *words, "views=center,hflip", "workers=0"]) == 0
    assert main(["train", *words, f"runs_dir={root / 'runs'}", "folds=2", "epochs=2"]) == 0
    return {"root": root, "words": words, "run": Run(next((root / "runs" / "xgc_aigv").iterdir()))}


def _lmm_spec(words: list[str]):
    cfg = build(ExtractConfig, parse_words(words), AIGV.defaults)
    return cfg.all_specs(AIGV.decoder)[-1]


def test_the_stream_is_one_row_per_item_and_view_bound_to_the_prompt_and_stored_as_float16(aigv):
    spec = _lmm_spec(aigv["words"])
    assert spec.view == "lmm" and spec.binds == ("prompt",) and spec.dtype == "float16" and spec.rows == 1
    items = AIGV.read_items(aigv["root"] / "data")
    bound = spec.bound(items, item_fingerprints(items))
    assert all(BOUND in fingerprint for fingerprint in bound)
    found = read_features(cache_dir(aigv["root"] / "cache", "xgc_aigv", spec), items["item_id"].tolist(), None, 1,
                          bound)  # fmt: skip
    assert found.x.shape[1:3] == (2, 1) and found.mask.all() and np.isfinite(found.x).all()
    assert not np.array_equal(found.x[:, 0], found.x[:, 1])  # hflip is its own view


def test_another_prompt_re_extracts_that_item_alone_and_its_old_rows_are_not_served(aigv, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(aigv["root"] / "data", data)
    cache = tmp_path / "cache"
    shutil.copytree(aigv["root"] / "cache", cache)
    items = AIGV.read_items(data)
    changed = items[items["split"] == "train"]["item_id"].iloc[0]
    lines = (data / "train_data.txt").read_text().splitlines()
    edited = [f"{line.split('|')[0]}|a new prompt|{line.split('|')[-1]}" if line.startswith(changed) else line
              for line in lines]  # fmt: skip
    (data / "train_data.txt").write_text("\n".join(edited) + "\n")
    words = [w for w in aigv["words"] if not w.startswith(("data=", "cache="))] + [f"data={data}", f"cache={cache}"]
    spec = _lmm_spec(words)
    before = AIGV.read_items(data)
    stale = spec.bound(items, item_fingerprints(items))  # the rows as they were made: the old prompt
    now = spec.bound(before, item_fingerprints(before))
    moved = [item for item, old, new in zip(items["item_id"], stale, now) if old != new]
    assert moved == [changed]
    folder = cache_dir(cache, "xgc_aigv", spec)
    position = before["item_id"].tolist().index(changed)
    with pytest.raises(StaleFeatures, match="the text they were made from changed"):  # the old prompt's rows
        read_features(folder, [changed], None, 1, [now[position]])
    from features.extract import extract

    summary = extract(before, "xgc_aigv", _specs(words), ["center", "hflip"], cache_root=cache, workers=0,
                      progress=False)  # fmt: skip
    assert summary.extracted == 1 and summary.already_cached == len(before) - 1
    assert read_features(folder, [changed], None, 1, [now[position]]).mask.all()


def _specs(words: list[str]):
    return build(ExtractConfig, parse_words(words), AIGV.defaults).all_specs(AIGV.decoder)


def test_an_lmm_run_exports_a_predictor_that_equals_its_test_predictions(aigv, tmp_path):
    runs = f"runs_dir={aigv['root'] / 'runs'}"
    assert main(["export", *aigv["words"][:1], "track=xgc_aigv", runs, "calibration=none", f"out={tmp_path}"]) == 0
    (folder,) = (p for p in tmp_path.iterdir() if p.is_dir())
    assert list((folder / "weights").rglob("config.json"))  # the model's folder travels with the predictor
    items = AIGV.read_items(aigv["root"] / "data")
    scores = Predictor.load(folder).predict(items[items["split"] == "test"])
    expected = fold_ensemble(aigv["run"].predictions("test"), AIGV.targets)
    np.testing.assert_allclose(scores.loc[expected.index, "score"], expected["score"], rtol=1e-3, atol=1e-3)


def test_zero_shot_scores_the_answers_without_training_and_out_of_fold(aigv, capsys):
    assert main(["zero-shot", *aigv["words"], "folds=2", "workers=0"]) == 0
    printed = capsys.readouterr().out
    assert "How would you rate the quality of this video?" in printed and "SRCC" in printed
    rng = np.random.default_rng(0)
    answer, folds = rng.uniform(1, 5, 40), np.repeat([0, 1, 2, 3], 10)
    labels = 2 * answer + rng.normal(0, 0.1, 40)
    mapped = out_of_fold(answer, labels, folds)
    shifted = labels.copy()
    shifted[folds == 0] += 100  # fold 0's own labels moved: its predictions come from the other folds alone
    assert np.allclose(out_of_fold(answer, shifted, folds)[folds == 0], mapped[folds == 0])
    assert np.corrcoef(mapped, labels)[0, 1] > 0.99


def test_check_names_a_missing_model_and_how_to_bring_it(aigv, capsys):
    data = aigv["words"][0]
    assert main(["check", "track=xgc_aigv", data, "media=false", "lmm=someorg/absent-model"]) == EXIT_FAILURES
    assert "nothing is downloaded" in capsys.readouterr().out


def test_profile_costs_one_pass_per_item_and_view(model):
    cfg = build(ProfileConfig, parse_words([f"lmm={model}", *LMM, *SMALL, "track=xgc_aigv"]), AIGV.defaults)
    stages = profiled(cfg, AIGV).stages()
    (stage,) = [s for s in stages if s.name.endswith("on lmm")]
    assert stage.passes == len(AIGV.tta_views) and stage.cost.flops > 0 and stage.input.startswith("2x3x56x56")


def test_an_lmm_run_teaches_a_budgeted_student(model, tmp_path, monkeypatch):
    """FIQA cannot submit an LMM, but an LMM run labels the withheld faces and the student distils it."""
    monkeypatch.chdir(tmp_path)  # the demo's submissions go to ./submissions
    words = ["track=fiqa", "items=40", "width=64", "height=80", "epochs=3", "folds=3", "student.size=32"]
    words += [f"data={tmp_path / 'data'}", f"cache={tmp_path / 'cache'}", f"runs_dir={tmp_path / 'runs'}"]
    words += [f"teacher.lmm={model}", *(f"teacher.{w}" for w in LMM)]
    (teacher, alone, distilled), judged, status = demo.student_demo(parse_words(words))
    assert status == 0 and teacher.run.config["lmm"] == model
    assert not distilled.run.config["lmm"] and distilled.run.config["pseudo"]
    folder = pseudo.label_set_dir(tmp_path / "runs", "fiqa", distilled.run.config["pseudo"])
    assert json.loads((folder / pseudo.PROVENANCE).read_text())["runs"] == [teacher.run.id]
    labels = pd.read_parquet(folder / pseudo.LABELS)
    assert len(labels) == judged["items"] and np.isfinite(labels["score"]).all()
    assert alone.cost.flops == distilled.cost.flops < teacher.cost.flops  # the LMM is the teacher's cost alone
