"""Top-N evaluation with one held-out item per user (leave-one-out): NDCG@k and Recall@k.

Every contender is judged the same way: a full ranking over all items (a scores matrix, one row
per user and one column per item) with the user's earlier items taken out, or a per-user top-k
list that already leaves them out. With a single relevant item the ideal DCG is 1, so NDCG@k is
``1 / log2(rank + 1)`` when the held-out item ranks within the top ``k``, else 0, and Recall@k is
the hit. Ties in score are scored by their expectation under a random order (the mean of the
metric over every position the tied target could take): no arbitrary tie-break (popularity has
many ties) and no seed. A held-out item that cannot be ranked (masked, unknown, ``-inf``) is a
miss.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def mask_seen(scores: np.ndarray, seen: Sequence[np.ndarray | Sequence[int]]) -> np.ndarray:
    """A copy of ``scores`` ``[users, items]`` with each user's ``seen`` columns set to ``-inf``."""
    out = np.array(scores, dtype=np.float64, copy=True)
    if len(seen) != len(out):
        raise ValueError(f"seen has {len(seen)} rows, scores {len(out)}")
    rows = np.repeat(np.arange(len(out)), [len(s) for s in seen])
    cols = np.concatenate([np.asarray(s, dtype=np.int64) for s in seen] or [np.empty(0, np.int64)])
    out[rows, cols.astype(np.int64)] = -np.inf
    return out


def _from_positions(above: np.ndarray, ties: np.ndarray, hit: np.ndarray, k: int) -> pd.DataFrame:
    """Expected NDCG@k / Recall@k when the target takes one of ranks ``above + 1 ..
    above + ties + 1`` with equal chance (``hit`` False: a miss)."""
    ranks = np.arange(1, k + 1)[None, :]                                 # [1, k]
    inside = (ranks > above[:, None]) & (ranks <= above[:, None] + ties[:, None] + 1)
    share = 1.0 / (ties + 1.0)
    ndcg = (inside / np.log2(ranks + 1)).sum(1) * share
    recall = inside.sum(1) * share
    return pd.DataFrame({f"ndcg@{k}": np.where(hit, ndcg, 0.0),
                         f"recall@{k}": np.where(hit, recall, 0.0)})


def score_metrics(scores: np.ndarray, targets: np.ndarray,
                  seen: Sequence[np.ndarray | Sequence[int]] | None = None,
                  k: int = 10) -> pd.DataFrame:
    """Per-user NDCG@k and Recall@k of a full ranking.

    Args:
        scores: ``[users, items]``, higher is better; ``-inf`` means "never recommended".
        targets: the held-out item's column per user (negative: not rankable, a miss).
        seen: each user's earlier items (columns) to take out of the ranking.
        k: the cut-off.

    Returns:
        One row per user (in order) with columns ``ndcg@k`` and ``recall@k``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if scores.ndim != 2 or len(targets) != len(scores):
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} do not match")
    if np.isnan(scores).any():
        raise ValueError("scores hold NaN")
    if seen is not None:
        scores = mask_seen(scores, seen)
    known = (targets >= 0) & (targets < scores.shape[1])
    t = scores[np.arange(len(scores)), np.where(known, targets, 0)]
    hit = known & np.isfinite(t)
    above = (scores > t[:, None]).sum(1)
    ties = (scores == t[:, None]).sum(1) - 1                             # other items tied
    return _from_positions(above, np.maximum(ties, 0), hit, k)


def list_metrics(lists: Sequence[np.ndarray | Sequence[int]], targets: np.ndarray,
                 k: int = 10) -> pd.DataFrame:
    """Per-user NDCG@k and Recall@k of ranked top lists (best first, earlier items already left
    out, as a refresh publishes them); a target beyond position ``k`` or absent is a miss."""
    targets = np.asarray(targets)
    if len(lists) != len(targets):
        raise ValueError(f"{len(lists)} lists for {len(targets)} targets")
    above = np.full(len(targets), k, dtype=np.int64)
    for u, (items, target) in enumerate(zip(lists, targets, strict=True)):
        pos = np.flatnonzero(np.asarray(items)[:k] == target)
        if len(pos):
            above[u] = pos[0]
    return _from_positions(above, np.zeros(len(targets)), above < k, k)
