"""Date-partitioned Parquet I/O: ``<root>/<table>/date=YYYY-MM-DD/part-0.parquet``.

Every write goes to a temporary file in the partition folder and is renamed into place, so a
reader sees the old partition or the new one, and a rerun is an overwrite.

The offline store's partitions and the pipeline's raw, staged and quarantined tables share this
format, so it lives in ``feature_store`` (which imports nothing from ``pipeline``) and the
pipeline imports it from here.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

PART = "part-0.parquet"


def partition_dir(root: Path, table: str, date: dt.date) -> Path:
    """The folder of one table's partition for one date."""
    return Path(root) / table / f"date={date.isoformat()}"


def partition_path(root: Path, table: str, date: dt.date) -> Path:
    """The Parquet file of one table's partition for one date."""
    return partition_dir(root, table, date) / PART


def write_table(table: pa.Table, path: Path) -> Path:
    """Write an Arrow table atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_partition(
    df: pd.DataFrame, root: Path, table: str, date: dt.date, schema: pa.Schema | None = None
) -> Path:
    """Write one partition (replacing any previous one) and return its path."""
    arrow = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    return write_table(arrow, partition_path(root, table, date))


def read_parquet(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read one Parquet file with pyarrow (2-3x faster than ``pandas.read_parquet``)."""
    return pq.read_table(path, columns=columns).to_pandas()


def has_partition(root: Path, table: str, date: dt.date) -> bool:
    """Whether a partition exists."""
    return partition_path(root, table, date).exists()


def read_partition(
    root: Path, table: str, date: dt.date, columns: list[str] | None = None
) -> pd.DataFrame:
    """Read one partition; a missing one is an error that names the path."""
    path = partition_path(root, table, date)
    if not path.exists():
        raise FileNotFoundError(f"missing partition {table} for {date}: {path}")
    return read_parquet(path, columns)


def read_dates(
    root: Path,
    table: str,
    dates: Iterable[dt.date],
    columns: list[str] | None = None,
    missing_ok: bool = False,
) -> pd.DataFrame:
    """Concatenate the partitions of several dates, adding a ``date`` column."""
    frames = []
    for d in dates:
        path = partition_path(root, table, d)
        if not path.exists():
            if missing_ok:
                log.warning("no %s partition for %s; treated as empty", table, d)
                continue
            raise FileNotFoundError(f"missing partition {table} for {d}: {path}")
        t = pq.read_table(path, columns=columns)
        t = t.append_column("date", pa.array([d] * t.num_rows, type=pa.date32()))
        frames.append(t)
    if not frames:
        return pd.DataFrame(columns=[*(columns or []), "date"])
    return pa.concat_tables(frames, promote_options="default").to_pandas()


def list_dates(root: Path, table: str) -> list[dt.date]:
    """Dates for which a table has a partition, oldest first."""
    base = Path(root) / table
    if not base.exists():
        return []
    out = []
    for p in base.glob("date=*"):
        if (p / PART).exists():
            out.append(dt.date.fromisoformat(p.name.removeprefix("date=")))
    return sorted(out)


def window(end: dt.date, days: int) -> list[dt.date]:
    """The ``days`` dates ending with ``end`` (inclusive), oldest first."""
    return [end - dt.timedelta(days=days - 1 - i) for i in range(days)]
