"""Landing raw data: a source writes a date to staging, validation judges it there, and only a
passing copy is promoted into ``raw/``; a failing one goes to quarantine.

Layout under ``RANKLINE_HOME`` for a logical date D::

    staging/date=D/<table>/date=D/part-0.parquet   what the source gave (a rerun replaces it)
    raw/<table>/date=D/part-0.parquet              the validated copy, read by every later step
    validation/date=D/                             its report, Data Docs and the ``_SUCCESS`` marker
    quarantine/date=D/                             the last copy that failed, with its report
                                                   (earlier ones under quarantine/history/)
    superseded/date=D/<stamp>/<table>/part-0.parquet  a validated copy replaced by a newer
                                                   validated copy that differs (never deleted)

The marker is the commit point: promotion removes it first, puts the files in place, then writes
it last; the staged copy stays until then, so a crash in between leaves the date without a marker
(no step reads it) and a rerun of ``validate`` finishes the promotion. Re-ingesting a valid date
from a broken source leaves ``raw/`` and the marker untouched.
Every step after ingest asks :func:`require_valid` (or :func:`valid_dates`) before it reads a date.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from feature_store import io
from pipeline.settings import Settings
from pipeline.sources.base import TABLES
from serving.store import redact_text

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
        ValidationFailed: the source's part files cannot be read as one table, or an
            interaction log cannot be turned into funnel tables (a report goes to quarantine;
            the source's files are left as they are).
    """
    import pyarrow as pa

    from pipeline.sources import get_source
    from pipeline.sources.interactions import InteractionLogError
    from pipeline.sources.parquet import SourceSchemaError
    from pipeline.validation import ValidationFailed

    root = staging_root(settings, date)
    with _date_lock(settings, date):
        if root.exists():
            shutil.rmtree(root)
        try:
            paths = get_source(settings).acquire(date, root)
        except (SourceSchemaError, InteractionLogError, pa.ArrowInvalid) as exc:  # bad data
            msg = f"the source's {date} cannot be read: {type(exc).__name__}: {redact_text(exc)}"
            report = root / "_report"
            report.mkdir(parents=True, exist_ok=True)
            (report / "results.json").write_text(json.dumps(
                {"date": date.isoformat(), "success": False, "failures": [msg]}, indent=1))
            raise ValidationFailed(date, [msg], _quarantine(settings, date, root)) from None
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


class NothingStaged(FileNotFoundError):
    """``validate`` found nothing staged for a date that is not valid either."""


@contextlib.contextmanager
def _date_lock(settings: Settings, date: dt.date) -> Iterator[None]:
    """One stage-or-land at a time per date, across processes (an ``flock``, freed when the
    holder dies): a manual ``rankline run-dag ingest`` beside a scheduled run cannot interleave."""
    from pipeline.locks import file_lock

    with file_lock(settings.home / "staging" / f".date={date.isoformat()}.lock"):
        yield


def _digests(paths: dict[str, Path]) -> dict[str, str | None]:
    return {t: _sha256(p) if p.exists() else None for t, p in paths.items()}


def land(settings: Settings, date: dt.date) -> Any:
    """Validate the staged copy of ``date``; promote it into ``raw/`` if it passes, else move it
    to quarantine and raise.

    Returns the :class:`~pipeline.validation.ValidationReport` of the copy ``raw/`` now holds.
    Safe to rerun at any point: the staged copy stays in staging until the marker is written,
    and a copy that passed (``_PASSED.json``, with its digests) is promoted again without being
    validated again; after a completed promotion (nothing staged, the date valid) a rerun
    returns the existing report. Raises:
        ValidationFailed: the staged copy failed (after quarantining it); ``raw/`` is unchanged.
        NothingStaged: nothing is staged and the date is not valid.
    """
    from pipeline.validation import ValidationFailed, ValidationReport, validate_tables

    with _date_lock(settings, date):
        root = staging_root(settings, date)
        if not root.exists():
            if is_valid(settings, date):
                return _existing_report(settings, date, ValidationReport)
            raise NothingStaged(f"nothing staged for {date} under {root}: rerun the acquire task "
                                f"(`rankline run-dag ingest --date {date}`)")
        paths = _staged(settings, date)
        passed = root / "_PASSED.json"
        before = _digests(paths)
        done = json.loads(passed.read_text()) if passed.exists() else {}
        if done.get("sha256") == before:
            rows = done["rows"]  # an interrupted promotion: finish it
            log.warning("finishing the interrupted promotion of %s", date)
        else:
            report = validate_tables(paths, date, root / "_report")
            if not report.success:
                qdir = _quarantine(settings, date, root)
                exc = ValidationFailed(date, report.failures, qdir)
                if is_valid(settings, date):
                    exc.args = (f"{exc.args[0]}\nraw/ keeps the copy of {date} validated earlier; "
                                "nothing downstream changes.",)
                raise exc
            if _digests(paths) != before:
                raise RuntimeError(f"the staged copy of {date} changed while it was validated; "
                                   "rerun the ingest")
            rows = report.rows
            passed.write_text(json.dumps({"rows": rows, "sha256": before}))
        _promote(settings, date, paths, root / "_report", rows, before)  # type: ignore[arg-type]
    log.info("raw partition %s valid and promoted: %s", date, rows)
    return _existing_report(settings, date, ValidationReport)


def _existing_report(settings: Settings, date: dt.date, cls: Any) -> Any:
    marker = json.loads((report_dir(settings, date) / SUCCESS).read_text() or "{}")
    return cls(date=date, success=True, rows=marker.get("rows", {}), failures=[],
               results_path=str(report_dir(settings, date) / "results.json"),
               data_docs=str(report_dir(settings, date) / "data_docs" / "index.html"))


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _place(src: Path, dst: Path) -> None:
    """Put ``src``'s bytes at ``dst`` in one rename (a hard link where possible), keeping ``src``."""
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex}.tmp")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # another file system
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def _promote(settings: Settings, date: dt.date, staged: dict[str, Path], staged_report: Path,
             rows: dict[str, int], digests: dict[str, str]) -> None:
    """Put a passing staged copy into ``raw/``: marker off, files in, report in, marker on, then
    staging removed. Every step keeps what it needs to be redone, so a rerun after a crash at
    any point finishes the job; until the marker is written the date reads as not valid."""
    final = report_dir(settings, date)
    for old in final.parent.glob(f".{final.name}.*.old"):  # left by a crash
        shutil.rmtree(old, ignore_errors=True)
    trash = final.with_name(f".{final.name}.{uuid.uuid4().hex}.old")
    if final.exists():
        os.replace(final, trash)  # the marker goes with it: the date is not valid until the end
    stamp = _stamp()
    for table, src in staged.items():
        dst = io.partition_path(settings.raw_dir, table, date)
        if dst.exists():
            if _sha256(dst) == digests[table]:
                continue  # the same bytes: raw stays as it is
            keep = settings.home / "superseded" / f"date={date.isoformat()}" / stamp / table / dst.name
            keep.parent.mkdir(parents=True, exist_ok=True)
            os.replace(dst, keep)
            log.warning("raw %s %s replaced by a new validated copy; the old one is kept at %s",
                        table, date, keep)
        _place(src, dst)
    tmp_report = final.with_name(f".{final.name}.{uuid.uuid4().hex}.new")
    shutil.copytree(staged_report, tmp_report)
    marker = {"date": date.isoformat(), "validated_at": stamp, "rows": rows, "sha256": digests}
    (tmp_report / SUCCESS).write_text(json.dumps(marker, indent=1))
    os.replace(tmp_report, final)  # report and marker appear together: the commit point
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(staging_root(settings, date), ignore_errors=True)


def _quarantine(settings: Settings, date: dt.date, root: Path) -> Path:
    """Move a failing staged copy (tables and report) to ``quarantine/date=D/``; an earlier
    failed copy of that date moves to ``quarantine/history/date=D/<time>/`` (nothing is
    deleted). ``raw/`` and its marker are not touched."""
    qdir = settings.quarantine_dir / f"date={date.isoformat()}"
    if qdir.exists():
        older = settings.quarantine_dir / "history" / qdir.name / _stamp()
        older.parent.mkdir(parents=True, exist_ok=True)
        os.replace(qdir, older)
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
