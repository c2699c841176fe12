"""Ranking metrics over groups: NDCG@k (graded gains 2^label - 1), MAP@k and recall@k, per
group and averaged, and the paired bootstrap the promotion gate decides with.

Relevant means label >= 1. Groups without any relevant row are left out of every metric (their
ideal DCG is zero). Ties in score are broken by a seeded random order, never by row order, which
would leak the logged position into the metric; the order depends only on the seed and the
rows, so every contender scored on the same rows gets the same tie-break and the same groups.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Bootstrap index draws per chunk: bounds memory (~32 MiB of indices) whatever the group count.
_CHUNK = 1 << 22


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


def per_group_metrics(
    groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, k_ndcg: int = 10,
    k_map: int = 10, k_recall: int = 20, seed: int = 0,
) -> pd.DataFrame:
    """NDCG@k, MAP@k and recall@k of every group with at least one relevant row.

    Returns a frame indexed by group id (ascending) with columns ``ndcg@k``, ``map@k`` and
    ``recall@k``. Which groups appear depends on ``groups`` and ``labels`` only, so contenders
    scored on the same rows get the same index and can be compared group by group.
    """
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
    agg = df.groupby("g", sort=True).agg(
        dcg=("dcg", "sum"), idcg=("idcg", "sum"), n_rel=("rel", "sum"),
        hits=("hit_recall", "sum"), ap=("ap_term", "sum"))
    agg = agg[agg["n_rel"] > 0]
    out = pd.DataFrame({
        f"ndcg@{k_ndcg}": agg["dcg"] / agg["idcg"],
        f"map@{k_map}": agg["ap"] / np.minimum(agg["n_rel"], k_map),
        f"recall@{k_recall}": agg["hits"] / agg["n_rel"],
    }, index=agg.index, dtype=float)
    out.index.name = "group"
    return out


def ranking_metrics(
    groups: np.ndarray, labels: np.ndarray, scores: np.ndarray, k_ndcg: int = 10,
    k_map: int = 10, k_recall: int = 20, seed: int = 0,
) -> dict[str, float]:
    """Mean NDCG@k, MAP@k and recall@k over groups with at least one relevant row."""
    return summarize(per_group_metrics(groups, labels, scores, k_ndcg, k_map, k_recall, seed))


def summarize(per_group: pd.DataFrame) -> dict[str, float]:
    """The means of a :func:`per_group_metrics` frame, plus ``groups`` (NaN means when empty)."""
    means = {m: float(per_group[m].mean()) if len(per_group) else float("nan")
             for m in per_group.columns}
    return {**means, "groups": int(len(per_group))}


def bootstrap_means(values: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Means of ``n_resamples`` bootstrap resamples of the rows (groups) of ``values``.

    Rows are drawn with replacement, the same rows for every column, so the columns of a 2-D
    ``values`` (one per contender) stay paired. Vectorized in chunks of bounded memory and
    deterministic for a seed. Returns shape ``(n_resamples,)`` for 1-D ``values``, else
    ``(n_resamples, k)``.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim not in (1, 2) or len(values) == 0:
        raise ValueError(f"bootstrap needs a non-empty 1-D or 2-D array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("bootstrap values must be finite (NaN or inf found)")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    n = len(values)
    width = 1 if values.ndim == 1 else values.shape[1]
    rng = np.random.default_rng(seed)
    out = np.empty((n_resamples, *values.shape[1:]))
    step = max(1, _CHUNK // (n * width))
    for start in range(0, n_resamples, step):
        b = min(step, n_resamples - start)
        idx = rng.integers(0, n, size=(b, n))
        out[start:start + b] = values[idx].mean(axis=1)
    return out


def percentile_interval(means: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The two-sided percentile interval of bootstrap means (along the first axis)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail], axis=0)
    return low, high


def paired_bootstrap(diff: np.ndarray, n_resamples: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-group differences and its percentile bootstrap interval.

    Args:
        diff: one difference per group (contender A minus contender B on the same group).
        n_resamples: bootstrap resamples; each draws ``len(diff)`` groups with replacement.
        confidence: coverage of the two-sided interval, e.g. 0.95.
        seed: seed of the resampling (the same seed and length draw the same groups).

    Returns:
        ``(mean, low, high)``: the observed mean difference and the interval's bounds.
    """
    diff = np.asarray(diff, dtype=float)
    if diff.ndim != 1:
        raise ValueError(f"diff must be 1-D (one value per group), got shape {diff.shape}")
    low, high = percentile_interval(bootstrap_means(diff, n_resamples, seed), confidence)
    return float(diff.mean()), float(low), float(high)


def beyond_accuracy(groups: np.ndarray, items: np.ndarray, categories: np.ndarray,
                    exposure: np.ndarray, scores: np.ndarray, k: int = 10,
                    seed: int = 0) -> dict[str, float]:
    """Catalog coverage, novelty and intra-list diversity of every group's top ``k`` (pure).

    * ``coverage@k``: distinct items in the top ``k`` of all groups over the distinct items the
      groups hold (what a ranker could have put there);
    * ``novelty@k``: mean self-information ``-log2 p(item)`` of the items in the top ``k``, ``p``
      the item's share of ``exposure`` (impressions before the day, plus one) among the groups'
      items: higher for less-seen items;
    * ``diversity@k``: over groups with two items or more in their top ``k``, the mean share of
      item pairs of different categories.
    """
    groups, items = np.asarray(groups), np.asarray(items)
    categories, exposure = np.asarray(categories), np.asarray(exposure, dtype=float)
    top = rank_within_groups(groups, scores, seed) <= k
    if not len(items):
        return {f"{m}@{k}": float("nan") for m in ("coverage", "novelty", "diversity")}
    per_item = pd.Series(exposure + 1.0).groupby(items).max()  # one exposure per item
    info = -np.log2(per_item / per_item.sum())
    # an unknown category (missing) counts as one category of its own
    frame = pd.DataFrame({"g": groups[top], "c": pd.Series(categories[top]).fillna(-1).to_numpy()})
    sizes = frame.groupby("g").size()
    same = frame.groupby(["g", "c"]).size().pow(2).groupby(level="g").sum()
    many = sizes[sizes > 1]
    pairs = many * (many - 1)
    diverse = 1.0 - (same.reindex(many.index) - many) / pairs  # ordered pairs, self-pairs out
    return {f"coverage@{k}": float(len(np.unique(items[top])) / len(per_item)),
            f"novelty@{k}": float(info.reindex(items[top]).mean()),
            f"diversity@{k}": float(diverse.mean()) if len(diverse) else float("nan")}
