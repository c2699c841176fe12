"""The synthetic marketplace played with a recommender's lists (SyntheticSource.play)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from pipeline.sources.synthetic import SyntheticSource

DAY = dt.date(2026, 2, 1)


def _lists(src: SyntheticSource, users: np.ndarray, offset: int) -> pd.DataFrame:
    k = 8
    return pd.DataFrame({"user_id": np.repeat(users, k),
                         "item_id": (np.tile(np.arange(k), len(users)) + offset) % src.n_items,
                         "rank": np.tile(np.arange(k), len(users)),
                         "pool": "popular"})


def test_the_same_users_and_dice_whatever_the_lists():
    src = SyntheticSource(n_users=300, n_items=60, n_categories=4, impressions_per_day=3000,
                          slots_per_request=5)
    users = np.arange(0, 300, 2)  # half the users have a list
    fallback = np.array([50, 51, 52, 53, 54, 55])
    a = src.play(DAY, _lists(src, users, 0), fallback)
    b = src.play(DAY, _lists(src, users, 10), fallback)
    assert a["request"].nunique() == 3000 // 5
    assert np.array_equal(a["user_id"], b["user_id"])  # common random numbers
    assert (a["position"].between(1, 5)).all()
    assert a.groupby("request").size().max() == 5
    # users without a list see the fallback's first 5, with no pool
    cold = a[~a["user_id"].isin(users)]
    assert set(cold["item_id"]) == {50, 51, 52, 53, 54} and cold["pool"].isna().all()
    # a user's first shown item is the list's first
    warm = a[a["user_id"].isin(users) & (a["position"] == 1)]
    assert (warm["item_id"] == 0).all() and (warm["pool"] == "popular").all()
    # funnel: a purchase needs a cart needs a click; reproducible for the same seed
    assert not (a["bought"] & ~a["carted"]).any() and not (a["carted"] & ~a["clicked"]).any()
    pd.testing.assert_frame_equal(a, src.play(DAY, _lists(src, users, 0), fallback))
    assert not a["user_id"].equals(src.play(DAY, _lists(src, users, 0), fallback, seed=1)[
        "user_id"])


def test_better_items_sell_more():
    src = SyntheticSource(n_users=400, n_items=80, n_categories=4, impressions_per_day=8000,
                          slots_per_request=4)
    users = np.arange(400)
    w = src.world
    # every user's 4 best and 4 worst items by the hidden utility of the day
    from pipeline.sources.synthetic import utility

    intent = src.intents(DAY)
    u = np.repeat(users, 80)
    i = np.tile(np.arange(80), 400)
    util = utility(w, u, i, intent[u]).reshape(400, 80)
    best = np.argsort(-util, axis=1)[:, :4]
    worst = np.argsort(util, axis=1)[:, :4]

    def lists(items: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"user_id": np.repeat(users, 4), "item_id": items.ravel(),
                             "rank": np.tile(np.arange(4), 400)})

    good = src.play(DAY, lists(best), np.arange(4))
    bad = src.play(DAY, lists(worst), np.arange(4))
    assert good["clicked"].sum() > 3 * bad["clicked"].sum()
    assert good["bought"].sum() > bad["bought"].sum()
