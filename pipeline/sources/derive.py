"""The funnel tables derived from one labelled interaction log: one rule for every source that
has a log rather than funnel tables (the ``interactions`` source and MovieLens).

Rules, for the rows of one logical date ``D`` (pure: the input is not modified):

* requests: the log's ``request_id`` when it has one (renumbered per (request_id, user_id) from
  ``id_base(D)``, so ids stay unique across dates), else one request per user and date;
* several rows for the same (request, item) collapse to one: the best label, the earliest ``ts``,
  the smallest position;
* positions: the log's ``position`` when it has one, else 1, 2, … by ``ts`` (then ``item_id``)
  within the request, capped at 1000;
* every collapsed row is an impression; label >= 1 is also a click, >= 2 an add-to-cart, >= 3 a
  purchase, all with the impression's ``ts`` (its ``price``, default 1.0, is the purchase price);
* event ids: impressions from ``id_base(D)``, clicks, add-to-carts and purchases from
  ``id_base(D)`` + 4, 6 and 8 × 10⁸.

``ts`` is carried over as given: a row outside the logical day fails validation, it is not moved.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.sources.base import conform, id_base

MAX_POSITION = 1000
CLICK_ID_OFFSET, CART_ID_OFFSET, PURCHASE_ID_OFFSET = 400_000_000, 600_000_000, 800_000_000


def _has(log: pd.DataFrame, column: str) -> bool:
    return column in log.columns and bool(log[column].notna().any())


def derive_events(log: pd.DataFrame, date: dt.date) -> dict[str, pa.Table]:
    """The four event tables of ``date`` from a log with ``user_id``, ``item_id``, ``ts``
    (timestamp, UTC) and ``label`` (0-3) columns, and optionally ``request_id``, ``position``
    and ``price`` (see the module docstring for the rules)."""
    base = id_base(date)
    ev = log.copy()
    ev["price"] = ev["price"].fillna(1.0) if "price" in ev else 1.0
    request_key = ["request_id", "user_id"] if _has(ev, "request_id") else ["user_id"]
    ev["request_id"] = base + ev.groupby(request_key, sort=True).ngroup().astype(np.int64)
    agg = {"ts": ("ts", "min"), "label": ("label", "max"), "price": ("price", "first")}
    given_positions = _has(ev, "position")
    if given_positions:
        agg["position"] = ("position", "min")
    ev = (ev.sort_values("ts", kind="stable")
          .groupby(["request_id", "user_id", "item_id"], sort=False, as_index=False).agg(**agg))
    ev = ev.sort_values(["request_id", "ts", "item_id"], kind="stable").reset_index(drop=True)
    if given_positions:  # as given (validation judges 1-1000); kept within int16
        ev["position"] = ev["position"].clip(-(2**15), 2**15 - 1)
    else:
        ev["position"] = np.minimum(ev.groupby("request_id").cumcount() + 1, MAX_POSITION)
    ev["position"] = ev["position"].astype(np.int16)
    ev["event_id"] = base + np.arange(len(ev), dtype=np.int64)
    clicks = ev[ev["label"] >= 1].copy()
    clicks["impression_id"] = clicks["event_id"]
    clicks["event_id"] = base + CLICK_ID_OFFSET + np.arange(len(clicks), dtype=np.int64)
    carts = clicks[clicks["label"] >= 2].copy()
    carts["click_id"] = carts["event_id"]
    carts["event_id"] = base + CART_ID_OFFSET + np.arange(len(carts), dtype=np.int64)
    buys = carts[carts["label"] >= 3].copy()
    buys["event_id"] = base + PURCHASE_ID_OFFSET + np.arange(len(buys), dtype=np.int64)
    to = lambda df: pa.Table.from_pandas(df, preserve_index=False)  # noqa: E731
    return conform({"impressions": to(ev), "clicks": to(clicks), "add_to_cart": to(carts),
                    "purchases": to(buys)})


def derive_dimensions(log: pd.DataFrame) -> dict[str, pa.Table]:
    """``users`` and ``items`` of a log: its distinct users (region null, age band 0, signup
    date null) and items (the latest row's ``category``, default 0, and ``price``, default 1.0)."""
    users = np.sort(log["user_id"].unique()).astype(np.int64)
    latest = log.sort_values("ts", kind="stable").groupby("item_id", sort=True).last()
    category = latest["category"] if "category" in latest else pd.Series(0, index=latest.index)
    price = latest["price"] if "price" in latest else pd.Series(1.0, index=latest.index)
    users_t = pa.table({
        "user_id": users,
        "region": pa.nulls(len(users), pa.string()),
        "age_band": np.zeros(len(users), dtype=np.int8),
        "signup_date": pa.nulls(len(users), pa.date32()),
    })
    items_t = pa.table({
        "item_id": latest.index.to_numpy(dtype=np.int64),
        "category": category.fillna(0).to_numpy(dtype=np.int64),
        "price": price.fillna(1.0).to_numpy(dtype=float),
    })
    return conform({"users": users_t, "items": items_t})
