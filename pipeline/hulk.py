"""The nightly "hulk" refresh: candidates for every user with recent history, batch scoring,
top-k, publish.

The users refreshed are those with any event on a validated date of the ``history_days`` window
ending at the refresh date (not only the 7-day actives of the feature window). Candidates come
from three generators (recent popularity, the user's top categories, items co-clicked with the
user's clicks); a user without clicks in the 7-day feature window gets the last two from their
clicks over the longer history window. Items the user has consumed (any event of the tables in
``settings.consumed_tables``, over all validated history) are never candidates. Users are
processed in chunks so memory stays bounded by ``score_batch_rows``. The lists are published as
one new version of the ``recs`` namespace, with the cold-start list under :data:`COLD_START`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from feature_store import io
from feature_store.definitions import WINDOW_DAYS, W
from pipeline import pools
from pipeline.pools import PAIR
from pipeline.settings import Settings
from serving.client import COLD_START, NAMESPACE

log = logging.getLogger(__name__)



def popularity(item_view: pd.DataFrame) -> pd.Series:
    """The popularity baseline's score of every item, indexed by item id, most popular first."""
    from models.baselines import PopularityRanker

    score = PopularityRanker().score(item_view)
    return pd.Series(score, index=item_view["item_id"]).sort_values(ascending=False, kind="stable")


def co_clicks(clicks: pd.DataFrame, per_item: int = 20,
              of_items: Iterable[int] | None = None) -> pd.DataFrame:
    """Item-to-item neighbours: pairs clicked by the same user, top ``per_item`` per item.

    ``of_items`` limits the result to the neighbours of those items (the self-join then only
    pairs their clicks with the same users' other clicks, so a long window stays cheap).
    """
    uc = clicks[PAIR].drop_duplicates()
    left = uc if of_items is None else uc[uc["item_id"].isin(pd.Index(of_items))]
    pairs = left.merge(uc[uc["user_id"].isin(left["user_id"].unique())], on="user_id",
                       suffixes=("", "_nbr"))
    pairs = pairs[pairs["item_id"] != pairs["item_id_nbr"]]
    counts = pairs.groupby(["item_id", "item_id_nbr"]).size().rename("w").reset_index()
    counts = counts.sort_values(["item_id", "w"], ascending=[True, False])
    return counts.groupby("item_id").head(per_item).reset_index(drop=True)


def user_signals(user_category: pd.DataFrame, clicks: pd.DataFrame, items: pd.DataFrame,
                 recent_from: dt.date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's category affinity and clicked items, from the 7-day window where it has any.

    Args:
        user_category: the ``user_category`` feature view as of the refresh date.
        clicks: raw clicks (``user_id``, ``item_id``, ``date``) over the history window.
        items: ``item_id`` and ``category`` of every item.
        recent_from: the first date of the 7-day feature window.

    Returns:
        ``affinity`` (``user_id``, ``category``, ``clicks``): the view's 7-day clicks per category,
        or, for a user with none there, their clicks per category over the whole history window;
        ``user_clicks`` (``user_id``, ``item_id``): the user's distinct items clicked in the 7-day
        window, or over the history window if none. Both sorted by user.
    """
    clicks = clicks.astype({"user_id": "int64", "item_id": "int64"})
    recent = (clicks["date"] >= recent_from).to_numpy(dtype=bool)
    has_recent = clicks["user_id"].isin(clicks.loc[recent, "user_id"].unique()).to_numpy()
    user_clicks = clicks.loc[recent | ~has_recent, PAIR].drop_duplicates()

    view = user_category.loc[user_category[f"uc_clicks_{W}"] > 0,
                             ["user_id", "category", f"uc_clicks_{W}"]]
    view = view.rename(columns={f"uc_clicks_{W}": "clicks"})
    older = clicks.loc[~clicks["user_id"].isin(view["user_id"].unique()), PAIR]
    older = older.merge(items[["item_id", "category"]], on="item_id")
    older = older.groupby(["user_id", "category"]).size().rename("clicks").reset_index()
    affinity = pd.concat([view.astype({"clicks": "float64"}),
                          older.astype({"clicks": "float64"})], ignore_index=True)
    return (affinity.sort_values("user_id", kind="stable").reset_index(drop=True),
            user_clicks.sort_values("user_id", kind="stable").reset_index(drop=True))


def candidates(
    users: np.ndarray,
    pop: pd.Series,
    items: pd.DataFrame,
    affinity: pd.DataFrame,
    user_clicks: pd.DataFrame,
    neighbours: pd.DataFrame,
    consumed: pd.DataFrame,
    per_user: int,
    encoder: pools.EncoderSpace | None = None,
) -> pd.DataFrame:
    """``(user_id, item_id)`` candidates for ``users`` from the default pools
    (:func:`pipeline.pools.default_sizes`: popular, category, co-clicks and, given an
    ``encoder``, embedding), sharing ``per_user``, merged (pure).

    ``affinity`` holds per-user category clicks (``user_id``, ``category``, ``clicks``) and
    ``user_clicks`` the items whose neighbours count (see :func:`user_signals`); ``consumed``
    holds the (``user_id``, ``item_id``) pairs never to recommend.
    """
    inputs = RefreshInputs(users=np.asarray(users), active=np.asarray(users), pop=pop,
                           items=items, affinity=affinity, user_clicks=user_clicks,
                           neighbours=neighbours, consumed=consumed, encoder=encoder)
    sizes = pools.default_sizes(per_user, encoder is not None)
    return pools.merged(pools.pooled(np.asarray(users), inputs, sizes))


def top_k(user_ids: np.ndarray, item_ids: np.ndarray, scores: np.ndarray,
          k: int) -> pd.DataFrame:
    """The ``k`` best items per user by score (ties: smaller item id first), rank order kept."""
    df = pd.DataFrame({"user_id": user_ids, "item_id": item_ids, "score": scores})
    df = df.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True])
    return df.groupby("user_id", sort=False).head(k).reset_index(drop=True)


def _encoded(frame: pd.DataFrame,
             pool_names: list[str] | None = None) -> Iterator[tuple[str, bytes]]:
    """Each user's packed list; with ``pool_names``, the index of each item's ``pool`` too."""
    from serving.codec import encode_recs

    users = frame["user_id"].to_numpy()
    items = frame["item_id"].to_numpy()
    scores = frame["score"].to_numpy(dtype=np.float32)
    pools_ = (None if pool_names is None
              else pd.Index(pool_names).get_indexer(frame["pool"]).astype(np.int64))
    bounds = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1, len(users)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        yield str(users[a]), encode_recs(items[a:b], scores[a:b],
                                         None if pools_ is None else pools_[a:b])


@dataclass
class RefreshInputs:
    """Everything the pools (:mod:`pipeline.pools`) need, for every user of one refresh.

    The per-user frames are sorted by ``user_id`` so a chunk of the (sorted) users takes a slice.
    """

    users: np.ndarray  # users who get a personal list, sorted
    active: np.ndarray  # those with impressions in the 7-day feature window, sorted
    pop: pd.Series
    items: pd.DataFrame
    affinity: pd.DataFrame
    user_clicks: pd.DataFrame
    neighbours: pd.DataFrame
    consumed: pd.DataFrame
    new_items: pd.DataFrame = field(default_factory=lambda: RefreshInputs.new_items_default())
    """``item_id`` and ``first_seen`` (a date) of the items first seen in the new-item days."""
    encoder: pools.EncoderSpace | None = None
    """The encoder's user states and item index as of the refresh (None before the first
    encoder, or without the ``embedding`` pool): the ``embedding`` pool's."""

    @staticmethod
    def new_items_default() -> pd.DataFrame:
        """No new items."""
        return pd.DataFrame({"item_id": np.empty(0, np.int64),
                             "first_seen": pd.Series([], dtype=object)})

    def chunk(self, users: np.ndarray) -> RefreshInputs:
        """These inputs for sorted ``users`` only (per-user frames sliced)."""
        def rows(frame: pd.DataFrame) -> pd.DataFrame:
            ids = frame["user_id"].to_numpy()
            a = np.searchsorted(ids, users[0], side="left")
            b = np.searchsorted(ids, users[-1], side="right")
            return frame.iloc[a:b]

        return replace(self, users=users, affinity=rows(self.affinity),
                       user_clicks=rows(self.user_clicks), consumed=rows(self.consumed))


def _read_day(settings: Settings, table: str, date: dt.date, columns: list[str]) -> pd.DataFrame:
    """``columns`` (int64) of one raw partition; empty, with a warning, when it is missing."""
    path = io.partition_path(settings.raw_dir, table, date)
    if not path.exists():
        log.warning("no %s partition for %s; treated as empty", table, date)
        return pd.DataFrame({c: np.empty(0, np.int64) for c in columns})
    return io.read_parquet(path, columns).astype("int64")


def _user_ids(settings: Settings, tables: Iterable[str], dates: list[dt.date]) -> np.ndarray:
    """Distinct users with any row in ``tables`` on ``dates`` (one column read at a time)."""
    seen = [np.empty(0, dtype=np.int64)]
    for table in tables:
        for d in dates:
            seen.append(np.unique(_read_day(settings, table, d, ["user_id"])["user_id"]))
    return np.unique(np.concatenate(seen))


def consumed_pairs(settings: Settings, as_of: dt.date,
                   users: np.ndarray | None = None) -> pd.DataFrame:
    """The distinct (user, item) pairs of ``settings.consumed_tables`` up to ``as_of``.

    Reads every validated date up to ``as_of``, two columns at a time, keeping only ``users``
    (when given) and deduplicating as it goes. Sorted by user.
    """
    from pipeline.landing import valid_dates

    tables = settings.consumed_tables
    dates = sorted({d for t in tables for d in io.list_dates(settings.raw_dir, t) if d <= as_of})
    keep = None if users is None else pd.Index(users)
    parts: list[pd.DataFrame] = [pd.DataFrame({"user_id": np.empty(0, np.int64),
                                               "item_id": np.empty(0, np.int64)})]
    pending = 0
    for d in valid_dates(settings, dates):
        for table in tables:
            df = _read_day(settings, table, d, PAIR)
            if keep is not None:
                df = df[df["user_id"].isin(keep)]
            parts.append(df.drop_duplicates())
            pending += len(parts[-1])
        if pending > 4 * len(parts[0]) + 1_000_000:  # compact now and then
            parts, pending = [pd.concat(parts, ignore_index=True).drop_duplicates()], 0
    out = pd.concat(parts, ignore_index=True).drop_duplicates()
    return out.sort_values(PAIR, kind="stable").reset_index(drop=True)


def first_seen(settings: Settings, as_of: dt.date) -> pd.DataFrame:
    """Items first seen in the ``items`` table within ``settings.new_item_days`` days up to
    ``as_of``: ``item_id``, ``first_seen`` (a date), over every validated date up to ``as_of``.

    Items of the first date of the logs are never new: nothing tells when they appeared.
    """
    from pipeline.landing import valid_dates

    dates = valid_dates(settings, [d for d in io.list_dates(settings.raw_dir, "items")
                                   if d <= as_of])
    start = as_of - dt.timedelta(days=settings.new_item_days - 1)
    seen = np.empty(0, dtype=np.int64)
    new_ids, new_dates = [], []
    for i, d in enumerate(dates):
        ids = np.unique(_read_day(settings, "items", d, ["item_id"])["item_id"].to_numpy())
        fresh = np.setdiff1d(ids, seen, assume_unique=True)
        if i > 0 and d >= start and len(fresh):
            new_ids.append(fresh)
            new_dates += [d] * len(fresh)
        seen = np.union1d(seen, ids)
    ids = np.concatenate(new_ids) if new_ids else np.empty(0, dtype=np.int64)
    return pd.DataFrame({"item_id": ids, "first_seen": pd.Series(new_dates, dtype=object)})


def pool_totals(settings: Settings, as_of: dt.date, users: np.ndarray) -> pd.DataFrame:
    """Per (user, pool) of ``users``: the summed reward and the impressions of the
    ``user_pool`` feature view as of ``as_of`` (28 days of logged outcomes on each pool's
    items; an impression's reward is the weight of its deepest action,
    :data:`models.blending.REWARDS`). Empty when the view is missing or the logs carry no
    pools: every user then reads the pools' prior."""
    from feature_store.pool_view import read_pool_view
    from models.blending import view_totals

    view = read_pool_view(settings.offline_dir, as_of)
    if view is None or view.empty:
        log.info("no pool outcomes as of %s (the impressions carry no pool column, or the "
                 "user_pool view was not built: rerun the ingest DAG for that date): every "
                 "user reads the pools' prior", as_of)
        return pd.DataFrame({"user_id": np.empty(0, np.int64), "pool": np.empty(0, object),
                             "reward": np.empty(0, float), "impressions": np.empty(0, np.int64)})
    return view_totals(view[view["user_id"].isin(pd.Index(users))])


def refresh_inputs(settings: Settings, as_of: dt.date,
                   views: dict[str, pd.DataFrame]) -> RefreshInputs:
    """Read what the candidates of ``as_of`` need: raw events of validated dates only."""
    from pipeline.landing import valid_dates
    from pipeline.sources.base import EVENT_TABLES

    pop = popularity(views["item"])
    items = views["item"][["item_id"]].assign(category=views["item"]["i_category"].astype("int64"))
    active = np.unique(views["user"].loc[views["user"][f"u_impressions_{W}"] > 0,
                                         "user_id"].to_numpy(dtype=np.int64))
    history = valid_dates(settings, io.window(as_of, settings.history_days))
    days = valid_dates(settings, io.window(as_of, max(settings.history_days, WINDOW_DAYS)))
    clicks = io.read_dates(settings.raw_dir, "clicks", days, PAIR, missing_ok=True)
    clicks = clicks.astype({"user_id": "int64", "item_id": "int64"})
    others = [t for t in EVENT_TABLES if t != "clicks"]
    in_history = clicks["date"].isin(set(history)).to_numpy(dtype=bool)
    users = np.unique(np.concatenate([
        active, _user_ids(settings, others, history),
        clicks.loc[in_history, "user_id"].to_numpy(dtype=np.int64)]))

    recent_from = as_of - dt.timedelta(days=WINDOW_DAYS - 1)
    affinity, user_clicks = user_signals(views["user_category"], clicks, items, recent_from)
    neighbours = co_clicks(clicks[(clicks["date"] >= recent_from).to_numpy(dtype=bool)])
    # Items clicked only before the 7-day window get neighbours from the history window.
    stale = np.setdiff1d(user_clicks["item_id"].unique(), neighbours["item_id"].unique())
    if len(stale):
        neighbours = pd.concat([neighbours, co_clicks(clicks, of_items=stale)], ignore_index=True)
    consumed = consumed_pairs(settings, as_of, users)
    log.info("hulk inputs as of %s: %d users with history in %d days (%d active in %d), "
             "%d consumed pairs from %s, %d neighbour pairs", as_of, len(users),
             settings.history_days, len(active), WINDOW_DAYS, len(consumed),
             ",".join(settings.consumed_tables), len(neighbours))
    fresh = (first_seen(settings, as_of) if "new_items" in settings.pool_sizes
             else RefreshInputs.new_items_default())
    from feature_store.definitions import ENCODER_ITEM, ENCODER_USER

    encoder = None
    if "embedding" in settings.pool_sizes:
        if ENCODER_USER in views and ENCODER_ITEM in views:
            t = time.perf_counter()
            encoder = pools.EncoderSpace.of(
                {"user": views[ENCODER_USER], "item": views[ENCODER_ITEM]},
                items["item_id"].to_numpy(), settings.exact_retrieval_up_to, settings.n_threads)
            log.info("hulk: the embedding pool searches %d users' states over %d items (%s, "
                     "%.1fs to build)", len(encoder.user_ids), encoder.index.size,
                     type(encoder.index).__name__, time.perf_counter() - t)
        else:
            log.warning("no encoder embeddings as of %s: the embedding pool is empty "
                        "(pre-training runs in the train DAG)", as_of)
    return RefreshInputs(users=users, active=active, pop=pop, items=items, affinity=affinity,
                         user_clicks=user_clicks, neighbours=neighbours, consumed=consumed,
                         new_items=fresh, encoder=encoder)


@dataclass
class Blender:
    """The blend of one refresh: the pools, their posteriors and the policy's settings."""

    pools: list[str]
    posteriors: pd.DataFrame
    priors: pd.DataFrame
    policy: str
    k: int
    seed: int
    date: dt.date
    min_slots: int
    fixed: list[float]
    order: str = "score"
    new_user_order: str = "even"

    @classmethod
    def from_settings(cls, settings: Settings, as_of: dt.date,
                      totals: pd.DataFrame) -> Blender:
        """The blend of the refresh as of ``as_of`` from per (user, pool) ``totals``
        (:func:`pool_totals`)."""
        from models.blending import posteriors_from_totals

        names = list(settings.pool_sizes)
        post, priors = posteriors_from_totals(totals, names, settings.blend_prior_strength)
        logged = set(totals["pool"].astype(str))
        if missing := [p for p in names if p not in logged]:
            log.warning("no logged outcomes for pool(s) %s: they start at the rate of the "
                        "others; the logs name the pools %s (the impressions' pool column must "
                        "name the refresh's pools for their posteriors to learn)",
                        ",".join(missing), ",".join(sorted(logged)) or "none")
        log.info("blend %s over %s: %d (user, pool) posteriors from %d logged impressions; "
                 "prior means %s", settings.blend, ",".join(names), len(post),
                 int(totals["impressions"].sum()),
                 {p: round(a / (a + b), 4) for p, a, b in zip(
                     priors.index, priors["alpha0"], priors["beta0"], strict=True)})
        return cls(names, post, priors, settings.blend, settings.top_k, settings.seed, as_of,
                   settings.blend_min_slots, settings.fixed_shares, settings.blend_order,
                   settings.blend_new_user_order)

    def lists(self, pooled: pd.DataFrame, scored: pd.DataFrame) -> pd.DataFrame:
        """Every user's blended list (``user_id``, ``item_id``, ``score``, ``pool``, in rank
        order) from the pools' candidates and the champion's scores (``scored``: ``user_id``,
        ``item_id``, ``score``): within each pool the champion's order."""
        from models.blending import blend, rank_by_score

        c = rank_by_score(pooled.merge(scored, on=PAIR), self.pools)
        out, _ = blend(c, self.pools, self.posteriors, self.priors, k=self.k,
                       policy=self.policy, seed=self.seed, date=self.date,
                       min_slots=self.min_slots, fixed=self.fixed, order=self.order,
                       new_user_order=self.new_user_order)
        return out[["user_id", "item_id", "score", "pool"]]


def _scored(pooled: pd.DataFrame, views: dict[str, pd.DataFrame], ranker: Any) -> pd.DataFrame:
    """The champion's score of each distinct (user, item) pair of pooled candidates."""
    from feature_store.compute import join_features

    rows = join_features(pools.merged(pooled), views)
    return rows[PAIR].assign(score=ranker.score(rows))


NEW_USER = -1
"""The user id the cold-start blend is computed for: nobody's, so it has no history."""


def cold_start_blend(settings: Settings, inputs: RefreshInputs,
                     views: dict[str, pd.DataFrame], ranker: Any,
                     blender: Blender) -> pd.DataFrame:
    """The cold-start list of a blended refresh: what the pools give a user without history
    (popular and new items; the others need a history), scored by the champion for a user
    whose features are the defaults, and blended by the pools' prior (a new user's posterior):
    every pool with candidates gets its slots, interleaved evenly whatever
    ``RANKLINE_BLEND_ORDER`` (a user without history has nothing to rank the pools by, so the
    first page shows some of each). Published under the cold-start key, with pools."""
    anon = np.array([NEW_USER], dtype=np.int64)
    part = replace(inputs, users=anon, affinity=inputs.affinity.iloc[0:0],
                   user_clicks=inputs.user_clicks.iloc[0:0], consumed=inputs.consumed.iloc[0:0])
    pooled = pools.pooled(anon, part, settings.pool_sizes)
    out = replace(blender, order="even").lists(pooled, _scored(pooled, views, ranker))
    log.info("hulk: the cold-start list blends %s",
             out["pool"].astype(str).value_counts().to_dict())
    return out.assign(user_id=COLD_START)


def scored_pools(settings: Settings, inputs: RefreshInputs, views: dict[str, pd.DataFrame],
                 ranker: Any, t0: float | None = None,
                 ) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """Every user's pooled candidates and their scores, a chunk of users at a time:
    ``(pooled, scored)`` with pooled as :func:`pipeline.pools.pooled` and scored ``user_id``,
    ``item_id``, ``score`` (one row per distinct pair). Chunks hold about
    ``score_batch_rows`` candidates; progress (rows/s, ETA) is logged after each."""
    t0 = time.perf_counter() if t0 is None else t0
    sizes, users = settings.pool_sizes, inputs.users
    chunk = max(1, settings.score_batch_rows // sum(sizes.values()))
    scored = 0
    for i in range(0, len(users), chunk):
        part = inputs.chunk(users[i:i + chunk])
        pooled = pools.pooled(part.users, part, sizes)
        rows = _scored(pooled, views, ranker)
        yield pooled, rows
        scored += len(rows)
        done = min(i + chunk, len(users))
        rate = scored / (time.perf_counter() - t0)
        eta = (len(users) - done) / max(done, 1) * (time.perf_counter() - t0)
        log.info("hulk: %d/%d users, %d rows scored (%.0f rows/s, ETA %.0fs)",
                 done, len(users), scored, rate, eta)


def refresh(settings: Settings, as_of: dt.date, model_uri: str,
            model_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score every recent user's candidates with the model and publish the top-k lists.

    Returns a summary (store version, users, rows scored, rates) for XCom and MLflow.
    """
    from feature_store.offline import read_views
    from models.registry import load_ranker
    from pipeline.landing import require_valid
    from serving.backends import open_store

    require_valid(settings, [as_of], f"the refresh as of {as_of}")
    t0 = time.perf_counter()
    views = read_views(settings.offline_dir, as_of)
    ranker = load_ranker(model_uri, settings.n_threads)  # checks the feature contract
    inputs = refresh_inputs(settings, as_of, views)
    users = inputs.users
    if len(users) == 0:
        raise RuntimeError(f"no users with events in the {settings.history_days} days up to "
                           f"{as_of}: nothing to refresh")
    inactive = int(len(users) - np.isin(users, inputs.active).sum())
    log.info("hulk: %d users get personal lists, %d of them inactive in the last %d days",
             len(users), inactive, WINDOW_DAYS)

    sizes = settings.pool_sizes
    blender = None if settings.blend == "merged" else Blender.from_settings(
        settings, as_of, pool_totals(settings, as_of, users))
    results, scored = [], 0
    for pooled, rows in scored_pools(settings, inputs, views, ranker, t0):
        if blender is None:
            results.append(top_k(rows["user_id"].to_numpy(), rows["item_id"].to_numpy(),
                                 rows["score"].to_numpy(), settings.top_k))
        else:
            results.append(blender.lists(pooled, rows))
        scored += len(rows)
    recs = pd.concat(results, ignore_index=True)
    t_score = time.perf_counter() - t0

    if blender is None:
        cold = inputs.pop.head(settings.top_k)
        cold_frame = pd.DataFrame({"user_id": COLD_START, "item_id": cold.index.to_numpy(),
                                   "score": cold.to_numpy(dtype=np.float32)})
    else:
        cold_frame = cold_start_blend(settings, inputs, views, ranker, blender)
    meta = {"model_uri": model_uri, "as_of": as_of.isoformat(), "k": settings.top_k,
            "users": int(len(users)), "sample_user": str(users[0]), "blend": settings.blend,
            "pools": sizes, **(model_meta or {})}
    if blender is not None:
        share = recs["pool"].value_counts(normalize=True).reindex(list(sizes), fill_value=0)
        meta["pool_share"] = {p: round(float(v), 4) for p, v in share.items()}
        meta["pool_names"] = list(sizes)

    def items_iter() -> Iterator[tuple[str, bytes]]:
        yield from _encoded(cold_frame, None if blender is None else list(sizes))
        yield from _encoded(recs, None if blender is None else list(sizes))

    store = open_store(settings)
    try:
        t1 = time.perf_counter()
        info = store.publish(NAMESPACE, items_iter(), meta=meta, keep=settings.keep_versions)
        t_pub = time.perf_counter() - t1
    finally:
        store.close()
    summary = {"store_version": info.version, "users": int(len(users)),
               "users_inactive_7d": inactive, "consumed_pairs": int(len(inputs.consumed)),
               "keys": info.n_keys, "rows_scored": int(scored),
               "score_rows_per_s": round(scored / t_score, 1),
               "publish_keys_per_s": round(info.n_keys / max(t_pub, 1e-9), 1),
               "seconds": round(time.perf_counter() - t0, 2), **meta}
    log.info("hulk refresh published %s version %d: %s", NAMESPACE, info.version, summary)
    return summary
