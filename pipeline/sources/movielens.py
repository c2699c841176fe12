"""MovieLens-100K (shipped in the ``recbole`` package) replayed by rating timestamp.

Logical date ``start_date + n`` replays the ratings of the n-th day of the data set (UTC). Each
rating is an impression in a request that groups one user's ratings of that day, ordered by time;
a rating of 3 or more is also a click, 4 or more an add-to-cart, 5 a purchase (the funnel tables
come from :func:`pipeline.sources.derive.derive_events`, as for the ``interactions`` source).
Items carry their first genre as category and a unit price (the data set has none).
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.event_labels import parse_event_labels
from pipeline.sources.base import DataSource, conform
from pipeline.sources.derive import derive_events

RATING_LABELS_SETTING = "value>=3:1,value>=4:2,value>=5:3"
"""``RANKLINE_EVENT_LABELS`` of MovieLens ratings (also for :func:`export_interactions`)."""
RATING_LABELS = parse_event_labels(RATING_LABELS_SETTING)
"""A rating of 3 or more is a click, 4 or more an add-to-cart, 5 a purchase."""


def movielens_dir() -> Path:
    """Where the ``recbole`` package keeps ml-100k; a clear error when it is not installed."""
    try:
        import recbole
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "source=movielens needs the recbole package: pip install --no-deps recbole"
        ) from exc
    return Path(recbole.__file__).parent / "dataset_example" / "ml-100k"


@lru_cache(maxsize=1)
def _load() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    base = movielens_dir()

    def read(name: str) -> pd.DataFrame:
        df = pd.read_csv(base / f"ml-100k.{name}", sep="\t")
        df.columns = [c.split(":")[0] for c in df.columns]
        return df

    inter, items, users = read("inter"), read("item"), read("user")
    inter["day"] = (inter["timestamp"] // 86_400).astype(np.int64)
    genres = items["class"].fillna("unknown").str.split(" ").str[0]
    items["category"] = pd.Categorical(genres).codes.astype(np.int32)
    return inter.sort_values(["timestamp", "user_id", "item_id"]), items, users


def ratings() -> pd.DataFrame:
    """Every ML-100K rating (``user_id``, ``item_id``, ``rating``, ``timestamp``) in the file's
    order: a copy, for benchmarks outside the daily replay. Many ratings share a timestamp
    (44% of users' last two); a stable sort by time keeps the file's order among them, as
    RecBole's split does (sorting ties by item id moves rarer, higher ids to the end)."""
    inter, _, _ = _load()
    return inter.sort_index()[["user_id", "item_id", "rating", "timestamp"]].reset_index(drop=True)


def dimensions() -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(items, users)`` of ML-100K as loaded (items carry ``category``, the first genre's
    code): copies."""
    _, items, users = _load()
    return items.copy(), users.copy()


class MovieLensSource(DataSource):
    """MovieLens-100K, one data-set day per logical date."""

    name = "movielens"

    def __init__(self, start_date: dt.date) -> None:
        self.start_date = start_date

    def frames(self, date: dt.date) -> dict[str, pa.Table]:
        inter, items, users = _load()
        day = int(inter["day"].min()) + (date - self.start_date).days
        ev = inter[inter["day"] == day].copy()
        users_t = pa.table({
            "user_id": users["user_id"].astype(np.int64),
            "region": users["zip_code"].astype(str).str[:1],
            "age_band": np.clip(users["age"] // 10, 0, 9).astype(np.int8),
            "signup_date": [dt.date(1997, 9, 1)] * len(users),
        })
        items_t = pa.table({
            "item_id": items["item_id"].astype(np.int64),
            "category": items["category"],
            "price": np.ones(len(items)),
        })
        # replayed on the logical date: the rating's time of day, on date D (UTC)
        seconds = ev["timestamp"].astype(np.int64) - day * 86_400
        log = pd.DataFrame({
            "user_id": ev["user_id"].to_numpy(np.int64),
            "item_id": ev["item_id"].to_numpy(np.int64),
            "ts": pd.Timestamp(date, tz="UTC") + pd.to_timedelta(seconds.to_numpy(), unit="s"),
            "label": RATING_LABELS.labels(ev.rename(columns={"rating": "value"})),
        })
        return {**conform({"users": users_t, "items": items_t}), **derive_events(log, date)}


def export_interactions(lake: str | Path, days: int, start_date: dt.date) -> list[dt.date]:
    """Write MovieLens-100K as a generic interaction log under ``lake/interactions/date=D/``.

    The first ``days`` data-set days that have ratings become logical dates ``start_date``,
    ``start_date + 1``, ... (days without a rating are skipped: an empty day fails validation).
    Columns: ``user_id``, ``item_id``, ``ts`` (the rating's time of day on the logical date, UTC),
    ``event_type="rating"``, ``value`` (the rating) and ``category`` (the first genre). Read it
    with ``RANKLINE_SOURCE=interactions`` and ``RANKLINE_EVENT_LABELS=`` the thresholds of
    :data:`RATING_LABELS`. Returns the logical dates written; a rerun overwrites them.
    """
    import pyarrow.parquet as pq

    inter, items, _ = _load()
    category = items.set_index("item_id")["category"]
    present = sorted(inter["day"].unique())[:days]
    dates = []
    for k, day in enumerate(present):
        date = start_date + dt.timedelta(days=k)
        ev = inter[inter["day"] == day]
        seconds = (ev["timestamp"] - day * 86_400).to_numpy(np.int64)
        table = pa.Table.from_pandas(pd.DataFrame({
            "user_id": ev["user_id"].to_numpy(np.int64),
            "item_id": ev["item_id"].to_numpy(np.int64),
            "ts": pd.Timestamp(date, tz="UTC") + pd.to_timedelta(seconds, unit="s"),
            "event_type": "rating",
            "value": ev["rating"].to_numpy(np.float64),
            "category": category.reindex(ev["item_id"]).fillna(0).to_numpy(np.int32),
        }), preserve_index=False)
        path = Path(lake) / "interactions" / f"date={date}" / "part-0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        dates.append(date)
    return dates

