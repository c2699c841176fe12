"""Any Parquet location laid out as ``<root>/<table>/date=D/*.parquet`` (local or fsspec URI).

Part files are read one by one and concatenated with permissive schema promotion, so a column
that only a later part file has survives (and the validation's column-set expectation sees it)
instead of being dropped for the first file's schema. When part files disagree, the table carries
a note under :data:`PART_SCHEMAS_KEY` in its schema metadata that validation reports as such; when
they cannot be combined at all, :class:`SourceSchemaError` says how they differ.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline.sources.base import TABLES, DataSource, table_schema
from serving.store import redact_text, redact_url

log = logging.getLogger(__name__)

PART_SCHEMAS_KEY = b"rankline.part_schema_mismatch"
"""Schema-metadata key of a table whose part files did not share one schema (JSON: parts, diff)."""


class SourceSchemaError(ValueError):
    """The part files of one table partition have schemas that cannot be combined."""

    def __init__(self, table: str, date: dt.date, parts: list[str], differences: str,
                 cause: str) -> None:
        self.table, self.date, self.parts, self.differences = table, date, parts, differences
        super().__init__(
            f"source table {table} for {date}: part files {parts} have incompatible schemas "
            f"({differences}): {cause}"
        )


def schema_differences(parts: list[str], schemas: list[pa.Schema]) -> str:
    """How each part file's schema differs from the first one's (column names and types only)."""
    base = {f.name: f.type for f in schemas[0]}
    out = []
    for name, schema in zip(parts[1:], schemas[1:], strict=True):
        other = {f.name: f.type for f in schema}
        diff = []
        if extra := [c for c in other if c not in base]:
            diff.append(f"extra columns {extra}")
        if missing := [c for c in base if c not in other]:
            diff.append(f"missing columns {missing}")
        diff += [f"{c} is {other[c]} not {t}" for c, t in base.items() if c in other and other[c] != t]
        if diff:
            out.append(f"{name} vs {parts[0]}: {', '.join(diff)}")
    return "; ".join(out)


def read_parts(where: str, table: str, date: dt.date) -> pa.Table:
    """Read every part file under ``where`` (sorted by path) into one table.

    Raises:
        FileNotFoundError: ``where`` does not exist or holds no part file.
        SourceSchemaError: the part files' schemas cannot be unified.
    """
    dataset = ds.dataset(where, format="parquet")
    files = sorted(dataset.files)
    if not files:
        raise FileNotFoundError(f"no part files under {where}")
    tables = [pq.read_table(f, filesystem=dataset.filesystem) for f in files]
    names = [f.rsplit("/", 1)[-1] for f in files]
    if len(tables) == 1:
        return tables[0]
    schemas = [t.schema for t in tables]
    differences = schema_differences(names, schemas)
    try:
        out = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise SourceSchemaError(table, date, names, differences or "same columns and types",
                                str(exc).splitlines()[0]) from exc
    if differences:
        log.warning("source table %s for %s: part files do not share one schema: %s",
                    table, date, differences)
        note = json.dumps({"parts": names, "differences": differences})
        out = out.replace_schema_metadata({**(out.schema.metadata or {}), PART_SCHEMAS_KEY: note})
    return out


_SAME_FAMILY = (pa.types.is_integer, pa.types.is_floating, pa.types.is_timestamp,
                pa.types.is_date, pa.types.is_string)


def conform_types(table: str, data: pa.Table) -> pa.Table:
    """Cast columns to the raw schema's type where the cast is lossless and within one family
    (int32 -> int64, timestamp[ns, Europe/Berlin] -> timestamp[us, UTC] when no precision is
    lost); anything else is left for validation to report."""
    for expected in table_schema(table, data.schema.names):
        i = data.schema.get_field_index(expected.name)
        if i < 0 or data.schema.field(i).type == expected.type:
            continue
        got = data.schema.field(i).type
        if not any(same(got) and same(expected.type) for same in _SAME_FAMILY):
            continue
        try:
            data = data.set_column(i, expected.name, data.column(i).cast(expected.type, safe=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            pass  # lossy: validation names the column and both types
    return data


class ParquetSource(DataSource):
    """Copies one date's partitions from an existing Parquet location."""

    name = "parquet"

    def __init__(self, uri: str) -> None:
        if not uri:
            raise ValueError("source=parquet needs RANKLINE_SOURCE_URI (the root of the tables)")
        self.uri = uri.rstrip("/")

    def frames(self, date: dt.date) -> dict[str, pa.Table]:
        """Every table's part files for ``date``, combined (see the module docstring)."""
        out = {}
        for table in TABLES:
            where = f"{self.uri}/{table}/date={date.isoformat()}"
            try:
                out[table] = conform_types(table, read_parts(where, table, date))
            except (FileNotFoundError, OSError) as exc:  # the URI may hold credentials: redacted
                raise FileNotFoundError(f"source has no {table} partition for {date}: "
                                        f"{redact_url(where)} ({redact_text(exc)})") from None
        return out
