"""The offline store: date-partitioned Parquet, one folder per view and version.

``offline/<view>/<version>/date=D/part-0.parquet`` holds the view's values as of the end of D,
computed from raw events of the window ending with D. Reading "as of D-1" for D's training rows is
what keeps the join point-in-time correct: nothing from D's events can reach D's rows.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from feature_store import io
from feature_store.compute import compute_views
from feature_store.definitions import (
    LONG_WINDOW_DAYS,
    SEQUENCE_VIEW,
    VIEWS,
    WINDOW_DAYS,
    FeatureView,
)
from feature_store.embeddings import read_embeddings
from feature_store.pool_view import POOL_VIEW, build_pool_view
from feature_store.sequences import build_sequences, read_sequences

log = logging.getLogger(__name__)


def view_root(offline_dir: Path, view: FeatureView) -> Path:
    """Folder of one view's partitions."""
    return Path(offline_dir) / view.name / view.version


def build_features(
    raw_dir: Path, offline_dir: Path, date: dt.date,
    usable: Callable[[dt.date], bool] | None = None,
) -> dict[str, str]:
    """Compute every view as of the end of ``date`` and write its partition (overwriting).

    Reads only raw partitions of the windows ending with ``date`` (``WINDOW_DAYS`` and
    ``LONG_WINDOW_DAYS``); with ``usable`` (the caller's "did this date pass validation"), only
    the days it accepts: the others are logged and count as days without events, as do days
    before the first ingested date. ``date`` itself must be usable.
    """
    days = io.window(date, WINDOW_DAYS)
    present = set(io.list_dates(raw_dir, "impressions"))
    older = [d for d in io.window(date, LONG_WINDOW_DAYS)[:-WINDOW_DAYS] if d in present]
    if usable is not None:
        if not usable(date):
            raise ValueError(f"features as of {date}: that date's raw data is not usable")
        skipped = [d for d in days + older if not usable(d)]
        if skipped:
            log.warning("features as of %s skip unvalidated days %s", date, skipped)
        days = [d for d in days if d not in skipped]
        older = [d for d in older if d not in skipped]
    users = io.read_partition(raw_dir, "users", date)
    items = io.read_partition(raw_dir, "items", date)
    columns = {"impressions": ["event_id", "user_id", "item_id", "position"],
               "clicks": ["user_id", "item_id", "impression_id"],
               "add_to_cart": ["user_id", "item_id"], "purchases": ["user_id", "item_id"]}
    ev = {t: io.read_dates(raw_dir, t, days, missing_ok=True, columns=cols)
          for t, cols in columns.items()}
    old = {t: io.read_dates(raw_dir, t, older, missing_ok=True, columns=columns[t])
           for t in ("impressions", "clicks", "purchases")}
    covered = len([d for d in days if d in present]) + len(older)
    views = compute_views(users, items, ev["impressions"], ev["clicks"], ev["add_to_cart"],
                          ev["purchases"], old, long_days=max(covered, 1), as_of=date)
    paths = {}
    for view in VIEWS:
        df = views[view.name]
        paths[view.name] = str(io.write_partition(df, view_root(offline_dir, view), "", date))
        log.info("features %s as of %s: %d rows", view.name, date, len(df))
    paths[SEQUENCE_VIEW] = build_sequences(raw_dir, offline_dir, date, usable)
    paths[POOL_VIEW] = build_pool_view(raw_dir, offline_dir, date, usable)
    return paths


def read_views(offline_dir: Path, as_of: dt.date) -> dict[str, pd.DataFrame]:
    """Every view as of the end of ``as_of``; a clear error if that date was never built."""
    out = {}
    for view in VIEWS:
        root = view_root(offline_dir, view)
        path = io.partition_path(root, "", as_of)
        if not path.exists():
            raise FileNotFoundError(
                f"no features of view {view.name} ({view.version}) as of {as_of}: {path}; "
                "run the ingest DAG for that date first"
            )
        out[view.name] = io.read_parquet(path)
    seqs = read_sequences(offline_dir, as_of)  # absent in stores built before the view existed
    if seqs is not None:
        out[SEQUENCE_VIEW] = seqs
    out |= read_embeddings(offline_dir, as_of) or {}  # absent before the first encoder
    return out


def feature_dates(offline_dir: Path) -> list[dt.date]:
    """Dates for which every view has a partition."""
    sets = [set(io.list_dates(view_root(offline_dir, v), "")) for v in VIEWS]
    return sorted(set.intersection(*sets)) if sets else []
