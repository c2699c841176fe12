"""What the families learn from and are judged on: validation groups as the held-out evaluation
judges them (impressions only, best label per user, item and date), and the sampled negatives a
training set keeps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.base import TrainingSet, judged, keep_negatives


def day_rows(offset: int) -> pd.DataFrame:
    """Two requests of user 1 and one of user 2 on one date, each with a sampled negative, and
    a request of user 3 without a click."""
    return pd.DataFrame({
        "request_id": np.array([1, 1, 1, 2, 2, 2, 3, 3, 4]) + offset,
        "user_id": [1, 1, 1, 1, 1, 1, 2, 2, 3],
        "item_id": [10, 11, 99, 10, 12, 98, 10, 97, 10],
        "label": np.array([0, 1, 0, 2, 0, 0, 1, 0, 0], dtype="int8"),
        "is_negative": [False, False, True, False, False, True, False, True, False],
        "f": np.arange(9, dtype="float32"),
    })


def test_judged_keeps_shown_items_with_their_best_label_a_group_per_user_and_date():
    rows = pd.concat([day_rows(0).assign(date=1), day_rows(10).assign(date=2)])
    out = judged(rows)
    assert not out["is_negative"].any()
    first = out[out["date"] == 1]
    assert sorted(zip(first["user_id"], first["item_id"], first["label"], strict=True)) == \
        [(1, 10, 2), (1, 11, 1), (1, 12, 0), (2, 10, 1), (3, 10, 0)]
    assert out.groupby(["user_id", "date"])["group"].nunique().eq(1).all()
    assert out["group"].nunique() == 6 and out["group"].max() == 5
    clicked = judged(rows, relevant=True)  # user 3 clicked nothing: dropped
    assert 3 not in set(clicked["user_id"]) and clicked["group"].max() == 3


def test_validation_rows_are_judged_groups_and_training_rows_keep_n_negatives(tmp_path: Path):
    paths = {}
    for part, offset in (("train", 0), ("valid", 100), ("valid2", 200)):
        paths[part] = tmp_path / part
        paths[part].mkdir()
        day_rows(offset).to_parquet(paths[part] / "part-0.parquet")
    data = TrainingSet((paths["train"],), (paths["valid"], paths["valid2"]), negatives=0)
    valid = data.read("valid", ["label", "f"])
    assert not valid["is_negative"].any() and len(valid) == 8  # 4 judged rows a date
    assert valid["request_id"].tolist() == [0, 0, 0, 1, 2, 2, 2, 3]  # a group per user, date
    assert data.read("train")["is_negative"].sum() == 0
    assert len(data.read("train")) == 6
    every = TrainingSet((paths["train"],))
    assert every.read("train")["is_negative"].sum() == 3


def test_keep_negatives_keeps_the_first_n_of_each_request():
    rows = pd.DataFrame({"request_id": [1] * 5 + [2] * 3,
                         "is_negative": [True, False, True, True, False, True, True, False],
                         "item_id": range(8)})
    assert keep_negatives(rows, 1)["item_id"].tolist() == [0, 1, 4, 5, 7]
    assert keep_negatives(rows, 5) is rows
    assert keep_negatives(rows, 0)["is_negative"].sum() == 0


def test_keep_negatives_keeps_one_source_and_old_rows_hold_popularity_only():
    rows = pd.DataFrame({"request_id": [1] * 5,
                         "is_negative": [True, False, True, True, True],
                         "negative_source": np.array([2, 0, 1, 2, 1], np.int8),
                         "item_id": range(5)})
    assert keep_negatives(rows, 1, "popularity")["item_id"].tolist() == [1, 2]
    assert keep_negatives(rows, 5, "uniform")["item_id"].tolist() == [0, 1, 3]
    old = rows.drop(columns="negative_source")
    assert keep_negatives(old, 5, "popularity") is old
    with pytest.raises(ValueError, match="popularity negatives only.*write them again"):
        keep_negatives(old, 1, "uniform")
