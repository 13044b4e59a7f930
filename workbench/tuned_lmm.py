"""A LoRA-tuned run's LMM outside training (workbench.lora trains it): which set it tunes, the dtype it runs in, its
pooled state, and `TunedLmm`, the base model with every fold's adapters as the exported predictor runs it. Apart from
workbench.lora so that the predictor imports no training code."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from features.backbones import FrozenEncoder
from features.spec import FeatureSpec
from features.streams.lmm import ItemFrames, lmm_options
from workbench.config import TrainConfig
from workbench.runs import TUNED_LMM


def lmm_set(config: TrainConfig, decoder: str) -> tuple[FeatureSpec, int, int]:
    """The run's LMM feature set (the one on the LMM stream's view family), its position among every set (its part of
    a paired view name) and the index of its stream; a ValueError where the run names no LMM."""
    specs = config.all_specs(decoder)
    position = next((k for k, spec in enumerate(specs) if spec.view == ItemFrames.name), None)
    if position is None:
        raise ValueError(
            f"finetune={config.finetune} tunes the LMM stream's model with LoRA adapters, and this run names no LMM: "
            f"add {TUNED_LMM}=<model id or folder> (extracted first, as for any run)"
        )
    sizes = np.cumsum([len(stream) for stream in config.streams(decoder)])
    return specs[position], position, int(np.searchsorted(sizes, position, side="right"))


def tuned_dtype(dtype: str) -> str:
    """The dtype a LoRA-tuned LMM trains and predicts in: the LMM stream's own on CUDA, float32 on the CPU (half
    precision there is slow and its rounding would swamp the adapters' small updates)."""
    return dtype if torch.cuda.is_available() else "float32"


def load_lmm_of(spec: FeatureSpec, seed: int):
    """The frozen LMM of the set `spec` (features.lmm.LmmEncoder) in the dtype it is tuned in (tuned_dtype)."""
    from features.lmm import load_lmm

    options = lmm_options(spec.options)
    options = dataclasses.replace(options, dtype=tuned_dtype(options.dtype))
    return load_lmm(spec.backbone, spec.weights, options, seed)


def last_token_state(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """The final layer's hidden state at each row's last token, [B, hidden] in float32: a LoRA-tuned run's pooled
    state (`batch`: the processor's tensors of one prompt, LmmEncoder.model_inputs, left-padded, so the last position
    is every row's last real token)."""
    if not bool(batch["attention_mask"][:, -1].all()):
        raise RuntimeError("the LMM's inputs are not padded on the left: the last position is not every row's last")
    out = model(**batch, output_hidden_states=True, logits_to_keep=1, use_cache=False)
    return out.hidden_states[-1][:, -1].float()


class TunedLmm(FrozenEncoder):
    """A LoRA-tuned run's LMM as the predictor runs it: the base model loaded once, every fold's adapters loaded
    beside it (peft, named fold-<k>), and `fold(k)` making fold k's the ones that run. In float32 they are merged
    into the base weights for the fold's passes (no adapter matmuls per token), and the base weights they touch are
    restored exactly afterwards from a copy (unmerging subtracts, which drifts); in half precision they run unmerged,
    as they were trained, since W + BA rounded to bfloat16 would lose most of a small update. One base copy either
    way, and the copy of the projections the adapters touch in float32. Its vector: the pooled state
    (last_token_state) of the first prompt."""

    takes_text = True

    def __init__(self, encoder, adapters: Sequence[str]):
        super().__init__()
        from peft import PeftModel

        self.encoder = encoder  # features.lmm.LmmEncoder: the processor, the prompts, the base model
        with warnings.catch_warnings():  # peft asks transformers' deprecated `is_gradient_checkpointing`
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = PeftModel.from_pretrained(encoder.model, adapters[0], adapter_name=fold_adapter(0))
        for k, folder in enumerate(adapters[1:], start=1):
            model.load_adapter(folder, adapter_name=fold_adapter(k))
        self.model = model.eval().requires_grad_(False)
        self.dim = encoder.hidden
        self.merges = next(encoder.model.parameters()).dtype == torch.float32
        self._base: list[tuple[torch.Tensor, torch.Tensor]] = []  # (a merged weight, its base values)

    def identity(self) -> dict:
        return {"name": "lora", "base": self.encoder.identity(), "adapters": list(self.model.peft_config)}

    def check(self, inputs: torch.Tensor) -> None:
        self.encoder.check(inputs)

    def encode(self, inputs: torch.Tensor, texts: list[dict[str, str]]) -> torch.Tensor:
        return last_token_state(self.model, self.encoder.model_inputs(inputs, texts, self.encoder.options.prompts[0]))

    @contextlib.contextmanager
    def fold(self, fold: int) -> Iterator[TunedLmm]:
        name = fold_adapter(fold)
        self.model.set_adapter(name, inference_mode=True)
        if not self.merges:
            yield self
            return
        if not self._base:
            from peft.tuners.lora import LoraLayer

            weights = [m.get_base_layer().weight for m in self.model.modules() if isinstance(m, LoraLayer)]
            self._base = [(weight, weight.detach().clone()) for weight in weights]
        self.model.merge_adapter([name])
        try:
            yield self
        finally:
            self.model.unmerge_adapter()
            with torch.no_grad():
                for weight, base in self._base:
                    weight.copy_(base)


def fold_adapter(fold: int) -> str:
    return f"fold-{fold}"
