"""LoRA-tuned LMMs (workbench.lora, `train finetune=lmm`) on a tiny random Qwen2-VL built offline: a step moves the
adapters and the head alone, a run trains every fold and writes each fold's adapters before its scores, the exported
predictor merges each fold's adapters into one base model and predicts as the run did, and a run without an LMM is
refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from features.decode import DECODERS
from features.encoding import render_item
from features.streams.lmm import lmm_options
from features.views import view_family
from synth.tiny_lmm import save_tiny_qwen2vl
from tracks import get_track
from workbench import lora
from workbench.cli import main
from workbench.config import TrainConfig, build
from workbench.heads import create_head
from workbench.losses import CombinedLoss
from workbench.predictor import Predictor, TunedLmm, lmm_set, load_lmm_of
from workbench.runs import ADAPTERS_DIR, Run
from workbench.submission import describe

TRACK = get_track("kvq")
VIEWS = "center,hflip"
LMM = ["lmm_weights=hub", "lmm_pixels=3136", "lmm_dtype=float32", "frames=2", "size=32", f"views={VIEWS}"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"), seed=5, words=["sharp", "blurry"])


@pytest.fixture(scope="module")
def tuned(tiny, tmp_path_factory) -> tuple[Path, list[str], Run]:
    """A synthetic KVQ set extracted with the tiny LMM and a `finetune=lmm` run of 2 folds on it."""
    folder = tmp_path_factory.mktemp("lora")
    assert main(["synth", "track=kvq", f"out={folder / 'data'}", "items=16", "width=64", "height=48"]) == 0
    where = ["track=kvq", f"data={folder / 'data'}", f"cache={folder / 'cache'}"]
    words = [*where, f"runs_dir={folder / 'runs'}", f"lmm={tiny}", *LMM]
    assert main(["extract", *where, f"lmm={tiny}", *LMM, "workers=0"]) == 0
    assert main(["train", *words, "finetune=lmm", "folds=2", "epochs=1", "batch=4"]) == 0
    (run,) = (Run(p) for p in (folder / "runs" / "kvq").iterdir())
    return folder, words, run


def config_of(tiny: Path, *extra: str) -> TrainConfig:
    return build(TrainConfig, dict(word.split("=", 1) for word in [f"lmm={tiny}", *LMM, *extra]))


def test_a_lora_step_changes_only_the_adapters_and_the_head(tiny):
    spec = lmm_set(config_of(tiny), TRACK.decoder)[0]
    torch.manual_seed(0)
    tuned = lora.lora_model(spec, seed=0)
    named = dict(tuned.net.named_modules())
    adapted = sorted(name for name, module in named.items() if hasattr(module, "lora_A"))
    assert len(adapted) == 2 * len(lora.PROJECTIONS)  # 2 layers of the language model, 4 projections each
    assert all(".language_model." in name and ".visual." not in name for name in adapted)
    head = create_head("linear", [tuned.encoder.hidden])
    recipe = {"loss": CombinedLoss.from_spec("mse:1"), "lr": 1e-2, "wd": 1e-4, "epochs": 1, "views": 1}
    module = lora.LoraRegressor(tuned, head, **recipe, scorer=lambda pred: {"score": 0.0})
    optimiser = module.configure_optimizers()["optimizer"]
    assert [group["lr"] for group in optimiser.param_groups] == [1e-2, 1e-2 * lora.ADAPTER_LR]
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    frames = torch.rand(3, 2, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    loss = module.loss(module(frames, [{}] * 3), torch.tensor([[1.0], [3.0], [5.0]]))
    loss.backward()
    optimiser.step()
    after = dict(module.named_parameters())
    base = [name for name, p in after.items() if not p.requires_grad]
    assert base and all(torch.equal(after[name], before[name]) for name in base)  # bit-identical
    moved = [name for name in after if not torch.equal(after[name], before[name])]
    assert any("lora_B" in name for name in moved) and any(name.startswith("head.") for name in moved)
    assert all("lora_" in name or name.startswith("head.") for name in moved)
    state = module.state_dict()  # what a fold's checkpoint keeps: the head and the adapters, no base weight
    assert state and all(key.startswith("head.") or "lora_" in key for key in state)
    module.load_state_dict(state)


def test_a_lora_run_trains_every_fold_and_writes_each_folds_adapters(tuned):
    _, _, run = tuned
    assert run.is_complete() and run.config["finetune"] == "lmm"
    for fold in run.folds_done():
        adapters = run.fold_dir(fold) / ADAPTERS_DIR
        config = json.loads((adapters / "adapter_config.json").read_text())
        assert (config["r"], config["lora_alpha"]) == (lora.RANK, lora.ALPHA)
        assert not re.fullmatch(config["target_modules"], "model.visual.blocks.0.attn.qkv")
        weights = load_file(adapters / "adapter_model.safetensors")
        assert any("lora_B" in key and bool(value.abs().sum() > 0) for key, value in weights.items())
        assert not list(run.fold_dir(fold).glob(".*"))  # no temporary folder left beside it
        checkpoint = torch.load(run.fold_dir(fold) / "best.ckpt", weights_only=True)["state_dict"]
        assert all(key.startswith("head.") or "lora_" in key for key in checkpoint)
    for kind in ("oof", "test"):
        table = run.predictions(kind)
        assert set(table["view"]) == {"center+center", "hflip+hflip"} and np.isfinite(table["score"]).all()
    assert set(run.predictions("test")["fold"]) == {0, 1}
    config = build(TrainConfig, {k: v for k, v in run.config.items() if k != "views"})
    assert "LoRA adapters" in describe(run, config, ["center+center"])


def test_the_exported_predictor_merges_each_folds_adapters_and_predicts_as_the_run(tuned, tmp_path):
    folder, words, run = tuned
    assert main(["export", *words[:2], words[3], f"out={tmp_path / 'exports'}"]) == 0
    (exported,) = (p for p in (tmp_path / "exports").iterdir() if p.is_dir())
    predictor = Predictor.load(exported)
    (member,) = predictor.members
    assert len(member.fold_adapters) == 2 and all(Path(a).is_relative_to(exported) for a in member.fold_adapters)
    assert member.fold_weights == []
    items = TRACK.read_items(folder / "data")
    test = items[items["split"] == "test"]
    by_fold = run.predictions("test").groupby(["fold", "item_id"])["score"].mean()  # each fold's view mean
    expected = by_fold.groupby("item_id").mean().loc[test["item_id"]].to_frame("score")
    expected = predictor.range_map.apply(predictor.calibration.apply(expected))
    scores = predictor.predict(test)
    np.testing.assert_allclose(scores["score"], expected["score"], rtol=1e-4, atol=1e-4)

    tuned_lmm: TunedLmm = member._encoders["lora"]
    base = dict(load_lmm_of(lmm_set(member.config, TRACK.decoder)[0], member.config.seed).model.named_parameters())
    merged_into = [(name, m) for name, m in tuned_lmm.model.named_modules() if hasattr(m, "lora_A")]
    for name, module in merged_into:  # every merge undone exactly: one base copy, the weights as loaded
        assert torch.equal(module.get_base_layer().weight, base[name.removeprefix("base_model.model.") + ".weight"])
    frames = torch.rand(2, 2, 3, 56, 56, generator=torch.Generator().manual_seed(2))
    with tuned_lmm.fold(1):
        merged = tuned_lmm(frames, [{}, {}])
    tuned_lmm.merges = False
    with tuned_lmm.fold(1):
        unmerged = tuned_lmm(frames, [{}, {}])
    with tuned_lmm.model.disable_adapter():
        untuned = tuned_lmm(frames, [{}, {}])
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(merged, untuned)


def test_finetune_lmm_is_refused_without_an_lmm_and_for_a_control(tuned, capsys):
    folder, words, _ = tuned
    frozen_only = [word for word in words if not word.startswith("lmm")]
    cases = {"names no LMM": frozen_only, "no shuffled-label control": [*words, "shuffle_labels=true"]}
    for reason, given in cases.items():
        capsys.readouterr()
        assert main(["train", *given, "finetune=lmm", "folds=2", "epochs=1"]) == 2
        assert reason in capsys.readouterr().err


def test_lmm_views_cut_each_view_as_extraction_does_with_the_items_texts(tuned, tiny):
    folder, _, _ = tuned
    items = TRACK.read_items(folder / "data")
    spec, position, _ = lmm_set(config_of(tiny), TRACK.decoder)
    decoder, family = DECODERS.get(spec.decoder), view_family(spec)
    texts = [{"prompt": f"item {k}"} for k in range(len(items))]
    y, pseudo = torch.arange(len(items), dtype=torch.float32)[:, None], torch.zeros(len(items), dtype=torch.bool)
    views = lora.LmmViews(
        items["path"].tolist(), texts, np.array([2, 3]), ["center+center", "hflip+hflip"], position, decoder,
        spec.sampling(), family, y, pseudo,
    )  # fmt: skip
    assert len(views) == 4
    frames, text, label, is_pseudo = views[1]
    rendered = render_item(decoder, items["path"].iloc[2], spec.sampling(), [family], [("hflip",)])[0][0][1]
    assert frames.shape == (spec.frames, 3, family.side, family.side) and torch.equal(frames, rendered[0])
    assert text == {"prompt": "item 2"} and float(label) == 2.0 and not is_pseudo
    batch = lora.collate([views[0], views[3]])
    assert batch[0].shape[0] == 2 and batch[1] == [{"prompt": "item 2"}, {"prompt": "item 3"}]
    assert lmm_options(spec.options).prompts[0].stem.startswith("The quality")


def test_adapters_are_written_whole_or_not_at_all(tmp_path):
    final = tmp_path / "fold-0" / ADAPTERS_DIR
    with lora.atomic_folder(final) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), lora.atomic_folder(final) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed")
    assert (final / "a.txt").read_text() == "first"
    with lora.atomic_folder(final) as tmp:
        (tmp / "b.txt").write_text("second")
    assert [p.name for p in final.iterdir()] == ["b.txt"] and [p.name for p in final.parent.iterdir()] == [final.name]
