"""Candidate pools blended per user: Beta posteriors per (user, pool), Thompson sampling, slots.

A feed mixes pools (popular, the user's categories, co-clicks, new items, ...), each ranked on its
own; scores from different pools are not comparable, so the mix is decided per user by a
multi-armed bandit with one arm per pool (Pinterest's home feed): each (user, pool) has a
Beta(alpha, beta) posterior over "an item of this pool pays off for this user", built from the
user's logged outcomes on that pool's items and shrunk toward the pool's global rate. At every
refresh each user draws once from each pool's posterior (a batch: no feedback arrives between two
refreshes), the draws become an integer number of slots per pool, and the pools' ranked lists are
interleaved in that ratio, each pool keeping its own order.

The outcome of one impression is a reward ``r`` in [0, 1]: the largest weight of the actions it
led to (purchase > add-to-cart > click > ignored = 0, :data:`REWARDS`). An impression adds ``r``
to alpha and ``1 - r`` to beta (a fractional Bernoulli trial), so a purchase counts as a full
success and a bare click as a fraction of one.

The pool's prior has mean ``(R_p + 2 m) / (N_p + 2)`` (``R_p``: the pool's rewards over all
users, ``N_p``: its impressions, ``m`` the rate of all pools together, 1/2 when nothing was
logged: a pool never shown starts at the others' rate, not above them) and weight ``strength``
pseudo-impressions: ``alpha0 = strength * mean``, ``beta0 = strength * (1 - mean)``. A new user's
posterior is the prior, so every pool is drawn from its global rate; every pool with candidates
gets ``min_slots`` slots while the floors fit in k (:func:`slot_counts`); and by default
(``new_user_order="even"``) a new user's list (fewer logged impressions than the prior's
pseudo-impressions, :func:`new_users`) is interleaved evenly, so its first slots show some of
every pool even where the others' lists are ordered by score.

Draws are reproducible per (seed, date, user, pool position in the pools' list) and independent
of how users are chunked: the uniform behind each draw is a hash of those four numbers, mapped
through the Beta's inverse CDF (reordering the pools reorders the draws).

Pure numpy/pandas/scipy: the refresh (``pipeline``) reads the logs and calls these.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

REWARDS: dict[str, float] = {"click": 0.2, "add_to_cart": 0.5, "purchase": 1.0}
"""Default reward of an impression by the deepest action it led to (ignored: 0)."""
POLICIES = ("thompson", "greedy", "fixed")
"""Blending policies: posterior draws, posterior means, or the configured fixed shares."""


def impression_rewards(labels: np.ndarray, weights: Mapping[str, float] = REWARDS) -> np.ndarray:
    """Reward per impression from its graded label (0 ignored, 1 click, 2 add-to-cart,
    3 purchase: :mod:`pipeline.labels`' grades), weighted by ``weights``."""
    table = np.array([0.0, weights["click"], weights["add_to_cart"], weights["purchase"]])
    if not (np.all(table >= 0) and np.all(table <= 1)):
        raise ValueError(f"reward weights must lie in [0, 1], got {dict(weights)}")
    return table[np.asarray(labels, dtype=np.int64)]


def pool_priors(totals: pd.DataFrame, pools: Sequence[str], strength: float) -> pd.DataFrame:
    """Each pool's global prior, ``alpha0`` and ``beta0`` indexed by pool (see the module).

    ``totals``: per (user, pool) rows of ``pool``, ``reward`` (summed) and ``impressions``
    (:func:`pool_totals`). A pool without impressions gets the rate of all pools together
    (1/2 when nothing was logged).
    """
    if strength <= 0:
        raise ValueError(f"the prior's strength must be > 0 pseudo-impressions, got {strength}")
    g = totals.groupby("pool", observed=True)[["reward", "impressions"]].sum()
    g = g.reindex(list(pools), fill_value=0)
    n_all = float(g["impressions"].sum())
    overall = float(g["reward"].sum()) / n_all if n_all > 0 else 0.5
    mean = (g["reward"].to_numpy(dtype=float) + 2.0 * overall) / (
        g["impressions"].to_numpy(dtype=float) + 2.0)
    mean = np.clip(mean, 1e-3, 1 - 1e-3)  # both Beta parameters > 0
    return pd.DataFrame({"alpha0": strength * mean, "beta0": strength * (1.0 - mean)},
                        index=pd.Index(list(pools), name="pool"))


def pool_totals(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per-impression outcomes (``user_id``, ``pool``, ``reward``) summed per (user, pool):
    ``user_id``, ``pool``, ``reward``, ``impressions``."""
    g = outcomes.groupby(["user_id", "pool"], observed=True)["reward"].agg(["sum", "size"])
    return g.reset_index().rename(columns={"sum": "reward", "size": "impressions"})


def pool_posteriors(outcomes: pd.DataFrame, pools: Sequence[str],
                    strength: float = 20.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Beta posteriors per (user, pool) from logged outcomes, and the pools' priors.

    Args:
        outcomes: one row per impression: ``user_id``, ``pool``, ``reward`` (in [0, 1]).
            Rows of pools outside ``pools`` are ignored.
        pools: the pools blended (their order is the column order everywhere).
        strength: the prior's weight in pseudo-impressions.

    Returns:
        ``(posteriors, priors)``: posteriors has ``user_id``, ``pool``, ``alpha``, ``beta``,
        ``impressions`` for every (user, pool) with at least one impression, sorted by user
        and pool order; priors as :func:`pool_priors` (what a user without rows gets).
    """
    return posteriors_from_totals(pool_totals(outcomes), pools, strength)


def posteriors_from_totals(totals: pd.DataFrame, pools: Sequence[str],
                           strength: float = 20.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`pool_posteriors` from per (user, pool) sums (:func:`pool_totals`, or the
    ``user_pool`` feature view's counts weighted by :func:`view_totals`)."""
    totals = totals[totals["pool"].isin(list(pools))]
    priors = pool_priors(totals, pools, strength)
    prior = priors.reindex(totals["pool"])
    reward = totals["reward"].to_numpy(dtype=float)
    n = totals["impressions"].to_numpy(dtype=float)
    post = pd.DataFrame({
        "user_id": totals["user_id"].to_numpy(dtype=np.int64),
        "pool": totals["pool"].astype(str).to_numpy(),
        "alpha": prior["alpha0"].to_numpy() + reward,
        "beta": prior["beta0"].to_numpy() + (n - reward),
        "impressions": totals["impressions"].to_numpy(dtype=np.int64),
    })
    order = {p: i for i, p in enumerate(pools)}
    post = post.assign(_o=post["pool"].map(order)).sort_values(["user_id", "_o"], kind="stable")
    return post.drop(columns="_o").reset_index(drop=True), priors


def view_totals(view: pd.DataFrame, weights: Mapping[str, float] = REWARDS) -> pd.DataFrame:
    """The ``user_pool`` view's counts (impressions, and those ending in a click only, an
    add-to-cart, a purchase) as :func:`pool_totals`' sums: each impression's reward is the
    weight of its deepest action."""
    reward = (weights["click"] * view["clicked"].to_numpy(dtype=float)
              + weights["add_to_cart"] * view["carted"].to_numpy(dtype=float)
              + weights["purchase"] * view["bought"].to_numpy(dtype=float))
    return pd.DataFrame({"user_id": view["user_id"].to_numpy(dtype=np.int64),
                         "pool": view["pool"].to_numpy(), "reward": reward,
                         "impressions": view["impressions"].to_numpy(dtype=np.int64)})


def _rows_of(users: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``ids``, its row in ``users`` (sorted int64) and whether it is there at all
    (``row`` is a valid index either way, 0 when ``users`` is empty)."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(users) == 0:
        return np.zeros(len(ids), dtype=np.int64), np.zeros(len(ids), dtype=bool)
    row = np.minimum(np.searchsorted(users, ids), len(users) - 1)
    return row, users[row] == ids


def posterior_matrix(users: np.ndarray, pools: Sequence[str], posteriors: pd.DataFrame,
                     priors: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(alpha, beta)`` arrays of shape ``(len(users), len(pools))``: each user's posterior,
    the pool's prior where the user has no row."""
    users = np.asarray(users, dtype=np.int64)
    alpha = np.tile(priors["alpha0"].reindex(list(pools)).to_numpy(dtype=float), (len(users), 1))
    beta = np.tile(priors["beta0"].reindex(list(pools)).to_numpy(dtype=float), (len(users), 1))
    if len(posteriors) and len(users):
        row, hit = _rows_of(users, posteriors["user_id"].to_numpy())
        col = pd.Index(list(pools)).get_indexer(posteriors["pool"])
        hit &= col >= 0
        alpha[row[hit], col[hit]] = posteriors["alpha"].to_numpy(dtype=float)[hit]
        beta[row[hit], col[hit]] = posteriors["beta"].to_numpy(dtype=float)[hit]
    return alpha, beta


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijective scramble of uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def seeded_uniforms(seed: int, date: dt.date, users: np.ndarray, n_pools: int) -> np.ndarray:
    """Uniforms in (0, 1) of shape ``(len(users), n_pools)``, a function of (seed, date, user,
    pool) alone: the same user on the same date draws the same numbers in any chunk."""
    users = np.asarray(users, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        key = _mix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
                     + np.uint64(date.toordinal()))
        h = _mix64(users[:, None] ^ key)
        h = _mix64(h + np.arange(1, n_pools + 1, dtype=np.uint64)[None, :]
                   * np.uint64(0x9E3779B97F4A7C15))
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def thompson_draws(alpha: np.ndarray, beta: np.ndarray, seed: int, date: dt.date,
                   users: np.ndarray) -> np.ndarray:
    """One draw from every Beta(alpha, beta), reproducible per (seed, date, user, pool)."""
    from scipy.special import betaincinv

    u = seeded_uniforms(seed, date, users, alpha.shape[1])
    return betaincinv(alpha, beta, u)


def slot_counts(weights: np.ndarray, available: np.ndarray, k: int,
                min_slots: int = 1) -> np.ndarray:
    """Integer slots per (user, pool), ``k`` per user (fewer if the pools run out).

    Every pool with candidates first gets ``min(min_slots, its candidates)`` slots (when the
    floors would exceed ``k``, the pools with the largest weights get them); the rest is shared
    in proportion to ``weights`` (largest remainder), no pool getting more slots than it has
    candidates (``available``), leftovers going to the pools that still have some.
    """
    w = np.where(available > 0, np.maximum(np.asarray(weights, dtype=float), 0.0), 0.0)
    avail = np.asarray(available, dtype=np.int64)
    n, m = w.shape
    counts = np.zeros((n, m), dtype=np.int64)
    if n == 0 or m == 0 or k <= 0:
        return counts
    # floors, in order of weight, each granted if it still fits in the k slots
    floor = np.minimum(avail, min_slots)
    order = np.argsort(-w - (avail > 0) * 1e9, axis=1, kind="stable")
    used = np.zeros(n, dtype=np.int64)
    rows = np.arange(n)
    for r in range(m):
        p = order[:, r]
        f = floor[rows, p]
        fits = used + f <= k
        counts[rows[fits], p[fits]] += f[fits]
        used += np.where(fits, f, 0)
    left = k - counts.sum(axis=1)
    for _ in range(m + 1):  # each pass fills or exhausts at least one pool per user
        room = avail - counts
        active = (room > 0) & (left[:, None] > 0)
        if not active.any():
            break
        ww = np.where(active, w, 0.0)
        # a user whose open pools all weigh 0 shares equally among them
        zero = ww.sum(axis=1) == 0
        ww[zero] = active[zero].astype(float)
        share = ww / np.maximum(ww.sum(axis=1, keepdims=True), 1e-300) * left[:, None]
        add = np.minimum(np.floor(share).astype(np.int64), room)
        rest = left - add.sum(axis=1)
        # largest remainders get one more, among pools with room to spare
        frac = np.where(active & (room > add), share - np.floor(share), -1.0)
        order = np.argsort(-frac, axis=1, kind="stable")
        pos = np.argsort(order, axis=1)
        bonus = (pos < rest[:, None]) & (frac >= 0)
        add += bonus
        counts += add
        left = k - counts.sum(axis=1)
    return counts


def pool_weights(policy: str, alpha: np.ndarray, beta: np.ndarray, *, seed: int,
                 date: dt.date, users: np.ndarray,
                 fixed: np.ndarray | None = None) -> np.ndarray:
    """Per (user, pool) weights of a blending policy (:data:`POLICIES`): Thompson draws,
    posterior means (greedy) or the ``fixed`` shares for every user."""
    if policy == "thompson":
        return thompson_draws(alpha, beta, seed, date, users)
    if policy == "greedy":
        return alpha / (alpha + beta)
    if policy == "fixed":
        if fixed is None:
            raise ValueError("the fixed policy needs the pools' fixed shares")
        return np.tile(np.asarray(fixed, dtype=float), (alpha.shape[0], 1))
    raise ValueError(f"unknown blending policy {policy!r}; known: {', '.join(POLICIES)}")


def pool_codes(pool: pd.Series, pools: Sequence[str]) -> np.ndarray:
    """Each row's position in ``pools`` (-1 for another pool): a categorical column whose
    categories are ``pools`` gives its codes without a lookup."""
    dtype = getattr(pool, "dtype", None)
    if isinstance(dtype, pd.CategoricalDtype) and list(dtype.categories) == list(pools):
        return pool.cat.codes.to_numpy(dtype=np.int64)
    return pd.Index(list(pools)).get_indexer(pool)


def _rank_in_runs(*keys: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of rows equal on every key (rows sorted by the keys)."""
    n = len(keys[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    start = np.zeros(n, dtype=bool)
    start[0] = True
    for k in keys:
        start[1:] |= k[1:] != k[:-1]
    at = np.maximum.accumulate(np.where(start, np.arange(n), 0))
    return np.arange(n) - at


def _sort_keys(*keys: np.ndarray) -> list[np.ndarray]:
    """``keys`` (most significant first, non-negative int64) packed pairwise into fewer int64
    keys where the values fit (fewer passes of ``np.lexsort``), in ``np.lexsort`` order (least
    significant first)."""
    packed: list[np.ndarray] = []
    for k in keys:
        if packed and len(k):
            hi = packed[-1]
            bits = int(k.max()).bit_length()
            if k.min() >= 0 and hi.min() >= 0 and int(hi.max()).bit_length() + bits < 63:
                packed[-1] = (hi << bits) | k
                continue
        packed.append(k)
    return packed[::-1]


def _take(cands: pd.DataFrame, rows: np.ndarray, pools: Sequence[str],
          codes: np.ndarray) -> pd.DataFrame:
    """``cands``' ``rows``, the pool as a categorical of ``pools``."""
    out = cands.iloc[rows].reset_index(drop=True)
    out["pool"] = pd.Categorical.from_codes(codes[rows], categories=list(pools))
    return out


def rank_by_score(cands: pd.DataFrame, pools: Sequence[str]) -> pd.DataFrame:
    """``cands`` (``user_id``, ``item_id``, ``pool``, ``score``) with ``pool_rank``: 0.. in
    descending score within each (user, pool) (ties: smaller item id first)."""
    u = cands["user_id"].to_numpy(dtype=np.int64)
    o = pool_codes(cands["pool"], pools)
    idx = np.lexsort((cands["item_id"].to_numpy(dtype=np.int64),
                      -cands["score"].to_numpy(dtype=float), *_sort_keys(u, o)))
    out = _take(cands, idx, pools, o)
    out["pool_rank"] = _rank_in_runs(u[idx], o[idx])
    return out


def interleave(cands: pd.DataFrame, pools: Sequence[str], counts: np.ndarray,
               users: np.ndarray, order: str = "even",
               even: np.ndarray | None = None) -> pd.DataFrame:
    """The blended list of every user: each pool's first ``counts[user, pool]`` candidates,
    interleaved evenly in the ratio of the counts (``order="even"``), or sorted by the
    candidates' ``score`` column (``order="score"``: a pool ordered by that score keeps its
    order either way), each pool keeping its own order.

    Args:
        cands: ``user_id``, ``item_id``, ``pool``, ``pool_rank`` (0 = the pool's best for the
            user); an item in several pools of one user must appear once (see
            :func:`assign_pools`).
        pools: the pools, in the column order of ``counts``.
        counts: slots per (user, pool), rows in the order of ``users`` (sorted).
        users: the users of ``counts``' rows, sorted.
        even: optional booleans per user (``users``' order): these users' lists are
            interleaved evenly whatever ``order`` (new users: :meth:`Pooled.blend`).

    Returns:
        ``user_id``, ``item_id``, ``pool``, ``rank`` (0-based slot), sorted by user and rank.
        Evenly: the j-th item (0-based) of a pool with c slots sits at fraction ``j / c`` of
        the list (ties: the pool with more slots first, then the pools' order), so the first
        slots hold each pool's best, the largest pool leading, and the pools then alternate in
        the ratio of their slots.
    """
    users = np.asarray(users, dtype=np.int64)
    if even is not None and len(even) != len(users):
        raise ValueError(f"even flags {len(even)} users, the counts {len(users)}")
    col = pool_codes(cands["pool"], pools)
    if (col < 0).any():
        raise ValueError(f"candidates of pools not blended: {sorted(set(cands['pool'][col < 0]))}")
    row, known = _rows_of(users, cands["user_id"].to_numpy())
    c = np.where(known, counts[row, col] if len(users) else 0, 0)
    j = cands["pool_rank"].to_numpy(dtype=np.int64)
    keep = np.flatnonzero(j < c)
    u = cands["user_id"].to_numpy(dtype=np.int64)[keep]
    key, ck, pk = j[keep] / c[keep], -c[keep], col[keep]
    if order not in ("even", "score"):
        raise ValueError(f"unknown blend order {order!r}: even or score (RANKLINE_BLEND_ORDER)")
    if order == "score":
        # per user: by score, or (the users of ``even``) by the even keys
        flat = (np.zeros(len(keep), dtype=bool) if even is None or not len(users)
                else np.asarray(even, dtype=bool)[row[keep]])
        score = -cands["score"].to_numpy(dtype=float)[keep]
        at = np.lexsort((pk, np.where(flat, ck, key), np.where(flat, key, score), u))
    else:
        at = np.lexsort((pk, ck, key, u))
    rows = keep[at]
    out = pd.DataFrame({"user_id": u[at],
                        "item_id": cands["item_id"].to_numpy(dtype=np.int64)[rows],
                        "pool": pd.Categorical.from_codes(col[rows], categories=list(pools)),
                        "rank": _rank_in_runs(u[at])})
    for extra in ("score",):
        if extra in cands:
            out[extra] = cands[extra].to_numpy()[rows]
    return out


def assign_pools(cands: pd.DataFrame, pools: Sequence[str]) -> pd.DataFrame:
    """One row per (user, item): an item several pools proposed stays in the pool where it
    ranks best (ties: the earlier pool of ``pools``); ``pool_rank`` renumbered 0.. within each
    (user, pool) in the pools' own order (``pool_rank``, then ``item_id``)."""
    o = pool_codes(cands["pool"], pools)
    u = cands["user_id"].to_numpy(dtype=np.int64)
    i = cands["item_id"].to_numpy(dtype=np.int64)
    r = cands["pool_rank"].to_numpy(dtype=np.int64)
    # by user, item, then the best rank, then the pool order
    idx = np.lexsort(_sort_keys(u, i, r, o))
    first = _rank_in_runs(u[idx], i[idx]) == 0
    best = idx[first]
    best = best[np.lexsort(_sort_keys(u[best], o[best], r[best], i[best]))]
    out = _take(cands, best, pools, o)
    out["pool_rank"] = _rank_in_runs(u[best], o[best])
    return out


@dataclass
class Pooled:
    """Pooled candidates ready to blend: one row per (user, item) in its best pool, at most
    ``k`` per (user, pool) (no pool can get more slots), and the count per (user, pool)."""

    cands: pd.DataFrame
    pools: list[str]
    users: np.ndarray  # sorted
    available: np.ndarray  # (users, pools)

    @classmethod
    def of(cls, cands: pd.DataFrame, pools: Sequence[str], k: int) -> Pooled:
        """From ``user_id``, ``item_id``, ``pool``, ``pool_rank`` rows (an item may come from
        several pools: :func:`assign_pools`)."""
        cands = assign_pools(cands, pools)
        cands = cands[cands["pool_rank"].to_numpy() < k].reset_index(drop=True)
        users = np.unique(cands["user_id"].to_numpy(dtype=np.int64))
        col = pool_codes(cands["pool"], pools)
        if (col < 0).any():
            raise ValueError("candidates of pools not blended: "
                             f"{sorted(set(cands['pool'][col < 0].astype(str)))}")
        row = np.searchsorted(users, cands["user_id"].to_numpy(dtype=np.int64))
        available = np.zeros((len(users), len(pools)), dtype=np.int64)
        np.add.at(available, (row, col), 1)
        return cls(cands, list(pools), users, available)

    def blend(self, posteriors: pd.DataFrame, priors: pd.DataFrame, *, k: int,
              policy: str = "thompson", seed: int = 0, date: dt.date, min_slots: int = 1,
              fixed: Sequence[float] | None = None, order: str = "even",
              new_user_order: str = "even") -> tuple[pd.DataFrame, pd.DataFrame]:
        """:func:`blend` of these candidates."""
        if new_user_order not in ("even", "score"):
            raise ValueError(f"unknown new users' order {new_user_order!r}: even or score "
                             "(RANKLINE_BLEND_NEW_USER_ORDER)")
        alpha, beta = posterior_matrix(self.users, self.pools, posteriors, priors)
        weights = pool_weights(policy, alpha, beta, seed=seed, date=date, users=self.users,
                               fixed=None if fixed is None else np.asarray(fixed, dtype=float))
        counts = slot_counts(weights, self.available, k, min_slots)
        even = (new_users(self.users, posteriors, priors)
                if new_user_order == "even" and order == "score" else None)
        lists = interleave(self.cands, self.pools, counts, self.users, order, even)
        slots = pd.DataFrame(counts, columns=self.pools).assign(user_id=self.users)
        return lists, slots[["user_id", *self.pools]]


def new_users(users: np.ndarray, posteriors: pd.DataFrame, priors: pd.DataFrame) -> np.ndarray:
    """Which of ``users`` (sorted) the bandit knows less of than its prior: fewer logged
    impressions on the blended pools, all together, than the prior's pseudo-impressions
    (``alpha0 + beta0``, RANKLINE_BLEND_PRIOR_STRENGTH). A user never logged is new."""
    users = np.asarray(users, dtype=np.int64)
    strength = float((priors["alpha0"] + priors["beta0"]).iloc[0]) if len(priors) else 0.0
    seen = np.zeros(len(users), dtype=np.float64)
    if len(posteriors) and len(users):
        row, hit = _rows_of(users, posteriors["user_id"].to_numpy())
        np.add.at(seen, row[hit], posteriors["impressions"].to_numpy(dtype=float)[hit])
    return seen < strength * (1 - 1e-9)  # alpha0 + beta0 may exceed the strength by an ulp


def blend(cands: pd.DataFrame, pools: Sequence[str], posteriors: pd.DataFrame,
          priors: pd.DataFrame, *, k: int, policy: str = "thompson", seed: int = 0,
          date: dt.date, min_slots: int = 1, fixed: Sequence[float] | None = None,
          order: str = "even", new_user_order: str = "even",
          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Blend every user's pooled candidates into one list of at most ``k`` items.

    Args:
        cands: ``user_id``, ``item_id``, ``pool``, ``pool_rank`` (an item may come from several
            pools; it is kept in one, :func:`assign_pools`).
        posteriors, priors: :func:`pool_posteriors`' output.
        policy, seed, fixed: :func:`pool_weights`; ``date``: the refresh date (draws are
            reproducible per seed, date and user).
        min_slots: :func:`slot_counts`; order: :func:`interleave`'s.
        new_user_order: the order of a new user's list (:func:`new_users`: the prior outweighs
            what was logged of them): ``even`` interleaves the pools whatever ``order``, so
            the first slots show some of every pool (the prior's blend); ``score`` as
            ``order``.

    Returns:
        ``(lists, slots)``: lists as :func:`interleave`; slots has ``user_id`` and one column
        of slot counts per pool.
    """
    return Pooled.of(cands, pools, k).blend(posteriors, priors, k=k, policy=policy, seed=seed,
                                            date=date, min_slots=min_slots, fixed=fixed,
                                            order=order, new_user_order=new_user_order)
