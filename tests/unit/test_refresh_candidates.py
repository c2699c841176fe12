"""The refresh's candidates: consumed items never come back, users with only older history get
personal candidates, and the scorer's thread count reaches the booster."""

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from feature_store import io
from pipeline.hulk import candidates, co_clicks, consumed_pairs, user_signals

AS_OF = dt.date(2026, 1, 28)
RECENT_FROM = AS_OF - dt.timedelta(days=6)
OLD = AS_OF - dt.timedelta(days=20)

# Items 1-6: category 0 holds 1-3, category 1 holds 4-6; popularity falls with the id.
POP = pd.Series([9.0, 8.0, 7.0, 6.0, 5.0, 4.0], index=[1, 2, 3, 4, 5, 6])
ITEMS = pd.DataFrame({"item_id": [1, 2, 3, 4, 5, 6], "category": [0, 0, 0, 1, 1, 1]})
NO_VIEW = pd.DataFrame({"user_id": pd.Series(dtype="int64"),
                        "category": pd.Series(dtype="int64"),
                        "uc_clicks_7d": pd.Series(dtype="float32")})
NONE = pd.DataFrame({"user_id": pd.Series(dtype="int64"), "item_id": pd.Series(dtype="int64")})

# The events of user 7 in each table (user 8 only makes co-clicks).
EVENTS = {
    "impressions": [(7, 1), (7, 2), (7, 4), (8, 3)],
    "clicks": [(7, 2), (8, 3)],
    "add_to_cart": [(7, 4)],
    "purchases": [(7, 5)],
}


class _Settings:
    """The three fields :func:`consumed_pairs` reads (plus what ``valid_dates`` checks)."""

    def __init__(self, home, tables):
        self.raw_dir = home / "raw"
        self.validation_dir = home / "validation"
        self.consumed_tables = tables


def _write_day(settings, date):
    for table, pairs in EVENTS.items():
        df = pd.DataFrame(pairs, columns=["user_id", "item_id"]).astype("int64")
        io.write_partition(df, settings.raw_dir, table, date)
    marker = settings.validation_dir / f"date={date.isoformat()}" / "_SUCCESS"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


@pytest.mark.parametrize("tables", [
    ("purchases",), ("clicks",), ("add_to_cart",), ("impressions",),
    ("impressions", "clicks", "add_to_cart", "purchases"),
])
def test_consumed_items_are_never_candidates(tmp_path, tables):
    settings = _Settings(tmp_path, tables)
    _write_day(settings, OLD)
    # A later date that failed validation (no marker) is never read, nor one after as_of.
    late = pd.DataFrame({"user_id": [7], "item_id": [6]})
    io.write_partition(late, settings.raw_dir, tables[0], AS_OF - dt.timedelta(days=1))
    io.write_partition(late, settings.raw_dir, tables[0], AS_OF + dt.timedelta(days=1))
    consumed = consumed_pairs(settings, AS_OF, np.array([7]))
    want = {(7, i) for t in tables for u, i in EVENTS[t] if u == 7}
    assert set(map(tuple, consumed[["user_id", "item_id"]].to_numpy().tolist())) == want

    clicks = pd.DataFrame({"user_id": [7, 8, 8], "item_id": [2, 2, 3], "date": [OLD] * 3})
    affinity, user_clicks = user_signals(NO_VIEW, clicks, ITEMS, RECENT_FROM)
    cand = candidates(np.array([7]), POP, ITEMS, affinity, user_clicks, co_clicks(clicks),
                      consumed, per_user=9)
    got = set(cand["item_id"])
    assert got and not got & {i for _, i in want}
    # Every generator reaches past the consumed items: still three popular unconsumed items.
    assert len(got & set(POP.index)) >= min(3, 6 - len(want))


def test_candidates_exclude_consumed_pairs_only_for_their_user():
    consumed = pd.DataFrame({"user_id": [7, 7, 7], "item_id": [1, 2, 3]})
    clicks = pd.DataFrame({"user_id": [9], "item_id": [4], "date": [AS_OF]})
    affinity, user_clicks = user_signals(NO_VIEW, clicks, ITEMS, RECENT_FROM)
    cand = candidates(np.array([7, 9]), POP, ITEMS, affinity, user_clicks, co_clicks(clicks),
                      consumed, per_user=9)
    by_user = cand.groupby("user_id")["item_id"].apply(set).to_dict()
    assert by_user[7] == {4, 5, 6}  # the three most popular the user did not consume
    assert {1, 2, 3} <= by_user[9]


def test_user_active_only_20_days_ago_gets_category_and_neighbour_candidates():
    # User 7 clicked item 4 (category 1) 20 days ago and nothing since; user 8 clicked 4 and 6
    # back then. Recently only user 9 clicked, in category 0 (so item 4 has no recent neighbour).
    clicks = pd.DataFrame({
        "user_id": [7, 8, 8, 9, 9],
        "item_id": [4, 4, 6, 1, 2],
        "date": [OLD, OLD, OLD, AS_OF, AS_OF],
    })
    view = pd.DataFrame({"user_id": [9], "category": [0], "uc_clicks_7d": [2.0]})
    affinity, user_clicks = user_signals(view, clicks, ITEMS, RECENT_FROM)
    assert affinity[affinity["user_id"] == 7][["category", "clicks"]].values.tolist() == [[1, 1]]
    assert affinity[affinity["user_id"] == 9]["clicks"].tolist() == [2.0]  # the view wins
    recent = clicks[clicks["date"] >= RECENT_FROM]
    neighbours = co_clicks(recent)
    stale = np.setdiff1d(user_clicks["item_id"].unique(), neighbours["item_id"].unique())
    assert 4 in stale
    neighbours = pd.concat([neighbours, co_clicks(clicks, of_items=stale)], ignore_index=True)

    # Popularity alone would give items 1 and 2; category 1 adds 4 (its most popular), and the
    # co-clicks of item 4 add 6.
    cand = candidates(np.array([7]), POP, ITEMS, affinity, user_clicks, neighbours,
                      NONE, per_user=6)
    got = set(cand["item_id"])
    assert {1, 2} <= got and 4 in got and 6 in got
    # Without the history window there would be no category and no neighbour candidates.
    empty_aff, empty_clicks = user_signals(NO_VIEW, clicks.iloc[3:], ITEMS, RECENT_FROM)
    assert set(candidates(np.array([7]), POP, ITEMS, empty_aff, empty_clicks,
                          co_clicks(recent), NONE, per_user=6)["item_id"]) == {1, 2}


def test_co_clicks_of_items_limits_the_left_side():
    clicks = pd.DataFrame({"user_id": [1, 1, 1, 2, 2], "item_id": [10, 11, 12, 10, 12]})
    full = co_clicks(clicks)
    part = co_clicks(clicks, of_items=[11])
    assert set(part["item_id"]) == {11}
    pd.testing.assert_frame_equal(part, full[full["item_id"] == 11].reset_index(drop=True))


def test_set_threads_reaches_the_booster():
    import xgboost

    from models.xgb import XGBoostRanker

    rng = np.random.default_rng(0)
    X, y = rng.random((40, 3), dtype=np.float32), rng.integers(0, 2, 40)
    model = xgboost.XGBRanker(n_estimators=2, n_jobs=1).fit(X, y, qid=np.repeat(np.arange(4), 10))

    def nthread():
        return json.loads(model.get_booster().save_config())["learner"]["generic_param"][
            "nthread"]

    ranker = XGBoostRanker(device="cpu")
    ranker.model = model
    assert ranker.set_threads(2) is ranker
    assert nthread() == "2" and ranker.params["n_jobs"] == 2
    ranker.set_threads(None)
    assert nthread() == "0" and ranker.params["n_jobs"] is None
