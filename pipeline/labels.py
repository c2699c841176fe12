"""Graded labels from the funnel, sampled negatives, and the per-date labelled rows.

Label of an impression: 3 if it led to a purchase, 2 to an add-to-cart, 1 to a click, 0 if it
was ignored. Negatives (label 0) are items of the match set that the request did not show,
sampled from each of :data:`models.base.NEGATIVE_SOURCES` (by recent popularity, and uniformly);
a training set keeps those of one source (``pipeline.row_choice`` chooses which, and how many).
Rows are sorted by request (the ranking group).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from feature_store import io
from feature_store.compute import join_features
from feature_store.definitions import W
from feature_store.offline import read_views
from models.base import NEGATIVE_SOURCES

log = logging.getLogger(__name__)

PURCHASE, CART, CLICK, IGNORED = 3, 2, 1, 0


def label_impressions(
    impressions: pd.DataFrame, clicks: pd.DataFrame, carts: pd.DataFrame, purchases: pd.DataFrame
) -> pd.DataFrame:
    """Impressions with a graded ``label`` column (pure)."""
    out = impressions.copy()
    click_imp = clicks.set_index("event_id")["impression_id"]
    label = pd.Series(IGNORED, index=out["event_id"], dtype="int8")
    label[label.index.isin(clicks["impression_id"])] = CLICK
    label[label.index.isin(click_imp.reindex(carts["click_id"]).dropna())] = CART
    label[label.index.isin(click_imp.reindex(purchases["click_id"]).dropna())] = PURCHASE
    out["label"] = label.to_numpy()
    return out


def sample_negatives(
    shown: pd.DataFrame, item_popularity: pd.Series, per_request: int, rng: np.random.Generator
) -> pd.DataFrame:
    """``per_request`` unseen items per request, drawn in proportion to ``item_popularity``
    (pure but for ``rng``; equal weights draw uniformly).

    Args:
        shown: one row per impression with ``request_id``, ``user_id``, ``item_id``.
        item_popularity: weight per item id (the match set: items with weight > 0).
    """
    if per_request <= 0 or shown.empty:
        return shown.iloc[0:0][["request_id", "user_id", "item_id"]]
    req = shown.drop_duplicates("request_id")[["request_id", "user_id"]]
    pop = item_popularity[item_popularity > 0]
    draws = rng.choice(pop.index.to_numpy(), size=len(req) * per_request, p=(pop / pop.sum()).to_numpy())
    neg = pd.DataFrame({
        "request_id": np.repeat(req["request_id"].to_numpy(), per_request),
        "user_id": np.repeat(req["user_id"].to_numpy(), per_request),
        "item_id": draws,
    }).drop_duplicates(["request_id", "item_id"])
    seen = shown[["request_id", "item_id"]].assign(_seen=True)
    neg = neg.merge(seen, on=["request_id", "item_id"], how="left")
    return neg[neg["_seen"].isna()].drop(columns="_seen")


def _as_rows(negatives: pd.DataFrame, source: str) -> pd.DataFrame:
    """Sampled negatives as training rows: label 0, no position, tagged with their source."""
    return negatives.assign(position=np.nan, label=np.int8(IGNORED), is_negative=True,
                            negative_source=np.int8(NEGATIVE_SOURCES.index(source) + 1))


def build_rows(
    raw_dir: Path, offline_dir: Path, date: dt.date, negatives_per_request: int, seed: int
) -> pd.DataFrame:
    """Labelled rows of ``date`` joined with features as of the end of ``date - 1``.

    Columns: request_id, user_id, item_id, position (NaN for negatives), label, is_negative,
    negative_source (0 for shown items, else where the negative was drawn from: see
    :data:`models.base.NEGATIVE_SOURCES`) and every model feature; sorted by request_id, in
    random order inside a request. ``negatives_per_request`` are drawn from each source.
    """
    tables = {t: io.read_partition(raw_dir, t, date)
              for t in ("impressions", "clicks", "add_to_cart", "purchases")}
    imp = label_impressions(tables["impressions"], tables["clicks"], tables["add_to_cart"],
                            tables["purchases"])
    views = read_views(offline_dir, date - dt.timedelta(days=1))
    item = views["item"].set_index("item_id")
    popularity = item[f"i_clicks_{W}"] + 0.1
    rng = np.random.default_rng([seed, date.toordinal(), 1])
    neg = sample_negatives(imp, popularity, negatives_per_request, rng)
    # uniform negatives from a stream of their own: the popularity draws and the shuffle of
    # the other rows stay what they were without them
    rng_uniform = np.random.default_rng([seed, date.toordinal(), 2])
    uniform = sample_negatives(imp, pd.Series(1.0, index=popularity.index),
                               negatives_per_request, rng_uniform)
    neg, uniform = _as_rows(neg, "popularity"), _as_rows(uniform, "uniform")
    rows = pd.concat(
        [imp[["request_id", "user_id", "item_id", "position", "label"]].assign(
            is_negative=False, negative_source=np.int8(0)), neg, uniform], ignore_index=True)
    rows["position"] = rows["position"].astype("float32")
    # Random order inside each request: row order must not carry the logged position, or any
    # metric that breaks score ties by row order (XGBoost's own ndcg does) would see it.
    rows["_shuffle"] = np.concatenate([rng.random(len(rows) - len(uniform)),
                                       rng_uniform.random(len(uniform))])
    rows = rows.sort_values(["request_id", "_shuffle"], ignore_index=True).drop(columns="_shuffle")
    return join_features(rows, views)


def write_rows(
    raw_dir: Path, offline_dir: Path, rows_dir: Path, date: dt.date, negatives_per_request: int,
    seed: int,
) -> str:
    """Build and write ``rows/date=D`` (an overwrite on rerun); return the path."""
    rows = build_rows(raw_dir, offline_dir, date, negatives_per_request, seed)
    log.info("labelled rows %s: %d (%d negatives)", date, len(rows), int(rows["is_negative"].sum()))
    return str(io.write_partition(rows, rows_dir, "rows", date))
