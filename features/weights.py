"""Every pretrained part a configuration needs, accounted for before any run: where the workbench expects it, whether
it is there, its size, its SHA-256 and its licence; fetched in one step where the machine has a network, verified,
and bundled into one folder an offline machine reads.

The workbench reads weights from the libraries' own caches (the Hugging Face cache for timm, open_clip and
transformers models; the torch hub cache for torchvision's video models) or from a local file, and never downloads
while it runs (features.backbones, features.motion, features.hf). This module is the one place that downloads, and
it does so through the libraries' own functions, so their settings hold: `HF_ENDPOINT` (a mirror), `HF_HOME` or
`HF_HUB_CACHE`, `TORCH_HOME`. Nothing half-written or unverified ever takes the name a run reads: a Hugging Face
download lands in a staging cache beside the real one, each file is checked against the digest the hub published
(the SHA-256 of a large file, the git blob hash of a small one), and only then moved in; a torch hub download is
checked against the hash prefix of its URL before `download_url_to_file` renames it.

A component's licence is what its own metadata states: timm's pretrained config, the model card's front matter
(README.md of the repository), or for torchvision's weights, whose meta has no licence field, what torchvision's
documentation says about them. A non-commercial or unstated licence is flagged.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import yaml
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download, snapshot_download, try_to_load_from_cache
from huggingface_hub.errors import RemoteEntryNotFoundError

from common.registry import Registry
from features import clip
from features import streams as stream_families
from features.backbones import WeightsNotFound, hub_filenames
from features.fingerprint import file_sha256
from features.hf import MODEL_FILES, model_folder
from features.motion import VIDEO_MODELS, hub_file

HF, TORCH, FILE = "hf", "torch", "file"  # where a component lives: a Hugging Face cache, the torch hub cache, a path
MODEL_CARD = "README.md"  # a Hugging Face repository's model card, whose front matter states the licence
TOKENIZER_FILES = ("*.json", "*.model", "*.txt")  # a tokenizer's vocabulary and settings, without the weights
LEDGER = "licences.json"  # the ledger's file, beside an export's predictor.json and in a bundle
NOT_STATED = "not stated"
CARD_ABSENT = "unknown: no model card here"  # a Hugging Face model's licence before its card is fetched
NON_COMMERCIAL = re.compile(r"(^|[-_ ])nc([-_ ]|$)|non-?commercial|research[- ]only", re.IGNORECASE)
UNKNOWN = {"", NOT_STATED, CARD_ABSENT, "unknown", "other"}
TORCHVISION_TERMS = (
    "torchvision's weights meta has no licence field; torchvision's code is BSD-3-Clause, and its model documentation "
    "(https://pytorch.org/vision/stable/models.html) leaves the pretrained weights under whatever terms their "
    "training data ({data}) carries, for the user to check"
)


@dataclass(frozen=True)
class Component:
    """One pretrained part: the library that loads it (`kind`), the model as the configuration names it and the word
    naming it, where the workbench expects it (`store`: a Hugging Face repository's file or snapshot, a torch hub
    checkpoint, a local path, at `expected`), the path where it is present, its licence and where that was read, the
    URL it comes from and the digest it must have (a torch hub URL's hash prefix; Hugging Face files carry theirs)."""

    kind: str
    name: str
    word: str
    store: str
    expected: str
    path: Path | None = None
    licence: str = NOT_STATED
    licence_source: str = ""
    source: str = ""
    expected_digest: str = ""
    repo: str = ""
    revision: str | None = None
    files: tuple[str, ...] = ()  # a repository file, the preferred first; empty: the repository's `patterns`
    patterns: tuple[str, ...] = MODEL_FILES

    @property
    def present(self) -> bool:
        return self.path is not None and self.path.exists()

    @functools.cached_property
    def size(self) -> int | None:
        return sum(f.stat().st_size for f in _files(self.path)) if self.present else None

    @functools.cached_property
    def sha256(self) -> str | None:
        """The file's SHA-256; for a model folder, the SHA-256 of its files' names and SHA-256s, one per line."""
        if not self.present:
            return None
        if self.path.is_file():
            return file_sha256(self.path)
        listing = "".join(f"{f.relative_to(self.path)} {file_sha256(f)}\n" for f in _files(self.path))
        return hashlib.sha256(listing.encode()).hexdigest()

    @property
    def flag(self) -> str:
        return licence_flag(self.licence)

    @functools.cached_property
    def verified(self) -> bool | None:
        """Whether what is here is what its source published: a torch hub file against its URL's hash prefix, each
        Hugging Face file against its blob's name (None: missing, or no digest to check against)."""
        if not self.present:
            return None
        if self.store == TORCH and self.expected_digest:
            return self.sha256.startswith(self.expected_digest)
        if self.store == HF:
            checked = [(blob_digest(f.resolve()), f.resolve().name) for f in _files(self.path)]
            return all(got == name for got, name in checked if got is not None) if checked else None
        return None


def licence_flag(licence: str) -> str:
    """The licence's flag: non-commercial, unknown (none stated, or one the metadata calls other) or empty (open)."""
    if NON_COMMERCIAL.search(licence):
        return "non-commercial"
    return "unknown" if licence.strip().lower() in UNKNOWN else ""


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.is_file())


# --- what a configuration needs ---------------------------------------------------------------------------------

# Per encoder kind, `factory(name, word, weights) -> [Component]`: what that kind of encoder loads for `weights`.
KINDS: Registry[Callable[[str, str, str], list[Component]]] = Registry("weights kind")


def components(cfg: Any) -> list[Component]:
    """Every pretrained component `cfg` needs, in stream order, each once."""
    needed: dict[tuple[str, str, str], Component] = {}
    for family in stream_families.named(cfg):
        for model in family.pretrained(cfg):  # each family says what it loads (features.streams.Pretrained)
            for part in KINDS.get(model.kind)(model.model, model.word, model.weights):
                needed.setdefault((part.store, part.expected, part.name), part)
    return list(needed.values())


def local_file(kind: str, name: str, word: str, weights: str) -> Component:
    """Weights named by their path (a file, a model folder): their licence is what a model card beside them or in
    the folder states, and nothing can fetch them."""
    path = Path(weights).expanduser()
    card = path / MODEL_CARD if path.is_dir() else path.with_name(MODEL_CARD)
    licence = card_licence(card) if card.is_file() else NOT_STATED
    source = str(card) if card.is_file() else "a local file: its origin states its terms"
    return Component(kind, name, word, FILE, str(path), path if path.exists() else None, licence, source)


@KINDS.register("timm")
def timm_components(name: str, word: str, weights: str) -> list[Component]:
    """A timm model's pretrained file from its Hugging Face repository; licence from timm's pretrained config."""
    if weights == "random":
        return []
    if weights != "hub":
        return [local_file("timm", name, word, weights)]
    import timm

    if not timm.is_model(name):
        raise ValueError(f"{word}={name!r}: not a timm model (timm.list_models() lists them)")
    cfg = timm.models.get_pretrained_cfg(name)
    if not getattr(cfg, "hf_hub_id", None):
        raise ValueError(f"{word}={name!r} weights=hub: timm has no Hugging Face hub weights for it; name a file")
    repo, _, revision = cfg.hf_hub_id.partition("@")
    files = hub_filenames(cfg.hf_hub_filename)
    stated = (cfg.license or NOT_STATED, f"timm's pretrained_cfg of {name}")
    return [hf_component("timm", name, word, repo, revision or None, files, stated)]


@KINDS.register("open_clip")
def open_clip_components(arch: str, word: str, weights: str) -> list[Component]:
    """An open_clip pretrained tag's file, and the Hugging Face tokenizer its text tower reads (SigLIP's), which
    even random weights need."""
    import open_clip

    if arch not in open_clip.list_models():
        raise ValueError(f"{word}={clip.PREFIX}{arch}: not an open_clip architecture (open_clip.list_models())")
    tokenizer = open_clip.get_model_config(arch)["text_cfg"].get("hf_tokenizer_name")
    parts = []
    if tokenizer:
        parts.append(hf_component("transformers", tokenizer, word, tokenizer, None, patterns=TOKENIZER_FILES))
    if weights == "random":
        return parts
    if not weights.startswith("hub:"):
        return [local_file("open_clip", arch, word, weights), *parts]
    tag = weights.removeprefix("hub:")
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if tag not in tags:
        raise ValueError(f"{word}={weights!r}: open_clip {arch} has no tag {tag!r}; expected one of {', '.join(tags)}")
    repo = open_clip.get_pretrained_cfg(arch, tag).get("hf_hub", "").strip("/")
    if not repo:
        raise ValueError(f"{word}={clip.PREFIX}{arch}: its tag {tag!r} is not on the Hugging Face hub; name its file")
    return [hf_component("open_clip", f"{arch}/{tag}", word, repo, None, clip.HUB_FILES), *parts]


@KINDS.register("transformers")
def transformers_components(name: str, word: str, weights: str) -> list[Component]:
    """A transformers model's folder (configuration, processor and weights, which its random weights are built
    from too): a local folder, or the snapshot of its Hugging Face repository."""
    if Path(name).expanduser().is_dir():
        return [local_file("transformers", name, word, name)]
    repo, _, revision = name.partition("@")
    return [hf_component("transformers", name, word, repo, revision or None)]


@KINDS.register("torchvision")
def torchvision_components(name: str, word: str, weights: str) -> list[Component]:
    """A torchvision video model's Kinetics-400 checkpoint in the torch hub cache (what features.motion loads); its
    URL's hash prefix is the first hex digits of the file's SHA-256."""
    if weights == "random":
        return []
    if weights != "hub":
        return [local_file("torchvision", name, word, weights)]
    enum, path = VIDEO_MODELS[name].weights, hub_file(name)
    prefix = torch.hub.HASH_REGEX.search(path.name)
    terms = TORCHVISION_TERMS.format(data="Kinetics-400") + f"; recipe: {enum.meta.get('recipe', '-')}"
    return [Component("torchvision", name, word, TORCH, str(path), path if path.is_file() else None, NOT_STATED,
                      terms, enum.url, prefix.group(1) if prefix else "")]  # fmt: skip


def repo_folder(repo: str) -> str:
    """The folder of a model repository in a Hugging Face cache."""
    return f"models--{repo.replace('/', '--')}"


def hub_url(repo: str, revision: str | None, filename: str = "") -> str:
    return f"{hf_constants.ENDPOINT}/{repo}/resolve/{revision or 'main'}/{filename}".rstrip("/")


def hf_component(
    kind: str,
    name: str,
    word: str,
    repo: str,
    revision: str | None,
    files: Iterable[str] = (),
    stated: tuple[str, str] = (NOT_STATED, ""),
    patterns: tuple[str, ...] = MODEL_FILES,
) -> Component:
    """A Hugging Face repository's file (the first of `files` it has) or, with no `files`, its model snapshot; its
    licence the model card's, else what the library `stated` (licence, where it says so)."""
    files = tuple(files)
    expected = Path(hf_constants.HF_HUB_CACHE) / repo_folder(repo) / (files[0] if files else "")
    source = hub_url(repo, revision, files[0] if files else "")
    return located(Component(kind, name, word, HF, str(expected), None, *stated, source, repo=repo,
                             revision=revision, files=files, patterns=patterns))  # fmt: skip


def located(part: Component) -> Component:
    """A Hugging Face component as this machine's cache holds it: its path (None: missing), and the licence its
    model card states where the cache holds the card."""
    if part.files:
        cached = (try_to_load_from_cache(part.repo, name, part.revision) for name in part.files)
        path = next((Path(found) for found in cached if isinstance(found, str)), None)
    else:
        try:
            path = model_folder(f"{part.repo}@{part.revision}" if part.revision else part.repo)
        except WeightsNotFound:
            path = None
    card = try_to_load_from_cache(part.repo, MODEL_CARD, part.revision)
    if isinstance(card, str):
        read = f"the front matter of {part.repo}'s model card ({MODEL_CARD})"
        return replace(part, path=path, licence=card_licence(Path(card)), licence_source=read)
    if part.licence == NOT_STATED:
        missing = f"no model card of {part.repo} in the cache (fetch=true brings it)"
        return replace(part, path=path, licence=CARD_ABSENT, licence_source=missing)
    return replace(part, path=path)


def card_licence(card: Path) -> str:
    """The `license` (and `license_name` where it is `other`) of a model card's YAML front matter."""
    text = card.read_text(errors="replace")
    if not text.startswith("---"):
        return NOT_STATED
    try:
        front = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError:
        return NOT_STATED
    licence = front.get("license") or NOT_STATED
    licence = ", ".join(licence) if isinstance(licence, list) else str(licence)
    return f"{licence}: {front['license_name']}" if licence == "other" and front.get("license_name") else licence


# --- fetch ------------------------------------------------------------------------------------------------------


class DigestMismatch(RuntimeError):
    """A downloaded file is not what its source published; it was removed, nothing took its place."""


def fetch(part: Component) -> Component:
    """Downloads a missing component into the cache the workbench reads, verified; returns it as found there."""
    if part.present:
        return part
    if part.store == FILE:
        raise WeightsNotFound(f"{part.word}: {part.expected} is a local path; bring the file, nothing can fetch it")
    if part.store == TORCH:
        Path(part.expected).parent.mkdir(parents=True, exist_ok=True)
        try:  # checks the hash prefix in a temporary file beside the target, renamed only when it holds
            torch.hub.download_url_to_file(part.source, part.expected, hash_prefix=part.expected_digest or None)
        except RuntimeError as error:
            raise DigestMismatch(f"{part.source}: {error}; nothing was kept") from None
        return replace(part, path=Path(part.expected))
    staging = Path(hf_constants.HF_HUB_CACHE) / ".staging" / uuid.uuid4().hex
    try:
        if part.files:
            hf_first(part.repo, part.revision, part.files, staging)
        else:
            snapshot_download(part.repo, revision=part.revision, allow_patterns=[*part.patterns, MODEL_CARD],
                              cache_dir=staging)  # fmt: skip
        with contextlib.suppress(RemoteEntryNotFoundError):  # a repository without a model card states no licence
            hf_hub_download(part.repo, MODEL_CARD, revision=part.revision, cache_dir=staging)
        verify_blobs(staging / repo_folder(part.repo), part.repo)
        move_into(staging / repo_folder(part.repo), Path(hf_constants.HF_HUB_CACHE) / repo_folder(part.repo))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):  # another fetch may be staging beside it
            staging.parent.rmdir()
    return located(part)


def fetch_missing(parts: Iterable[Component]) -> list[tuple[Component, str]]:
    """Each component as it is once what is missing is fetched, with what happened (present, fetched, failed: why);
    a failure (the network, a digest) does not stop the others."""
    done = []
    for part in parts:
        try:
            done.append((part, "present") if part.present else (fetch(part), "fetched"))
        except (OSError, RuntimeError) as error:
            done.append((part, f"failed: {error}"))
    return done


def hf_first(repo: str, revision: str | None, files: tuple[str, ...], cache: Path) -> Path:
    """The first of `files` the repository has, downloaded into `cache`."""
    for name in files:
        try:
            return Path(hf_hub_download(repo, name, revision=revision, cache_dir=cache))
        except RemoteEntryNotFoundError:
            continue
    raise WeightsNotFound(f"{repo} has none of {', '.join(files)} at {hf_constants.ENDPOINT}")


def git_blob_sha1(path: Path) -> str:
    """The hash git (and the hub, as a small file's ETag) gives a file's content."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def blob_digest(blob: Path) -> str | None:
    """The digest a Hugging Face cache blob's name says its content has, computed the same way (None: the name is no
    digest): the hub names a large (LFS) file's blob by its SHA-256 and a small one's by its git blob hash."""
    if len(blob.name) == 64:
        return file_sha256(blob)
    return git_blob_sha1(blob) if len(blob.name) == 40 else None


def verify_blobs(folder: Path, repo: str) -> None:
    """Every blob a download brought is what its name says; DigestMismatch names the first that is not."""
    for blob in sorted((folder / "blobs").glob("*")):
        got = blob_digest(blob)
        if got not in (None, blob.name):
            raise DigestMismatch(
                f"{repo}: a downloaded file's content hashes to {got}, not the {blob.name} the hub published; "
                f"nothing was kept (from {hf_constants.ENDPOINT})"
            )


def move_into(staged: Path, cache: Path) -> None:
    """The staged repository's blobs, then its snapshot links and refs, renamed into the cache's: a link appears
    only once its blob is in place."""
    for part in ("blobs", "snapshots", "refs"):
        for path in sorted((staged / part).rglob("*")):
            if path.is_file() or path.is_symlink():
                target = cache / path.relative_to(staged)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)


# --- bundle -----------------------------------------------------------------------------------------------------


def bundle(parts: Iterable[Component], folder: Path) -> dict[str, str]:
    """Copies every present component into `folder`, laid out as the caches are (`hf/hub/`, `torch/hub/checkpoints/`,
    local files under `files/`); returns the environment that makes another machine read it."""
    folder = folder.resolve()
    for part in parts:
        if not part.present:
            continue
        if part.store == HF:
            source = Path(hf_constants.HF_HUB_CACHE) / repo_folder(part.repo)
            shutil.copytree(source, folder / "hf" / "hub" / repo_folder(part.repo), symlinks=True, dirs_exist_ok=True)
        elif part.store == TORCH:
            copy_file(part.path, folder / "torch" / "hub" / "checkpoints" / part.path.name)
        elif part.path.is_dir():
            shutil.copytree(part.path, folder / "files" / part.path.name, dirs_exist_ok=True)
        else:
            copy_file(part.path, folder / "files" / part.path.name)
    return {"HF_HOME": str(folder / "hf"), "TORCH_HOME": str(folder / "torch")}


def copy_file(source: Path, target: Path) -> None:
    """A copy that takes its name only when whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        shutil.copy2(source, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


# --- the licence ledger -----------------------------------------------------------------------------------------


WORKBENCH = "vqa-workbench"
LIBRARIES = {
    "timm": "timm",
    "torchvision": "torchvision",
    "open_clip": "open_clip_torch",
    "transformers": "transformers",
}  # distributions by the kind of component their code loads; fmt: skip


def code_entry(distribution: str) -> dict[str, str]:
    """The ledger's row of an installed distribution's code: the licence its package metadata states."""
    try:
        found = metadata.metadata(distribution)
    except metadata.PackageNotFoundError:
        found = {}
    stated = found.get("License-Expression") or found.get("License") or ""
    if len(stated) > 80 or not stated:  # some ship the whole licence text in the field: the classifier names it
        classifiers = [c.rsplit(" :: ", 1)[-1] for c in found.get_all("Classifier") or [] if c.startswith("License")]
        stated = ", ".join(classifiers) or stated[:80]
    licence = stated or NOT_STATED
    where = "this project" if distribution == WORKBENCH else f"https://pypi.org/project/{distribution}/"
    return {"component": "workbench" if distribution == WORKBENCH else "library",
            "name": f"{distribution} {found.get('Version', '')}".strip(), "licence": licence, "source": where,
            "licence_read": "its package metadata", "flag": licence_flag(licence)}  # fmt: skip


def ledger(parts: Iterable[Component]) -> list[dict[str, str]]:
    """One row per component: the workbench itself, each library whose code loads a component, each weights file,
    with its licence, where that was read and its flag (non-commercial, unknown or empty)."""
    parts = list(parts)
    entries = [code_entry(d) for d in [WORKBENCH, *dict.fromkeys(LIBRARIES[p.kind] for p in parts)]]
    for part in parts:
        entries.append({"component": f"{part.kind} weights ({part.word})", "name": part.name, "licence": part.licence,
                        "source": part.source or part.expected, "licence_read": part.licence_source,
                        "sha256": part.sha256 or "", "flag": part.flag})  # fmt: skip
    return entries
