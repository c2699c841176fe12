"""The ``user_sequence`` view: each user's engaged items in time order, as of the end of a date.

The neural families read a user's history as a sequence (``models.sequence``). The partition for
date D holds, per user with any click up to the end of D, the ids of the last
:data:`~feature_store.definitions.SEQ_KEEP` clicked items, oldest first (a click is the
engagement every add-to-cart and purchase follows, so each engaged item counts once per click).
It is built from D-1's partition plus D's clicks, or from every usable date up to D when D-1 has
none. Rows of date D join the partition as of D-1 (:func:`feature_store.compute.join_features`),
like every other view: nothing of D reaches D's rows.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from feature_store import io
from feature_store.definitions import SEQ_KEEP, SEQUENCE_VERSION, SEQUENCE_VIEW

log = logging.getLogger(__name__)


def sequence_root(offline_dir: Path) -> Path:
    """Folder of the view's partitions."""
    return Path(offline_dir) / SEQUENCE_VIEW / SEQUENCE_VERSION


def extend(base: pd.DataFrame, events: pd.DataFrame, keep: int = SEQ_KEEP) -> pd.DataFrame:
    """``base`` sequences (``user_id``, ``seq``) extended by ``events`` (``user_id``,
    ``item_id``, ``ts``) in time order, each cut to its last ``keep`` items (pure)."""
    old = base.explode("seq").dropna(subset=["seq"]).rename(columns={"seq": "item_id"})
    old = old.assign(_order=old.groupby("user_id").cumcount().astype("int64"), _ts=0)
    new = events.sort_values(["ts", "item_id"], kind="stable")
    new = pd.DataFrame({"user_id": new["user_id"].to_numpy(), "item_id": new["item_id"].to_numpy(),
                        "_order": keep + 1 + np.arange(len(new)), "_ts": 1})
    both = pd.concat([old[["user_id", "item_id", "_order", "_ts"]], new], ignore_index=True)
    both = both.sort_values(["user_id", "_ts", "_order"], kind="stable")
    both = both.groupby("user_id", sort=True).tail(keep)
    both["item_id"] = both["item_id"].astype("int64")
    seq = both.groupby("user_id", sort=True)["item_id"].agg(lambda s: s.to_numpy())
    return pd.DataFrame({"user_id": seq.index.to_numpy(np.int64), "seq": seq.to_numpy()})


def build_sequences(raw_dir: Path, offline_dir: Path, date: dt.date,
                    usable: Callable[[dt.date], bool] | None = None,
                    keep: int = SEQ_KEEP) -> str:
    """Write the view's partition as of the end of ``date`` (an overwrite on rerun)."""
    root = sequence_root(offline_dir)
    prev = io.partition_path(root, "", date - dt.timedelta(days=1))
    if prev.exists():
        base, days = io.read_parquet(prev), [date]
    else:  # the first date, or after a gap: every usable date so far
        base = pd.DataFrame({"user_id": pd.Series(dtype="int64"), "seq": pd.Series(dtype=object)})
        days = [d for d in io.list_dates(raw_dir, "clicks")
                if d <= date and (usable is None or usable(d))]
    clicks = io.read_dates(raw_dir, "clicks", days, missing_ok=True,
                           columns=["user_id", "item_id", "ts"])
    out = extend(base, clicks, keep)
    log.info("user sequences as of %s: %d users, %d items (from %s)", date, len(out),
             int(out["seq"].map(len).sum()) if len(out) else 0,
             "the day before" if prev.exists() else f"{len(days)} date(s)")
    return str(io.write_partition(out, root, "", date))


def read_sequences(offline_dir: Path, as_of: dt.date) -> pd.DataFrame | None:
    """The view as of the end of ``as_of`` (``user_id``, ``seq``); None if never built."""
    path = io.partition_path(sequence_root(offline_dir), "", as_of)
    return io.read_parquet(path) if path.exists() else None
