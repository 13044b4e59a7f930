"""Hugging Face models from this machine only: a local folder, or a repository already in the local cache.

The machines this runs on often have no internet, so nothing here downloads: a model that is not on disk raises
WeightsNotFound saying how to bring it. A model's identity digests the content of its files, never their path, so
the same weights in another folder hit the same cache and other weights under the same name miss it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from huggingface_hub import constants as hf_constants
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

from features.backbones import WeightsNotFound
from features.fingerprint import file_digest

MODEL_FILES = ("*.json", "*.safetensors", "*.bin", "*.model", "*.txt")  # configs, weights, vocabularies


def model_folder(name: str) -> Path:
    """`name` itself where it is a folder, else the local cache's snapshot of the repository `name` (`org/model`, or
    `org/model@revision`)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    repo, _, revision = name.partition("@")
    if name.startswith(("/", ".", "~")) or repo.count("/") > 1:  # a repo id is `model` or `org/model`
        raise WeightsNotFound(f"{name}: no such model folder (a folder holding config.json and the weights)")
    flag = f" --revision {revision}" if revision else ""
    try:
        return Path(snapshot_download(repo, revision=revision or None, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError):
        cache = hf_constants.HF_HUB_CACHE
        raise WeightsNotFound(
            f"model {name!r} is neither a folder nor in the Hugging Face cache {cache} (HF_HOME or HF_HUB_CACHE select "
            f"another), and nothing is downloaded here: on a machine with internet run `hf download {repo}{flag}` and "
            f"copy its folder models--{repo.replace('/', '--')} into {cache}, or `hf download {repo}{flag} "
            f"--local-dir DIR`, copy DIR here and name its path"
        ) from None


def files_digest(files: list[Path]) -> str:
    """SHA-256 over each file's name and XXH3 content digest: what the files hold, not where they are."""
    listing = "\n".join(f"{f.name} {file_digest(f)}" for f in sorted(files, key=lambda f: f.name))
    return hashlib.sha256(listing.encode()).hexdigest()


def folder_digest(folder: Path) -> str:
    """The digest of the model's files in `folder` (configs, weights, vocabularies)."""
    return files_digest(sorted({f for pattern in MODEL_FILES for f in folder.glob(pattern) if f.is_file()}))[:16]
