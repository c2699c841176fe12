"""A corpus of bad raw partitions: a valid day with one fault each, and what validation must say.

Each :class:`Case` damages the tables of a clean day (Arrow tables, as a source gives them) and
names the substrings the failure lines must contain; where the fault is in one row, ``table`` and
``row`` say which row's id the failure line must show. Use it as::

    paths = make_case("click_before_impression", settings, source, date)
    report = validate_tables(paths, date, report_dir)
    assert not report.success and caught(case(name), report.failures, date)

or, with a clean day computed once, :func:`write_case`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feature_store import io
from pipeline.sources.base import EVENT_TABLES, TABLES
from pipeline.sources.parquet import ParquetSource

Frames = dict[str, pa.Table]
Damage = Callable[[Frames, Path, dt.date], Frames]
HOUR = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Case:
    """One kind of fault: how to make it, what the failure lines must say, which row they name."""

    name: str
    damage: Damage
    expected: tuple[str, ...]
    table: str | None = None
    row: int | None = None

    def expected_for(self, date: dt.date) -> tuple[str, ...]:
        """The expected substrings for logical date ``date`` (``{date}`` filled in)."""
        return tuple(e.replace("{date}", date.isoformat()) for e in self.expected)


def _set(t: pa.Table, column: str, values: pa.Array | list) -> pa.Table:
    i = t.schema.get_field_index(column)
    field = t.schema.field(i)
    array = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values, field.type)
    return t.set_column(i, field.with_type(array.type), array)


def _set_row(t: pa.Table, column: str, row: int, value: object) -> pa.Table:
    values = t[column].to_pylist()
    values[row] = value
    return _set(t, column, values)


def _one(table: str, fn: Callable[[pa.Table], pa.Table]) -> Damage:
    """A damage of one table only."""
    def damage(frames: Frames, workdir: Path, date: dt.date) -> Frames:
        return {**frames, table: fn(frames[table])}
    return damage


def _ts_of(t: pa.Table, event_id: int) -> dt.datetime:
    return t["ts"].filter(pc.equal(t["event_id"], event_id))[0].as_py()


def _click_before_impression(frames: Frames, workdir: Path, date: dt.date) -> Frames:
    """Move the first click's impression an hour later: the click now comes an hour before it."""
    clicks, imp = frames["clicks"], frames["impressions"]
    imp_id = clicks["impression_id"][0].as_py()
    later = [ts + HOUR if e == imp_id else ts
             for e, ts in zip(imp["event_id"].to_pylist(), imp["ts"].to_pylist(), strict=True)]
    return {**frames, "impressions": _set(imp, "ts", later)}


def _cart_before_click(frames: Frames, workdir: Path, date: dt.date) -> Frames:
    """The first add-to-cart one second before its click."""
    carts = frames["add_to_cart"]
    ts = _ts_of(frames["clicks"], carts["click_id"][0].as_py()) - dt.timedelta(seconds=1)
    return {**frames, "add_to_cart": _set_row(carts, "ts", 0, ts)}


def _empty_day(frames: Frames, workdir: Path, date: dt.date) -> Frames:
    return {t: (data.slice(0, 0) if t in EVENT_TABLES else data) for t, data in frames.items()}


def _non_utf8(t: pa.Table) -> pa.Table:
    """users.region of the first user as bytes that are not UTF-8, typed as string."""
    raw = [b"\xff\xfe\xfa" if i == 0 else v.encode() for i, v in enumerate(t["region"].to_pylist())]
    return _set(t, "region", pa.array(raw, pa.binary()).view(pa.string()))


def _via_parquet_source(table: str, second: Callable[[pa.Table], pa.Table]) -> Damage:
    """Lay the day out as a Parquet source with ``table`` split into two part files, the second
    changed by ``second``, and read it back through :class:`ParquetSource`."""
    def damage(frames: Frames, workdir: Path, date: dt.date) -> Frames:
        root = workdir / "source"
        for name, data in frames.items():
            folder = io.partition_dir(root, name, date)
            if name != table:
                io.write_table(data, folder / "part-0.parquet")
                continue
            half = data.num_rows // 2
            io.write_table(data.slice(0, half), folder / "part-0.parquet")
            io.write_table(second(data.slice(half)), folder / "part-1.parquet")
        return ParquetSource(str(root)).frames(date)
    return damage


def _shift(t: pa.Table, delta: dt.timedelta) -> pa.Table:
    return _set(t, "ts", pc.add(t["ts"], pa.scalar(delta, pa.duration("us"))))


def _missing_file(frames: Frames, workdir: Path, date: dt.date) -> Frames:
    return {t: data for t, data in frames.items() if t != "clicks"}


CORRUPT = "corrupt"
"""A table mapped to this marker is written as bytes that are not Parquet at all."""


def _corrupt_items(frames: Frames, workdir: Path, date: dt.date) -> Frames:
    return {**frames, "items": CORRUPT}  # type: ignore[dict-item]


CASES: list[Case] = [
    Case("ts_months_later", _one("purchases", lambda t: _set_row(
        t, "ts", 0, t["ts"][0].as_py() + dt.timedelta(days=90))),
        ("purchases.ts lies within {date} (UTC) — 1 unexpected",), "purchases", 0),
    Case("ts_months_earlier", _one("impressions", lambda t: _shift(t, -dt.timedelta(days=120))),
         ("impressions.ts lies within {date} (UTC)",), "impressions", 0),
    Case("ts_without_timezone", _one("clicks", lambda t: _set(t, "ts", t["ts"].cast(pa.timestamp("us")))),
         ("clicks.ts is Timestamp — observed 'datetime64'",)),
    Case("ts_in_nanoseconds_berlin", _one("clicks", lambda t: _set(
        t, "ts", t["ts"].cast(pa.timestamp("ns", tz="Europe/Berlin")))),
         ("clicks.ts has Arrow type timestamp[us, tz=UTC] — found timestamp[ns, tz=Europe/Berlin]",)),
    Case("reserved_column_name", _one("impressions", lambda t: t.append_column(
        "_user_known", pa.array([True] * t.num_rows))),
         ("impressions: column names starting with '_' are reserved for checks — found ['_user_known']",)),
    Case("empty_day", _empty_day, ("impressions has at least one row",)),
    Case("empty_items", _one("items", lambda t: t.slice(0, 0)), ("items has at least one row",)),
    Case("nan_item_price", _one("items", lambda t: _set_row(t, "price", 0, float("nan"))),
         ("items.price is never null — 1 unexpected",), "items", 0),
    Case("null_purchase_price", _one("purchases", lambda t: _set_row(t, "price", 0, None)),
         ("purchases.price is never null — 1 unexpected",), "purchases", 0),
    Case("null_user_in_impressions", _one("impressions", lambda t: _set_row(t, "user_id", 0, None)),
         ("impressions.user_id is never null — 1 unexpected",), "impressions", 0),
    Case("megabyte_region", _one("users", lambda t: _set_row(t, "region", 0, "x" * 2**20)),
         ("users.region is at most 256 characters long — 1 unexpected",), "users", 0),
    Case("non_utf8_region", _one("users", _non_utf8),
         ("users.region is valid UTF-8 text — 1 unexpected",), "users", 0),
    Case("part_file_with_extra_column",
         _via_parquet_source("impressions", lambda t: t.append_column("debug", pa.array(
             np.zeros(t.num_rows)))),
         ("impressions: one schema across part files — part-1.parquet vs part-0.parquet: extra "
          "columns ['debug']", "impressions has exactly the columns", "unexpected ['debug']")),
    Case("part_file_missing_column",
         _via_parquet_source("items", lambda t: t.drop_columns(["price"])),
         ("items: one schema across part files — part-1.parquet vs part-0.parquet: missing "
          "columns ['price']", "items.price is never null")),
    Case("click_before_impression", _click_before_impression,
         ("clicks: funnel: no click before its impression (same user and item) — 1 unexpected",),
         "clicks", 0),
    Case("cart_before_click", _cart_before_click,
         ("add_to_cart: funnel: no add-to-cart before its click (same user and item) — 1 unexpected",),
         "add_to_cart", 0),
    Case("click_with_unknown_impression", _one("clicks", lambda t: _set_row(t, "impression_id", 0, 42)),
         ("every click has its impression (same user and item) — 1 unexpected",), "clicks", 0),
    Case("purchase_with_unknown_click", _one("purchases", lambda t: _set_row(t, "click_id", 0, 42)),
         ("every purchase has its click (same user and item) — 1 unexpected",), "purchases", 0),
    Case("duplicate_event_id", _one("clicks", lambda t: _set_row(t, "event_id", 1, t["event_id"][0].as_py())),
         ("clicks.event_id is unique — 2 unexpected",), "clicks", 0),
    Case("unknown_user", _one("impressions", lambda t: _set_row(t, "user_id", 0, 10_000_000)),
         ("every impressions.user_id exists in users",), "impressions", 0),
    Case("unknown_item", _one("add_to_cart", lambda t: _set_row(t, "item_id", 0, 10_000_000)),
         ("every add_to_cart.item_id exists in items",), "add_to_cart", 0),
    Case("position_out_of_range", _one("impressions", lambda t: _set_row(t, "position", 0, 0)),
         ("impressions.position lies in [1, 1000] — 1 unexpected",), "impressions", 0),
    Case("negative_price", _one("purchases", lambda t: _set_row(t, "price", 0, -5.0)),
         ("purchases.price lies in [0.01, 1000000.0] — 1 unexpected",), "purchases", 0),
    Case("wrong_dtype", _one("impressions", lambda t: _set(t, "position", t["position"].cast(pa.string()))),
         ("impressions.position is int16",)),
    Case("missing_column", _one("impressions", lambda t: t.drop_columns(["position"])),
         ("impressions has exactly the columns", "missing ['position']")),
    Case("missing_table", _missing_file, ("clicks: the table file is missing",)),
    Case("corrupt_file", _corrupt_items,
         ("validation crashed on items: ArrowInvalid",)),
]
BY_NAME = {c.name: c for c in CASES}


def case(name: str) -> Case:
    """The case called ``name``."""
    return BY_NAME[name]


def write_case(c: Case, clean: Frames, root: Path, date: dt.date) -> dict[str, Path]:
    """Write the clean day damaged by ``c`` under ``root/<case>/``; return every table's path
    (a table the damage removed is a path that does not exist)."""
    base = Path(root) / c.name
    frames = c.damage(dict(clean), base / "work", date)
    paths = {}
    for table in TABLES:
        path = paths[table] = io.partition_path(base / "raw", table, date)
        data = frames.get(table)
        if isinstance(data, pa.Table):
            io.write_table(data, path)
        elif data is CORRUPT:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"this is not a parquet file\n" * 10)
    return paths


def make_case(name: str, settings, source, date: dt.date) -> dict[str, Path]:  # noqa: ANN001
    """Write case ``name`` from ``source``'s clean ``date`` under ``settings.home/bad_partitions``."""
    return write_case(case(name), source.frames(date), settings.home / "bad_partitions", date)


def caught(c: Case, failures: list[str], date: dt.date) -> bool:
    """Whether every expected substring of ``c`` is in some failure line."""
    return all(any(e in f for f in failures) for e in c.expected_for(date))
