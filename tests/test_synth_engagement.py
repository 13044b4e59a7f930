"""synth.engagement: the organisers' CSV formats, Ids, videos with and without audio, the truth, the ECR model and
reproducibility."""

from __future__ import annotations

import re

import av
import numpy as np
import pandas as pd
import pytest

from synth import engagement
from synth.video import quality, random_distortion

ITEMS, SEED, WIDTH, HEIGHT = 20, 7, 64, 48
COLUMNS = {
    "train_data.csv": ["Id", "Title", "Description", "ECR"],
    "val_data.csv": ["Id", "Title", "Description", "Download_link"],
    "test_data.csv": ["Id", "Title", "Description"],
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("engagement")
    return out, engagement.synthesize(out, ITEMS, SEED, WIDTH, HEIGHT, workers=2)


def _read(path, **options) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"Id": str}, **options)


def test_the_three_lists_parse_back_to_the_returned_values(dataset) -> None:
    out, table = dataset
    for name, split in zip(COLUMNS, ("train", "val", "test")):
        expected = table[table.split == split].reset_index(drop=True)
        text = _read(out / name, keep_default_na=False)
        assert list(text.columns) == COLUMNS[name]
        for column in ("Id", "Title", "Description"):
            assert text[column].tolist() == expected[column].tolist(), (name, column)
        empty_as_nan = _read(out / name)  # pandas' default reading: an empty cell is NaN
        assert empty_as_nan.Title.isna().tolist() == (expected.Title == "").tolist()
    train = _read(out / "train_data.csv")
    assert train.ECR.tolist() == table[table.split == "train"].ECR.tolist()  # full precision
    assert _read(out / "val_data.csv").Download_link.str.match(r"https://\S+$").all()


def test_the_lists_are_written_as_the_organisers_write_them(dataset) -> None:
    out, table = dataset
    for name in COLUMNS:
        raw = (out / name).read_bytes()
        assert not raw.startswith(b"\xef\xbb\xbf") and raw.endswith(b"\r\n")
        assert b"\n" not in raw.replace(b"\r\n", b"")
        assert raw == _read(out / name, keep_default_na=False).to_csv(index=False, lineterminator="\r\n").encode()
    texts = pd.concat([table.Title, table.Description])
    assert texts.str.contains(r"[^\x00-\x7f]").any() and texts.str.contains('"').any()
    assert (table.Title == "").any() and (table.Description == "").any()
    assert set(table.split) == {"train", "val", "test"} and (table.split == "train").mean() >= 0.6


def test_ids_are_unique_32_hex_and_seed_determined(dataset, tmp_path) -> None:
    _, table = dataset
    assert table.Id.map(lambda name: re.fullmatch(r"[0-9a-f]{32}", name) is not None).all()
    assert table.Id.is_unique and len(table) == ITEMS
    other = engagement.synthesize(tmp_path, 3, SEED + 1, WIDTH, HEIGHT, workers=1)
    assert not set(other.Id) & set(table.Id)


def test_every_video_decodes_with_audio_only_where_drawn(dataset) -> None:
    out, table = dataset
    assert table.has_audio.any() and not table.has_audio.all()
    for row in table.itertuples():
        with av.open(str(out / "videos" / f"{row.Id}.mp4")) as container:
            frames = list(container.decode(video=0))
            assert len(frames) == row.frames and frames[0].width == WIDTH and frames[0].height == HEIGHT
            assert 2 <= row.frames / engagement.FPS <= 3
            assert len(container.streams.audio) == int(row.has_audio), row.Id
            if row.has_audio:
                stream = container.streams.audio[0]
                assert stream.codec_context.name == "aac" and stream.rate == engagement.SAMPLE_RATE
                container.seek(0)
                samples = sum(frame.samples for frame in container.decode(audio=0))
                assert 0 <= samples - round(row.frames / engagement.FPS * engagement.SAMPLE_RATE) < 1024, row.Id


def test_the_truth_holds_exactly_the_val_and_test_items(dataset) -> None:
    out, table = dataset
    truth = _read(out / "truth" / "truth.csv")
    assert list(truth.columns) == ["Id", "ECR"]
    held_out = table[table.split != "train"]
    assert truth.Id.tolist() == held_out.Id.tolist()
    assert truth.ECR.tolist() == held_out.ECR.tolist()
    assert table.ECR.between(0, 1).all()


def test_each_factor_alone_correlates_with_ecr() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(4000):
        video_quality = quality(random_distortion(rng))
        has_audio = bool(rng.random() < engagement.AUDIO_SHARE)
        title = engagement.random_title(rng) if rng.random() >= engagement.EMPTY_TITLE else ""
        appeal = engagement.title_appeal(title)
        rows.append((video_quality, has_audio, appeal, engagement.engagement(video_quality, has_audio, appeal, rng)))
    draws = pd.DataFrame(rows, columns=["quality", "audio", "appeal", "ecr"])
    assert (draws.corr("spearman").ecr.drop("ecr") > 0.2).all()
    low, high = draws.ecr.quantile([0.05, 0.95])
    assert low < 0.25 and high > 0.8


def test_title_appeal_reads_whole_words() -> None:
    assert engagement.title_appeal("") == 0
    assert engagement.title_appeal("Wait for it, watch till the end") > engagement.title_appeal("wait for it") > 0
    assert engagement.title_appeal("boring sale ad") < 0
    assert engagement.title_appeal("made a café, waiting") == 0


def test_the_same_seed_gives_byte_identical_lists(dataset, tmp_path) -> None:
    out, table = dataset
    again = engagement.synthesize(tmp_path, ITEMS, SEED, WIDTH, HEIGHT, workers=1)
    pd.testing.assert_frame_equal(again, table)
    for name in [*COLUMNS, "truth/truth.csv"]:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
