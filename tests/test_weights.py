"""`just weights` without a network: a throwaway HTTP server on loopback serves small random-weight files in the
layouts the libraries download from (a Hugging Face endpoint's resolve and API routes, a torch hub URL), and the
fetch, the digest checks, a corrupted and an interrupted download and the bundle are checked against it."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import safetensors.torch
import torch
from huggingface_hub import constants as hf_constants

from features import clip
from features.backbones import create_backbone, timm_hub_file
from features.hf import model_folder
from features.weights import (
    CARD_ABSENT,
    TOKENIZER_FILES,
    TORCH,
    Component,
    DigestMismatch,
    bundle,
    components,
    fetch,
    ledger,
    licence_flag,
)
from workbench.cli import main
from workbench.config import CheckConfig, build

COMMIT = "c0ffee" * 6 + "c0ff"
TIMM = "test_vit.r160_in1k"
TIMM_REPO = f"timm/{TIMM}"
AUDIO_REPO = "org/tiny-audio"
LFS = (".safetensors", ".bin", ".pth")


def card(licence: str) -> bytes:
    return f"---\nlicense: {licence}\ntags: [test]\n---\n# a model\n".encode()


@dataclass
class Served:
    """What the loopback hub serves: repository files by (repo, name), torch hub files by name, and faults by file
    name (`corrupt`: the body differs from the published digest; `cut`: the first response stops halfway)."""

    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    torch_files: dict[str, bytes] = field(default_factory=dict)
    faults: dict[str, str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    served: Served

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self.respond(body=False)

    def do_GET(self) -> None:
        self.respond(body=True)

    def respond(self, body: bool) -> None:
        path = self.path.split("?")[0]
        self.served.requests.append(f"{self.command} {path}")
        if found := re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/[^/]+", path):
            files = self.served.repos[found[1]]
            return self.json({"id": found[1], "sha": COMMIT, "siblings": [{"rfilename": name} for name in files]})
        if found := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/[^/]+", path):
            return self.json([self.tree_entry(name, data) for name, data in self.served.repos[found[1]].items()])
        if found := re.fullmatch(r"/([^/]+/[^/]+)/resolve/[^/]+/(.+)", path):
            data = self.served.repos.get(found[1], {}).get(found[2])
            if data is None:
                return self.missing()
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{git_blob_sha1_of(data)}"'}
            if found[2].endswith(LFS):
                headers |= {"X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Linked-Size": str(len(data))}
            return self.file(path, data, headers, body)
        if found := re.fullmatch(r"/models/(.+)", path):
            return self.file(path, self.served.torch_files[found[1]], {}, body)
        return self.missing()

    @staticmethod
    def tree_entry(name: str, data: bytes) -> dict:
        entry = {"type": "file", "path": name, "size": len(data), "oid": git_blob_sha1_of(data)}
        if name.endswith(LFS):
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry

    def json(self, value: object) -> None:
        data = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def missing(self) -> None:
        self.send_response(404)
        self.send_header("X-Error-Code", "EntryNotFound")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def file(self, path: str, data: bytes, headers: dict[str, str], body: bool) -> None:
        name = path.rsplit("/", 1)[1]
        fault = self.served.faults.get(name) if body else None
        if fault == "corrupt":
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = int(ranged[1]) if (ranged := re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))) else 0
        self.send_response(206 if start else 200)
        for header, value in headers.items():
            self.send_header(header, value)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if not body:
            return
        if fault == "cut":
            del self.served.faults[name]  # the next request gets it whole
            self.wfile.write(data[start : len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data[start:])


def git_blob_sha1_of(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture(scope="module")
def weights_bytes() -> dict[str, bytes]:
    """A random-weight timm checkpoint (test_vit) and a small random tensor file, as safetensors."""
    model = create_backbone("test_vit", seed=3).model
    vit = safetensors.torch.save({k: v.contiguous() for k, v in model.state_dict().items()})
    return {
        "vit": vit,
        "tiny": safetensors.torch.save({"w": torch.randn(64, 64, generator=torch.Generator().manual_seed(1))}),
    }


@pytest.fixture
def hub(tmp_path, monkeypatch, weights_bytes) -> Iterator[tuple[Served, str]]:
    """The loopback hub, the Hugging Face library pointed at it (its endpoint and cache as HF_ENDPOINT and HF_HOME
    set them when it was imported) and the torch hub cache in the test's folder."""
    served = Served()
    served.repos[TIMM_REPO] = {"model.safetensors": weights_bytes["vit"], "README.md": card("apache-2.0")}
    served.repos[AUDIO_REPO] = {
        "config.json": b'{"model_type": "tiny"}',
        "model.safetensors": weights_bytes["tiny"],
        "README.md": card("cc-by-nc-4.0"),
    }
    handler = type("Bound", (Handler,), {"served": served})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(hf_constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(
        hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    yield served, endpoint
    server.shutdown()
    server.server_close()


def configured(**words: str):
    return build(CheckConfig, words)


def every_file(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and ".staging" not in p.parts) if folder.exists() else []


def test_fetch_brings_a_timm_checkpoint_where_the_backbone_reads_it(hub, weights_bytes):
    served, endpoint = hub
    (part,) = components(configured(backbone=TIMM, weights="hub"))
    assert (part.kind, part.present, part.licence, part.flag) == ("timm", False, "apache-2.0", "")
    assert part.source.startswith(f"{endpoint}/{TIMM_REPO}/resolve/main/")
    got = fetch(part)
    assert got.present and got.verified and got.sha256 == hashlib.sha256(weights_bytes["vit"]).hexdigest()
    assert got.size == len(weights_bytes["vit"]) and "model card" in got.licence_source
    assert timm_hub_file(TIMM) == got.path  # the run's own lookup finds what was fetched
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(create_backbone("test_vit", weights="hub")(images), create_backbone("test_vit", seed=3)(images))
    assert not (Path(hf_constants.HF_HUB_CACHE) / ".staging").exists() or not any(
        (Path(hf_constants.HF_HUB_CACHE) / ".staging").iterdir()
    )


def test_a_snapshot_is_fetched_with_its_model_card_and_licence(hub):
    (part,) = components(configured(audio=f"hf:{AUDIO_REPO}", audio_weights="hub"))
    assert (part.kind, part.present, part.licence, part.flag) == ("transformers", False, CARD_ABSENT, "unknown")
    got = fetch(part)
    assert got.path == model_folder(AUDIO_REPO)
    assert sorted(f.name for f in got.path.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert (got.licence, got.flag) == ("cc-by-nc-4.0", "non-commercial")


def test_a_corrupted_download_is_refused_and_nothing_is_left(hub):
    served, _ = hub
    served.faults["model.safetensors"] = "corrupt"
    (part,) = components(configured(backbone=TIMM, weights="hub"))
    with pytest.raises(DigestMismatch, match="not the .* the hub published"):
        fetch(part)
    assert every_file(Path(hf_constants.HF_HUB_CACHE)) == []
    assert not components(configured(backbone=TIMM, weights="hub"))[0].present


def test_an_interrupted_download_is_resumed_never_served_half(hub, weights_bytes):
    served, _ = hub
    url = f"/{TIMM_REPO}/resolve/main/model.safetensors"
    served.faults["model.safetensors"] = "cut"
    got = fetch(components(configured(backbone=TIMM, weights="hub"))[0])
    assert got.sha256 == hashlib.sha256(weights_bytes["vit"]).hexdigest()
    assert served.requests.count(f"GET {url}") == 2  # the second asked for the rest


def torch_part(tmp_path: Path, data: bytes, endpoint: str) -> Component:
    """A torch hub checkpoint whose file name carries its hash prefix, as torchvision's do."""
    name = f"tiny_video-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    expected = tmp_path / "torch" / "hub" / "checkpoints" / name
    url = f"{endpoint}/models/{name}"
    return Component(
        "torchvision", "tiny_video", "motion", TORCH, str(expected), source=url, expected_digest=name[11:19]
    )


@pytest.mark.parametrize("fault", ["corrupt", "cut"])
def test_a_torch_hub_download_is_checked_against_its_url_hash(hub, tmp_path, weights_bytes, fault):
    served, endpoint = hub
    part = torch_part(tmp_path, weights_bytes["tiny"], endpoint)
    served.torch_files[Path(part.expected).name] = weights_bytes["tiny"]
    served.faults[Path(part.expected).name] = fault
    with pytest.raises(Exception):  # noqa: B017 - a digest mismatch, or the connection's own error when cut
        fetch(part)
    assert every_file(tmp_path / "torch") == []  # no partial file under any name
    served.faults.clear()
    got = fetch(part)  # redone whole
    assert got.present and got.sha256.startswith(part.expected_digest)


def test_torchvision_components_name_the_torch_hub_cache_and_its_hash(hub, tmp_path):
    (part,) = components(configured(motion="r3d_18", motion_weights="hub"))
    assert part.expected == str(tmp_path / "torch" / "hub" / "checkpoints" / "r3d_18-b3b3357e.pth")
    assert (part.expected_digest, part.flag) == ("b3b3357e", "unknown")
    assert "Kinetics-400" in part.licence_source and "BSD-3-Clause" in part.licence_source


def test_the_bundle_is_read_through_the_environment(hub, tmp_path, weights_bytes, monkeypatch):
    served, endpoint = hub
    cfg = configured(backbone=TIMM, weights="hub", audio=f"hf:{AUDIO_REPO}", audio_weights="hub")
    fetched = [fetch(part) for part in components(cfg)]
    video = torch_part(tmp_path, weights_bytes["tiny"], endpoint)
    served.torch_files[Path(video.expected).name] = weights_bytes["tiny"]
    fetched.append(fetch(video))
    environment = bundle(fetched, tmp_path / "bundle")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(Path(environment["HF_HOME"]) / "hub"))
    monkeypatch.setenv("TORCH_HOME", environment["TORCH_HOME"])
    again = components(cfg)
    assert [p.sha256 for p in again] == [p.sha256 for p in fetched[:2]]
    assert all(str(p.path).startswith(str(tmp_path / "bundle")) for p in again)
    carried = Path(environment["TORCH_HOME"]) / "hub" / "checkpoints" / Path(video.expected).name
    assert Path(torch.hub.get_dir()) / "checkpoints" / carried.name == carried
    assert hashlib.sha256(carried.read_bytes()).hexdigest() == fetched[2].sha256


def test_an_open_clip_tower_needs_its_tag_file_and_the_tokenizer_its_text_side_reads(hub):
    tower, tokenizer = components(configured(text="open_clip:ViT-B-16-SigLIP", text_weights="hub:webli"))
    assert (tower.kind, tower.repo, tower.files) == ("open_clip", "timm/ViT-B-16-SigLIP", clip.HUB_FILES)
    assert (tokenizer.kind, tokenizer.files, tokenizer.patterns) == ("transformers", (), TOKENIZER_FILES)
    assert components(configured(text="open_clip:ViT-B-16-SigLIP")) == [tokenizer]  # random weights: the tokenizer
    with pytest.raises(ValueError, match="has no tag 'nope'"):
        components(configured(text="open_clip:ViT-B-16-SigLIP", text_weights="hub:nope"))


@pytest.mark.parametrize(
    "licence, flag",
    [("apache-2.0", ""), ("mit", ""), ("cc-by-nc-4.0", "non-commercial"), ("CC BY-NC-SA 4.0", "non-commercial"),
     ("other", "unknown"), ("not stated", "unknown"), ("", "unknown")],
)  # fmt: skip
def test_licence_flags(licence, flag):
    assert licence_flag(licence) == flag


def test_the_ledger_flags_a_non_commercial_weights_file(tmp_path):
    weights = tmp_path / "model" / "weights.safetensors"
    weights.parent.mkdir()
    safetensors.torch.save_file({"w": torch.zeros(2)}, weights)
    (weights.parent / "README.md").write_bytes(card("cc-by-nc-sa-4.0"))
    rows = ledger(components(configured(backbone="test_vit", weights=str(weights))))
    assert rows[0]["component"] == "workbench" and rows[1]["name"].startswith("timm ")
    assert rows[-1]["licence"] == "cc-by-nc-sa-4.0" and rows[-1]["flag"] == "non-commercial"
    assert rows[-1]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_weights_command_lists_fetches_and_bundles(hub, tmp_path, capsys, log_console):
    words = ["weights", "track=kvq", f"backbone={TIMM}", "weights=hub"]
    assert main(words) == 3  # missing
    assert main([*words, "fetch=true", f"bundle={tmp_path / 'carried'}"]) == 0
    printed = capsys.readouterr().out
    assert "missing" in printed and "fetched" in printed and "HF_HOME=" in printed
    assert (tmp_path / "carried" / "hf" / "hub" / f"models--timm--{TIMM}").is_dir()
    assert main(words) == 0 and "present, verified" in capsys.readouterr().out
    blob = timm_hub_file(TIMM).resolve()
    blob.write_bytes(blob.read_bytes()[::-1])  # changed in the cache after it was fetched
    assert main(words) == 3 and "DIGEST DIFFERS" in capsys.readouterr().out
