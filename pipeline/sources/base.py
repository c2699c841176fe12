"""The data-source interface and the raw tables every source writes.

A source writes one logical date's raw partitions (``raw/<table>/date=D/part-0.parquet``).
Dimension tables (users, items) are written as a daily snapshot; event tables hold the events
of that date only. Event and request ids are unique across dates.
"""

from __future__ import annotations

import abc
import datetime as dt
from pathlib import Path

import pyarrow as pa

from feature_store import io

TS = pa.timestamp("us", tz="UTC")

RAW_SCHEMAS: dict[str, pa.Schema] = {
    "users": pa.schema(
        [("user_id", pa.int64()), ("region", pa.string()), ("age_band", pa.int8()),
         ("signup_date", pa.date32())]
    ),
    "items": pa.schema(
        [("item_id", pa.int64()), ("category", pa.int32()), ("price", pa.float64())]
    ),
    "impressions": pa.schema(
        [("event_id", pa.int64()), ("request_id", pa.int64()), ("user_id", pa.int64()),
         ("item_id", pa.int64()), ("position", pa.int16()), ("ts", TS)]
    ),
    "clicks": pa.schema(
        [("event_id", pa.int64()), ("impression_id", pa.int64()), ("request_id", pa.int64()),
         ("user_id", pa.int64()), ("item_id", pa.int64()), ("ts", TS)]
    ),
    "add_to_cart": pa.schema(
        [("event_id", pa.int64()), ("click_id", pa.int64()), ("request_id", pa.int64()),
         ("user_id", pa.int64()), ("item_id", pa.int64()), ("ts", TS)]
    ),
    "purchases": pa.schema(
        [("event_id", pa.int64()), ("click_id", pa.int64()), ("request_id", pa.int64()),
         ("user_id", pa.int64()), ("item_id", pa.int64()), ("price", pa.float64()),
         ("ts", TS)]
    ),
}
OPTIONAL_COLUMNS: dict[str, pa.Schema] = {
    "items": pa.schema([("line", pa.int64())]),
    "impressions": pa.schema([("pool", pa.string()), ("propensity", pa.float64())]),
}
"""Columns a table may carry: an item's product line (``line``: a brand's range, "this maker's
tents"; the feature views of recent activity per line read it, and an item without one is its
own line); an impression's provenance, the candidate pool that produced the shown item
(``pool``) and the probability with which the logging policy showed it to the request
(``propensity``, in (0, 1]): what blending posteriors and off-policy estimates read."""
TABLES: tuple[str, ...] = tuple(RAW_SCHEMAS)


def table_schema(table: str, names: list[str] | tuple[str, ...] = ()) -> pa.Schema:
    """``table``'s raw schema, plus the optional columns among ``names``."""
    schema = RAW_SCHEMAS[table]
    for f in OPTIONAL_COLUMNS.get(table, pa.schema([])):
        if f.name in names:
            schema = schema.append(f)
    return schema
EVENT_TABLES: tuple[str, ...] = ("impressions", "clicks", "add_to_cart", "purchases")

ID_STRIDE = 1_000_000_000
"""Event and request ids of date D start at ``D.toordinal() * ID_STRIDE``: unique across dates."""


def id_base(date: dt.date) -> int:
    """First event/request id of a date."""
    return date.toordinal() * ID_STRIDE


def conform(tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """Select and cast each table to its raw schema, optional columns kept where present (for
    sources that build their own tables)."""
    out = {}
    for t, data in tables.items():
        schema = table_schema(t, data.column_names)
        out[t] = data.select(schema.names).cast(schema)
    return out


class DataSource(abc.ABC):
    """Writes one logical date's raw partitions."""

    name: str

    @abc.abstractmethod
    def frames(self, date: dt.date) -> dict[str, pa.Table]:
        """The raw tables of ``date``, each with its schema from :data:`RAW_SCHEMAS`."""

    def acquire(self, date: dt.date, raw_dir: Path) -> dict[str, str]:
        """Write ``date``'s raw partitions as the source gives them (validation judges them).

        A rerun overwrites the same partitions with what the source gives again.
        """
        out = {}
        for table, data in self.frames(date).items():
            out[table] = str(io.write_table(data, io.partition_path(raw_dir, table, date)))
        return out

    def oracle(self, user_ids, item_ids, request_ids):  # noqa: ANN001, ANN201 - arrays in and out
        """True relevance of (user, item) pairs in their requests (whose ids carry the date,
        :func:`id_base`), where the source knows it; else ``None``."""
        return None

    def ceiling(self, user_ids, item_ids, request_ids, last_shown, clicks=None):  # noqa: ANN001, ANN201
        """The best relevance estimate a ranker could have from the logs up to the day before
        each request (``last_shown``: the ordinal of the user's last day with impressions, 0
        for none; ``clicks``: the logged clicks, ``user_id``, ``item_id``, ``date``), where the
        source knows it; else ``None``: the fair denominator of ``best/ceiling`` (the oracle
        knows what happens on the request's day itself)."""
        return None
