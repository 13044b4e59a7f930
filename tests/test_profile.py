"""The pipeline's cost: counts checked against models whose MACs are known by hand, passes per view family and
variant, the budget check, and the `profile` command."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from features.backbones import BACKBONES, Backbone, register_backbone
from features.cost import count
from features.spec import FeatureSpec
from tracks import get_track
from tracks.base import Budget
from workbench.cli import main
from workbench.console import console
from workbench.profile import Pipeline, check_budget


def test_linear_and_conv_counts_match_hand_counts():
    linear = count(nn.Linear(10, 5), torch.rand(1, 10))
    assert (linear.params, linear.flops, linear.macs) == (55, 100, 50)
    conv = count(nn.Conv2d(3, 8, 3), torch.rand(1, 3, 10, 10))  # 8x8 outputs x 8 channels x 27 taps
    assert (conv.params, conv.macs) == (8 * 27 + 8, 8 * 8 * 8 * 27)
    batch = count(nn.Conv2d(3, 8, 3), torch.rand(4, 3, 10, 10))
    assert batch.macs == 4 * conv.macs


class PatchConv(Backbone):
    """4x4 stride-4 convolution to 4 channels, then a mean: per S x S image (S/4)^2 x 4 x 48 MACs, 196 parameters."""

    dim = 4

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 4, stride=4)

    def identity(self) -> dict:
        return {"name": "patch_conv"}

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images).mean(dim=(2, 3))


@pytest.fixture
def patch_conv():
    register_backbone("patch_conv")(lambda weights, seed: PatchConv())
    yield
    del BACKBONES._entries["patch_conv"]


def test_pipeline_counts_every_pass_of_every_family_and_the_head(patch_conv):
    specs = tuple(
        FeatureSpec("patch_conv", decoder="image", view=view, size=32, grid=2, patch=16)
        for view in ("aesthetic", "fragments")
    )
    pipeline = Pipeline((specs,), (("center", "hflip"), ("s0", "s1", "s2")), head="linear", hidden=16, targets=1)
    stages = pipeline.stages()
    per_pass = 8 * 8 * 4 * 48  # both families make 32 x 32 images
    assert [(s.passes, s.cost.macs) for s in stages[:2]] == [(2, per_pass), (3, per_pass)]
    head = stages[-1]
    assert head.input == "3x1x8"  # three paired views (the longer list), one frame, 4 + 4 features
    assert head.cost.macs == 3 * (8 * 16 + 16 * 1)
    total = pipeline.total(stages)
    assert total.macs == 5 * per_pass + head.cost.macs
    assert total.params == (4 * 48 + 4) + (8 * 16 + 16) + (16 + 1)  # the backbone once, however many families


def test_budget_check_reports_each_limit():
    budget = Budget(flops=0.5e9, params=5e6)
    assert budget.check(macs=0.3e9, flops=0.6e9, params=1e6) == [("GFLOPs", 0.6, 0.5), ("M parameters", 1.0, 5.0)]
    assert Budget(macs=50e9).check(1e9, 2e9, 123) == [("GMACs", 1.0, 50.0)]


@pytest.fixture
def wide_console(monkeypatch):
    """Tables on one line each, whatever the terminal: assertions read whole cells."""
    monkeypatch.setattr(console, "width", 400)


def test_profile_command_prints_the_cost_and_the_budget(capsys, wide_console):
    assert main(["profile", "track=fiqa"]) == 0
    out = capsys.readouterr().out
    assert "quality_stats on resize" in out and "3x352x352" in out
    assert "│ GFLOPs       │" in out and "│ M parameters │" in out and "over" not in out
    assert main(["profile", "track=uhd_iqa", "size=64", "grid=2"]) == 0
    out = capsys.readouterr().out
    for family in ("aesthetic", "fragments", "native", "salient"):
        assert f"quality_stats on {family}" in out
    assert "│ GMACs │" in out and "50.0000" in out and "within" in out


def test_an_oversized_fiqa_model_is_flagged(capsys, wide_console):
    assert main(["profile", "track=fiqa", "backbone=resnet18", "views=center"]) == 0
    out = capsys.readouterr().out
    assert "3x352x352, run at 224x224" in out
    assert out.count("│ over") == 2  # both GFLOPs and parameters


def test_submit_warns_loudly_over_budget(capsys, wide_console):
    fiqa = get_track("fiqa")
    spec = FeatureSpec("resnet18", decoder="image", size=224)
    check_budget(fiqa, Pipeline(((spec,),), (("center",),), "linear", 128, 1))
    out = capsys.readouterr().out
    assert "OVER THE fiqa BUDGET" in out and "M parameters > 5 M parameters" in out
    check_budget(fiqa, Pipeline(((FeatureSpec("quality_stats", decoder="image"),),), (("center",),), "linear", 128, 1))
    assert "OVER" not in capsys.readouterr().out
