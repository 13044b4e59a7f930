"""features.audio's `hf:` encoders (transformers): tiny random-initialised wav2vec2, HuBERT, WavLM and AST models saved
with save_pretrained into temporary folders (and a fake Hugging Face cache), loaded the way extraction loads them.
No downloads, no network."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
from huggingface_hub import constants as hf_constants  # noqa: E402

from features.audio import AUDIO_ENCODERS, SAMPLE_RATE, TransformersAudioEncoder  # noqa: E402
from features.backbones import WeightsNotFound  # noqa: E402

HIDDEN = 32
TINY = dict(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
# Two conv layers, kernels 10 and 8, strides 5 and 4: a receptive field of 1 + 9 + 7 * 5 = 45 samples.
CONV = dict(
    conv_dim=(32, 32), conv_stride=(5, 4), conv_kernel=(10, 8), num_feat_extract_layers=2,
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
)  # fmt: skip
RECEPTIVE_FIELD = 45
# AST: 32 mel bins x 128 frames in 16x16 patches every 10: 2 x 12 patches; 2800 samples make one patch of frames.
AST = dict(patch_size=16, frequency_stride=10, time_stride=10, num_mel_bins=32, max_length=128)
AST_MIN, AST_MAX = 400 + 15 * 160, 400 + 127 * 160 + 159


def save(folder: Path, model: torch.nn.Module, extractor) -> Path:
    model.save_pretrained(folder)
    extractor.save_pretrained(folder)
    return folder


def waveform_model(kind: str, seed: int = 0) -> torch.nn.Module:
    config_class, model_class = {
        "wav2vec2": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model),
        "hubert": (transformers.HubertConfig, transformers.HubertModel),
        "wavlm": (transformers.WavLMConfig, transformers.WavLMModel),
    }[kind]
    torch.manual_seed(seed)
    return model_class(config_class(**TINY, **CONV))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folders of tiny models as save_pretrained writes them: wav2vec2, hubert, wavlm, ast."""
    root = tmp_path_factory.mktemp("hf-models")
    waveform = transformers.Wav2Vec2FeatureExtractor(sampling_rate=SAMPLE_RATE, do_normalize=True)
    folders = {kind: save(root / kind, waveform_model(kind), waveform) for kind in ("wav2vec2", "hubert", "wavlm")}
    torch.manual_seed(0)
    ast = transformers.ASTModel(transformers.ASTConfig(**TINY, **AST))
    extractor = transformers.ASTFeatureExtractor(num_mel_bins=AST["num_mel_bins"], max_length=AST["max_length"])
    folders["ast"] = save(root / "ast", ast, extractor)
    return folders


def create(folder: Path | str, weights: str = "hub", seed: int = 0) -> TransformersAudioEncoder:
    return AUDIO_ENCODERS.create(f"hf:{folder}", weights, seed)


def windows(batch: int = 3, samples: int = SAMPLE_RATE, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy((0.3 * rng.standard_normal((batch, samples))).astype(np.float32)).clamp(-1, 1)


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert", "wavlm"])
def test_waveform_models_give_last_and_middle_layer_means_and_the_flag(models, kind):
    encoder = create(models[kind])
    assert isinstance(encoder, TransformersAudioEncoder) and not encoder.training
    assert encoder.width == 2 * HIDDEN and encoder.dim == 2 * HIDDEN + 1
    assert encoder.identity()["pooling"]["layers"] == {"last": 2, "middle": 1}
    out = encoder(windows())
    assert out.shape == (3, encoder.dim) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert out[:, -1].tolist() == [1.0, 1.0, 1.0]
    assert not any(p.requires_grad for p in encoder.parameters())


def test_ast_gives_the_mean_of_the_patches_over_real_frames(models):
    encoder = create(models["ast"])
    assert encoder.width == HIDDEN and encoder.min_samples == AST_MIN and encoder.max_samples == AST_MAX
    batch = windows(2)
    out = encoder(batch)
    assert out.shape == (2, HIDDEN + 1) and torch.isfinite(out).all()
    # By hand: 98 fbank frames of a 1 s window make 9 whole patches in time; tokens are CLS, distillation, then
    # frequency-major patches (2 x 12), padding patches past the 9th left out.
    inputs = encoder.extractor(list(batch.numpy()), sampling_rate=SAMPLE_RATE, return_tensors="pt")
    with torch.inference_mode():
        hidden = encoder.model(**inputs).last_hidden_state
    real = [2 + f * 12 + t for f in range(2) for t in range(9)]
    torch.testing.assert_close(out[:, :-1], hidden[:, real].mean(dim=1))


def test_vectors_are_deterministic(models):
    batch = windows(2, seed=1)
    first = create(models["wav2vec2"])
    again = first(batch)
    assert torch.equal(first(batch), again)
    assert torch.equal(create(models["wav2vec2"])(batch), again)


def test_absent_windows_encode_to_zeros_and_flag_zero(models):
    for kind in ("wav2vec2", "ast"):
        encoder = create(models[kind])
        batch = windows(3)
        batch[1] = torch.nan
        out = encoder(batch)
        assert out[:, -1].tolist() == [1.0, 0.0, 1.0]
        assert torch.equal(out[1], torch.zeros(encoder.dim))
        assert torch.isfinite(out).all() and out[0, :-1].abs().sum() > 0


def test_identity_follows_the_weights_content_not_the_folder(models, tmp_path):
    batch = windows(2)
    original = create(models["wav2vec2"])
    moved = create(shutil.copytree(models["wav2vec2"], tmp_path / "elsewhere" / "copy"))
    assert moved.identity() == original.identity()
    assert torch.equal(moved(batch), original(batch))
    identity = original.identity()
    assert identity["class"] == "Wav2Vec2Model" and identity["model_type"] == "wav2vec2"
    assert identity["weights"]["files"] == ["model.safetensors"] and str(models["wav2vec2"]) not in str(identity)

    other = save(tmp_path / "retrained", waveform_model("wav2vec2", seed=1), original.extractor)
    changed = create(other).identity()
    assert changed["weights"] != identity["weights"]
    assert changed["config_sha256"] == identity["config_sha256"]  # the same architecture, other weights


def test_random_weights_are_seeded_from_the_config(models):
    batch = windows(2)
    seeded = create(models["wav2vec2"], "random", 0)
    assert seeded.identity()["weights"] == {"init": "random", "seed": 0}
    assert torch.equal(create(models["wav2vec2"], "random", 0)(batch), seeded(batch))
    assert not torch.equal(create(models["wav2vec2"], "random", 1)(batch), seeded(batch))
    assert seeded.identity() != create(models["wav2vec2"]).identity()
    with pytest.raises(ValueError, match="weights must be 'hub'"):
        create(models["wav2vec2"], "none")


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, offline, in place of this machine's."""
    cache = tmp_path / "hf-home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache


def test_repo_ids_resolve_from_the_hub_cache(models, hub_cache):
    """A repository as `hf download` leaves it: blobs, a snapshot of links to them, refs/main naming the snapshot."""
    repo = hub_cache / "models--tiny--wav2vec2"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / commit).mkdir(parents=True)
    for file in models["wav2vec2"].iterdir():
        blob = repo / "blobs" / f"blob-{file.name}"
        shutil.copyfile(file, blob)
        (repo / "snapshots" / commit / file.name).symlink_to(blob)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    from_cache = create("tiny/wav2vec2")
    assert from_cache.identity() == create(models["wav2vec2"]).identity()
    assert create(f"tiny/wav2vec2@{commit}").identity() == from_cache.identity()


def test_a_missing_model_raises_weights_not_found_naming_it(hub_cache, tmp_path):
    with pytest.raises(WeightsNotFound) as missing:
        create("nobody/absent-model")
    message = str(missing.value)
    assert "nobody/absent-model" in message and str(hub_cache) in message
    assert "hf download nobody/absent-model" in message and "models--nobody--absent-model" in message
    with pytest.raises(WeightsNotFound, match="no such model folder"):
        create(tmp_path / "not-there")


def test_a_folder_without_weights_raises_weights_not_found(models, tmp_path):
    folder = shutil.copytree(models["wav2vec2"], tmp_path / "config-only")
    (folder / "model.safetensors").unlink()
    with pytest.raises(WeightsNotFound, match="no weights in"):
        create(folder)
    assert create(folder, "random").identity()["weights"]["init"] == "random"  # the config alone suffices
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(WeightsNotFound, match="preprocessor_config.json"):
        create(folder, "random")


def test_windows_shorter_than_the_receptive_field_are_refused(models):
    encoder = create(models["wav2vec2"])
    assert encoder.min_samples == RECEPTIVE_FIELD
    assert encoder(windows(2, RECEPTIVE_FIELD)).shape == (2, encoder.dim)
    with pytest.raises(ValueError, match=f"S >= {RECEPTIVE_FIELD}; got torch.float32 \\(2, {RECEPTIVE_FIELD - 1}\\)"):
        encoder(windows(2, RECEPTIVE_FIELD - 1))
    ast = create(models["ast"])
    assert ast(windows(1, AST_MIN)).shape == (1, HIDDEN + 1) and ast(windows(1, AST_MAX)).shape == (1, HIDDEN + 1)
    with pytest.raises(ValueError, match=f"S >= {AST_MIN}"):
        ast(windows(1, AST_MIN - 1))
    with pytest.raises(ValueError, match="sees at most 128 fbank frames"):
        ast(windows(1, AST_MAX + 1))


def test_other_models_and_sampling_rates_are_refused(models, tmp_path):
    bert = tmp_path / "bert"
    transformers.BertConfig(**TINY).save_pretrained(bert)
    transformers.Wav2Vec2FeatureExtractor().save_pretrained(bert)
    with pytest.raises(ValueError, match="is a 'bert' model; audio encoders take wav2vec2"):
        create(bert, "random")
    slow = shutil.copytree(models["wav2vec2"], tmp_path / "8k")
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=8000).save_pretrained(slow)
    with pytest.raises(ValueError, match="expects 8000 Hz audio"):
        create(slow)
