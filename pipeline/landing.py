"""Landing raw data: a source writes a date to staging, validation judges it there, and only a
passing copy is promoted into ``raw/``; a failing one goes to quarantine.

Layout under ``RANKLINE_HOME`` for a logical date D::

    staging/date=D/<table>/date=D/part-0.parquet   what the source gave (a rerun replaces it)
    raw/<table>/date=D/part-0.parquet              the validated copy, read by every later step
    validation/date=D/                             its report, Data Docs and the ``_SUCCESS`` marker
    quarantine/date=D/                             the last copy that failed, with its report
    superseded/date=D/<stamp>/<table>/part-0.parquet  a validated copy replaced by a newer
                                                   validated copy that differs (never deleted)

The marker is the commit point: promotion removes it first, moves the files, then writes it last.
A crash in between leaves the date without a marker, so no step reads it until the ingest is
rerun. Re-ingesting a valid date from a broken source leaves ``raw/`` and the marker untouched.
Every step after ingest asks :func:`require_valid` (or :func:`valid_dates`) before it reads a date.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline import io
from pipeline.settings import Settings
from pipeline.sources.base import TABLES

log = logging.getLogger(__name__)

SUCCESS = "_SUCCESS"


class UnvalidatedDate(RuntimeError):
    """A step was asked to read dates that did not pass validation; the message says which,
    why, and what to do."""

    def __init__(self, what: str, problems: dict[dt.date, str]) -> None:
        self.problems = problems
        lines = "\n  - ".join(f"{d}: {why}" for d, why in sorted(problems.items()))
        super().__init__(f"{what} needs validated raw data, but {len(problems)} date(s) did not "
                         f"pass validation:\n  - {lines}")


def staging_root(settings: Settings, date: dt.date) -> Path:
    """Where the source writes ``date`` before validation."""
    return settings.home / "staging" / f"date={date.isoformat()}"


def report_dir(settings: Settings, date: dt.date) -> Path:
    """Validation report of the copy of ``date`` that ``raw/`` holds (with the marker)."""
    return settings.validation_dir / f"date={date.isoformat()}"


def is_valid(settings: Settings, date: dt.date) -> bool:
    """Whether ``raw/`` holds a validated copy of ``date`` (its marker exists)."""
    return (report_dir(settings, date) / SUCCESS).exists()


def status(settings: Settings, date: dt.date) -> str:
    """One line on ``date``: valid, quarantined, staged, or not ingested."""
    if is_valid(settings, date):
        return "valid"
    quarantined = settings.quarantine_dir / f"date={date.isoformat()}"
    if quarantined.exists():
        return (f"quarantined: it failed validation (report: {quarantined / 'report'}); fix the "
                f"source and rerun `rankline run-dag ingest --date {date}`")
    if staging_root(settings, date).exists():
        return (f"acquired but not validated: rerun `rankline run-dag ingest --date {date}`")
    return f"not ingested: run `rankline run-dag ingest --date {date}`"


def valid_dates(settings: Settings, dates: Iterable[dt.date]) -> list[dt.date]:
    """The dates among ``dates`` that passed validation; the others are logged and skipped."""
    dates = list(dates)
    ok = [d for d in dates if is_valid(settings, d)]
    if skipped := [d.isoformat() for d in dates if d not in ok]:
        log.warning("skipping dates that did not pass validation: %s", skipped)
    return ok


def require_valid(settings: Settings, dates: Iterable[dt.date], what: str) -> None:
    """Raise :class:`UnvalidatedDate` unless every date passed validation."""
    problems = {d: status(settings, d) for d in dates if not is_valid(settings, d)}
    if problems:
        raise UnvalidatedDate(what, problems)


def stage(settings: Settings, date: dt.date) -> dict[str, str]:
    """Write ``date``'s tables from the configured source into staging (replacing any earlier
    staged copy); ``raw/`` is not touched. Returns the staged paths.

    Raises:
        ValidationFailed: the source's part files cannot be read as one table (a report goes
            to quarantine; the source's files are left as they are).
    """
    from pipeline.sources import get_source
    from pipeline.sources.parquet import SourceSchemaError
    from pipeline.validation import ValidationFailed

    root = staging_root(settings, date)
    if root.exists():
        shutil.rmtree(root)
    try:
        paths = get_source(settings).acquire(date, root)
    except SourceSchemaError as exc:  # part files that cannot be one table: bad data, judged now
        report = root / "_report"
        report.mkdir(parents=True, exist_ok=True)
        (report / "results.json").write_text(json.dumps(
            {"date": date.isoformat(), "success": False, "failures": [str(exc)]}, indent=1))
        raise ValidationFailed(date, [str(exc)], _quarantine(settings, date, root)) from exc
    log.info("staged %s from %s: %s", date, settings.source, sorted(paths))
    return paths


def _staged(settings: Settings, date: dt.date) -> dict[str, Path]:
    root = staging_root(settings, date)
    return {t: io.partition_path(root, t, date) for t in TABLES}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def land(settings: Settings, date: dt.date) -> Any:
    """Validate the staged copy of ``date``; promote it into ``raw/`` if it passes, else move it
    to quarantine and raise.

    Returns the :class:`~pipeline.validation.ValidationReport` of the copy ``raw/`` now holds.
    A rerun after a successful promotion (nothing staged, the date valid) returns the existing
    report. Raises:
        ValidationFailed: the staged copy failed (after quarantining it); ``raw/`` is unchanged.
        FileNotFoundError: nothing is staged and the date is not valid.
    """
    from pipeline.validation import ValidationFailed, ValidationReport, validate_tables

    root = staging_root(settings, date)
    if not root.exists():
        if is_valid(settings, date):
            return _existing_report(settings, date, ValidationReport)
        raise FileNotFoundError(f"nothing staged for {date} under {root}: rerun the acquire task "
                                f"(`rankline run-dag ingest --date {date}`)")
    paths = _staged(settings, date)
    report = validate_tables(paths, date, root / "_report")
    if not report.success:
        qdir = _quarantine(settings, date, root)
        exc = ValidationFailed(date, report.failures, qdir)
        if is_valid(settings, date):
            exc.args = (f"{exc.args[0]}\nraw/ keeps the copy of {date} validated earlier; nothing "
                        "downstream changes.",)
        raise exc
    _promote(settings, date, paths, root / "_report", report.rows)
    log.info("raw partition %s valid and promoted: %s", date, report.rows)
    return ValidationReport(date=date, success=True, rows=report.rows, failures=[],
                            results_path=str(report_dir(settings, date) / "results.json"),
                            data_docs=str(report_dir(settings, date) / "data_docs" / "index.html"))


def _existing_report(settings: Settings, date: dt.date, cls: Any) -> Any:
    marker = json.loads((report_dir(settings, date) / SUCCESS).read_text() or "{}")
    return cls(date=date, success=True, rows=marker.get("rows", {}), failures=[],
               results_path=str(report_dir(settings, date) / "results.json"),
               data_docs=str(report_dir(settings, date) / "data_docs" / "index.html"))


def _promote(settings: Settings, date: dt.date, staged: dict[str, Path], staged_report: Path,
             rows: dict[str, int]) -> None:
    """Move a passing staged copy into ``raw/``: marker off, files in, report in, marker on."""
    final = report_dir(settings, date)
    trash = final.with_name(f".{final.name}.{uuid.uuid4().hex}.old")
    if final.exists():
        os.replace(final, trash)  # the marker goes with it: the date is not valid until the end
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    digests = {}
    for table, src in staged.items():
        dst = io.partition_path(settings.raw_dir, table, date)
        digests[table] = _sha256(src)
        if dst.exists():
            if _sha256(dst) == digests[table]:
                continue  # the same bytes again: raw stays as it is
            keep = settings.home / "superseded" / f"date={date.isoformat()}" / stamp / table / dst.name
            keep.parent.mkdir(parents=True, exist_ok=True)
            os.replace(dst, keep)
            log.warning("raw %s %s replaced by a new validated copy; the old one is kept at %s",
                        table, date, keep)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged_report, final)
    marker = {"date": date.isoformat(), "validated_at": stamp, "rows": rows, "sha256": digests}
    tmp = final / f".{SUCCESS}.tmp"
    tmp.write_text(json.dumps(marker, indent=1))
    os.replace(tmp, final / SUCCESS)
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(staging_root(settings, date), ignore_errors=True)


def _quarantine(settings: Settings, date: dt.date, root: Path) -> Path:
    """Move a failing staged copy (tables and report) to ``quarantine/date=D/``, replacing the
    previous failed copy of that date; ``raw/`` and its marker are not touched."""
    qdir = settings.quarantine_dir / f"date={date.isoformat()}"
    if qdir.exists():
        shutil.rmtree(qdir)
    (qdir / "raw").mkdir(parents=True)
    for table in TABLES:
        src = io.partition_dir(root, table, date)
        if src.exists():
            shutil.move(str(src), str(qdir / "raw" / table))
    if (root / "_report").exists():
        shutil.move(str(root / "_report"), str(qdir / "report"))
    shutil.rmtree(root, ignore_errors=True)
    log.error("raw partition %s failed validation; quarantined to %s", date, qdir)
    return qdir
