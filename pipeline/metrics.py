"""Ranking metrics over groups: NDCG@k (graded gains 2^label - 1), MAP@k and recall@k.

Relevant means label >= 1. Groups without any relevant row are left out of every metric (their
ideal DCG is zero). Ties in score are broken by a seeded random order, never by row order, which
would leak the logged position into the metric.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def rank_within_groups(groups: np.ndarray, scores: np.ndarray, seed: int = 0) -> np.ndarray:
    """1-based rank of each row inside its group by descending score (random tie-break)."""
    tiebreak = np.random.default_rng(seed).random(len(scores))
    order = np.lexsort((tiebreak, -np.asarray(scores, dtype=float), groups))
    g = np.asarray(groups)[order]
    starts = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    counts = np.diff(np.r_[starts, len(g)])
    ranks = np.empty(len(g), dtype=np.int64)
    ranks[order] = np.arange(len(g)) - np.repeat(starts, counts) + 1
    return ranks


def ranking_metrics(
    groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, k_ndcg: int = 10,
    k_map: int = 10, k_recall: int = 20, seed: int = 0,
) -> dict[str, float]:
    """Mean NDCG@k, MAP@k and recall@k over groups with at least one relevant row."""
    groups = np.asarray(groups)
    labels = np.asarray(labels, dtype=float)
    rank = rank_within_groups(groups, scores, seed)
    ideal = rank_within_groups(groups, labels, seed)
    rel = labels >= 1
    gain = 2.0 ** labels - 1
    df = pd.DataFrame({
        "g": groups,
        "dcg": np.where(rank <= k_ndcg, gain / np.log2(rank + 1), 0.0),
        "idcg": np.where(ideal <= k_ndcg, gain / np.log2(ideal + 1), 0.0),
        "rel": rel,
        "hit_recall": rel & (rank <= k_recall),
        "rank": rank,
    })
    # Precision at each relevant row's rank, for average precision.
    df = df.sort_values(["g", "rank"], kind="stable")
    df["cum_rel"] = df.groupby("g", sort=False)["rel"].cumsum()
    df["ap_term"] = np.where(df["rel"] & (df["rank"] <= k_map), df["cum_rel"] / df["rank"], 0.0)
    agg = df.groupby("g", sort=False).agg(
        dcg=("dcg", "sum"), idcg=("idcg", "sum"), n_rel=("rel", "sum"),
        hits=("hit_recall", "sum"), ap=("ap_term", "sum"))
    agg = agg[agg["n_rel"] > 0]
    if agg.empty:
        return {f"ndcg@{k_ndcg}": float("nan"), f"map@{k_map}": float("nan"),
                f"recall@{k_recall}": float("nan"), "groups": 0}
    return {
        f"ndcg@{k_ndcg}": float((agg["dcg"] / agg["idcg"]).mean()),
        f"map@{k_map}": float((agg["ap"] / np.minimum(agg["n_rel"], k_map)).mean()),
        f"recall@{k_recall}": float((agg["hits"] / agg["n_rel"]).mean()),
        "groups": int(len(agg)),
    }
