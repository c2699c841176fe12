"""One generic interaction log, ``<root>/interactions/date=D/*.parquet``, turned into the funnel
tables by :func:`pipeline.sources.derive.derive_events` with labels from ``RANKLINE_EVENT_LABELS``.

Columns: ``user_id`` int, ``item_id`` int, ``ts`` timestamp, ``event_type`` string, and optionally
``value`` float (needed by the rating-threshold labels), ``position`` int, ``request_id`` int,
``category`` int, ``price`` float. A log that lacks a required column, has nulls in one, or has
an event type the mapping does not name raises :class:`InteractionLogError` naming them all.
"""

from __future__ import annotations

import datetime as dt
import logging

import pyarrow as pa

from pipeline.event_labels import DEFAULT_EVENT_LABELS, EventLabels, parse_event_labels
from pipeline.sources.base import TS, DataSource
from pipeline.sources.derive import derive_dimensions, derive_events
from pipeline.sources.parquet import read_parts
from serving.store import redact_text, redact_url

log = logging.getLogger(__name__)

TABLE = "interactions"
REQUIRED = {"user_id": "integer", "item_id": "integer", "ts": "timestamp", "event_type": "string"}
OPTIONAL = {"value": "number", "position": "integer", "request_id": "integer",
            "category": "integer", "price": "number"}
_KINDS = {"integer": pa.types.is_integer, "number": lambda t: pa.types.is_floating(t)
          or pa.types.is_integer(t), "timestamp": pa.types.is_timestamp,
          "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)}


class InteractionLogError(ValueError):
    """The interaction log of a date cannot be turned into funnel tables; ``problems`` says why."""

    def __init__(self, date: dt.date, problems: list[str]) -> None:
        self.date, self.problems = date, problems
        super().__init__(f"interaction log for {date}: " + "; ".join(problems))


def log_problems(data: pa.Table, labels: EventLabels) -> list[str]:
    """What keeps ``data`` from being derived: missing or mistyped columns, nulls, unknown events."""
    out = []
    wanted = {**REQUIRED, **({"value": "number"} if labels.needs_value else {})}
    for name, kind in {**OPTIONAL, **wanted}.items():
        if name not in data.column_names:
            if name in wanted:
                out.append(f"missing column {name} ({kind})")
            continue
        got = data.schema.field(name).type
        if not _KINDS[kind](got):
            out.append(f"column {name} is {got}, not {kind}")
        elif name in wanted and data.column(name).null_count:
            out.append(f"column {name} has {data.column(name).null_count} null value(s)")
    if not out and labels.events is not None:
        types = data.column("event_type").to_pandas()
        if unknown := labels.unknown_events(types):
            out.append(f"event types not in RANKLINE_EVENT_LABELS: {unknown} (map them, "
                       "e.g. name:0 for a plain impression)")
    return out


def derive_day(data: pa.Table, date: dt.date, labels: EventLabels) -> dict[str, pa.Table]:
    """The six raw tables of ``date`` from its interaction log (pure)."""
    if problems := log_problems(data, labels):
        raise InteractionLogError(date, problems)
    if data.schema.field("ts").type != TS:
        data = data.set_column(data.schema.get_field_index("ts"), "ts",
                               data.column("ts").cast(TS))
    frame = data.to_pandas()
    frame["label"] = labels.labels(frame)
    return {**derive_dimensions(frame), **derive_events(frame, date)}


class InteractionsSource(DataSource):
    """Reads ``<uri>/interactions/date=D/`` and derives the funnel tables of D."""

    name = "interactions"

    def __init__(self, uri: str, event_labels: str = DEFAULT_EVENT_LABELS) -> None:
        if not uri:
            raise ValueError("source=interactions needs RANKLINE_SOURCE_URI (the root holding "
                             "interactions/date=D/)")
        self.uri = uri.rstrip("/")
        self.labels = parse_event_labels(event_labels)

    def read(self, date: dt.date) -> pa.Table:
        """The interaction log of ``date`` as stored (every part file)."""
        where = f"{self.uri}/{TABLE}/date={date.isoformat()}"
        try:
            return read_parts(where, TABLE, date)
        except (FileNotFoundError, OSError) as exc:  # the URI may hold credentials: redacted
            raise FileNotFoundError(f"source has no {TABLE} partition for {date}: "
                                    f"{redact_url(where)} ({redact_text(exc)})") from None

    def frames(self, date: dt.date) -> dict[str, pa.Table]:
        return derive_day(self.read(date), date, self.labels)


__all__ = ["InteractionLogError", "InteractionsSource", "derive_day", "log_problems"]
