"""The seeded synthetic marketplace: users, items and a day of logged traffic.

A hidden preference model decides what each user likes:

``utility(u, i) = 0.6 * clip(log(C * affinity[u, cat(i)]), -3, 3) + 0.7 * <z_u, z_i> / sqrt(d)
+ quality(i) - price_sensitivity(u) * (log price(i) - 3)``

A logging policy (popular, category-affine and random items, ordered by a noisy score) fills
each request's slots; a click happens with probability ``examine(position) *
sigmoid(utility - 1.5)`` (position bias ``examine(p) = p ** -0.6``); add-to-cart and purchase
follow a click with probabilities that also grow with utility.

The world (users, items, latent factors) depends on the seed only; each day's traffic on
(seed, date), so the same date always yields identical partitions. The utility is never
written to raw data: :meth:`SyntheticSource.oracle` is the only way to read it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa

from pipeline.sources.base import DataSource, conform, id_base

REGIONS = np.array(["north", "south", "east", "west", "central", "islands"])
LATENT_DIM = 8
SOURCE_MIX = (0.35, 0.45, 0.20)  # popular, category-affine, random slots of the logging policy


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


@lru_cache(maxsize=4)
def make_world(seed: int, n_users: int, n_items: int, n_categories: int) -> World:
    """Build the users, items and hidden preferences of a seed."""
    rng = np.random.default_rng([seed, 0])
    affinity = rng.dirichlet(np.full(n_categories, 0.25), size=n_users)
    # Every category holds at least one item.
    item_category = rng.permutation(
        np.r_[np.arange(n_categories), rng.integers(0, n_categories, size=n_items - n_categories)]
    )
    cat_price = rng.normal(3.0, 0.5, size=n_categories)
    item_price = np.round(np.exp(cat_price[item_category] + rng.normal(0, 0.5, n_items)), 2)
    item_quality = rng.normal(0.0, 0.6, size=n_items)
    prior = np.exp(item_quality + rng.normal(0, 0.8, n_items))
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
    )


def utility(world: World, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The hidden utility of each (user, item) pair."""
    n_cat = world.user_affinity.shape[1]
    aff = np.log(n_cat * world.user_affinity[users, world.item_category[items]] + 1e-12)
    dot = np.einsum("ij,ij->i", world.user_latent[users], world.item_latent[items])
    price = world.user_price_sens[users] * (np.log(world.item_price[items]) - 3.0)
    return (
        0.6 * np.clip(aff, -3, 3) + 0.7 * dot / np.sqrt(LATENT_DIM)
        + world.item_quality[items] - price
    )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _sample_categories(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One category per row of ``probs`` (inverse-CDF sampling, vectorised)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cdf[:, -1:]
    return np.minimum((u > cdf).sum(axis=1), probs.shape[1] - 1)


class SyntheticSource(DataSource):
    """The seeded synthetic marketplace (see the module docstring)."""

    name = "synthetic"

    def __init__(
        self,
        seed: int = 7,
        n_users: int = 20_000,
        n_items: int = 5_000,
        n_categories: int = 24,
        impressions_per_day: int = 300_000,
        slots_per_request: int = 20,
    ) -> None:
        if n_items < n_categories or n_users < 1 or slots_per_request < 1:
            raise ValueError(
                f"need n_items >= n_categories ({n_items} < {n_categories}), n_users >= 1 "
                "and slots_per_request >= 1"
            )
        self.seed = seed
        self.n_users, self.n_items, self.n_categories = n_users, n_items, n_categories
        self.impressions_per_day = impressions_per_day
        self.slots = slots_per_request

    @property
    def world(self) -> World:
        """The users, items and hidden preferences of this seed."""
        return make_world(self.seed, self.n_users, self.n_items, self.n_categories)

    def oracle(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """The hidden utility: what a perfect ranker would sort by."""
        return utility(self.world, np.asarray(user_ids), np.asarray(item_ids))

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
        items = pa.table({
            "item_id": np.arange(self.n_items, dtype=np.int64),
            "category": w.item_category,
            "price": w.item_price,
        })

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
        item = rng.integers(0, self.n_items, size=n_req * s)  # random slots
        pop = kind == 0
        item[pop] = rng.choice(self.n_items, size=int(pop.sum()), p=w.popularity_prior)
        aff = kind == 1
        cats = _sample_categories(rng, w.user_affinity[r_user[aff]])
        picked = np.empty(len(cats), dtype=np.int64)
        for c in np.unique(cats):
            members = w.items_by_category[c]
            sel = cats == c
            picked[sel] = members[rng.integers(0, len(members), size=int(sel.sum()))]
        item[aff] = picked
        key = r_req.astype(np.int64) * self.n_items + item
        _, first = np.unique(key, return_index=True)
        keep = np.sort(first)
        r_req, r_user, item = r_req[keep], r_user[keep], item[keep]

        # The policy orders each request by a noisy score: informative, far from perfect.
        policy = (
            0.5 * w.item_quality[item]
            + 0.3 * np.log(self.n_categories * w.user_affinity[r_user, w.item_category[item]] + 1e-3)
            + rng.normal(0.0, 1.0, size=len(item))
        )
        order = np.lexsort((-policy, r_req))
        r_req, r_user, item = r_req[order], r_user[order], item[order]
        starts = np.r_[0, np.flatnonzero(np.diff(r_req)) + 1]
        counts = np.diff(np.r_[starts, len(r_req)])
        position = (np.arange(len(r_req)) - np.repeat(starts, counts) + 1).astype(np.int16)
        n_imp = len(item)
        imp_id = base + np.arange(n_imp, dtype=np.int64)
        imp_ts = req_ts[r_req] + position.astype(np.int64) * 1_000

        # User behaviour: position-biased clicks, then cart and purchase by utility.
        util = utility(w, r_user, item)
        p_click = position.astype(float) ** -0.6 * _sigmoid(util - 1.5)
        clicked = rng.random(n_imp) < p_click
        carted = clicked & (rng.random(n_imp) < 0.6 * _sigmoid(util - 1.0))
        bought = carted & (rng.random(n_imp) < 0.7 * _sigmoid(util - 0.5))

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
