"""Great Expectations suites that gate every raw table of a logical date.

Each table is checked for its column set and types, non-null values (every column but
:data:`NULLABLE`), value ranges, string lengths (at most :data:`MAX_STRING_LENGTH` characters),
unique ids, at least one row (:data:`NOT_EMPTY`) and, for event tables, timestamps inside the
logical day ``[D 00:00 UTC, D+1 00:00 UTC)``. Event tables are also checked for ids that exist in
the users and items tables and for the funnel: no click without its impression, no add-to-cart or
purchase without its click, and none of them earlier than the event it follows. Cross-table
checks are prepared as boolean columns (``_user_known``, ``_impression_known``,
``_after_impression``, ...) by :func:`prepare_frames`, a pure function, so that each one is a plain
expectation with its own line in the report.

Before Great Expectations sees a table, text that is not valid UTF-8 is reported (and replaced,
so the other checks still run), and a table whose Parquet part files did not share one schema
(noted by the Parquet source) is reported as such. Every failure line names the table, what was
expected, and for row-level checks how many rows broke it and a sample of their ids.

:func:`validate_tables` judges a set of table files and never raises for bad data: a missing
file, unreadable data or a crash inside validation is a failure line too.
:mod:`pipeline.landing` calls it on a staged copy and promotes the copy into ``raw/`` (with the
``_SUCCESS`` marker) or moves it to quarantine and raises :class:`ValidationFailed`, which names
what failed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from pipeline.sources.base import EVENT_TABLES, OPTIONAL_COLUMNS, TABLES, table_schema

log = logging.getLogger(__name__)

KEYS = {
    "users": ["user_id"],
    "items": ["item_id"],
    "impressions": ["event_id", "request_id", "user_id", "item_id"],
    "clicks": ["event_id", "impression_id", "request_id", "user_id", "item_id"],
    "add_to_cart": ["event_id", "click_id", "request_id", "user_id", "item_id"],
    "purchases": ["event_id", "click_id", "request_id", "user_id", "item_id"],
}
NULLABLE: dict[str, set[str]] = {"users": {"region", "signup_date"}}
"""Columns that may be null (descriptive attributes a source may not know); all others may not."""
MAX_STRING_LENGTH = 256
"""Longest string value (in characters) any raw string column may hold."""
NOT_EMPTY = ("users", "items", "impressions")
"""Tables that must have at least one row (a day may have no clicks, never no impressions)."""
RANGES: dict[str, list[tuple[str, float | None, float | None]]] = {
    "users": [("user_id", 0, None), ("age_band", 0, 9)],
    "items": [("item_id", 0, None), ("category", 0, None), ("price", 0.01, 1e6)],
    "impressions": [("position", 1, 1000)],
    "purchases": [("price", 0.01, 1e6)],
}
OPEN_BELOW = {("impressions", "propensity")}
"""Ranges whose lower bound is excluded: a logged propensity is a probability > 0."""
OPTIONAL_RANGES: dict[str, list[tuple[str, float | None, float | None]]] = {
    "items": [("line", 0, None)],
    "impressions": [("propensity", 0, 1)],
}
"""Ranges of optional columns, checked when the column is present."""
UNIQUE = {"users": "user_id", "items": "item_id", **{t: "event_id" for t in EVENT_TABLES}}
ID_COLUMN = UNIQUE
"""The column whose values name an offending row in failure messages."""
FUNNEL = {  # table: (key column, the table it refers to)
    "clicks": ("impression_id", "impressions"),
    "add_to_cart": ("click_id", "clicks"),
    "purchases": ("click_id", "clicks"),
}
LINKS = {
    "clicks": [("_impression_known", "every click has its impression"),
               ("_after_impression", "no click before its impression")],
    "add_to_cart": [("_click_known", "every add-to-cart has its click"),
                    ("_after_click", "no add-to-cart before its click")],
    "purchases": [("_click_known", "every purchase has its click"),
                  ("_after_click", "no purchase before its click")],
}
SAMPLE = 5
"""How many offending ids (and values) a failure line shows."""
RESULT_FORMAT = {
    "result_format": "SUMMARY", "partial_unexpected_count": 20,
    # Offending rows are named by id in the failure lines; values (a 1 MB string) stay out.
    "exclude_unexpected_values": True, "return_unexpected_index_query": False,
}


class ValidationFailed(RuntimeError):
    """A raw partition failed its expectations; the message lists every failed one."""

    def __init__(self, date: dt.date, failures: list[str], quarantine: Path) -> None:
        self.date, self.failures, self.quarantine = date, failures, quarantine
        lines = "\n  - ".join(failures)
        super().__init__(
            f"raw partition {date} failed validation ({len(failures)} expectation(s)); "
            f"quarantined to {quarantine}:\n  - {lines}"
        )


@dataclass
class ValidationReport:
    """What validating one date found."""

    date: dt.date
    success: bool
    rows: dict[str, int]
    failures: list[str] = field(default_factory=list)
    results_path: str = ""
    data_docs: str = ""


def expected_dtypes(table: str, optional: list[str] | tuple[str, ...] = ()) -> dict[str, str]:
    """The pandas dtype name of every column of a raw table, from its Arrow schema (with the
    optional columns among ``optional``)."""
    empty = pa.Table.from_pylist([], schema=table_schema(table, optional)).to_pandas()
    # GX reports tz-aware datetime columns by the type of their values.
    return {c: "Timestamp" if "datetime64" in str(t) else str(t) for c, t in empty.dtypes.items()}


def day_bounds(date: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """``[D 00:00 UTC, D+1 00:00 UTC)``: where every event of date D must lie."""
    start = dt.datetime.combine(date, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def check_columns(table: str) -> list[str]:
    """The boolean columns :func:`prepare_frames` adds to a table for cross-table checks."""
    if table not in EVENT_TABLES:
        return []
    return ["_user_known", "_item_known", *(c for c, _ in LINKS.get(table, []))]


def prepare_frames(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Add the cross-table check columns to the event tables (pure; inputs are not modified).

    A check column is True where its check cannot apply (a missing table, a missing or mistyped
    column): that input fails its own expectation, and the check does not repeat it.
    """
    users, items = frames.get("users"), frames.get("items")
    out = dict(frames)
    for table in EVENT_TABLES:
        if table not in frames:
            continue
        df = frames[table].copy()
        df["_user_known"] = _known(df, "user_id", users)
        df["_item_known"] = _known(df, "item_id", items)
        out[table] = df
    for table, (key, ref_table) in FUNNEL.items():
        if table not in out:
            continue
        df, ref = out[table], frames.get(ref_table)
        (known, _), (after, _) = LINKS[table]
        df[known] = _has_match(df, ref, key)
        df[after] = _not_before(df, ref, key)
    return out


def _known(df: pd.DataFrame, col: str, dim: pd.DataFrame | None) -> pd.Series:
    if dim is None or col not in df or col not in dim:
        return pd.Series(True, index=df.index)
    return df[col].isin(set(dim[col]))


def _link_keys(df: pd.DataFrame, ref: pd.DataFrame | None, key: str) -> pd.DataFrame | None:
    """``ref``'s (event_id as ``key``, user_id, item_id[, ts]) rows, unique on the keys."""
    on = [key, "user_id", "item_id"]
    if ref is None or not {"event_id", "user_id", "item_id"} <= set(ref) or not set(on) <= set(df):
        return None
    cols = ["event_id", "user_id", "item_id", *(["ts"] if "ts" in ref else [])]
    return ref[cols].rename(columns={"event_id": key, "ts": "_ref_ts"}).drop_duplicates(on)


def _has_match(df: pd.DataFrame, ref: pd.DataFrame | None, key: str) -> pd.Series:
    """Whether each row's (key, user_id, item_id) is an event of ``ref`` (same user and item)."""
    on = [key, "user_id", "item_id"]
    keys = _link_keys(df, ref, key)
    if keys is None:
        return pd.Series(True, index=df.index)
    index = pd.MultiIndex.from_frame(keys[on])
    return pd.Series(pd.MultiIndex.from_frame(df[on]).isin(index), index=df.index)


def _not_before(df: pd.DataFrame, ref: pd.DataFrame | None, key: str) -> pd.Series:
    """Whether each row's ts is not earlier than its ``ref`` event's (True where either is unknown)."""
    on = [key, "user_id", "item_id"]
    keys = _link_keys(df, ref, key)
    yes = pd.Series(True, index=df.index)
    if keys is None or "_ref_ts" not in keys or "ts" not in df:
        return yes
    try:
        both = df[[*on, "ts"]].merge(keys, how="left", on=on)
        return pd.Series((~(both["ts"] < both["_ref_ts"])).to_numpy(), index=df.index)
    except (TypeError, ValueError):  # mistyped ids or ts: their own expectations fail
        return yes


def build_suite(table: str, date: dt.date, columns: list[str] | tuple[str, ...] = ()) -> list[Any]:
    """The expectations of one raw table of logical date ``date`` (Great Expectations 1.x objects);
    the optional columns (:data:`OPTIONAL_COLUMNS`) among ``columns`` are expected and checked."""
    import great_expectations as gx

    E = gx.expectations
    optional = [c for c in columns if c in OPTIONAL_COLUMNS.get(table, pa.schema([])).names]
    schema = expected_dtypes(table, optional)
    exps: list[Any] = [
        E.ExpectTableColumnsToMatchSet(
            column_set=[*schema, *check_columns(table)], exact_match=True,
            description=f"{table} has exactly the columns {list(schema)}",
        )
    ]
    if table in NOT_EMPTY:
        exps.append(E.ExpectTableRowCountToBeBetween(
            min_value=1, description=f"{table} has at least one row"))
    for col, dtype in schema.items():
        exps.append(E.ExpectColumnValuesToBeOfType(
            column=col, type_=dtype, description=f"{table}.{col} is {dtype}"))
    for col in schema:
        if col not in NULLABLE.get(table, ()):
            exps.append(E.ExpectColumnValuesToNotBeNull(
                column=col, description=f"{table}.{col} is never null"))
    ranges = RANGES.get(table, []) + [r for r in OPTIONAL_RANGES.get(table, []) if r[0] in optional]
    for col, lo, hi in ranges:
        open_below = (table, col) in OPEN_BELOW
        exps.append(E.ExpectColumnValuesToBeBetween(
            column=col, min_value=lo, max_value=hi, strict_min=open_below,
            description=f"{table}.{col} lies in {'(' if open_below else '['}{lo}, {hi}]"))
    for f in table_schema(table, optional):
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
            exps.append(E.ExpectColumnValueLengthsToBeBetween(
                column=f.name, max_value=MAX_STRING_LENGTH,
                description=f"{table}.{f.name} is at most {MAX_STRING_LENGTH} characters long"))
    if "ts" in schema:
        start, end = day_bounds(date)
        exps.append(E.ExpectColumnValuesToBeBetween(
            column="ts", min_value=start, max_value=end, strict_max=True,
            description=f"{table}.ts lies within {date} (UTC)"))
    exps.append(E.ExpectColumnValuesToBeUnique(
        column=UNIQUE[table], description=f"{table}.{UNIQUE[table]} is unique"))
    if table in EVENT_TABLES:
        exps.append(E.ExpectColumnValuesToBeInSet(
            column="_user_known", value_set=[True],
            description=f"every {table}.user_id exists in users"))
        exps.append(E.ExpectColumnValuesToBeInSet(
            column="_item_known", value_set=[True],
            description=f"every {table}.item_id exists in items"))
    for col, desc in LINKS.get(table, []):
        exps.append(E.ExpectColumnValuesToBeInSet(
            column=col, value_set=[True], description=f"funnel: {desc} (same user and item)"))
    return exps


def _context(docs_dir: Path):  # noqa: ANN202 - a GX context
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    # no progress bars: on stderr inside an Airflow task log each reads as an ERROR line
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    for site in list(ctx.get_config().data_docs_sites or {}):
        ctx.delete_data_docs_site(site)
    ctx.add_data_docs_site(
        site_name="rankline",
        site_config={
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs_dir),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    return ctx


def _short(value: Any, width: int = 40) -> str:
    text = repr(value) if isinstance(value, str | bytes) else str(value)
    return text if len(text) <= width else f"{text[:width - 3]}..."


def _sample(table: str, df: pd.DataFrame | None, rows: list[int], column: str | None) -> str:
    """``e.g. event_id=[...]`` (and the offending values of ``column``) for the given row positions."""
    if df is None or not rows:
        return ""
    rows = [int(r) for r in rows if pd.api.types.is_integer(r) and 0 <= r < len(df)][:SAMPLE]
    id_col = ID_COLUMN[table]
    if id_col in df:
        ids = [v if pd.notna(v) else f"row {r}" for r, v in zip(rows, df[id_col].iloc[rows], strict=True)]
        ids = [int(v) if isinstance(v, float) and v.is_integer() else v for v in ids]
        text = f"{id_col}=[{', '.join(str(v) for v in ids)}]"
    else:
        text = f"rows={rows}"
    if column and column != id_col and not column.startswith("_") and column in df:
        text += f"; {column}=[{', '.join(_short(v) for v in df[column].iloc[rows])}]"
    return f" (e.g. {text})"


def _exception_message(info: dict | None) -> str | None:
    """The message of an exception GX caught while evaluating an expectation (or ``None``)."""
    for entry in [info or {}, *(v for v in (info or {}).values() if isinstance(v, dict))]:
        if entry.get("raised_exception") in (True, "True"):
            return (str(entry.get("exception_message") or "").splitlines() or [""])[0][:160]
    return None


def _describe(table: str, r: Any, df: pd.DataFrame | None = None) -> str:
    """One failure line for a failed expectation result, with offending ids where row-level."""
    cfg = r.expectation_config
    what = cfg.description or cfg.type
    res = r.result or {}
    if (msg := _exception_message(r.exception_info)) is not None:
        return f"{table}: {what} — could not be evaluated ({cfg.type}: {msg})"
    if res.get("unexpected_count") is not None:
        rows = res.get("partial_unexpected_index_list") or []
        sample = _sample(table, df, rows, cfg.kwargs.get("column"))
        return f"{table}: {what} — {res['unexpected_count']} unexpected{sample}"
    mismatched = (res.get("details") or {}).get("mismatched")
    if isinstance(mismatched, dict):
        found = ", ".join(f"{k} {sorted(v)}" for k, v in sorted(mismatched.items()) if v)
        return f"{table}: {what} — {found}"
    return f"{table}: {what} — observed {_short(res.get('observed_value'), 160)} ({cfg.type})"


def _crash(where: str, exc: BaseException) -> str:
    first = (str(exc).splitlines() or [""])[0][:200]
    return f"validation crashed on {where}: {type(exc).__name__}: {first}"


def _part_schema_failure(table: str, schema: pa.Schema) -> list[str]:
    """The Parquet source's note that ``table``'s part files did not share one schema."""
    from pipeline.sources.parquet import PART_SCHEMAS_KEY

    note = (schema.metadata or {}).get(PART_SCHEMAS_KEY)
    if note is None:
        return []
    try:
        differences = json.loads(note)["differences"]
    except (ValueError, KeyError, TypeError):
        differences = note.decode("utf-8", "replace")[:300]
    return [f"{table}: one schema across part files — {differences}"]


def _repair_utf8(table: str, data: pa.Table) -> tuple[pa.Table, list[str]]:
    """Report string values that are not valid UTF-8 and replace them (U+FFFD) so the other
    checks can still run on the table."""
    failures = []
    for i, f in enumerate(data.schema):
        if not (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)):
            continue
        try:
            data.column(i).validate(full=True)
            continue
        except pa.ArrowInvalid:
            pass
        raw = data.column(i).cast(pa.large_binary()).to_pylist()
        bad, fixed = [], []
        for row, value in enumerate(raw):
            try:
                fixed.append(None if value is None else value.decode("utf-8"))
            except UnicodeDecodeError:
                bad.append(row)
                fixed.append(value.decode("utf-8", "replace"))
        data = data.set_column(i, f, pa.array(fixed, f.type))
        id_col = ID_COLUMN[table]
        ids = (data.column(id_col).take(bad[:SAMPLE]).to_pylist() if id_col in data.column_names
               else bad[:SAMPLE])
        name = id_col if id_col in data.column_names else "rows"
        failures.append(f"{table}: {table}.{f.name} is valid UTF-8 text — {len(bad)} unexpected "
                        f"(e.g. {name}=[{', '.join(str(v) for v in ids)}])")
    return data, failures


def _arrow_type_failures(table: str, schema: pa.Schema) -> list[str]:
    """Columns whose Arrow type is not exactly the raw schema's (a ``ts`` in ns or another time
    zone would pass a pandas type check but break every later multi-date read), and columns
    named like the validator's own check columns (``_...``)."""
    out = []
    for expected in table_schema(table, schema.names):
        i = schema.get_field_index(expected.name)
        if i >= 0 and schema.field(i).type != expected.type:
            out.append(f"{table}: {table}.{expected.name} has Arrow type {expected.type} — found "
                       f"{schema.field(i).type}")
    if reserved := [n for n in schema.names if n.startswith("_")]:
        out.append(f"{table}: column names starting with '_' are reserved for checks — found "
                   f"{reserved}")
    return out


def _read(table: str, path: Path | None) -> tuple[pd.DataFrame | None, list[str]]:
    """One table file as a DataFrame (row positions as its index), with its pre-GX failures."""
    import pyarrow.parquet as pq

    if path is None or not Path(path).is_file():
        return None, [f"{table}: the table file is missing ({path})"]
    data = pq.read_table(path)
    failures = _part_schema_failure(table, data.schema) + _arrow_type_failures(table, data.schema)
    data, bad_text = _repair_utf8(table, data)
    return data.to_pandas().reset_index(drop=True), failures + bad_text


def validate_tables(paths: dict[str, Path], date: dt.date, report_dir: Path) -> ValidationReport:
    """Judge the table files of logical date ``date``; never raises for bad data.

    Args:
        paths: table name -> its Parquet file, for every table in :data:`TABLES`.
        report_dir: replaced by ``results.json`` and ``data_docs/`` (the Data Docs site).
    Returns:
        The report; ``failures`` has one line per failed expectation, missing file, bad text or
        crash inside validation (``validation crashed on <table>: <ExcType>: <message>``).
        Writes no success marker and quarantines nothing.
    """
    report_dir = Path(report_dir)
    if report_dir.exists():
        shutil.rmtree(report_dir)
    report_dir.mkdir(parents=True)
    docs_dir = report_dir / "data_docs"
    failures: list[str] = []
    crashes: list[dict[str, str]] = []

    def crashed(where: str, exc: BaseException) -> None:
        log.exception("validation of %s crashed on %s", date, where)
        failures.append(_crash(where, exc))
        crashes.append({"where": where, "traceback": traceback.format_exc()[-20_000:]})

    frames: dict[str, pd.DataFrame] = {}
    for table in TABLES:
        try:
            df, found = _read(table, paths.get(table))
            failures += found
            if df is not None:
                frames[table] = df
        except Exception as exc:  # noqa: BLE001 - any crash is a failure line, not an exception
            crashed(table, exc)
    try:
        prepared = prepare_frames(frames)
    except Exception as exc:  # noqa: BLE001
        crashed("cross-table checks", exc)
        prepared = {t: df.assign(**dict.fromkeys(check_columns(t), True)) for t, df in frames.items()}

    results: dict[str, Any] = {}
    try:
        _run_suites(prepared, date, docs_dir, results, failures, crashed)
    except Exception as exc:  # noqa: BLE001
        crashed("great expectations", exc)

    success = not failures
    rows = {t: len(df) for t, df in frames.items()}
    results_path = report_dir / "results.json"
    results_path.write_text(json.dumps(
        {"date": date.isoformat(), "success": success, "rows": rows, "failures": failures,
         "crashes": crashes, "paths": {t: str(p) for t, p in paths.items()}, "tables": results},
        indent=1, default=str))
    return ValidationReport(date=date, success=success, rows=rows, failures=failures,
                            results_path=str(results_path), data_docs=str(docs_dir / "index.html"))


def _run_suites(prepared: dict[str, pd.DataFrame], date: dt.date, docs_dir: Path, results: dict[str, Any],
                failures: list[str], crashed: Callable[[str, BaseException], None]) -> None:
    """Run each readable table's suite into ``results`` and ``failures``, then build the Data Docs
    once (not once per table)."""
    import great_expectations as gx

    ctx = _context(docs_dir)
    source = ctx.data_sources.add_pandas("raw")
    for table in TABLES:
        if table not in prepared:
            continue
        try:
            batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe(table)
            suite = ctx.suites.add(gx.ExpectationSuite(name=f"raw_{table}"))
            for exp in build_suite(table, date, list(prepared[table].columns)):
                suite.add_expectation(exp)
            vd = ctx.validation_definitions.add(
                gx.ValidationDefinition(name=f"{table}_{date.isoformat()}", data=batch, suite=suite))
            res = vd.run(batch_parameters={"dataframe": prepared[table]}, result_format=RESULT_FORMAT)
            results[table] = res.to_json_dict()
            failures += [_describe(table, r, prepared[table]) for r in res.results if not r.success]
        except Exception as exc:  # noqa: BLE001 - any crash is a failure line, not an exception
            crashed(table, exc)
    ctx.build_data_docs(site_names=["rankline"])
