"""Interaction logs nobody tuned rankline for, written in the documented interaction-log shape
(``<lake>/interactions/date=D/part-0.parquet``; read with ``RANKLINE_SOURCE=interactions``).

* :func:`sparse_clicks`: a click log with 3 slots a page, strong position bias (examination
  1, 0.3, 0.1 by slot) and about 1 % clicks, shown by a logging policy whose slot order follows
  its own noisy belief, so position and item are confounded; ``view:0,click:1``.
* :func:`small_ratings`: 671 users, about 20 a day each rating about 65 items (1,300 a day) in
  a latent-factor world (user and item biases, 8 factors), items found in proportion to a
  popularity that only partly follows quality; ``value>=3:1,value>=4:2,value>=5:3``.
* :func:`open_bandit`: the Open Bandit Dataset's sample that ``obp`` ships (ZOZOTOWN, 7 days,
  80 items, 3 positions; the uniform-random and Bernoulli-TS logging policies' 20,000
  impressions), users from their four user features, categories from the items' first
  categorical feature; ``view:0,click:1``.

Each returns ``(dates, event labels setting, facts)``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

CLICK_LABELS = "view:0,click:1"
RATING_LABELS = "value>=3:1,value>=4:2,value>=5:3"


def _write(lake: Path, date: dt.date, log: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(lake) / "interactions" / f"date={date}" / "part-0.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(log.reset_index(drop=True), preserve_index=False), path)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def sparse_clicks(lake: Path, start: dt.date, days: int = 21, seed: int = 0,
                  users: int = 3_000, items: int = 80, requests: int = 1_500,
                  examine: tuple[float, ...] = (1.0, 0.3, 0.1),
                  base: float = -5.5) -> tuple[list[dt.date], str, dict]:
    """The sparse click log (module docstring): ``requests`` pages a day of ``len(examine)``
    slots; a click with probability ``examine[slot] * sigmoid(base + quality + taste)``."""
    rng = np.random.default_rng(seed)
    n_cat, slots = 8, len(examine)
    quality = rng.normal(0.0, 1.0, items)
    category = rng.integers(0, n_cat, items)
    taste = rng.normal(0.0, 0.8, (users, n_cat))
    belief = 0.7 * quality + rng.normal(0.0, 0.7, items)  # the logging policy's
    activity = rng.pareto(1.5, users) + 1.0
    activity /= activity.sum()
    dates, shown, clicks = [], 0, 0
    for k in range(days):
        date = start + dt.timedelta(days=k)
        user = rng.choice(users, requests, p=activity)
        # each page: the policy's Gumbel top-k of its belief plus the user's taste, best first
        score = belief[None, :] + 0.5 * taste[user][:, category] + rng.gumbel(size=(requests,
                                                                                   items))
        top = np.argsort(-score, axis=1)[:, :slots]
        req = np.repeat(np.arange(requests), slots)
        item = top.ravel()
        pos = np.tile(np.arange(1, slots + 1), requests)
        u = user[req]
        p = np.asarray(examine)[pos - 1] * _sigmoid(base + quality[item] + taste[u, category[item]])
        clicked = rng.random(len(p)) < p
        secs = np.sort(rng.integers(0, 86_390, requests))[req] + pos
        ts = pd.Timestamp(date, tz="UTC") + pd.to_timedelta(secs, unit="s")
        views = pd.DataFrame({"user_id": u.astype(np.int64), "item_id": item.astype(np.int64),
                              "ts": ts, "event_type": "view", "position": pos.astype(np.int64),
                              "request_id": (k * requests + req).astype(np.int64),
                              "category": category[item].astype(np.int64)})
        _write(lake, date, pd.concat([views, views[clicked].assign(event_type="click")]))
        dates.append(date)
        shown, clicks = shown + len(p), clicks + int(clicked.sum())
    return dates, CLICK_LABELS, {"impressions/day": shown / days, "clicks/day": clicks / days,
                                 "slots": slots, "users": users, "items": items}


def small_ratings(lake: Path, start: dt.date, days: int = 75, seed: int = 0, users: int = 671,
                  items: int = 3_000, per_day: int = 1_300,
                  active: int = 20) -> tuple[list[dt.date], str, dict]:
    """The small ratings log (module docstring): about ``active`` users a day (by a
    heavy-tailed activity) each rate about ``per_day / active`` items found by popularity, as
    people rate in sessions; a rating is ``3.4 + user bias + item bias + factors + noise``,
    rounded and clipped to 1-5; a user rates an item at most once."""
    rng = np.random.default_rng(seed)
    dim = 8
    ub, ib = rng.normal(0.0, 0.4, users), rng.normal(0.0, 0.5, items)
    pu, qi = rng.normal(0.0, 0.35, (users, dim)), rng.normal(0.0, 0.35, (items, dim))
    category = np.argmax(qi, axis=1)
    pop = np.exp(0.8 * ib / 0.5 + rng.normal(0.0, 1.0, items))
    pop /= pop.sum()
    activity = rng.pareto(1.2, users) + 1.0
    activity /= activity.sum()
    rated = np.zeros((users, items), dtype=bool)
    dates, total, groups = [], 0, 0
    for k in range(days):
        date = start + dt.timedelta(days=k)
        who = rng.choice(users, max(1, rng.poisson(active)), replace=False, p=activity)
        us, its = [], []
        for u in who:
            want = rng.poisson(per_day / active)
            free = np.flatnonzero(~rated[u])
            if want == 0 or not len(free):
                continue
            w = pop[free] / pop[free].sum()
            pick = rng.choice(free, min(want, len(free)), replace=False, p=w)
            rated[u, pick] = True
            us.append(np.full(len(pick), u))
            its.append(pick)
        u, i = np.concatenate(us), np.concatenate(its)
        value = np.clip(np.rint(3.4 + ub[u] + ib[i] + np.sum(pu[u] * qi[i], axis=1) * 4
                                + rng.normal(0.0, 0.7, len(u))), 1, 5)
        secs = rng.integers(0, 86_400, len(u))
        _write(lake, date, pd.DataFrame({
            "user_id": u.astype(np.int64), "item_id": i.astype(np.int64),
            "ts": pd.Timestamp(date, tz="UTC") + pd.to_timedelta(secs, unit="s"),
            "event_type": "rating", "value": value.astype(np.float64),
            "category": category[i].astype(np.int64)}))
        dates.append(date)
        total, groups = total + len(u), groups + len(us)
    return dates, RATING_LABELS, {"ratings/day": total / days, "raters/day": groups / days,
                                  "users": users, "items": items}


def open_bandit(lake: Path, start: dt.date) -> tuple[list[dt.date], str, dict]:
    """The Open Bandit Dataset sample shipped in ``obp`` (module docstring), its 7 days as the
    logical dates ``start`` … ``start + 6``."""
    import obp

    root = Path(obp.__file__).parent / "dataset" / "obd"
    frames = [pd.read_csv(root / policy / "all" / "all.csv") for policy in ("random", "bts")]
    obd = pd.concat(frames, ignore_index=True)
    context = pd.read_csv(root / "random" / "all" / "item_context.csv")
    category = pd.factorize(context.set_index("item_id")["item_feature_1"])[0]
    user_cols = [f"user_feature_{j}" for j in range(4)]
    obd["user_id"] = pd.factorize(obd[user_cols].astype(str).agg("|".join, axis=1))[0]
    ts = pd.to_datetime(obd["timestamp"], utc=True, format="ISO8601")
    day = (ts.dt.normalize() - ts.dt.normalize().min()).dt.days
    dates = []
    for k in sorted(day.unique()):
        date = start + dt.timedelta(days=int(k))
        part = obd[day == k]
        when = pd.Timestamp(date, tz="UTC") + (ts[day == k] - ts[day == k].dt.normalize())
        views = pd.DataFrame({"user_id": part["user_id"].astype(np.int64),
                              "item_id": part["item_id"].astype(np.int64), "ts": when,
                              "event_type": "view",
                              "position": part["position"].astype(np.int64),
                              "category": category[part["item_id"]].astype(np.int64)})
        _write(lake, date, pd.concat([views, views[part["click"].to_numpy() == 1].assign(
            event_type="click")]))
        dates.append(date)
    return dates, CLICK_LABELS, {"impressions/day": len(obd) / len(dates),
                                 "clicks/day": obd["click"].sum() / len(dates),
                                 "users": int(obd["user_id"].nunique()), "items": 80}
