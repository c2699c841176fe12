"""Great Expectations suites that gate every raw table of a logical date.

Each table is checked for its column set and types, non-null keys, value ranges and unique event
ids; event tables also for ids that exist in the users and items tables, and for the funnel (no
click without its impression, no add-to-cart or purchase without its click). Cross-table checks
are prepared as boolean columns (``_user_known``, ``_impression_known``, ...) by
:func:`prepare_frames`, a pure function, so that each one is a plain expectation with its own
line in the report.

A partition that fails is copied to ``quarantine/date=D/`` with its validation results and Data
Docs; the raw files are never touched; :class:`ValidationFailed` names what failed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from pipeline import io
from pipeline.sources.base import EVENT_TABLES, RAW_SCHEMAS, TABLES

log = logging.getLogger(__name__)

KEYS = {
    "users": ["user_id"],
    "items": ["item_id"],
    "impressions": ["event_id", "request_id", "user_id", "item_id"],
    "clicks": ["event_id", "impression_id", "request_id", "user_id", "item_id"],
    "add_to_cart": ["event_id", "click_id", "request_id", "user_id", "item_id"],
    "purchases": ["event_id", "click_id", "request_id", "user_id", "item_id"],
}
RANGES: dict[str, list[tuple[str, float | None, float | None]]] = {
    "users": [("user_id", 0, None), ("age_band", 0, 9)],
    "items": [("item_id", 0, None), ("category", 0, None), ("price", 0.01, 1e6)],
    "impressions": [("position", 1, 1000)],
    "purchases": [("price", 0.01, 1e6)],
}
UNIQUE = {"users": "user_id", "items": "item_id", **{t: "event_id" for t in EVENT_TABLES}}
LINKS = {
    "clicks": [("_impression_known", "every click has its impression")],
    "add_to_cart": [("_click_known", "every add-to-cart has its click")],
    "purchases": [("_click_known", "every purchase has its click")],
}


SUCCESS = "_SUCCESS"


def is_valid(validation_dir: Path, date: dt.date) -> bool:
    """Whether ``date``'s raw partition passed validation (its success marker exists)."""
    return (Path(validation_dir) / f"date={date.isoformat()}" / SUCCESS).exists()


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


def expected_dtypes(table: str) -> dict[str, str]:
    """The pandas dtype name of every column of a raw table, from its Arrow schema."""
    empty = pa.Table.from_pylist([], schema=RAW_SCHEMAS[table]).to_pandas()
    # GX reports tz-aware datetime columns by the type of their values.
    return {c: "Timestamp" if "datetime64" in str(t) else str(t) for c, t in empty.dtypes.items()}


def check_columns(table: str) -> list[str]:
    """The boolean columns :func:`prepare_frames` adds to a table for cross-table checks."""
    if table not in EVENT_TABLES:
        return []
    return ["_user_known", "_item_known", *(c for c, _ in LINKS.get(table, []))]


def prepare_frames(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Add the cross-table check columns to the event tables (pure; inputs are not modified)."""
    users = set(frames["users"]["user_id"]) if "user_id" in frames["users"] else set()
    items = set(frames["items"]["item_id"]) if "item_id" in frames["items"] else set()
    out = dict(frames)
    for table in EVENT_TABLES:
        df = frames[table].copy()
        if "user_id" in df:
            df["_user_known"] = df["user_id"].isin(users)
        if "item_id" in df:
            df["_item_known"] = df["item_id"].isin(items)
        out[table] = df
    imp = frames["impressions"]
    clicks = out["clicks"]
    if "impression_id" in clicks and {"event_id", "user_id", "item_id"} <= set(imp.columns):
        ref = imp[["event_id", "user_id", "item_id"]].rename(columns={"event_id": "impression_id"})
        clicks["_impression_known"] = _has_match(clicks, ref, ["impression_id", "user_id", "item_id"])
    src = clicks
    for table in ("add_to_cart", "purchases"):
        df = out[table]
        if "click_id" in df and {"event_id", "user_id", "item_id"} <= set(src.columns):
            ref = src[["event_id", "user_id", "item_id"]].rename(columns={"event_id": "click_id"})
            df["_click_known"] = _has_match(df, ref, ["click_id", "user_id", "item_id"])
    return out


def _has_match(df: pd.DataFrame, ref: pd.DataFrame, on: list[str]) -> pd.Series:
    if not set(on) <= set(df.columns):
        return pd.Series(False, index=df.index)
    keys = pd.MultiIndex.from_frame(ref[on].drop_duplicates())
    return pd.Series(pd.MultiIndex.from_frame(df[on]).isin(keys), index=df.index)


def build_suite(table: str) -> list[Any]:
    """The expectations of one raw table (Great Expectations 1.x objects)."""
    import great_expectations as gx

    E = gx.expectations
    schema = expected_dtypes(table)
    exps: list[Any] = [
        E.ExpectTableColumnsToMatchSet(
            column_set=[*schema, *check_columns(table)], exact_match=True,
            description=f"{table} has exactly the columns {list(schema)}",
        )
    ]
    for col, dtype in schema.items():
        exps.append(E.ExpectColumnValuesToBeOfType(
            column=col, type_=dtype, description=f"{table}.{col} is {dtype}"))
    for col in KEYS[table]:
        exps.append(E.ExpectColumnValuesToNotBeNull(
            column=col, description=f"{table}.{col} is never null"))
    for col, lo, hi in RANGES.get(table, []):
        exps.append(E.ExpectColumnValuesToBeBetween(
            column=col, min_value=lo, max_value=hi,
            description=f"{table}.{col} lies in [{lo}, {hi}]"))
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

    ctx = gx.get_context(mode="ephemeral")
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


def _describe(table: str, r: Any) -> str:
    cfg = r.expectation_config
    what = cfg.description or cfg.type
    res = r.result or {}
    if "unexpected_count" in res:
        sample = res.get("partial_unexpected_list") or []
        return (f"{table}: {what} — {res['unexpected_count']} unexpected "
                f"({cfg.type}; e.g. {sample[:3]})")
    if r.exception_info and r.exception_info.get("raised_exception"):
        msg = str(r.exception_info.get("exception_message", "")).splitlines()[0][:160]
        return f"{table}: {what} — could not be evaluated ({cfg.type}: {msg})"
    return f"{table}: {what} — observed {res.get('observed_value')!r} ({cfg.type})"


def validate_partition(
    raw_dir: Path, date: dt.date, validation_dir: Path, quarantine_dir: Path
) -> ValidationReport:
    """Validate every raw table of ``date``; on failure quarantine a copy and raise.

    Results (JSON) and Data Docs go to ``validation_dir/date=D/``; a rerun replaces them.
    Raises:
        ValidationFailed: naming every failed expectation, after quarantining the partition.
        FileNotFoundError: a raw table of the date is missing.
    """
    import great_expectations as gx

    paths = {t: io.partition_path(raw_dir, t, date) for t in TABLES}
    frames = {t: io.read_parquet(p) for t, p in paths.items() if p.exists()}
    missing = [t for t in TABLES if t not in frames]
    if missing:
        raise FileNotFoundError(f"raw partition {date} lacks tables {missing} under {raw_dir}")
    prepared = prepare_frames(frames)

    out_dir = Path(validation_dir) / f"date={date.isoformat()}"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    docs_dir = out_dir / "data_docs"
    ctx = _context(docs_dir)
    source = ctx.data_sources.add_pandas("raw")
    definitions = []
    for table in TABLES:
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe(table)
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"raw_{table}"))
        for exp in build_suite(table):
            suite.add_expectation(exp)
        definitions.append(ctx.validation_definitions.add(
            gx.ValidationDefinition(name=f"{table}_{date.isoformat()}", data=batch, suite=suite)))

    failures: list[str] = []
    results: dict[str, Any] = {}
    for table, vd in zip(TABLES, definitions, strict=True):
        checkpoint = ctx.checkpoints.add(gx.Checkpoint(
            name=f"cp_{table}", validation_definitions=[vd], result_format="SUMMARY",
            actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=["rankline"])],
        ))
        run = checkpoint.run(batch_parameters={"dataframe": prepared[table]})
        for res in run.run_results.values():
            results[table] = res.to_json_dict()
            failures += [_describe(table, r) for r in res.results if not r.success]

    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "results.json"
    results_path.write_text(json.dumps(results, indent=1, default=str))
    report = ValidationReport(
        date=date, success=not failures, rows={t: len(f) for t, f in frames.items()},
        failures=failures, results_path=str(results_path),
        data_docs=str(docs_dir / "index.html"),
    )
    if not failures:
        (out_dir / SUCCESS).touch()
    if failures:
        qdir = quarantine(paths, date, out_dir, quarantine_dir)
        raise ValidationFailed(date, failures, qdir)
    log.info("raw partition %s valid: %s", date, report.rows)
    return report


def quarantine(paths: dict[str, Path], date: dt.date, report_dir: Path, quarantine_dir: Path) -> Path:
    """Copy a failed partition and its report to ``quarantine/date=D/``; raw stays untouched."""
    qdir = Path(quarantine_dir) / f"date={date.isoformat()}"
    if qdir.exists():
        shutil.rmtree(qdir)
    for table, src in paths.items():
        dst = qdir / "raw" / table / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    shutil.copytree(report_dir, qdir / "report")
    log.error("raw partition %s quarantined to %s", date, qdir)
    return qdir
