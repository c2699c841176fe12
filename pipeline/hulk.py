"""The nightly "hulk" refresh: candidates for every active user, batch scoring, top-k, publish.

Candidates come from three generators (recent popularity, the user's top categories, items
co-clicked with the user's recent clicks); items the user already bought are excluded. Users are
processed in chunks so memory stays bounded by ``score_batch_rows``. The lists are published as
one new version of the ``recs`` namespace, with the cold-start list under :data:`COLD_START`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from feature_store.definitions import WINDOW_DAYS, W
from pipeline import io
from pipeline.settings import Settings
from serving.client import COLD_START, NAMESPACE

log = logging.getLogger(__name__)


def popularity(item_view: pd.DataFrame) -> pd.Series:
    """The popularity baseline's score of every item, indexed by item id, most popular first."""
    from models.baselines import PopularityRanker

    score = PopularityRanker().score(item_view)
    return pd.Series(score, index=item_view["item_id"]).sort_values(ascending=False, kind="stable")


def co_clicks(clicks: pd.DataFrame, per_item: int = 20) -> pd.DataFrame:
    """Item-to-item neighbours: pairs clicked by the same user, top ``per_item`` per item."""
    uc = clicks[["user_id", "item_id"]].drop_duplicates()
    pairs = uc.merge(uc, on="user_id", suffixes=("", "_nbr"))
    pairs = pairs[pairs["item_id"] != pairs["item_id_nbr"]]
    counts = pairs.groupby(["item_id", "item_id_nbr"]).size().rename("w").reset_index()
    counts = counts.sort_values(["item_id", "w"], ascending=[True, False])
    return counts.groupby("item_id").head(per_item)


def candidates(
    users: np.ndarray,
    pop: pd.Series,
    items: pd.DataFrame,
    user_category: pd.DataFrame,
    recent_clicks: pd.DataFrame,
    neighbours: pd.DataFrame,
    purchased: pd.DataFrame,
    per_user: int,
) -> pd.DataFrame:
    """``(user_id, item_id)`` candidates for ``users`` from the three generators (pure).

    Each generator gives about a third of ``per_user``; purchased pairs are removed.
    """
    n_pop, n_cat, n_co = per_user // 3, per_user // 3, per_user - 2 * (per_user // 3)
    top_pop = pop.index.to_numpy()[:n_pop]
    frames = [pd.DataFrame({"user_id": np.repeat(users, len(top_pop)),
                            "item_id": np.tile(top_pop, len(users))})]

    # Category affinity: the user's top 3 categories by clicks, the most popular items in each.
    uc = user_category[user_category["user_id"].isin(users)]
    uc = uc[uc[f"uc_clicks_{W}"] > 0].sort_values(
        ["user_id", f"uc_clicks_{W}"], ascending=[True, False]).groupby("user_id").head(3)
    ranked = items.assign(p=pop.reindex(items["item_id"]).fillna(0).to_numpy()).sort_values(
        ["category", "p"], ascending=[True, False])
    per_cat = ranked.groupby("category").head(max(1, n_cat // 3))[["category", "item_id"]]
    frames.append(uc[["user_id", "category"]].merge(per_cat, on="category")[["user_id", "item_id"]])

    # Co-occurrence: neighbours of the user's recently clicked items, strongest first.
    rc = recent_clicks[recent_clicks["user_id"].isin(users)][["user_id", "item_id"]]
    co = rc.drop_duplicates().merge(neighbours, on="item_id")
    co = co.groupby(["user_id", "item_id_nbr"], as_index=False)["w"].sum().sort_values(
        ["user_id", "w"], ascending=[True, False]).groupby("user_id").head(n_co)
    frames.append(co.rename(columns={"item_id_nbr": "item_id"})[["user_id", "item_id"]])

    cand = pd.concat(frames, ignore_index=True).drop_duplicates()
    bought = purchased[["user_id", "item_id"]].drop_duplicates().assign(_b=True)
    cand = cand.merge(bought, on=["user_id", "item_id"], how="left")
    return cand[cand["_b"].isna()].drop(columns="_b").reset_index(drop=True)


def top_k(user_ids: np.ndarray, item_ids: np.ndarray, scores: np.ndarray,
          k: int) -> pd.DataFrame:
    """The ``k`` best items per user by score (ties: smaller item id first), rank order kept."""
    df = pd.DataFrame({"user_id": user_ids, "item_id": item_ids, "score": scores})
    df = df.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True])
    return df.groupby("user_id", sort=False).head(k).reset_index(drop=True)


def _encoded(frame: pd.DataFrame) -> Iterator[tuple[str, bytes]]:
    from serving.codec import encode_recs

    users = frame["user_id"].to_numpy()
    items = frame["item_id"].to_numpy()
    scores = frame["score"].to_numpy(dtype=np.float32)
    bounds = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1, len(users)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        yield str(users[a]), encode_recs(items[a:b], scores[a:b])


def refresh(settings: Settings, as_of: dt.date, model_uri: str,
            model_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score every active user's candidates with the model and publish the top-k lists.

    Returns a summary (store version, users, rows scored, rates) for XCom and MLflow.
    """
    from feature_store.compute import join_features
    from feature_store.offline import read_views
    from pipeline.landing import require_valid, valid_dates
    from pipeline.training import load_ranker
    from serving.store import open_store

    require_valid(settings, [as_of], f"the refresh as of {as_of}")
    t0 = time.perf_counter()
    views = read_views(settings.offline_dir, as_of)
    ranker = load_ranker(model_uri)
    pop = popularity(views["item"])
    items = views["item"][["item_id"]].assign(category=views["item"]["i_category"].astype("int64"))
    days = valid_dates(settings, io.window(as_of, WINDOW_DAYS))
    recent = io.read_dates(settings.raw_dir, "clicks", days, ["user_id", "item_id"], missing_ok=True)
    history = valid_dates(settings, [d for d in io.list_dates(settings.raw_dir, "purchases")
                                     if d <= as_of])
    purchased = io.read_dates(settings.raw_dir, "purchases", history, ["user_id", "item_id"])
    neighbours = co_clicks(recent)
    active = views["user"].loc[views["user"][f"u_impressions_{W}"] > 0, "user_id"].to_numpy()
    if len(active) == 0:
        raise RuntimeError(f"no active users as of {as_of}: nothing to refresh")

    chunk = max(1, settings.score_batch_rows // settings.candidates_per_user)
    results, scored = [], 0
    for i in range(0, len(active), chunk):
        users = active[i:i + chunk]
        cand = candidates(users, pop, items, views["user_category"], recent, neighbours,
                          purchased, settings.candidates_per_user)
        rows = join_features(cand, views)
        scores = ranker.score(rows)
        results.append(top_k(rows["user_id"].to_numpy(), rows["item_id"].to_numpy(), scores,
                             settings.top_k))
        scored += len(rows)
        done = min(i + chunk, len(active))
        rate = scored / (time.perf_counter() - t0)
        eta = (len(active) - done) / max(done, 1) * (time.perf_counter() - t0)
        log.info("hulk: %d/%d users, %d rows scored (%.0f rows/s, ETA %.0fs)",
                 done, len(active), scored, rate, eta)
    recs = pd.concat(results, ignore_index=True)
    t_score = time.perf_counter() - t0

    cold = pop.head(settings.top_k)
    cold_frame = pd.DataFrame({"user_id": COLD_START, "item_id": cold.index.to_numpy(),
                               "score": cold.to_numpy(dtype=np.float32)})
    meta = {"model_uri": model_uri, "as_of": as_of.isoformat(), "k": settings.top_k,
            "users": int(len(active)), "sample_user": str(active[0]), **(model_meta or {})}

    def items_iter() -> Iterator[tuple[str, bytes]]:
        yield from _encoded(cold_frame)
        yield from _encoded(recs)

    store = open_store(settings)
    try:
        t1 = time.perf_counter()
        info = store.publish(NAMESPACE, items_iter(), meta=meta, keep=settings.keep_versions)
        t_pub = time.perf_counter() - t1
    finally:
        store.close()
    summary = {"store_version": info.version, "users": int(len(active)),
               "keys": info.n_keys, "rows_scored": int(scored),
               "score_rows_per_s": round(scored / t_score, 1),
               "publish_keys_per_s": round(info.n_keys / max(t_pub, 1e-9), 1),
               "seconds": round(time.perf_counter() - t0, 2), **meta}
    log.info("hulk refresh published %s version %d: %s", NAMESPACE, info.version, summary)
    return summary
