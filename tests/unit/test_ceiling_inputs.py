"""What the fair ceiling reads from the raw logs (pipeline.training.logged_history): no look-ahead."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa

from feature_store import io
from pipeline.settings import Settings
from pipeline.training import logged_history

D = dt.date(2026, 3, 10)


def test_last_shown_is_the_users_last_day_with_impressions_before_the_rows_date(tmp_path):
    s = Settings(home=tmp_path)
    shown = {D - dt.timedelta(days=40): [4],  # beyond the 28-day window: not read
             D - dt.timedelta(days=5): [1, 2],
             D - dt.timedelta(days=2): [1],
             D: [3]}  # the row's own date: not before it
    for day, users in shown.items():
        ids = pa.array(users, pa.int64())
        io.write_table(pa.table({"user_id": ids}), io.partition_path(s.raw_dir, "impressions", day))
        io.write_table(pa.table({"user_id": ids, "item_id": ids}),
                       io.partition_path(s.raw_dir, "clicks", day))
    rows = pd.DataFrame({"user_id": [1, 2, 3, 4, 1],
                         "date": [D, D, D, D, D - dt.timedelta(days=3)]})
    last, clicks = logged_history(s, rows)
    got = last.tolist()
    assert got == [(D - dt.timedelta(days=2)).toordinal(), (D - dt.timedelta(days=5)).toordinal(),
                   0, 0, (D - dt.timedelta(days=5)).toordinal()]
    # the clicks of the 28 days before the earliest date up to the day before the latest
    assert sorted(clicks["date"].unique()) == [D - dt.timedelta(days=5), D - dt.timedelta(days=2)]
