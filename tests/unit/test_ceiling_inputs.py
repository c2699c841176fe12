"""What the fair ceiling reads from the raw logs (pipeline.training.last_shown): no look-ahead."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa

from feature_store import io
from pipeline.settings import Settings
from pipeline.training import last_shown

D = dt.date(2026, 3, 10)


def test_last_shown_is_the_users_last_day_with_impressions_before_the_rows_date(tmp_path):
    s = Settings(home=tmp_path)
    shown = {D - dt.timedelta(days=40): [4],  # beyond the 28-day window: not read
             D - dt.timedelta(days=5): [1, 2],
             D - dt.timedelta(days=2): [1],
             D: [3]}  # the row's own date: not before it
    for day, users in shown.items():
        io.write_table(pa.table({"user_id": pa.array(users, pa.int64())}),
                       io.partition_path(s.raw_dir, "impressions", day))
    rows = pd.DataFrame({"user_id": [1, 2, 3, 4, 1],
                         "date": [D, D, D, D, D - dt.timedelta(days=3)]})
    got = last_shown(s, rows).tolist()
    assert got == [(D - dt.timedelta(days=2)).toordinal(), (D - dt.timedelta(days=5)).toordinal(),
                   0, 0, (D - dt.timedelta(days=5)).toordinal()]
