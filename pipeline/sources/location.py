"""A data location looked at before it is ingested (``rankline source check``): its shape, its
dates, and each date's tables read, derived and validated into a scratch directory."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import fsspec

from feature_store import io
from pipeline.sources.base import TABLES
from pipeline.sources.interactions import TABLE as INTERACTIONS
from pipeline.sources.interactions import InteractionLogError, InteractionsSource, derive_day
from pipeline.sources.parquet import SourceSchemaError, conform_types, read_parts
from serving.store import redact_text, redact_url

SHAPES = ("funnel", "interactions")
_DATE_DIR = re.compile(r"date=(\d{4}-\d{2}-\d{2})$")


def shown_uri(uri: str) -> str:
    """The location as it may be printed (no password)."""
    return redact_url(uri)


def _dates(fs: fsspec.AbstractFileSystem, folder: str) -> set[dt.date]:
    out = set()
    for entry in fs.ls(folder, detail=False) if fs.isdir(folder) else []:
        if (m := _DATE_DIR.search(entry.rstrip("/"))) and fs.isdir(entry):
            try:
                out.add(dt.date.fromisoformat(m.group(1)))
            except ValueError:
                continue
    return out


def scan(uri: str, shape: str | None = None) -> tuple[str, list[dt.date]]:
    """The location's shape (``shape``, or detected: ``interactions/`` present means the
    interactions shape, any funnel table's folder the funnel shape) and its dates, oldest first.

    Raises:
        FileNotFoundError: the location does not exist or holds neither shape's folders.
    """
    fs, root = fsspec.core.url_to_fs(uri)
    root = root.rstrip("/")
    if not fs.isdir(root):
        raise FileNotFoundError(f"{shown_uri(uri)} is not a folder")
    present = [t for t in (INTERACTIONS, *TABLES) if fs.isdir(f"{root}/{t}")]
    if shape is None:
        if not present:
            raise FileNotFoundError(f"{shown_uri(uri)} holds neither interactions/ nor any of "
                                    f"{', '.join(t + '/' for t in TABLES)}")
        shape = "interactions" if INTERACTIONS in present else "funnel"
    tables = [INTERACTIONS] if shape == "interactions" else list(TABLES)
    dates: set[dt.date] = set()
    for table in tables:
        dates |= _dates(fs, f"{root}/{table}")
    return shape, sorted(dates)


@dataclass
class DateCheck:
    """One date of a location: rows per table (as read or derived) and the problems found."""

    date: dt.date
    rows: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_date(uri: str, shape: str, date: dt.date, work: Path, event_labels: str) -> DateCheck:
    """Read (and for the interactions shape derive) ``date``'s tables, write them under ``work``
    and validate them with :func:`pipeline.validation.validate_tables`; never raises for bad data."""
    from pipeline.validation import validate_tables

    out = DateCheck(date)
    tables = {}
    if shape == "interactions":
        source = InteractionsSource(uri, event_labels)
        try:
            data = source.read(date)
            out.rows[INTERACTIONS] = data.num_rows
            tables = derive_day(data, date, source.labels)
        except InteractionLogError as exc:
            out.problems += [f"interactions: {p}" for p in exc.problems]
        except (FileNotFoundError, SourceSchemaError) as exc:
            out.problems.append(redact_text(exc))
        if out.problems:
            return out
    else:
        root = uri.rstrip("/")
        for table in TABLES:
            try:
                tables[table] = conform_types(
                    table, read_parts(f"{root}/{table}/date={date.isoformat()}", table, date))
            except (FileNotFoundError, OSError):
                out.problems.append(f"{table}: no partition for {date}")
            except SourceSchemaError as exc:
                out.problems.append(redact_text(exc))
    raw = work / "raw"
    paths = {t: io.partition_path(raw, t, date) for t in TABLES}
    for table, data in tables.items():
        out.rows[table] = data.num_rows
        io.write_table(data, paths[table])
    report = validate_tables(paths, date, work / "report")
    out.problems += [p for p in report.failures if p not in out.problems]
    return out
