"""The user_pool feature view (feature_store/pool_view): point-in-time outcome counts per
(user, pool), and the posteriors built from them (models/blending)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from feature_store import io
from feature_store.pool_view import build_pool_view, day_counts, read_pool_view
from models import blending

D = dt.date(2026, 1, 10)


def _day(raw, date, users, pools, click=(), cart=(), buy=(), with_pool=True):
    base = date.toordinal() * 1000
    imp = pd.DataFrame({"event_id": base + np.arange(len(users)), "user_id": users,
                        "item_id": np.arange(len(users))})
    if with_pool:
        imp["pool"] = pools
    clicks = pd.DataFrame({"event_id": base + 500 + np.arange(len(click)),
                           "impression_id": [base + i for i in click]})
    cid = dict(zip(click, clicks["event_id"], strict=True))
    io.write_partition(imp, raw, "impressions", date)
    io.write_partition(clicks, raw, "clicks", date)
    io.write_partition(pd.DataFrame({"click_id": [cid[i] for i in cart]}, dtype="int64"), raw,
                       "add_to_cart", date)
    io.write_partition(pd.DataFrame({"click_id": [cid[i] for i in buy]}, dtype="int64"), raw,
                       "purchases", date)


def test_day_counts_by_deepest_action():
    imp = pd.DataFrame({"event_id": [1, 2, 3, 4, 5], "user_id": [7, 7, 7, 8, 8],
                        "pool": ["popular", "popular", "co_clicks", "popular", None]})
    clicks = pd.DataFrame({"event_id": [11, 12, 13], "impression_id": [1, 2, 5]})
    got = day_counts(imp, clicks, pd.DataFrame({"click_id": [11, 12]}),
                     pd.DataFrame({"click_id": [12]}))
    rows = {(r.user_id, r.pool): (r.impressions, r.clicked, r.carted, r.bought)
            for r in got.itertuples()}
    # impression 1: carted; 2: bought (its cart too); 3, 4: ignored; 5: no pool, left out
    assert rows == {(7, "popular"): (2, 0, 1, 1), (7, "co_clicks"): (1, 0, 0, 0),
                    (8, "popular"): (1, 0, 0, 0)}


def test_the_view_sums_its_window_point_in_time(tmp_path):
    raw, off = tmp_path / "raw", tmp_path / "off"
    _day(raw, D - dt.timedelta(days=40), [7], ["popular"], click=[0])  # outside the 28 days
    _day(raw, D - dt.timedelta(days=1), [7, 7], ["popular", "category"], click=[1], buy=[1],
         cart=[1])
    _day(raw, D, [7, 9], ["popular", "popular"], click=[0])
    _day(raw, D + dt.timedelta(days=1), [7], ["popular"], click=[0])  # after: never read
    for d in (D - dt.timedelta(days=40), D - dt.timedelta(days=1), D):
        build_pool_view(raw, off, d)
    view = read_pool_view(off, D)
    rows = {(r.user_id, r.pool): (r.impressions, r.clicked, r.bought) for r in view.itertuples()}
    assert rows == {(7, "popular"): (2, 1, 0), (7, "category"): (1, 0, 1), (9, "popular"): (1, 0, 0)}
    assert read_pool_view(off, D + dt.timedelta(days=5)) is None
    # a rebuild is an overwrite
    build_pool_view(raw, off, D)
    pd.testing.assert_frame_equal(read_pool_view(off, D), view)
    # days whose impressions carry no pool add nothing
    _day(raw, D + dt.timedelta(days=2), [7], [None], click=[0], with_pool=False)
    assert len(read_pool_view(off, D)) == 3
    build_pool_view(raw, off, D + dt.timedelta(days=2))
    later = read_pool_view(off, D + dt.timedelta(days=2))
    # D+1 was never built: its raw partitions count all the same (order of builds is moot)
    assert later.set_index(["user_id", "pool"]).loc[(7, "popular"), "impressions"] == 3


def test_the_view_does_not_depend_on_the_order_of_builds(tmp_path):
    raw = tmp_path / "raw"
    days = [D + dt.timedelta(days=i) for i in range(4)]
    for i, d in enumerate(days):
        _day(raw, d, [7, 8, 7], ["popular", "category", "co_clicks"], click=[i % 3], buy=[i % 3],
             cart=[i % 3])
    for name, order in (("forward", days), ("shuffled", [days[2], days[0], days[3], days[1]])):
        for d in order:
            build_pool_view(raw, tmp_path / name, d)
    for d in days:
        pd.testing.assert_frame_equal(read_pool_view(tmp_path / "forward", d),
                                      read_pool_view(tmp_path / "shuffled", d))
    # a date that is not usable adds nothing
    build_pool_view(raw, tmp_path / "forward", days[3], usable=lambda d: d != days[1])
    assert read_pool_view(tmp_path / "forward", days[3])["impressions"].sum() == 9


def test_posteriors_from_the_view_match_those_from_impressions():
    view = pd.DataFrame({"user_id": [7, 7], "pool": ["popular", "category"],
                         "impressions": [4, 2], "clicked": [1, 0], "carted": [1, 0],
                         "bought": [0, 1]})
    outcomes = pd.DataFrame({"user_id": [7] * 6,
                             "pool": ["popular"] * 4 + ["category"] * 2,
                             "reward": [0.2, 0.5, 0.0, 0.0, 1.0, 0.0]})
    pools = ["popular", "category"]
    a = blending.posteriors_from_totals(blending.view_totals(view), pools, 10.0)
    b = blending.pool_posteriors(outcomes, pools, 10.0)
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])
    m = 1.7 / 6  # the rate of both pools together
    assert a[0].set_index("pool").loc["popular", "alpha"] == pytest.approx(
        10 * (0.7 + 2 * m) / 6 + 0.7)
