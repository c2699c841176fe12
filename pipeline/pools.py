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
  encoder's next-item score: the user's sequence state against every item's embedding, over
  the whole catalog: exact up to ``RANKLINE_EXACT_RETRIEVAL_UP_TO`` items, an inverted-file index
  above, :mod:`models.retrieval`), once an encoder exists (else none).

:data:`POOLS` maps names to pools; ``RANKLINE_POOLS`` picks which run and how many candidates
each gives. The refresh (:mod:`pipeline.hulk`) scores every pool's candidates with the champion,
then either keeps the best ``k`` by score (``merged``) or blends the pools per user
(:mod:`models.blending`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models.retrieval import ItemIndex, item_index

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


@dataclass
class EncoderSpace:
    """The encoder's users and items as the ``embedding`` pool searches them: each user's state
    (``user_ids`` sorted, ``states`` their rows) and an :class:`~models.retrieval.ItemIndex`
    over the embeddings of the items on sale (``item_ids``, in the index's row order). Built
    once per refresh; every chunk of users searches the same index."""

    user_ids: np.ndarray
    states: np.ndarray
    item_ids: np.ndarray
    index: ItemIndex

    @classmethod
    def of(cls, frames: Mapping[str, pd.DataFrame], on_sale: np.ndarray,
           exact_up_to: int = 100_000, threads: int | None = None) -> EncoderSpace:
        """From the encoder views' ``user`` and ``item`` frames (:mod:`feature_store.embeddings`),
        keeping the items in ``on_sale``; exact search up to ``exact_up_to`` items, an inverted file above."""
        from feature_store.embeddings import vector_columns

        users = frames["user"].sort_values("user_id")
        items = frames["item"][frames["item"]["item_id"].isin(on_sale)]
        cols = vector_columns(users)
        return cls(user_ids=users["user_id"].to_numpy(np.int64),
                   states=users[cols].to_numpy(np.float32),
                   item_ids=items["item_id"].to_numpy(np.int64),
                   index=item_index(items[cols].to_numpy(np.float32), exact_up_to, threads))


def embedding(users: np.ndarray, inputs: Any, n: int) -> pd.DataFrame:
    """The ``n`` items on sale with the highest next-item score for each user with an encoder
    state, none the user consumed, from the encoder space's index (exact or an inverted file)."""
    space: EncoderSpace | None = inputs.encoder
    users = np.asarray(users, dtype=np.int64)
    if space is None or n <= 0 or space.index.size == 0:
        return _none()
    pos = np.clip(np.searchsorted(space.user_ids, users), 0, max(len(space.user_ids) - 1, 0))
    has = (space.user_ids[pos] == users) if len(space.user_ids) else np.zeros(len(users), bool)
    mine_ids, rows = users[has], pos[has]
    if len(mine_ids) == 0:
        return _none()
    mine_consumed, n_used = _consumed_of(mine_ids, inputs.consumed)
    depth = int(min(space.index.size, n + (n_used.max() if len(n_used) else 0)))
    top, _ = space.index.search(space.states[rows], depth)
    found = top >= 0
    pairs = pd.DataFrame({"user_id": np.repeat(mine_ids, found.sum(axis=1)),
                          "item_id": space.item_ids[top[found]]})
    return _ranked(unconsumed(pairs, mine_consumed), n)


POOLS: dict[str, Pool] = {"popular": popular, "category": category, "co_clicks": co_clicks_pool,
                          "new_items": new_items, "embedding": embedding}
"""Every pool by name (``RANKLINE_POOLS`` names them)."""


def default_sizes(per_user: int, embedding: bool) -> dict[str, int]:
    """The pools of an empty ``RANKLINE_POOLS``: popular, category, co_clicks and (with the
    encoder) embedding sharing ``per_user`` candidates equally, co_clicks taking the rest."""
    names = ["popular", "category", "co_clicks", *(["embedding"] if embedding else [])]
    sizes = dict.fromkeys(names, per_user // len(names))
    sizes["co_clicks"] += per_user - sum(sizes.values())
    return sizes


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
