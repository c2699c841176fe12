"""The ``user_pool`` view: each user's outcomes on the items of each candidate pool, as of a date.

Blending (``models.blending``) keeps a Beta posterior per (user, pool) built from the user's
logged outcomes on that pool's items. This view holds what the posterior needs, point in time
like every other view: per (user, pool) with any impression in the
:data:`~feature_store.definitions.LONG_WINDOW_DAYS` days ending with D, the impressions, and
how many of them ended in a click only, an add-to-cart (no purchase), or a purchase (the
impression's deepest action). It reads the impressions' optional ``pool`` column; a day whose
impressions carry none adds nothing.

Each date's counts are written once (``user_pool_day``, an overwrite on rerun); the view as of D
sums the daily counts of its window, so a daily build reads one day of events. An action is
matched to an impression of its own date: a click after midnight on an impression of the day
before counts as ignored (as the training labels do, :mod:`pipeline.labels`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from feature_store import io
from feature_store.definitions import LONG_WINDOW_DAYS

log = logging.getLogger(__name__)

POOL_VIEW, POOL_DAY, POOL_VERSION = "user_pool", "user_pool_day", "v1"
COUNTS = ["impressions", "clicked", "carted", "bought"]
"""The view's counts: impressions, and those whose deepest action was a click, an add-to-cart,
a purchase."""
IGNORED, CLICK, CART, PURCHASE = 0, 1, 2, 3


def deepest_action(impression_ids: np.ndarray, clicks: pd.DataFrame, carts: pd.DataFrame,
                   purchases: pd.DataFrame) -> np.ndarray:
    """Per impression id, its deepest action: 3 purchase, 2 add-to-cart, 1 click, 0 none.

    ``clicks`` holds ``event_id`` and ``impression_id``; ``carts`` and ``purchases`` hold
    ``click_id`` (the click they followed)."""
    ids = np.asarray(impression_ids)
    click_imp = pd.Series(clicks["impression_id"].to_numpy(), index=clicks["event_id"].to_numpy())
    grade = np.full(len(ids), IGNORED, dtype=np.int8)
    grade[np.isin(ids, clicks["impression_id"].to_numpy())] = CLICK
    grade[np.isin(ids, click_imp.reindex(carts["click_id"].to_numpy()).dropna().to_numpy())] = CART
    grade[np.isin(ids, click_imp.reindex(purchases["click_id"].to_numpy()).dropna()
                  .to_numpy())] = PURCHASE
    return grade


def day_counts(impressions: pd.DataFrame, clicks: pd.DataFrame, carts: pd.DataFrame,
               purchases: pd.DataFrame) -> pd.DataFrame:
    """One day's counts per (user, pool) (pure): impressions need ``event_id``, ``user_id``,
    ``pool``; rows without a pool are left out."""
    imp = impressions[impressions["pool"].notna()]
    grade = deepest_action(imp["event_id"].to_numpy(), clicks, carts, purchases)
    df = pd.DataFrame({"user_id": imp["user_id"].to_numpy(dtype=np.int64),
                       "pool": imp["pool"].astype(str).to_numpy(), "impressions": 1,
                       "clicked": grade == CLICK, "carted": grade == CART,
                       "bought": grade == PURCHASE})
    out = df.groupby(["user_id", "pool"], as_index=False)[COUNTS].sum()
    return out.astype({c: "int64" for c in COUNTS})


def _root(offline_dir: Path, name: str) -> Path:
    return Path(offline_dir) / name / POOL_VERSION


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"user_id": np.empty(0, np.int64), "pool": np.empty(0, object),
                         **{c: np.empty(0, np.int64) for c in COUNTS}})


def _from_raw(raw_dir: Path, date: dt.date) -> pd.DataFrame:
    """``date``'s counts from its raw partitions (empty when its impressions carry no pool)."""
    import pyarrow.parquet as pq

    path = io.partition_path(raw_dir, "impressions", date)
    if not path.exists() or "pool" not in pq.read_schema(path).names:
        return _empty()
    imp = io.read_parquet(path, ["event_id", "user_id", "pool"])
    clicks = io.read_partition(raw_dir, "clicks", date, ["event_id", "impression_id"])
    carts = io.read_partition(raw_dir, "add_to_cart", date, ["click_id"])
    buys = io.read_partition(raw_dir, "purchases", date, ["click_id"])
    return day_counts(imp, clicks, carts, buys)


def build_pool_view(raw_dir: Path, offline_dir: Path, date: dt.date,
                    usable: Callable[[dt.date], bool] | None = None) -> str:
    """Write ``date``'s daily counts, then the view as of the end of ``date`` (overwrites).

    A day of the window without daily counts yet (built out of order, or before this view
    existed) is counted from its raw partitions, so the view depends on the usable raw data
    alone, not on the order the dates were built in."""
    today = _from_raw(raw_dir, date)
    io.write_partition(today, _root(offline_dir, POOL_DAY), "", date)
    parts = [today]
    for d in io.window(date, LONG_WINDOW_DAYS)[:-1]:
        if usable is not None and not usable(d):
            continue
        p = io.partition_path(_root(offline_dir, POOL_DAY), "", d)
        parts.append(io.read_parquet(p) if p.exists() else _from_raw(raw_dir, d))
    both = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(
        len(p) for p in parts) else _empty()
    view = (both.groupby(["user_id", "pool"], as_index=False)[COUNTS].sum() if len(both)
            else _empty())
    view = view.astype({"user_id": "int64", **{c: "int64" for c in COUNTS}})
    view = view.sort_values(["user_id", "pool"], ignore_index=True)
    log.info("features %s as of %s: %d (user, pool) rows", POOL_VIEW, date, len(view))
    return str(io.write_partition(view, _root(offline_dir, POOL_VIEW), "", date))


def read_pool_view(offline_dir: Path, as_of: dt.date) -> pd.DataFrame | None:
    """The view as of the end of ``as_of``; None where it was never built."""
    path = io.partition_path(_root(offline_dir, POOL_VIEW), "", as_of)
    return io.read_parquet(path) if path.exists() else None
