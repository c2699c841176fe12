"""Candidate pools behind one interface: each proposes items for a chunk of users, in its order.

A pool is a function ``(users, inputs, n) -> frame`` of ``user_id``, ``item_id``, ``pool_rank``
(0 = the pool's first choice for the user): at most ``n`` items per user, never an item the user
has consumed (each pool reaches deeper into its own ranking by as many items as the user
consumed, so a heavy consumer still gets a full share). The pools:

- ``popular``: the most popular items (the popularity baseline's score), for everyone;
- ``category``: the most popular items of the user's top 3 categories by clicks, taken in turn
  (the best of each category, then the second of each, ...);
- ``co_clicks``: items clicked by the users who clicked what this user clicked, strongest first;
- ``new_items``: items first seen in the last ``new_item_days`` days (their behavioural
  features are still near zero, so no other pool reaches them), newest first, then by
  popularity;
- ``embedding``: the items nearest the user in the pre-trained sequence encoder's space (the
  encoder's next-item score: the user's sequence state against every item's embedding), once
  an encoder exists (else none).

:data:`POOLS` maps names to pools; ``RANKLINE_POOLS`` picks which run and how many candidates
each gives. The refresh (:mod:`pipeline.hulk`) scores every pool's candidates with the champion,
then either keeps the best ``k`` by score (``merged``) or blends the pools per user
(:mod:`models.blending`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

PAIR = ["user_id", "item_id"]
Pool = Callable[[np.ndarray, Any, int], pd.DataFrame]


def ragged(lengths: np.ndarray) -> np.ndarray:
    """``0..n-1`` for every ``n`` in ``lengths``, concatenated."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def unconsumed(pairs: pd.DataFrame, consumed: pd.DataFrame) -> pd.DataFrame:
    """``pairs`` without the (user, item) pairs in ``consumed`` (order kept)."""
    if consumed.empty or pairs.empty:
        return pairs
    hit = pairs[PAIR].merge(consumed[PAIR].drop_duplicates().assign(_c=True), on=PAIR,
                            how="left")["_c"].notna().to_numpy()
    return pairs[~hit]


def _consumed_of(users: np.ndarray, consumed: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The consumed pairs of ``users`` and how many each user has (in ``users``' order)."""
    mine = consumed[consumed["user_id"].isin(users)][PAIR]
    return mine, mine.groupby("user_id").size().reindex(users, fill_value=0).to_numpy()


def _none() -> pd.DataFrame:
    """A pool's answer when it has nothing to give."""
    return pd.DataFrame({"user_id": np.empty(0, np.int64), "item_id": np.empty(0, np.int64),
                         "pool_rank": np.empty(0, np.int64)})


def _ranked(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    """The first ``n`` rows of each user (frame in pool order), numbered 0.. as ``pool_rank``."""
    top = frame.groupby("user_id", sort=False).head(n)
    return pd.DataFrame({"user_id": top["user_id"].to_numpy(dtype=np.int64),
                         "item_id": top["item_id"].to_numpy(dtype=np.int64),
                         "pool_rank": top.groupby("user_id", sort=False).cumcount().to_numpy(
                             dtype=np.int64)})


def _from_ranking(users: np.ndarray, ranking: np.ndarray, consumed: pd.DataFrame,
                  n: int) -> pd.DataFrame:
    """The same ranked item list for every user, less each user's consumed items, first ``n``."""
    mine, n_used = _consumed_of(users, consumed)
    depth = np.minimum(len(ranking), n + n_used)
    pairs = pd.DataFrame({"user_id": np.repeat(users, depth),
                          "item_id": ranking[ragged(depth)]})
    return _ranked(unconsumed(pairs, mine), n)


def popular(users: np.ndarray, inputs: Any, n: int) -> pd.DataFrame:
    """The ``n`` most popular items each user has not consumed."""
    return _from_ranking(np.asarray(users), inputs.pop.index.to_numpy(), inputs.consumed, n)


def category(users: np.ndarray, inputs: Any, n: int) -> pd.DataFrame:
    """The most popular items of each user's top 3 categories by clicks (``n // 3`` per
    category, at least one), in turns: each category's best, then each one's second, ..."""
    users = np.asarray(users)
    per_cat = max(1, n // 3)
    mine, n_used = _consumed_of(users, inputs.consumed)
    items, pop, affinity = inputs.items, inputs.pop, inputs.affinity
    ranked = items.assign(p=pop.reindex(items["item_id"]).fillna(0).to_numpy()).sort_values(
        ["category", "p", "item_id"], ascending=[True, False, True])
    cats, first, size = np.unique(ranked["category"].to_numpy(), return_index=True,
                                  return_counts=True)
    uc = affinity[affinity["user_id"].isin(users) & (affinity["clicks"] > 0)
                  & affinity["category"].isin(cats)]
    uc = uc.sort_values(["user_id", "clicks", "category"], ascending=[True, False, True])
    uc = uc.groupby("user_id").head(3)
    turn = uc.groupby("user_id").cumcount().to_numpy()  # the category's place for the user
    at = np.searchsorted(cats, uc["category"].to_numpy())
    extra = pd.Series(n_used, index=users).reindex(uc["user_id"]).to_numpy()
    take = np.minimum(size[at], per_cat + extra)
    within = ragged(take)
    cat = pd.DataFrame({
        "user_id": np.repeat(uc["user_id"].to_numpy(), take),
        "category": np.repeat(uc["category"].to_numpy(), take),
        "turn": np.repeat(turn, take),
        "item_id": ranked["item_id"].to_numpy()[np.repeat(first[at], take) + within]})
    cat = unconsumed(cat, mine)
    cat = cat.assign(within=cat.groupby(["user_id", "category"]).cumcount().to_numpy())
    cat = cat[cat["within"] < per_cat].sort_values(["user_id", "within", "turn"], kind="stable")
    return _ranked(cat, min(n, 3 * per_cat))


def co_clicks_pool(users: np.ndarray, inputs: Any, n: int) -> pd.DataFrame:
    """The ``n`` strongest neighbours of the items each user clicked (co-click counts summed
    over the user's items), none the user consumed."""
    mine, _ = _consumed_of(np.asarray(users), inputs.consumed)
    uc = inputs.user_clicks
    rc = uc[uc["user_id"].isin(users)][PAIR].drop_duplicates()
    co = rc.merge(inputs.neighbours, on="item_id")
    co = co.groupby(["user_id", "item_id_nbr"], as_index=False)["w"].sum()
    co = unconsumed(co.rename(columns={"item_id_nbr": "item_id"}), mine)
    co = co.sort_values(["user_id", "w", "item_id"], ascending=[True, False, True])
    return _ranked(co, n)


def new_items(users: np.ndarray, inputs: Any, n: int) -> pd.DataFrame:
    """Items first seen in the refresh's ``new_item_days`` days, newest first, then the most
    popular; the same list for everyone, less what each user consumed."""
    fresh = inputs.new_items
    if fresh.empty:
        return _none()
    p = inputs.pop.reindex(fresh["item_id"]).fillna(0).to_numpy()
    order = np.lexsort((fresh["item_id"].to_numpy(), -p,
                        -fresh["first_seen"].map(lambda d: d.toordinal()).to_numpy()))
    return _from_ranking(np.asarray(users), fresh["item_id"].to_numpy()[order], inputs.consumed,
                         n)


def embedding(users: np.ndarray, inputs: Any, n: int) -> pd.DataFrame:
    """The ``n`` items of the encoder's vocabulary (on sale: in the items table) with the
    highest next-item score for each user with an encoder state, none the user consumed."""
    users = np.asarray(users, dtype=np.int64)
    vecs = inputs.encoder
    if vecs is None or n <= 0:
        return _none()
    from feature_store.embeddings import vector_columns

    u, i = vecs["user"], vecs["item"]
    i = i[i["item_id"].isin(inputs.items["item_id"])]
    mine = u[u["user_id"].isin(users)]
    mine_ids = mine["user_id"].to_numpy(np.int64)
    cols = vector_columns(u)
    scores = mine[cols].to_numpy(np.float32) @ i[cols].to_numpy(np.float32).T
    item_ids = i["item_id"].to_numpy(np.int64)
    mine_consumed, n_used = _consumed_of(mine_ids, inputs.consumed)
    depth = int(min(len(item_ids), n + (n_used.max() if len(n_used) else 0)))
    if depth == 0 or len(mine_ids) == 0:
        return _none()
    top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    top_scores = np.take_along_axis(scores, top, axis=1)
    top = np.take_along_axis(top, np.argsort(-top_scores, axis=1, kind="stable"), axis=1)
    pairs = pd.DataFrame({"user_id": np.repeat(mine_ids, depth), "item_id": item_ids[top].ravel()})
    return _ranked(unconsumed(pairs, mine_consumed), n)


POOLS: dict[str, Pool] = {"popular": popular, "category": category, "co_clicks": co_clicks_pool,
                          "new_items": new_items, "embedding": embedding}
"""Every pool by name (``RANKLINE_POOLS`` names them)."""


def pooled(users: np.ndarray, inputs: Any, sizes: Mapping[str, int]) -> pd.DataFrame:
    """Every pool's candidates for ``users``: ``user_id``, ``item_id``, ``pool``, ``pool_rank``
    (an item several pools propose appears once per pool)."""
    frames = []
    for name, n in sizes.items():
        if name not in POOLS:
            raise ValueError(f"unknown pool {name!r}; known: {', '.join(POOLS)} (RANKLINE_POOLS)")
        frames.append(POOLS[name](np.asarray(users), inputs, int(n)).assign(pool=name))
    out = pd.concat(frames, ignore_index=True)
    out["pool"] = pd.Categorical(out["pool"], categories=list(sizes))
    return out[["user_id", "item_id", "pool", "pool_rank"]]


def merged(cands: pd.DataFrame) -> pd.DataFrame:
    """The distinct (user, item) pairs of pooled candidates, pool forgotten (the ``merged``
    refresh: one list scored and cut at ``k``)."""
    return cands[PAIR].drop_duplicates().reset_index(drop=True)
