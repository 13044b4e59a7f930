"""Properties that must hold for any input: label files read back exactly or fail naming the line; metrics keep
their invariances; the official KVQ score does not depend on row order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from common import metrics
from tracks import LayoutError, get_track

KVQ = get_track("kvq")
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scores = st.floats(min_value=0.0, max_value=5.0, allow_nan=False, width=64)
label_tables = st.lists(scores, min_size=1, max_size=30).map(
    lambda values: pd.DataFrame({"filename": [f"train/{i + 1:04d}.mp4" for i in range(len(values))], "score": values})
)


def write_layout(folder, train: pd.DataFrame) -> None:
    train.to_csv(folder / "train_data.csv", index=False)
    (folder / "test_data.csv").write_text("filename,score\ntest/0001.mp4,\n")


@SETTINGS
@given(train=label_tables)
def test_label_files_read_back_exactly(tmp_path, train):
    write_layout(tmp_path, train)
    items = KVQ.read_items(tmp_path)
    labelled = items[items.split == "train"]
    assert labelled["item_id"].tolist() == train["filename"].tolist()
    assert np.array_equal(labelled["score"].to_numpy(), train["score"].to_numpy())


@SETTINGS
@given(train=label_tables, data=st.data())
def test_a_bad_cell_is_named_by_its_line(tmp_path, train, data):
    row = data.draw(st.integers(0, len(train) - 1))
    junk = data.draw(st.sampled_from(["", "n/a", "3,5", "four", "inf", "1e999"]))
    broken = train.astype({"score": object})
    broken.loc[row, "score"] = junk
    write_layout(tmp_path, broken)
    with pytest.raises(LayoutError, match=rf"line {row + 2}(?!\d)"):
        KVQ.read_items(tmp_path)


# Values on a grid, so a transform that is strictly monotone on the reals stays so in floating point.
grid = st.integers(-10_000, 10_000).map(lambda k: k / 100)
pairs = st.integers(5, 60).flatmap(
    lambda n: st.tuples(
        st.lists(grid, min_size=n, max_size=n, unique=True),
        st.lists(grid, min_size=n, max_size=n),
    )
)


@settings(max_examples=60, deadline=None)
@given(data=pairs)
def test_srcc_and_krcc_ignore_monotone_transforms(data):
    pred, true = map(np.asarray, data)
    assume(np.ptp(true) > 0)
    for transform in (np.arctan, lambda x: x**3 + x, lambda x: np.exp(x / 50)):
        assert metrics.srcc(transform(pred), true) == pytest.approx(metrics.srcc(pred, true), abs=1e-12)
        assert metrics.krcc(transform(pred), true) == pytest.approx(metrics.krcc(pred, true), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(data=pairs, scale=st.floats(0.01, 100), shift=st.floats(-100, 100))
def test_plcc_ignores_positive_affine_maps(data, scale, shift):
    pred, true = map(np.asarray, data)
    assume(np.ptp(true) > 0)
    assert metrics.plcc(scale * pred + shift, true) == pytest.approx(metrics.plcc(pred, true), abs=1e-9)
    assert metrics.plcc(-scale * pred + shift, true) == pytest.approx(-metrics.plcc(pred, true), abs=1e-9)


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    rng = np.random.default_rng(11)
    folder = tmp_path_factory.mktemp("truth")
    names = [f"test/{i:04d}.mp4" for i in range(1, 31)]
    table = pd.DataFrame({"filename": names, "score": rng.uniform(1, 5, len(names))})
    table.to_csv(folder / "truth.csv", index=False)
    with pd.ExcelWriter(folder / "rank-pair-val.xlsx") as writer:
        for sheet in ("nonsource", "source"):
            i, j = rng.integers(0, 30, 40), rng.integers(0, 30, 40)
            rank = np.where(table.score.to_numpy()[i] > table.score.to_numpy()[j], 1, 2)
            pd.DataFrame({"video1": np.array(names)[i], "video2": np.array(names)[j], "rank": rank}).to_excel(
                writer, sheet_name=sheet, index=False
            )
    return folder, table


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_official_kvq_score_does_not_depend_on_row_order(truth, seed):
    folder, table = truth
    rng = np.random.default_rng(seed)
    pred = pd.DataFrame({"score": table.score.to_numpy() + rng.normal(0, 1, len(table))}, index=table.filename)
    shuffled = pred.iloc[rng.permutation(len(pred))]
    first, second = KVQ.official_score(pred, folder), KVQ.official_score(shuffled, folder)
    assert first == pytest.approx(second, abs=1e-12)
