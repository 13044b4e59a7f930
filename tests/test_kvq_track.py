"""The KVQ track: reading the organiser's layout (real rows from the shipped files), the official score."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr, spearmanr

from tracks import LayoutError, get_track
from tracks.kvq import combine

FIXTURE = Path(__file__).parent / "fixtures" / "kvq"


@pytest.fixture
def kvq():
    return get_track("kvq")


def test_reads_the_shipped_layout(kvq):
    items = kvq.read_items(FIXTURE)
    assert list(items.columns) == ["item_id", "path", "split", "group", "score"]
    train = items[items.split == "train"]
    test = items[items.split == "test"]
    assert len(train) == 12 and len(test) == 4  # the fixture's test list has CRLF line ends, as shipped
    assert train.item_id.iloc[0] == "train/0001.mp4" and train.score.iloc[0] == pytest.approx(3.361111111)
    assert test.item_id.tolist() == [f"test/000{i}.mp4" for i in range(1, 5)]
    assert test.score.isna().all()
    assert items.path.iloc[0] == str((FIXTURE / "train/0001.mp4").resolve())
    assert (items.group == items.item_id).all()  # no source mapping: each video its own group


def _layout(tmp_path, train_rows, test_rows=("test/0001.mp4,",), header="filename,score"):
    (tmp_path / "train_data.csv").write_text("\n".join([header, *train_rows]) + "\n")
    (tmp_path / "test_data.csv").write_text("\n".join(["filename,score", *test_rows]) + "\n")
    return tmp_path


def test_source_mapping_groups(kvq, tmp_path):
    data = _layout(tmp_path, ["train/0001.mp4,3.0", "train/0002.mp4,2.0"])
    (data / "sources.csv").write_text("filename,source\ntrain/0001.mp4,a\ntrain/0002.mp4,a\ntest/0001.mp4,b\n")
    items = kvq.read_items(data)
    assert items.group.tolist() == ["a", "a", "b"]


@pytest.mark.parametrize(
    "rows,header,message",
    [
        (["train/0001.mp4,3.0"], "name,mos", "missing column(s) filename, score"),
        (["train/0001.mp4,good"], "filename,score", "line 2: score='good' is not a finite number"),
        (["train/0001.mp4,3.0", "train/0001.mp4,2.0"], "filename,score", "'train/0001.mp4' appears more than once"),
        (["../secret.mp4,3.0"], "filename,score", "points outside the data folder"),
        (["/etc/passwd,3.0"], "filename,score", "points outside the data folder"),
        (["test/0001.mp4,3.0"], "filename,score", "in both the training and the test list"),
    ],
)
def test_bad_label_files_name_the_problem(kvq, tmp_path, rows, header, message):
    data = _layout(tmp_path, rows, header=header)
    with pytest.raises(LayoutError, match=message.replace("(", r"\(").replace(")", r"\)")):
        kvq.read_items(data)


def test_a_split_folder_linked_from_another_disk_is_read_in_place(kvq, tmp_path):
    """A user keeps the videos elsewhere and links the split folder into the layout: the ids still name files under
    the data folder, and `..` in an id is still refused."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "0001.mp4").write_bytes(b"x")
    (tmp_path / "data").mkdir()
    data = _layout(tmp_path / "data", ["train/0001.mp4,3.0"])
    (data / "train").symlink_to(elsewhere)
    items = kvq.read_items(data)
    assert items.path.iloc[0] == str(data.resolve() / "train" / "0001.mp4")
    assert Path(items.path.iloc[0]).read_bytes() == b"x"


def _truth(tmp_path, rng, n=40):
    names = [f"test/{i:04d}.mp4" for i in range(1, n + 1)]
    truth = pd.DataFrame({"filename": names, "score": rng.uniform(1, 5, n)})
    folder = tmp_path / "truth"
    folder.mkdir()
    truth.to_csv(folder / "truth.csv", index=False)
    pairs = {}
    for sheet in ("nonsource", "source"):
        i, j = rng.integers(0, n, 30), rng.integers(0, n, 30)
        rank = np.where(truth.score.to_numpy()[i] > truth.score.to_numpy()[j], 1, 2)
        pairs[sheet] = pd.DataFrame({"video1": np.array(names)[i], "video2": np.array(names)[j], "rank": rank})
    with pd.ExcelWriter(folder / "rank-pair-val.xlsx") as writer:
        for sheet, frame in pairs.items():
            frame.to_excel(writer, sheet_name=sheet, index=False)
    return folder, truth, pairs


def test_official_score_by_hand(kvq, tmp_path):
    rng = np.random.default_rng(0)
    folder, truth, pairs = _truth(tmp_path, rng)
    pred = pd.DataFrame({"score": truth.score.to_numpy() + rng.normal(0, 0.5, len(truth))}, index=truth.filename)
    pred = pred.sample(frac=1.0, random_state=1)  # row order must not matter
    parts = kvq.official_score(pred, folder)
    lookup = pred.score.to_dict()
    expected = {
        "srcc": spearmanr(truth.score, truth.filename.map(lookup))[0],
        "plcc": pearsonr(truth.score, truth.filename.map(lookup))[0],
    }
    for sheet, frame in pairs.items():
        predicted = np.where(frame.video1.map(lookup) >= frame.video2.map(lookup), 1, 2)
        expected[f"acc_{sheet}"] = float(np.mean(predicted == frame["rank"]))
    for key, value in expected.items():
        assert parts[key] == pytest.approx(value, abs=1e-12)
    assert parts["score"] == pytest.approx(
        0.45 * expected["srcc"]
        + 0.45 * expected["plcc"]
        + 0.05 * expected["acc_nonsource"]
        + 0.05 * expected["acc_source"],
        abs=1e-12,
    )
    assert combine(expected) == pytest.approx(parts["score"], abs=1e-12)


def test_official_score_without_pair_file_says_so(kvq, tmp_path):
    folder, truth, _ = _truth(tmp_path, np.random.default_rng(1))
    (folder / "rank-pair-val.xlsx").unlink()
    pred = pd.DataFrame({"score": truth.score.to_numpy()}, index=truth.filename)
    parts = kvq.official_score(pred, folder)
    assert "score" not in parts and parts["srcc"] == pytest.approx(1.0)
    assert "rank terms" in parts["note"] and "missing" in parts["note"]


def test_official_score_names_a_missing_prediction(kvq, tmp_path):
    folder, truth, _ = _truth(tmp_path, np.random.default_rng(2))
    pred = pd.DataFrame({"score": truth.score.to_numpy()[1:]}, index=truth.filename[1:])
    with pytest.raises(LayoutError, match="no prediction for 1 id"):
        kvq.official_score(pred, folder)


def test_selection_score_uses_groups(kvq):
    items = pd.DataFrame({"item_id": list("abcd"), "group": ["g", "g", "h", "h"], "score": [1.0, 2.0, 3.0, 4.0]})
    pred = pd.DataFrame({"score": [2.0, 1.0, 3.0, 4.0]}, index=list("abcd"))  # one within-source pair wrong
    parts = kvq.selection_score(pred, items)
    assert parts["acc_source"] == pytest.approx(0.5)
    assert parts["acc_nonsource"] == pytest.approx(1.0)
