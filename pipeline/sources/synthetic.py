"""The seeded synthetic marketplace: users, items and a day of logged traffic.

A hidden preference model decides what each user likes:

``utility(u, i, D) = 0.6 * clip(log(C * affinity[u, cat(i)]), -3, 3) + 0.7 * <z_u, z_i> / sqrt(d)
+ quality(i) - price_sensitivity(u) * (log price(i) - 3)
+ 1.0 * [cat(i) == cat(intent(u, D))] + 3.5 * [line(i) == intent(u, D)]``

Items come in product *lines* (``LINE_SIZE`` items of one category: "this brand's tents").
Sequential structure: each user has a shopping *intent*, a product line that persists for
``INTENT_DAYS`` days (each user's periods start on their own day) and then moves on: with
probability ``INTENT_FOLLOW`` to the successor of the current line (a fixed line -> line map of
the world whose lines lie in the successor category of a fixed category -> category cycle:
"after this tent, that sleeping bag"), else to a random line of a category drawn from the user's
affinity. Intent chains restart from the affinity every ``INTENT_CHAIN`` periods (so any date's
intents are computed from a few draws, not from the start of time). A user's recent clicks
therefore tell which *items* they want today (the line, not only its category), and the
successor map tells which items they will want next: item-level signal that a model of
interaction *sequences* can learn (items clicked together, items that follow each other) and
a model of 7-day category counts can only partly see.

A logging policy (popular, category-affine and random items, ordered by a noisy score) fills
each request's slots, and each impression records the pool that drew it and the probability
that the policy's slate held it (``pool``, ``propensity``: the optional provenance columns); a
click happens with probability ``examine(position) * sigmoid(utility - 1.5)`` (position bias
``examine(p) = p ** -0.6``). The logging policy's category-affine slots follow the intent part
of the time (most of those from the intent's line: "more like what you looked at", as a
recency-aware production policy would); add-to-cart and purchase follow a click with
probabilities that also grow with utility.

The world (users, items, latent factors) depends on the seed only; each day's traffic on
(seed, date), so the same date always yields identical partitions. The utility is never
written to raw data: :meth:`SyntheticSource.oracle` is the only way to read it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.sources.base import ID_STRIDE, DataSource, conform, id_base

REGIONS = np.array(["north", "south", "east", "west", "central", "islands"])
LATENT_DIM = 8
SOURCE_MIX = (0.35, 0.45, 0.20)  # popular, category-affine, random slots of the logging policy
GROWTH_DAYS = 60  # the catalog grows for this many days after the start date
LATE_SHARE = 0.2  # at most this share of the items launch after the start date
LOGGING_POOLS = ("popular", "category", "random")
"""The logging policy's pools, in :data:`SOURCE_MIX`'s order: what each impression's ``pool``
column names."""
AFFINITY_PRIOR = 0.25  # the Dirichlet concentration each user's category affinity is drawn with
AFFINITY_DAYS = 28  # days of clicks the fair ceiling's affinity posterior reads
INTENT_DAYS = 3  # an intent lasts this many days
INTENT_CHAIN = 6  # intents per chain before it restarts from the user's affinity
INTENT_FOLLOW = 0.8  # chance the next intent is the successor of the current line
INTENT_BOOST = 1.0  # utility of an item of the intent's category, over the same item otherwise
LINE_BOOST = 3.5  # further utility of an item of the intent's product line
LINE_SIZE = 8  # items per product line (a category's items cut into lines)
POLICY_INTENT = 0.6  # share of the category-affine slots the logging policy fills from the intent
POLICY_LINE = 0.8  # share of those intent slots filled from the intent's line (the rest: category)


@dataclass(frozen=True)
class World:
    """The seed-only part of the marketplace (hidden factors included)."""

    user_region: np.ndarray
    user_age_band: np.ndarray
    user_signup: np.ndarray  # days before the start of time (int)
    user_activity: np.ndarray  # request weight
    user_affinity: np.ndarray  # (n_users, n_categories), rows sum to 1
    user_latent: np.ndarray
    user_price_sens: np.ndarray
    item_category: np.ndarray
    item_price: np.ndarray
    item_latent: np.ndarray
    item_quality: np.ndarray
    items_by_category: tuple[np.ndarray, ...]
    popularity_prior: np.ndarray  # logging policy's sampling weight per item
    category_next: np.ndarray  # (n_categories,): the category an intent moves on to
    user_phase: np.ndarray  # (n_users,): day offset of the user's intent periods
    item_line: np.ndarray  # (n_items,): the product line of each item
    line_category: np.ndarray  # (n_lines,): the category of each line
    line_offset: np.ndarray  # (n_categories + 1,): lines of category c are offset[c]:offset[c+1]
    line_members: np.ndarray  # (n_lines, LINE_SIZE): item ids of each line, -1 padded
    line_size: np.ndarray  # (n_lines,)
    line_next: np.ndarray  # (n_lines,): the line an intent moves on to


@lru_cache(maxsize=4)
def make_world(seed: int, n_users: int, n_items: int, n_categories: int) -> World:
    """Build the users, items and hidden preferences of a seed."""
    rng = np.random.default_rng([seed, 0])
    affinity = rng.dirichlet(np.full(n_categories, AFFINITY_PRIOR), size=n_users)
    # Every category holds at least one item.
    item_category = rng.permutation(
        np.r_[np.arange(n_categories), rng.integers(0, n_categories, size=n_items - n_categories)]
    )
    cat_price = rng.normal(3.0, 0.5, size=n_categories)
    item_price = np.round(np.exp(cat_price[item_category] + rng.normal(0, 0.5, n_items)), 2)
    item_quality = rng.normal(0.0, 0.6, size=n_items)
    prior = np.exp(item_quality + rng.normal(0, 0.8, n_items))
    seq_rng = np.random.default_rng([seed, 2])  # own stream: the draws above stay as they were
    cycle = seq_rng.permutation(n_categories)  # one cycle through every category: no fixed point
    category_next = np.empty(n_categories, dtype=np.int32)
    category_next[cycle] = np.roll(cycle, -1)
    # product lines: each category's items, shuffled, cut into lines of LINE_SIZE
    line_rng = np.random.default_rng([seed, 4])
    item_line = np.empty(n_items, dtype=np.int32)
    members, line_category, offset = [], [], [0]
    for c in range(n_categories):
        its = line_rng.permutation(np.flatnonzero(item_category == c))
        for k in range(0, len(its), LINE_SIZE):
            item_line[its[k:k + LINE_SIZE]] = len(members)
            members.append(its[k:k + LINE_SIZE])
            line_category.append(c)
        offset.append(len(members))
    offset_a = np.asarray(offset, dtype=np.int64)
    line_cat = np.asarray(line_category, dtype=np.int32)
    line_members = np.full((len(members), LINE_SIZE), -1, dtype=np.int64)
    for k, m in enumerate(members):
        line_members[k, :len(m)] = m
    line_size = np.array([len(m) for m in members], dtype=np.int64)
    # each line's successor: a random line of the successor category
    nxt = category_next[line_cat]
    line_next = (offset_a[nxt] + np.floor(line_rng.random(len(members))
                                          * (offset_a[nxt + 1] - offset_a[nxt]))).astype(np.int32)
    return World(
        user_region=rng.choice(REGIONS, size=n_users),
        user_age_band=rng.integers(1, 7, size=n_users).astype(np.int8),
        user_signup=rng.integers(0, 720, size=n_users),
        user_activity=rng.lognormal(0.0, 0.8, size=n_users),
        user_affinity=affinity,
        user_latent=rng.normal(size=(n_users, LATENT_DIM)),
        user_price_sens=rng.uniform(0.0, 0.8, size=n_users),
        item_category=item_category.astype(np.int32),
        item_price=np.maximum(item_price, 0.5),
        item_latent=rng.normal(size=(n_items, LATENT_DIM)),
        item_quality=item_quality,
        items_by_category=tuple(np.flatnonzero(item_category == c) for c in range(n_categories)),
        popularity_prior=prior / prior.sum(),
        category_next=category_next,
        user_phase=seq_rng.integers(0, INTENT_DAYS, size=n_users),
        item_line=item_line,
        line_category=line_cat,
        line_offset=offset_a,
        line_members=line_members,
        line_size=line_size,
        line_next=line_next,
    )


@lru_cache(maxsize=8)
def _intent_chain(seed: int, n_users: int, n_items: int, n_categories: int,
                  block: int) -> np.ndarray:
    """``(n_users, INTENT_CHAIN)`` intent lines of one chain block (deterministic in seed,
    block)."""
    w = make_world(seed, n_users, n_items, n_categories)
    rng = np.random.default_rng([seed, 3, block])
    chain = np.empty((n_users, INTENT_CHAIN), dtype=np.int32)
    chain[:, 0] = _fresh_lines(rng, w)
    for step in range(1, INTENT_CHAIN):
        follow = rng.random(n_users) < INTENT_FOLLOW
        fresh = _fresh_lines(rng, w)
        chain[:, step] = np.where(follow, w.line_next[chain[:, step - 1]], fresh)
    return chain


def _fresh_lines(rng: np.random.Generator, w: World) -> np.ndarray:
    """For every user, a random line of a category drawn from the user's affinity."""
    cats = _sample_categories(rng, w.user_affinity)
    lo, hi = w.line_offset[cats], w.line_offset[cats + 1]
    return (lo + np.floor(rng.random(len(cats)) * (hi - lo))).astype(np.int32)


def intents(seed: int, n_users: int, n_items: int, n_categories: int,
            date: dt.date) -> np.ndarray:
    """Every user's intent (a product line; its category is ``world.line_category[line]``) on
    ``date`` (see the module docstring)."""
    w = make_world(seed, n_users, n_items, n_categories)
    period = (date.toordinal() + w.user_phase) // INTENT_DAYS
    block, step = np.divmod(period, INTENT_CHAIN)
    out = np.empty(n_users, dtype=np.int32)
    for b in np.unique(block):
        sel = block == b
        out[sel] = _intent_chain(seed, n_users, n_items, n_categories, int(b))[sel, step[sel]]
    return out


def _catalog(w: World, launch: np.ndarray, ordinal: int) -> Catalog:
    """The :class:`Catalog` of the items whose ``launch`` ordinal is at most ``ordinal``."""
    on = launch <= ordinal
    ids = np.flatnonzero(on)
    prior = w.popularity_prior[ids] / w.popularity_prior[ids].sum()
    by_cat = tuple(m[on[m]] if on[m].any() else ids for m in w.items_by_category)
    members = w.line_members
    ok = (members >= 0) & on[np.maximum(members, 0)]
    order = np.argsort(~ok, axis=1, kind="stable")  # launched members first, in line order
    line_members = np.where(np.take_along_axis(ok, order, axis=1),
                            np.take_along_axis(members, order, axis=1), -1)
    return Catalog(ids, prior, by_cat, line_members, ok.sum(axis=1))


def utility(world: World, users: np.ndarray, items: np.ndarray,
            intent: np.ndarray | None = None) -> np.ndarray:
    """The hidden utility of each (user, item) pair, given each row's user intent line
    (``None``: without the intent terms)."""
    n_cat = world.user_affinity.shape[1]
    aff = _affinity_term(world.user_affinity[users, world.item_category[items]], n_cat)
    dot = np.einsum("ij,ij->i", world.user_latent[users], world.item_latent[items])
    price = world.user_price_sens[users] * (np.log(world.item_price[items]) - 3.0)
    base = aff + 0.7 * dot / np.sqrt(LATENT_DIM) + world.item_quality[items] - price
    if intent is None:
        return base
    return (base + INTENT_BOOST * (world.item_category[items] == world.line_category[intent])
            + LINE_BOOST * (world.item_line[items] == intent))


def _affinity_term(affinity: np.ndarray, n_cat: int) -> np.ndarray:
    """The utility's affinity term of affinities (see :func:`utility`)."""
    return 0.6 * np.clip(np.log(n_cat * affinity + 1e-12), -3, 3)


def behave(world: World, users: np.ndarray, items: np.ndarray, position: np.ndarray,
           intent: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clicked, carted, bought flags of shown (user, item, 1-based position) rows: a click with
    probability ``position ** -0.6 * sigmoid(utility - 1.5)``, then an add-to-cart and a
    purchase with probabilities that grow with the utility. ``u``: uniforms of shape
    ``(3, rows)`` (the caller's random stream)."""
    util = utility(world, users, items, intent)
    clicked = u[0] < np.asarray(position, dtype=float) ** -0.6 * _sigmoid(util - 1.5)
    carted = clicked & (u[1] < 0.6 * _sigmoid(util - 1.0))
    bought = carted & (u[2] < 0.7 * _sigmoid(util - 0.5))
    return clicked, carted, bought


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _sample_categories(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One category per row of ``probs`` (inverse-CDF sampling, vectorised)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cdf[:, -1:]
    return np.minimum((u > cdf).sum(axis=1), probs.shape[1] - 1)


@dataclass(frozen=True)
class Catalog:
    """The items on sale on one date: what the items table lists and the logging policy draws."""

    ids: np.ndarray  # launched item ids, sorted
    prior: np.ndarray  # the popularity prior over ``ids`` (sums to 1)
    by_category: tuple[np.ndarray, ...]  # launched items of each category (all launched items
    # for a category with none yet)
    line_members: np.ndarray  # (n_lines, LINE_SIZE): launched members first, -1 padded
    line_size: np.ndarray  # launched members per line (0: the line draws from its category)


class SyntheticSource(DataSource):
    """The seeded synthetic marketplace (see the module docstring)."""

    name = "synthetic"

    def __init__(
        self,
        seed: int = 7,
        n_users: int = 20_000,
        n_items: int = 1_500,
        n_categories: int = 24,
        impressions_per_day: int = 150_000,
        slots_per_request: int = 20,
        new_items_per_day: int = 0,
        start: dt.date = dt.date(2026, 1, 1),
    ) -> None:
        """``new_items_per_day``: the catalog grows: the last ``min(new_items_per_day *
        GROWTH_DAYS, LATE_SHARE * n_items)`` item ids launch ``new_items_per_day`` a day from
        the day after ``start`` (before its launch an item is in no table and never shown)."""
        if n_items < n_categories or n_users < 1 or slots_per_request < 1:
            raise ValueError(
                f"need n_items >= n_categories ({n_items} < {n_categories}), n_users >= 1 "
                "and slots_per_request >= 1"
            )
        self.seed = seed
        self.n_users, self.n_items, self.n_categories = n_users, n_items, n_categories
        self.impressions_per_day = impressions_per_day
        self.slots = slots_per_request
        late = min(new_items_per_day * GROWTH_DAYS, int(LATE_SHARE * n_items))
        self._catalogs: dict[int, Catalog] = {}
        self.launch = np.full(n_items, -(2**62), dtype=np.int64)  # ordinal of each launch day
        if late > 0:
            first = n_items - late
            self.launch[first:] = (start.toordinal() + 1
                                   + (np.arange(late) // new_items_per_day))

    def catalog(self, date: dt.date) -> Catalog:
        """The items launched by ``date`` and the logging policy's draws among them."""
        key = date.toordinal()
        if (hit := self._catalogs.get(key)) is None:
            if len(self._catalogs) > 64:
                self._catalogs.clear()
            hit = self._catalogs[key] = _catalog(self.world, self.launch, key)
        return hit

    @property
    def world(self) -> World:
        """The users, items and hidden preferences of this seed."""
        return make_world(self.seed, self.n_users, self.n_items, self.n_categories)

    def intents(self, date: dt.date) -> np.ndarray:
        """Every user's intent line on ``date``."""
        return intents(self.seed, self.n_users, self.n_items, self.n_categories, date)

    def oracle(self, user_ids: np.ndarray, item_ids: np.ndarray,
               request_ids: np.ndarray) -> np.ndarray:
        """The hidden utility on the request's date: what a perfect ranker would sort by."""
        users, items = np.asarray(user_ids), np.asarray(item_ids)
        ordinals = np.asarray(request_ids) // ID_STRIDE
        intent = np.empty(len(users), dtype=np.int32)
        for day in np.unique(ordinals):
            sel = ordinals == day
            intent[sel] = self.intents(dt.date.fromordinal(int(day)))[users[sel]]
        return utility(self.world, users, items, intent)

    def ceiling(self, user_ids: np.ndarray, item_ids: np.ndarray, request_ids: np.ndarray,
                last_shown: np.ndarray, clicks: pd.DataFrame | None = None) -> np.ndarray:
        """The expected utility of each pair given what the logs up to the day before the
        request show: the best any ranker that reads history can sort by (the fair ceiling).

        The signals it uses. **Category affinity**: with ``clicks`` (``user_id``, ``item_id``,
        ``date``: the logged clicks), the expectation of the affinity term under the Dirichlet
        posterior of the user's affinity (the world's prior, ``Dirichlet(0.25)``, updated by
        the user's clicks per category in the ``AFFINITY_DAYS`` days before the request; clicks
        taken as draws from the affinity, the exposure that shaped them ignored); without, the
        true affinity. **Taste, item quality, price sensitivity**: known exactly (generous: a
        ranker estimates them from the logs too). **Intent**: what the logs reveal: the logging
        policy fills about a fifth of a user's slots from the intent's line, so a day's slates
        show that day's intent;
        ``last_shown`` is the ordinal of the last day before the request on which the user was
        shown anything (``<= 0``: none in the logs read). From that day's intent the periods
        move on as the world does (known phase: every ``INTENT_DAYS`` days from the user's own
        day, a chain restarting every ``INTENT_CHAIN`` periods), each period to the line's
        successor with ``INTENT_FOLLOW`` or else to a fresh line drawn from the user's
        affinity; the intent terms are then averaged over that distribution of lines. A user
        never shown anything gets the fresh-line distribution."""
        w = self.world
        users, items = np.asarray(user_ids), np.asarray(item_ids)
        ordinals = np.asarray(request_ids) // ID_STRIDE
        known = np.asarray(last_shown, dtype=np.int64)
        n_lines, n_cat = len(w.line_category), w.user_affinity.shape[1]
        lines_in_cat = np.bincount(w.line_category, minlength=n_cat).astype(float)
        follow = np.zeros((n_lines, n_lines))
        follow[np.arange(n_lines), w.line_next] = 1.0
        groups, g_of_row = np.unique(np.c_[users, ordinals, known], axis=0, return_inverse=True)
        gu, gd, gk = groups[:, 0], groups[:, 1], groups[:, 2]
        fresh = (w.user_affinity[gu][:, w.line_category] / lines_in_cat[w.line_category])
        dist = fresh.copy()
        seen = gk > 0
        for day in np.unique(gk[seen]):
            sel = seen & (gk == day)
            line = self.intents(dt.date.fromordinal(int(day)))[gu[sel]]
            dist[sel] = 0.0
            dist[np.flatnonzero(sel), line] = 1.0
        phase = w.user_phase[gu]
        p_from = np.where(seen, (gk + phase) // INTENT_DAYS, 0)
        p_to = (gd + phase) // INTENT_DAYS
        for step in range(1, int(np.max(p_to - p_from, initial=0)) + 1):
            move = seen & (p_from + step <= p_to)
            if not move.any():
                break
            restart = ((p_from + step) % INTENT_CHAIN == 0)[move]
            moved = INTENT_FOLLOW * (dist[move] @ follow) + (1 - INTENT_FOLLOW) * fresh[move]
            dist[move] = np.where(restart[:, None], fresh[move], moved)
        cat_p = np.zeros((len(groups), n_cat))
        for c in range(n_cat):
            cat_p[:, c] = dist[:, w.line_category == c].sum(axis=1)
        g = g_of_row.ravel()
        line_p = dist[g, w.item_line[items]]
        cat_row = cat_p[g, w.item_category[items]]
        base = utility(w, users, items, None)
        if clicks is not None:
            base += self._affinity_term(users, items, ordinals, clicks) - _affinity_term(
                w.user_affinity[users, w.item_category[items]], n_cat)
        return base + INTENT_BOOST * cat_row + LINE_BOOST * line_p

    def _affinity_term(self, users: np.ndarray, items: np.ndarray, ordinals: np.ndarray,
                       clicks: pd.DataFrame) -> np.ndarray:
        """The affinity term of the utility in expectation under each user's Dirichlet posterior
        given the clicks of the ``AFFINITY_DAYS`` days before each row's date."""
        from scipy.special import digamma

        w = self.world
        n_cat = w.user_affinity.shape[1]
        c_users = clicks["user_id"].to_numpy(np.int64)
        c_cats = w.item_category[clicks["item_id"].to_numpy(np.int64)]
        c_days = pd.to_datetime(clicks["date"]).map(dt.datetime.toordinal).to_numpy(np.int64)
        out = np.empty(len(users))
        for day in np.unique(ordinals):
            sel = ordinals == day
            seen = (c_days < day) & (c_days >= day - AFFINITY_DAYS)
            mine, inverse = np.unique(users[sel], return_inverse=True)
            counts = np.zeros((len(mine), n_cat))
            pos = np.searchsorted(mine, c_users[seen])
            hit = (pos < len(mine)) & (mine[np.minimum(pos, len(mine) - 1)] == c_users[seen])
            np.add.at(counts, (pos[hit], c_cats[seen][hit]), 1.0)
            alpha = AFFINITY_PRIOR + counts
            e_log = digamma(alpha) - digamma(alpha.sum(axis=1, keepdims=True))
            cat_of = w.item_category[items[sel]]
            out[sel] = 0.6 * np.clip(np.log(n_cat) + e_log[inverse.ravel(), cat_of], -3, 3)
        return out

    def propensity(self, users: np.ndarray, items: np.ndarray, intent: np.ndarray,
                   date: dt.date | None = None) -> np.ndarray:
        """The probability that the logging policy's slate for a request of ``users`` (whose
        intent lines are ``intent``) contains ``items``: ``1 - (1 - q) ** slots``, ``q`` the
        chance one slot draws the item from the mixture of popular (``popularity_prior``),
        category-affine (the user's affinity, the intent's category or line) and uniformly
        random items (:data:`SOURCE_MIX`). The position follows the policy's noisy score and is
        not part of it: an item-in-slate propensity, what an off-policy estimate of a policy's
        click rate per shown item reweighs by. ``date``: the catalog's (None: every item
        launched)."""
        w = self.world
        cat_ = self.catalog(date) if date is not None else self.catalog(dt.date.max)
        csize = np.array([len(m) for m in cat_.by_category])
        in_cat = np.array([np.isin(items, m) for m in cat_.by_category])  # (categories, rows)
        rows = np.arange(len(items))
        # a category draw picks uniformly among its launched items
        aff = (w.user_affinity[users] * in_cat.T / csize[None, :]).sum(axis=1)
        icat = w.line_category[intent]
        in_icat = in_cat[icat, rows]
        lsize = cat_.line_size[intent]
        on_line = (w.item_line[items] == intent) & (lsize > 0)
        from_line = np.where(lsize > 0, on_line / np.maximum(lsize, 1), in_icat / csize[icat])
        affine = ((1 - POLICY_INTENT) * aff
                  + POLICY_INTENT * ((1 - POLICY_LINE) * in_icat / csize[icat]
                                     + POLICY_LINE * from_line))
        prior = np.zeros(self.n_items)
        prior[cat_.ids] = cat_.prior
        q = (SOURCE_MIX[0] * prior[items] + SOURCE_MIX[1] * affine
             + SOURCE_MIX[2] / len(cat_.ids)) * (self.launch[items] <= (
                 date or dt.date.max).toordinal())
        return np.clip(1.0 - (1.0 - q) ** self.slots, 1e-12, 1.0)

    def play(self, date: dt.date, lists: pd.DataFrame, fallback: np.ndarray,
             seed: int = 0) -> pd.DataFrame:
        """The marketplace's users on ``date`` served by a recommender instead of the logging
        policy: who asks and the users' behaviour as in :meth:`frames`, each request showing the
        first ``slots_per_request`` items of the user's list (``lists``: ``user_id``,
        ``item_id``, ``rank`` 0.., plus any columns to carry, e.g. ``pool``), or of
        ``fallback`` (item ids, the cold-start list) for a user without one.

        The requests and the uniforms behind every (request, position) depend on (seed, date,
        ``seed``) only, not on the lists: two recommenders played on the same date and seed
        meet the same users with the same dice (common random numbers: a paired comparison).

        Returns one row per shown item: ``request``, ``user_id``, ``item_id``, ``position``
        (1-based), the carried columns, ``clicked``, ``carted``, ``bought``.
        """
        w = self.world
        rng = np.random.default_rng([self.seed, date.toordinal(), 1, seed])
        n_req = max(1, self.impressions_per_day // self.slots)
        act = w.user_activity / w.user_activity.sum()
        req_user = rng.choice(self.n_users, size=n_req, p=act)
        dice = rng.random((3, n_req, self.slots))
        shown = lists[lists["rank"] < self.slots].sort_values(["user_id", "rank"])
        has = np.isin(req_user, shown["user_id"].to_numpy())
        # each request joins its user's rows; users without a list get the fallback
        req = pd.DataFrame({"request": np.arange(n_req), "user_id": req_user})
        personal = req[has].merge(shown, on="user_id")
        fb = np.asarray(fallback)[:self.slots]
        cold = pd.DataFrame({"request": np.repeat(np.flatnonzero(~has), len(fb)),
                             "user_id": np.repeat(req_user[~has], len(fb)),
                             "item_id": np.tile(fb, int((~has).sum())),
                             "rank": np.tile(np.arange(len(fb)), int((~has).sum()))})
        out = pd.concat([personal, cold], ignore_index=True).sort_values(["request", "rank"])
        r, pos = out["request"].to_numpy(), out["rank"].to_numpy(dtype=np.int64)
        users, items = out["user_id"].to_numpy(dtype=np.int64), out["item_id"].to_numpy(
            dtype=np.int64)
        clicked, carted, bought = behave(w, users, items, pos + 1, self.intents(date)[users],
                                         dice[:, r, pos])
        return out.drop(columns="rank").assign(position=pos + 1, clicked=clicked,
                                               carted=carted, bought=bought).reset_index(
            drop=True)

    def frames(self, date: dt.date) -> dict[str, pa.Table]:
        """One day of the marketplace, deterministic in (seed, date)."""
        w = self.world
        rng = np.random.default_rng([self.seed, date.toordinal()])
        epoch = dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC)
        day_us = 86_400 * 1_000_000
        start_us = int(epoch.timestamp() * 1_000_000)
        base = id_base(date)

        users = pa.table({
            "user_id": np.arange(self.n_users, dtype=np.int64),
            "region": w.user_region,
            "age_band": w.user_age_band,
            "signup_date": [date - dt.timedelta(days=int(d)) for d in w.user_signup],
        })
        cat_ = self.catalog(date)
        items = pa.table({
            "item_id": cat_.ids.astype(np.int64),
            "category": w.item_category[cat_.ids],
            "price": w.item_price[cat_.ids],
            "line": w.item_line[cat_.ids].astype(np.int64),
        })

        intent = self.intents(date)

        # Requests: who asks, when.
        n_req = max(1, self.impressions_per_day // self.slots)
        act = w.user_activity / w.user_activity.sum()
        req_user = rng.choice(self.n_users, size=n_req, p=act)
        req_ts = start_us + np.sort(rng.integers(0, day_us - 3_600_000_000, size=n_req))
        req_id = base + np.arange(n_req, dtype=np.int64)

        # Logging policy: fill slots from three candidate sources, drop duplicates.
        s = self.slots
        r_user = np.repeat(req_user, s)
        r_req = np.repeat(np.arange(n_req), s)
        kind = rng.choice(3, size=n_req * s, p=SOURCE_MIX)
        item = cat_.ids[rng.integers(0, len(cat_.ids), size=n_req * s)]  # random slots
        pop = kind == 0
        item[pop] = rng.choice(cat_.ids, size=int(pop.sum()), p=cat_.prior)
        aff = kind == 1
        cats = _sample_categories(rng, w.user_affinity[r_user[aff]])
        follows = rng.random(len(cats)) < POLICY_INTENT
        lines = intent[r_user[aff]]
        cats[follows] = w.line_category[lines[follows]]
        picked = np.empty(len(cats), dtype=np.int64)
        for c in np.unique(cats):
            members = cat_.by_category[c]
            sel = cats == c
            picked[sel] = members[rng.integers(0, len(members), size=int(sel.sum()))]
        from_line = follows & (rng.random(len(cats)) < POLICY_LINE)
        fl = lines[from_line]
        drawn = cat_.line_members[fl, np.floor(rng.random(len(fl)) * np.maximum(
            cat_.line_size[fl], 1)).astype(np.int64)]
        # a line none of whose items is on sale yet: the category's draw stands
        picked[from_line] = np.where(cat_.line_size[fl] > 0, drawn, picked[from_line])
        item[aff] = picked
        key = r_req.astype(np.int64) * self.n_items + item
        _, first = np.unique(key, return_index=True)
        keep = np.sort(first)
        r_req, r_user, item, kind = r_req[keep], r_user[keep], item[keep], kind[keep]

        # The policy orders each request by a noisy score: informative, far from perfect.
        policy = (
            0.5 * w.item_quality[item]
            + 0.3 * np.log(self.n_categories * w.user_affinity[r_user, w.item_category[item]] + 1e-3)
            + rng.normal(0.0, 1.0, size=len(item))
        )
        order = np.lexsort((-policy, r_req))
        r_req, r_user, item, kind = r_req[order], r_user[order], item[order], kind[order]
        starts = np.r_[0, np.flatnonzero(np.diff(r_req)) + 1]
        counts = np.diff(np.r_[starts, len(r_req)])
        position = (np.arange(len(r_req)) - np.repeat(starts, counts) + 1).astype(np.int16)
        n_imp = len(item)
        imp_id = base + np.arange(n_imp, dtype=np.int64)
        imp_ts = req_ts[r_req] + position.astype(np.int64) * 1_000

        # User behaviour: position-biased clicks, then cart and purchase by utility.
        clicked, carted, bought = behave(w, r_user, item, position, intent[r_user],
                                         rng.random((3, n_imp)))

        def events(mask: np.ndarray, offset: int, delay_s: tuple[int, int]) -> dict:
            idx = np.flatnonzero(mask)
            delay = rng.integers(delay_s[0] * 1_000_000, delay_s[1] * 1_000_000, size=len(idx))
            return {
                "event_id": base + offset + np.arange(len(idx), dtype=np.int64),
                "impression_id": imp_id[idx],
                "click_id": base + 400_000_000 + np.searchsorted(np.flatnonzero(clicked), idx),
                "request_id": req_id[r_req[idx]],
                "user_id": r_user[idx].astype(np.int64),
                "item_id": item[idx].astype(np.int64),
                "price": w.item_price[item[idx]],
                "ts": (imp_ts[idx] + delay).astype("datetime64[us]"),
            }

        def table(cols: dict, names: list[str]) -> pa.Table:
            data = {n: cols[n] for n in names}
            data["ts"] = pa.array(data["ts"], type=pa.timestamp("us", tz="UTC"))
            return pa.table(data)

        clicks = events(clicked, 400_000_000, (1, 30))
        carts = events(carted, 600_000_000, (30, 600))
        buys = events(bought, 800_000_000, (600, 3_000))
        impressions = pa.table({
            "event_id": imp_id,
            "request_id": req_id[r_req],
            "user_id": r_user.astype(np.int64),
            "item_id": item.astype(np.int64),
            "position": position,
            "ts": pa.array(imp_ts.astype("datetime64[us]"), type=pa.timestamp("us", tz="UTC")),
            "pool": np.asarray(LOGGING_POOLS)[kind],
            "propensity": self.propensity(r_user, item, intent[r_user], date),
        })
        common = ["event_id", "request_id", "user_id", "item_id", "ts"]
        return conform({
            "users": users,
            "items": items,
            "impressions": impressions,
            "clicks": table(clicks, [*common[:1], "impression_id", *common[1:]]),
            "add_to_cart": table(carts, [*common[:1], "click_id", *common[1:]]),
            "purchases": table(buys, [*common[:1], "click_id", *common[1:4], "price", "ts"]),
        })
