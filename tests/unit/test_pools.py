"""Candidate pools (pipeline/pools) on tiny fixtures, the refresh's readers of first-seen items and
pool outcomes, and the blended lists of the refresh (pipeline/hulk)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from feature_store import io
from pipeline import pools
from pipeline.hulk import Blender, RefreshInputs, first_seen, pool_totals
from pipeline.settings import POOL_NAMES

AS_OF = dt.date(2026, 1, 28)
# items 1-9: category 0 holds 1-3, category 1 holds 4-6, category 2 holds 7-9; popularity falls
# with the id
POP = pd.Series(np.arange(9, 0, -1, dtype=float), index=np.arange(1, 10))
ITEMS = pd.DataFrame({"item_id": np.arange(1, 10), "category": np.repeat([0, 1, 2], 3)})


def _inputs(**kw: object) -> RefreshInputs:
    empty = pd.DataFrame({"user_id": np.empty(0, np.int64), "item_id": np.empty(0, np.int64)})
    base = {"users": np.array([7]), "active": np.array([7]), "pop": POP, "items": ITEMS,
            "affinity": pd.DataFrame({"user_id": [7, 7], "category": [2, 1],
                                      "clicks": [5.0, 2.0]}),
            "user_clicks": pd.DataFrame({"user_id": [7], "item_id": [9]}),
            "neighbours": pd.DataFrame({"item_id": [9, 9, 9], "item_id_nbr": [3, 5, 1],
                                        "w": [4, 2, 1]}),
            "consumed": empty}
    return RefreshInputs(**{**base, **kw})


def test_every_named_pool_exists():
    assert set(pools.POOLS) == set(POOL_NAMES)


def test_popular_skips_what_the_user_consumed():
    consumed = pd.DataFrame({"user_id": [7, 7], "item_id": [1, 3]})
    got = pools.popular(np.array([7, 8]), _inputs(consumed=consumed), 3)
    assert got[got["user_id"] == 7]["item_id"].tolist() == [2, 4, 5]
    assert got[got["user_id"] == 8]["item_id"].tolist() == [1, 2, 3]
    assert got[got["user_id"] == 7]["pool_rank"].tolist() == [0, 1, 2]


def test_category_takes_the_users_categories_in_turns():
    got = pools.category(np.array([7]), _inputs(), 6)  # 2 per category
    # category 2 (5 clicks) first, then category 1: each one's best, then each one's second
    assert got["item_id"].tolist() == [7, 4, 8, 5]


def test_co_clicks_strongest_first_without_consumed():
    consumed = pd.DataFrame({"user_id": [7], "item_id": [3]})
    got = pools.co_clicks_pool(np.array([7]), _inputs(consumed=consumed), 5)
    assert got["item_id"].tolist() == [5, 1]


def test_new_items_newest_first_for_everyone():
    fresh = pd.DataFrame({"item_id": [6, 8, 9], "first_seen": [AS_OF - dt.timedelta(2), AS_OF,
                                                               AS_OF]})
    got = pools.new_items(np.array([7, 8]), _inputs(new_items=fresh), 5)
    # both seen today first (8 the more popular), then 6
    assert got[got["user_id"] == 8]["item_id"].tolist() == [8, 9, 6]
    assert pools.new_items(np.array([7]), _inputs(), 5).empty


def test_pooled_names_every_candidates_pool():
    got = pools.pooled(np.array([7]), _inputs(), {"popular": 2, "co_clicks": 2})
    assert got[["item_id", "pool"]].values.tolist() == [[1, "popular"], [2, "popular"],
                                                        [3, "co_clicks"], [5, "co_clicks"]]
    assert len(pools.merged(pools.pooled(np.array([7]), _inputs(),
                                         {"popular": 3, "co_clicks": 3}))) == 4  # 1, 3 shared
    with pytest.raises(ValueError, match="unknown pool 'trending'"):
        pools.pooled(np.array([7]), _inputs(), {"trending": 2})


class _Settings:
    def __init__(self, home, **kw):
        self.raw_dir = home / "raw"
        self.validation_dir = home / "validation"
        self.new_item_days = kw.get("new_item_days", 3)
        self.history_days = kw.get("history_days", 28)


def _valid(settings, date):
    marker = settings.validation_dir / f"date={date.isoformat()}" / "_SUCCESS"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def test_first_seen_items(tmp_path):
    s = _Settings(tmp_path, new_item_days=3)
    catalog = {AS_OF - dt.timedelta(6): [1, 2], AS_OF - dt.timedelta(4): [1, 2, 3],
               AS_OF - dt.timedelta(1): [1, 2, 3, 4], AS_OF: [1, 2, 4, 5]}
    for d, ids in catalog.items():
        io.write_partition(pd.DataFrame({"item_id": ids}), s.raw_dir, "items", d)
        _valid(s, d)
    # a date that failed validation is not read
    io.write_partition(pd.DataFrame({"item_id": [6]}), s.raw_dir, "items",
                       AS_OF - dt.timedelta(2))
    got = first_seen(s, AS_OF)
    # 3 appeared 4 days ago: outside the 3 days; 1 and 2 are of the first date
    assert dict(zip(got["item_id"], got["first_seen"], strict=True)) == {
        4: AS_OF - dt.timedelta(1), 5: AS_OF}


def test_pool_totals_read_the_user_pool_view(tmp_path):
    from feature_store.pool_view import build_pool_view

    s = _Settings(tmp_path)
    s.offline_dir = tmp_path / "offline"
    imp = pd.DataFrame({"event_id": [1, 2, 3, 4], "user_id": [7, 7, 7, 8],
                        "item_id": [1, 2, 3, 4], "pool": ["popular", "co_clicks", "co_clicks",
                                                          "popular"]})
    io.write_partition(imp, s.raw_dir, "impressions", AS_OF)
    io.write_partition(pd.DataFrame({"event_id": [10, 11], "impression_id": [2, 3]}),
                       s.raw_dir, "clicks", AS_OF)
    io.write_partition(pd.DataFrame({"click_id": [11]}), s.raw_dir, "add_to_cart", AS_OF)
    io.write_partition(pd.DataFrame({"click_id": [11]}), s.raw_dir, "purchases", AS_OF)
    assert pool_totals(s, AS_OF, np.array([7])).empty  # no view yet: the prior
    build_pool_view(s.raw_dir, s.offline_dir, AS_OF)
    got = pool_totals(s, AS_OF, np.array([7])).set_index("pool")
    assert got.loc["co_clicks", "reward"] == pytest.approx(1.2)  # a click, and a purchase
    assert got.loc["co_clicks", "impressions"] == 2 and got.loc["popular", "reward"] == 0
    assert 8 not in set(got["user_id"])


def test_blended_lists_keep_the_champions_order_within_each_pool():
    from models.blending import pool_posteriors

    names = ["popular", "co_clicks"]
    post, priors = pool_posteriors(pd.DataFrame({"user_id": [7] * 20, "pool": ["co_clicks"] * 20,
                                                 "reward": [1.0] * 20}), names, 5.0)
    blender = Blender(names, post, priors, "thompson", k=4, seed=0, date=AS_OF, min_slots=1,
                      fixed=[1.0, 1.0])
    pooled = pools.pooled(np.array([7]), _inputs(), {"popular": 4, "co_clicks": 3})
    scored = pools.merged(pooled).assign(score=lambda f: f["item_id"].map(
        {1: 0.1, 2: 0.9, 3: 0.5, 4: 0.2, 5: 0.8}).astype(float))
    out = blender.lists(pooled, scored)
    assert len(out) == 4 and out["item_id"].is_unique
    assert set(out["pool"]) == set(names)
    co = out[out["pool"] == "co_clicks"]["item_id"].tolist()
    assert co == sorted(co, key=lambda i: -scored.set_index("item_id").loc[i, "score"])
    # item 3 ranks second in both pools: it stays in the earlier pool (popular), so co_clicks has
    # two candidates (5, 1), and the evidence wins it both; popular fills the rest
    assert co == [5, 1] and (out["pool"] == "popular").sum() == 2


def test_a_small_category_pool_gives_at_most_n():
    assert len(pools.category(np.array([7]), _inputs(), 2)) == 2
    assert pools.category(np.array([7]), _inputs(), 0).empty


def test_embedding_pool_ranks_by_the_encoders_score():
    from feature_store.embeddings import embedding_frame

    users = embedding_frame("user_id", np.array([7, 8]), np.array([[1.0, 0.0], [0.0, 1.0]]), "e")
    # item i's embedding (i, 10 - i): user 7 prefers high ids, user 8 low ids
    ids = np.arange(1, 10)
    items = embedding_frame("item_id", ids, np.stack([ids, 10 - ids], axis=1), "e")
    consumed = pd.DataFrame({"user_id": [7], "item_id": [9]})
    frames = {"user": users, "item": items}
    for exact_up_to in (100, 0):  # exact, then the inverted file: the same answer on 9 items
        space = pools.EncoderSpace.of(frames, ITEMS["item_id"].to_numpy(), exact_up_to)
        assert type(space.index).__name__ == ("ExactIndex" if exact_up_to else "IvfIndex")
        inp = _inputs(encoder=space, consumed=consumed)
        got = pools.embedding(np.array([5, 7, 8]), inp, 3)
        assert got[got["user_id"] == 7]["item_id"].tolist() == [8, 7, 6]  # 9 consumed
        assert got[got["user_id"] == 8]["item_id"].tolist() == [1, 2, 3]
        assert 5 not in set(got["user_id"])  # no encoder state: nothing from this pool
    assert pools.embedding(np.array([7]), _inputs(), 3).empty  # no encoder yet
    off_sale = pools.EncoderSpace.of(frames, np.array([1, 2]))
    got = pools.embedding(np.array([7]), _inputs(encoder=off_sale), 3)
    assert got["item_id"].tolist() == [2, 1]  # only the items on sale
