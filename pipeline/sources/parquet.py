"""Any Parquet location laid out as ``<root>/<table>/date=D/*.parquet`` (local or fsspec URI)."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.dataset as ds

from pipeline.sources.base import TABLES, DataSource


class ParquetSource(DataSource):
    """Copies one date's partitions from an existing Parquet location."""

    name = "parquet"

    def __init__(self, uri: str) -> None:
        if not uri:
            raise ValueError("source=parquet needs RANKLINE_SOURCE_URI (the root of the tables)")
        self.uri = uri.rstrip("/")

    def frames(self, date: dt.date) -> dict[str, pa.Table]:
        out = {}
        for table in TABLES:
            where = f"{self.uri}/{table}/date={date.isoformat()}"
            try:
                out[table] = ds.dataset(where, format="parquet").to_table()
            except (FileNotFoundError, OSError) as exc:
                raise FileNotFoundError(f"source has no {table} partition for {date}: {where}") from exc
        return out
