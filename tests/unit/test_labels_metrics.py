import numpy as np
import pandas as pd
import pytest

from models.metrics import per_group_metrics, rank_within_groups, ranking_metrics
from pipeline.labels import label_impressions, sample_negatives


def test_graded_labels_follow_the_funnel():
    imp = pd.DataFrame({"event_id": [1, 2, 3, 4], "request_id": 9, "user_id": 5,
                        "item_id": [10, 11, 12, 13]})
    clicks = pd.DataFrame({"event_id": [21, 22, 23], "impression_id": [1, 2, 3]})
    carts = pd.DataFrame({"click_id": [22, 23]})
    buys = pd.DataFrame({"click_id": [23]})
    out = label_impressions(imp, clicks, carts, buys)
    assert list(out["label"]) == [1, 2, 3, 0]


def test_negatives_are_unseen_items_of_the_match_set():
    shown = pd.DataFrame({"request_id": [1, 1, 2], "user_id": [7, 7, 8], "item_id": [1, 2, 1]})
    pop = pd.Series([5.0, 5.0, 1.0, 0.0], index=[1, 2, 3, 4])
    neg = sample_negatives(shown, pop, 10, np.random.default_rng(0))
    assert not neg.merge(shown, on=["request_id", "item_id"]).shape[0]
    assert set(neg["item_id"]) <= {1, 2, 3}  # item 4 is not in the match set
    assert set(neg["request_id"]) == {1, 2}


def test_perfect_ranking_scores_one_and_reverse_less():
    g = np.array([0, 0, 0, 1, 1])
    y = np.array([3, 1, 0, 0, 2])
    perfect = ranking_metrics(g, y, y.astype(float))
    assert perfect["ndcg@10"] == pytest.approx(1.0)
    assert perfect["map@10"] == pytest.approx(1.0)
    worst = ranking_metrics(g, y, -y.astype(float))
    assert worst["ndcg@10"] < 1.0 and worst["map@10"] < 1.0


def test_ndcg_hand_computed():
    # One group: labels in score order [0, 1]: DCG = 1/log2(3); IDCG = 1.
    m = ranking_metrics(np.array([0, 0]), np.array([0, 1]), np.array([2.0, 1.0]), k_recall=1)
    assert m["ndcg@10"] == pytest.approx(1 / np.log2(3))
    assert m["map@10"] == pytest.approx(0.5)
    assert m["recall@1"] == 0.0


def test_groups_without_relevant_items_are_left_out():
    m = ranking_metrics(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 0]),
                        np.array([1.0, 2.0, 1.0, 0.0]))
    assert m["groups"] == 1 and m["ndcg@10"] == pytest.approx(1.0)


def test_ties_are_not_broken_by_row_order():
    # Rows ordered best-first, constant scores: row order must not make this a perfect ranking.
    g = np.repeat(np.arange(500), 10)
    y = np.tile(np.r_[1, np.zeros(9, dtype=int)], 500)
    m = ranking_metrics(g, y, np.zeros(len(g)))
    assert m["ndcg@10"] < 0.6


def test_rank_within_groups():
    r = rank_within_groups(np.array([0, 0, 1, 1, 1]), np.array([1.0, 2.0, 3.0, 1.0, 2.0]))
    assert list(r) == [2, 1, 1, 3, 2]


def test_per_group_metrics_are_paired_across_contenders():
    # groups 5 and 2 have relevant rows, group 9 has none; rows are not sorted by group
    g = np.array([5, 5, 9, 9, 2, 2, 2])
    y = np.array([0, 2, 0, 0, 1, 0, 0])
    good = per_group_metrics(g, y, y.astype(float))
    bad = per_group_metrics(g, y, -y.astype(float))
    assert list(good.index) == list(bad.index) == [2, 5]  # the same groups, ascending
    assert list(good["ndcg@10"]) == [1.0, 1.0]
    assert bad.loc[5, "ndcg@10"] == pytest.approx(1 / np.log2(3))
    assert bad.loc[2, "ndcg@10"] == pytest.approx(1 / np.log2(4))
    assert bad.loc[2, "map@10"] == pytest.approx(1 / 3)


def test_ranking_metrics_are_the_means_of_the_per_group_ones():
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(40), 8)
    y = rng.integers(0, 4, len(g)) * (rng.random(len(g)) < 0.3)
    s = rng.random(len(g))
    per = per_group_metrics(g, y, s, seed=3)
    m = ranking_metrics(g, y, s, seed=3)
    assert m["groups"] == len(per) == len(np.unique(g[y >= 1]))
    for col in ("ndcg@10", "map@10", "recall@20"):
        assert m[col] == pytest.approx(per[col].mean())


def test_no_relevant_group_gives_nan_means():
    m = ranking_metrics(np.array([0, 0]), np.array([0, 0]), np.array([1.0, 2.0]))
    assert m["groups"] == 0 and np.isnan(m["ndcg@10"])


def test_beyond_accuracy_counts_coverage_novelty_and_diversity_of_each_top_k():
    from models.metrics import beyond_accuracy

    groups = np.array([0, 0, 0, 1, 1, 1])
    items = np.array([1, 2, 3, 1, 2, 4])
    categories = np.array([0, 0, 1, 0, 0, 0])
    exposure = np.array([10, 10, 0, 10, 10, 0])
    popular_first = beyond_accuracy(groups, items, categories, exposure,
                                    np.array([3, 2, 1, 3, 2, 1.0]), k=2)
    # items 1 and 2 in both lists: 2 of 4 items, seen 11/24 of the time each, one category
    assert popular_first["coverage@2"] == 0.5
    assert popular_first["novelty@2"] == pytest.approx(-np.log2(11 / 24))
    assert popular_first["diversity@2"] == 0.0
    rare_first = beyond_accuracy(groups, items, categories, exposure,
                                 np.array([1, 2, 3, 1, 2, 3.0]), k=2)
    # lists {3, 2} and {4, 2}: 3 of 4 items, rarer ones, and one list of two categories
    assert rare_first["coverage@2"] == 0.75
    assert rare_first["novelty@2"] > popular_first["novelty@2"]
    assert rare_first["diversity@2"] == 0.5
    unknown = beyond_accuracy(groups, items, np.array([np.nan, np.nan, 1, np.nan, np.nan, 0]),
                              exposure, np.array([1, 2, 3, 1, 2, 3.0]), k=2)
    assert unknown["diversity@2"] == 1.0  # a missing category is one of its own
