"""Blending pools per user: posteriors, Thompson draws, slots, interleaving (models/blending)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from models import blending

POOLS = ["popular", "category", "co_clicks"]
DAY = dt.date(2026, 1, 20)


def _outcomes() -> pd.DataFrame:
    """3 users: user 1 bought twice from co_clicks; user 2 ignored 4 popular items and clicked
    one category item; user 3 added one popular item to the cart."""
    rows = [(1, "co_clicks", 1.0), (1, "co_clicks", 1.0), (1, "popular", 0.0),
            (2, "popular", 0.0), (2, "popular", 0.0), (2, "popular", 0.0), (2, "popular", 0.0),
            (2, "category", 0.2), (3, "popular", 0.5)]
    return pd.DataFrame(rows, columns=["user_id", "pool", "reward"])


def test_posteriors_match_the_hand_computed_beta():
    post, priors = blending.pool_posteriors(_outcomes(), POOLS, strength=10.0)
    # priors: each pool's rate, with 2 pseudo-impressions at the rate of all pools together
    # (2.7 of reward in 9 impressions), times 10 pseudo-impressions
    m = 2.7 / 9
    pop_mean = (0.0 + 0.5 + 2 * m) / (6 + 2)  # 6 popular impressions, 0.5 of reward
    cat_mean = (0.2 + 2 * m) / (1 + 2)
    co_mean = (2.0 + 2 * m) / (2 + 2)
    assert priors.loc["popular", "alpha0"] == pytest.approx(10 * pop_mean)
    assert priors.loc["category", "beta0"] == pytest.approx(10 * (1 - cat_mean))
    assert priors.loc["co_clicks", "alpha0"] == pytest.approx(10 * co_mean)
    got = post.set_index(["user_id", "pool"])
    assert got.loc[(1, "co_clicks"), "alpha"] == pytest.approx(10 * co_mean + 2)
    assert got.loc[(1, "co_clicks"), "beta"] == pytest.approx(10 * (1 - co_mean) + 0)
    assert got.loc[(2, "popular"), "alpha"] == pytest.approx(10 * pop_mean)
    assert got.loc[(2, "popular"), "beta"] == pytest.approx(10 * (1 - pop_mean) + 4)
    assert got.loc[(2, "category"), "alpha"] == pytest.approx(10 * cat_mean + 0.2)
    assert got.loc[(2, "category"), "beta"] == pytest.approx(10 * (1 - cat_mean) + 0.8)
    assert got.loc[(3, "popular"), "alpha"] == pytest.approx(10 * pop_mean + 0.5)
    assert len(post) == 5  # only pairs with impressions; the rest read the prior
    # the pools' order within each user
    assert list(post.loc[post["user_id"] == 1, "pool"]) == ["popular", "co_clicks"]


def test_rewards_from_graded_labels():
    r = blending.impression_rewards(np.array([0, 1, 2, 3, 1]))
    assert r.tolist() == [0.0, 0.2, 0.5, 1.0, 0.2]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        blending.impression_rewards(np.array([1]), {"click": 2.0, "add_to_cart": 0.5,
                                                    "purchase": 1.0})


def test_seeded_uniforms_do_not_depend_on_chunking_and_follow_the_beta():
    users = np.arange(5000)
    whole = blending.seeded_uniforms(3, DAY, users, 3)
    parts = np.vstack([blending.seeded_uniforms(3, DAY, users[a:a + 700], 3)
                       for a in range(0, 5000, 700)])
    assert np.array_equal(whole, parts)
    assert not np.array_equal(whole, blending.seeded_uniforms(3, DAY + dt.timedelta(1), users, 3))
    assert not np.array_equal(whole, blending.seeded_uniforms(4, DAY, users, 3))
    assert stats.kstest(whole.ravel(), "uniform").pvalue > 1e-3
    draws = blending.thompson_draws(np.full((5000, 1), 2.0), np.full((5000, 1), 5.0), 3, DAY,
                                    users)
    assert stats.kstest(draws.ravel(), stats.beta(2, 5).cdf).pvalue > 1e-3


def test_slot_counts_sum_to_k_respect_floors_and_availability():
    w = np.array([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05], [0.2, 0.2, 0.6], [1.0, 0.0, 0.0]])
    avail = np.array([[50, 50, 50], [50, 50, 50], [50, 50, 2], [3, 50, 0]])
    c = blending.slot_counts(w, avail, k=10, min_slots=1)
    assert c.sum(axis=1).tolist() == [10, 10, 10, 10]
    assert (c <= avail).all()
    assert c[0].tolist() == [5, 3, 2]
    # floors of one slot, the other 7 by weight: 6.3, 0.35, 0.35, the spare one to the largest
    # remainder (the first of the two 0.35s)
    assert c[1].tolist() == [7, 2, 1]
    assert c[2, 2] == 2 and c[2].sum() == 10  # a pool that runs out hands its slots on
    assert c[3].tolist() == [3, 7, 0]  # no candidates, no slot; weight 0 still takes leftovers
    # more pools than slots: the floors go to the heaviest pools
    c = blending.slot_counts(np.array([[0.1, 0.5, 0.4]]), np.full((1, 3), 9), k=2)
    assert c.tolist() == [[0, 1, 1]]
    # too few candidates in all: every candidate, fewer than k
    c = blending.slot_counts(np.array([[0.5, 0.5]]), np.array([[1, 2]]), k=10)
    assert c.tolist() == [[1, 2]]


def _cands(users: list[int], per_pool: int = 20) -> pd.DataFrame:
    rows = []
    for u in users:
        for p, pool in enumerate(POOLS):
            rows += [(u, 1000 * p + j, pool, j) for j in range(per_pool)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "pool", "pool_rank"])


def test_strong_evidence_wins_most_slots_and_a_new_user_gets_every_pool():
    rows = [(1, "co_clicks", 1.0)] * 30 + [(1, "popular", 0.0)] * 30 + [(1, "category", 0.0)] * 30
    rows += [(u, p, 0.1) for u in range(10, 40) for p in POOLS]  # a global rate for every pool
    post, priors = blending.pool_posteriors(
        pd.DataFrame(rows, columns=["user_id", "pool", "reward"]), POOLS, strength=10.0)
    lists, slots = blending.blend(_cands([1, 999]), POOLS, post, priors, k=10, seed=1, date=DAY)
    s = slots.set_index("user_id")
    assert s.loc[1, "co_clicks"] == 8 and s.loc[1].sum() == 10  # the rest: the floors
    assert (s.loc[999] >= 1).all() and s.loc[999].sum() == 10  # new user: every pool
    new = lists[lists["user_id"] == 999]
    assert set(new["pool"]) == set(POOLS) and new["rank"].tolist() == list(range(10))


def test_interleave_keeps_each_pools_order_and_spreads_the_pools():
    cands = _cands([5])
    counts = np.array([[4, 2, 4]])
    out = blending.interleave(cands, POOLS, counts, np.array([5]))
    assert len(out) == 10 and out["rank"].tolist() == list(range(10))
    for pool, c in zip(POOLS, counts[0], strict=True):
        got = out.loc[out["pool"] == pool, "item_id"].tolist()
        assert len(got) == c and got == sorted(got)  # the pool's first c, in its order
    # no pool bunched at the end: each pool's first item within the first 3 slots
    first = out.groupby("pool")["rank"].min()
    assert first.max() <= 2


def test_an_item_of_several_pools_appears_once_in_its_best_pool():
    cands = pd.DataFrame({"user_id": [1, 1, 1, 1], "item_id": [7, 7, 8, 9],
                          "pool": ["popular", "co_clicks", "popular", "co_clicks"],
                          "pool_rank": [5, 0, 0, 1]})
    out = blending.assign_pools(cands, POOLS)
    assert out.set_index("item_id")["pool"].to_dict() == {7: "co_clicks", 8: "popular",
                                                           9: "co_clicks"}
    assert out.set_index("item_id")["pool_rank"].to_dict() == {7: 0, 8: 0, 9: 1}
    lists, _ = blending.blend(cands, POOLS, *blending.pool_posteriors(
        pd.DataFrame(columns=["user_id", "pool", "reward"]), POOLS), k=10, date=DAY)
    assert sorted(lists["item_id"]) == [7, 8, 9]


def test_a_blend_is_reproducible_per_seed_and_date():
    post, priors = blending.pool_posteriors(_outcomes(), POOLS, strength=2.0)
    users = list(range(200))
    one, s1 = blending.blend(_cands(users), POOLS, post, priors, k=10, seed=4, date=DAY)
    two, s2 = blending.blend(_cands(users), POOLS, post, priors, k=10, seed=4, date=DAY)
    pd.testing.assert_frame_equal(one, two)
    # a different user set in the same call: each user's own draws, unchanged
    part, _ = blending.blend(_cands(users[50:60]), POOLS, post, priors, k=10, seed=4, date=DAY)
    pd.testing.assert_frame_equal(part, one[one["user_id"].between(50, 59)].reset_index(
        drop=True))
    _, s3 = blending.blend(_cands(users), POOLS, post, priors, k=10, seed=4,
                           date=DAY + dt.timedelta(days=1))
    assert not s1.equals(s3)  # another night, other draws


def test_greedy_and_fixed_policies():
    post, priors = blending.pool_posteriors(_outcomes(), POOLS, strength=10.0)
    _, s = blending.blend(_cands([1]), POOLS, post, priors, k=10, policy="greedy", date=DAY)
    assert s.set_index("user_id").loc[1].idxmax() == "co_clicks"
    _, s = blending.blend(_cands([1, 2]), POOLS, post, priors, k=10, policy="fixed",
                          fixed=[0.5, 0.3, 0.2], date=DAY)
    assert s[POOLS].to_numpy().tolist() == [[5, 3, 2], [5, 3, 2]]
    with pytest.raises(ValueError, match="unknown blending policy"):
        blending.blend(_cands([1]), POOLS, post, priors, k=10, policy="ucb", date=DAY)


def test_score_order_sorts_the_chosen_items_by_the_champion():
    cands = _cands([5]).assign(score=lambda f: -f["pool_rank"] - 0.1 * f.index.to_numpy() / 60)
    counts = np.array([[4, 2, 4]])
    out = blending.interleave(cands, POOLS, counts, np.array([5]), order="score")
    even = blending.interleave(cands, POOLS, counts, np.array([5]))
    assert set(out["item_id"]) == set(even["item_id"])  # the same items chosen
    got = cands.set_index("item_id").loc[out["item_id"], "score"].to_numpy()
    assert (np.diff(got) <= 0).all()  # best score first
    with pytest.raises(ValueError, match="unknown blend order"):
        blending.interleave(cands, POOLS, counts, np.array([5]), order="random")


def test_a_pool_never_logged_starts_at_the_others_rate():
    rows = pd.DataFrame({"user_id": [1] * 10, "pool": ["popular"] * 10,
                         "reward": [0.0] * 9 + [1.0]})
    _, priors = blending.pool_posteriors(rows, POOLS, strength=10.0)
    means = priors["alpha0"] / (priors["alpha0"] + priors["beta0"])
    assert means["category"] == pytest.approx(0.1) == means["co_clicks"]  # not 1/2
    assert means["popular"] == pytest.approx((1 + 2 * 0.1) / 12)


def test_packed_sort_keys_sort_as_the_keys_do():
    rng = np.random.default_rng(0)
    for lo, hi in ((0, 50), (0, 2**40), (-5, 5)):
        keys = [rng.integers(lo, hi, 2000) for _ in range(4)]
        want = np.lexsort(keys[::-1])
        got = np.lexsort(blending._sort_keys(*keys))
        assert np.array_equal(np.stack(keys)[:, want], np.stack(keys)[:, got])


def test_a_floor_that_does_not_fit_is_skipped_not_the_rest():
    # floors 2, 2, 1 in k=3 slots: the heaviest pool's 2, then the third pool's 1 still fits
    c = blending.slot_counts(np.array([[0.5, 0.4, 0.3]]), np.array([[10, 10, 1]]), k=3,
                             min_slots=2)
    assert c.tolist() == [[2, 0, 1]]


def test_candidates_of_a_pool_not_blended_are_refused():
    cands = pd.DataFrame({"user_id": [1], "item_id": [2], "pool": ["trending"], "pool_rank": [0]})
    with pytest.raises(ValueError, match="pools not blended"):
        blending.Pooled.of(cands, POOLS, 10)


def test_in_score_order_a_new_users_first_slots_still_show_every_pool():
    # the champion likes popular items best: in score order the other pools sink to the end
    users = [1, 999]
    cands = _cands(users).assign(
        score=lambda f: np.where(f["pool"] == "popular", 10.0, 0.0) - f["pool_rank"])
    rows = [(1, p, 0.1) for p in POOLS for _ in range(10)]  # user 1: 30 impressions logged
    post, priors = blending.pool_posteriors(
        pd.DataFrame(rows, columns=["user_id", "pool", "reward"]), POOLS, strength=20.0)
    assert blending.new_users(np.array(users), post, priors).tolist() == [False, True]
    lists, _ = blending.blend(cands, POOLS, post, priors, k=9, seed=1, date=DAY,
                              order="score")
    first = lists.groupby(["user_id", "pool"], observed=True)["rank"].min().unstack()
    # new: interleaved evenly, every pool's first item in the first half of the list
    assert (first.loc[999] < 9 / 2).all() and first.loc[999].notna().all()
    new = lists[lists["user_id"] == 999]
    assert new["rank"][new["pool"] != "popular"].min() < new["rank"][
        new["pool"] == "popular"].max()  # not the score's order
    # known: the champion's order, every popular item before the other pools'
    old = lists[lists["user_id"] == 1]
    assert old["rank"][old["pool"] != "popular"].min() > old["rank"][
        old["pool"] == "popular"].max()
    got = cands.set_index(["user_id", "item_id"]).loc[
        list(zip(old["user_id"], old["item_id"], strict=True)), "score"].to_numpy()
    assert (np.diff(got) <= 0).all()
    # new_user_order=score: the new user's list follows the score as well
    lists, _ = blending.blend(cands, POOLS, post, priors, k=9, seed=1, date=DAY,
                              order="score", new_user_order="score")
    new = lists[lists["user_id"] == 999]
    assert new["rank"][new["pool"] != "popular"].min() > new["rank"][
        new["pool"] == "popular"].max()
    with pytest.raises(ValueError, match="new users' order"):
        blending.blend(cands, POOLS, post, priors, k=9, date=DAY, new_user_order="random")


def test_even_interleave_opens_with_each_pools_best_the_largest_first():
    out = blending.interleave(_cands([5]), POOLS, np.array([[8, 1, 1]]), np.array([5]))
    assert out["pool"].astype(str).tolist()[:3] == ["popular", "category", "co_clicks"]
    assert len(out) == 10
    with pytest.raises(ValueError, match="even flags"):
        blending.interleave(_cands([5]), POOLS, np.array([[8, 1, 1]]), np.array([5]),
                            order="score", even=np.array([True, False]))
