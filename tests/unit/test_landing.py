"""Raw data is immutable once validated: staging, promotion, quarantine, and every later step
refusing dates that did not pass."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from feature_store import io
from pipeline import landing
from pipeline.sources.base import TABLES, DataSource
from pipeline.validation import ValidationFailed
from tests.conftest import D0


class Damaged(DataSource):
    """The configured source with one table damaged by ``fn``."""

    name = "damaged"

    def __init__(self, inner: DataSource, table: str, fn) -> None:
        self.inner, self.table, self.fn = inner, table, fn

    def frames(self, date: dt.date) -> dict[str, pa.Table]:
        out = self.inner.frames(date)
        out[self.table] = self.fn(out[self.table])
        return out


def _use(monkeypatch, src: DataSource) -> None:
    monkeypatch.setattr("pipeline.sources.get_source", lambda settings: src)


def _digests(settings, date=D0) -> dict[str, str]:
    return {t: hashlib.sha256(io.partition_path(settings.raw_dir, t, date).read_bytes()).hexdigest()
            for t in TABLES}


def _ingest(settings, date=D0):
    landing.stage(settings, date)
    return landing.land(settings, date)


def _orphan_clicks(t: pa.Table) -> pa.Table:
    """Clicks whose impression does not exist: the funnel check fails."""
    return t.set_column(t.schema.get_field_index("impression_id"), "impression_id",
                        pc.add(t["impression_id"], 7))


def test_a_valid_date_is_promoted_with_its_marker(settings):
    paths = landing.stage(settings, D0)
    assert not any(io.partition_path(settings.raw_dir, t, D0).exists() for t in TABLES)
    assert all(str(landing.staging_root(settings, D0)) in p for p in paths.values())
    report = landing.land(settings, D0)
    assert report.success and report.rows["impressions"] > 0
    assert landing.is_valid(settings, D0)
    marker = json.loads((landing.report_dir(settings, D0) / landing.SUCCESS).read_text())
    assert marker["sha256"] == _digests(settings)
    assert not landing.staging_root(settings, D0).exists()
    # a rerun of the validate task alone (nothing staged) returns the report of raw's copy
    again = landing.land(settings, D0)
    assert again.success and again.rows == report.rows


def test_reingesting_a_valid_date_from_a_broken_source_keeps_the_valid_data(settings, source,
                                                                             monkeypatch,
                                                                             reliability):
    _ingest(settings)
    before = _digests(settings)
    marker = (landing.report_dir(settings, D0) / landing.SUCCESS).read_bytes()

    _use(monkeypatch, Damaged(source, "clicks", _orphan_clicks))
    with pytest.raises(ValidationFailed) as err:
        _ingest(settings)
    assert "every click has its impression" in str(err.value)
    assert "keeps the copy of 2026-01-01 validated earlier" in str(err.value)
    reliability("bad partition", "re-ingest a valid date from a broken source",
                "fails validation; raw/ and its marker untouched, bad copy quarantined",
                str(err.value).splitlines()[-1])
    assert _digests(settings) == before
    assert (landing.report_dir(settings, D0) / landing.SUCCESS).read_bytes() == marker
    assert landing.is_valid(settings, D0)
    q = settings.quarantine_dir / f"date={D0}"
    assert (q / "raw" / "clicks" / io.PART).exists() and (q / "report" / "results.json").exists()
    assert not landing.staging_root(settings, D0).exists()


def test_a_new_valid_copy_replaces_raw_and_keeps_the_old_one(settings, source, monkeypatch):
    _ingest(settings)
    before = _digests(settings)
    _ingest(settings)  # the same bytes again: nothing superseded
    assert not (settings.home / "superseded").exists()

    _use(monkeypatch, Damaged(source, "purchases", lambda t: t.slice(0, max(0, t.num_rows - 1))))
    _ingest(settings)
    after = _digests(settings)
    assert after["purchases"] != before["purchases"]
    assert {t for t in TABLES if after[t] != before[t]} == {"purchases"}
    kept = list((settings.home / "superseded" / f"date={D0}").glob("*/purchases/*.parquet"))
    assert len(kept) == 1
    assert hashlib.sha256(kept[0].read_bytes()).hexdigest() == before["purchases"]
    assert landing.is_valid(settings, D0)


def test_nothing_staged_and_not_valid_says_what_to_do(settings):
    with pytest.raises(FileNotFoundError, match="rankline run-dag ingest --date 2026-01-01"):
        landing.land(settings, D0)


def test_no_step_reads_a_quarantined_date(settings, source, monkeypatch, reliability):
    """A quarantined day inside the training window stops training, features and the refresh
    before they read anything."""
    from pipeline import steps
    from pipeline.hulk import refresh
    from pipeline.training import build_training_set

    bad = D0 + dt.timedelta(days=1)
    _ingest(settings, D0)
    _use(monkeypatch, Damaged(source, "clicks", _orphan_clicks))
    with pytest.raises(ValidationFailed):
        _ingest(settings, bad)
    assert not landing.is_valid(settings, bad)
    assert not io.has_partition(settings.raw_dir, "clicks", bad)

    n = settings.train_days + settings.valid_days + settings.test_days
    as_of = bad + dt.timedelta(days=n - 2)  # the window holds D0, bad, and later dates
    with pytest.raises(landing.UnvalidatedDate) as err:
        build_training_set(settings, as_of)
    msg = str(err.value)
    assert f"{bad}: quarantined" in msg and f"{D0}:" not in msg
    assert "RANKLINE_TRAIN_DAYS" in msg and not (settings.work_dir / "rows").exists()
    reliability("bad partition", "quarantined date inside the training window",
                "training, features and the refresh refuse it before reading", msg)
    with pytest.raises(landing.UnvalidatedDate, match="quarantined"):
        steps.features(settings, bad)
    with pytest.raises(landing.UnvalidatedDate, match="quarantined"):
        refresh(settings, bad, "models:/none/1")
    assert landing.valid_dates(settings, [D0, bad]) == [D0]


def test_part_files_that_cannot_be_one_table_are_quarantined(settings, source, monkeypatch,
                                                             tmp_path):
    """A source whose part files disagree on a column's type: the ingest fails at acquire with
    a report in quarantine, and the date's validated copy in raw/ stays as it was."""
    from pipeline.sources.parquet import ParquetSource

    _ingest(settings)
    before = _digests(settings)
    lake = tmp_path / "lake"
    frames = source.frames(D0)
    for t, data in frames.items():
        io.write_table(data, io.partition_path(lake, t, D0))
    imp = frames["impressions"]
    io.write_table(imp.slice(0, 10), io.partition_path(lake, "impressions", D0))
    bad = imp.slice(10)
    bad = bad.set_column(bad.schema.get_field_index("user_id"), "user_id",
                         bad["user_id"].cast(pa.string()))
    io.write_table(bad, io.partition_dir(lake, "impressions", D0) / "part-1.parquet")

    _use(monkeypatch, ParquetSource(str(lake)))
    with pytest.raises(ValidationFailed, match="user_id is string not int64"):
        landing.stage(settings, D0)
    report = settings.quarantine_dir / f"date={D0}" / "report" / "results.json"
    assert "user_id is string not int64" in report.read_text()
    assert _digests(settings) == before and landing.is_valid(settings, D0)
    assert (io.partition_dir(lake, "impressions", D0) / "part-1.parquet").exists()  # source as it was


def test_a_promotion_interrupted_halfway_is_finished_by_a_rerun(settings, source, monkeypatch):
    """A crash after some tables were put in raw/: the date reads as not valid, the staged copy
    is still there, and rerunning validate finishes the promotion without validating again."""
    _ingest(settings)
    old = _digests(settings)
    drop_last = lambda t: t.slice(0, max(0, t.num_rows - 1))  # noqa: E731
    _use(monkeypatch, Damaged(Damaged(source, "purchases", drop_last), "add_to_cart", drop_last))
    landing.stage(settings, D0)
    staged = {t: hashlib.sha256(p.read_bytes()).hexdigest()
              for t, p in landing._staged(settings, D0).items()}

    calls = []
    real_place = landing._place

    def crash_on_second(src, dst):  # add_to_cart is in place, purchases moved aside, not yet in
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk went away")
        real_place(src, dst)

    monkeypatch.setattr(landing, "_place", crash_on_second)
    with pytest.raises(OSError, match="disk went away"):
        landing.land(settings, D0)
    assert not landing.is_valid(settings, D0)
    assert (landing.staging_root(settings, D0) / "_PASSED.json").exists()
    assert not io.has_partition(settings.raw_dir, "purchases", D0)  # the half-state

    monkeypatch.setattr(landing, "_place", real_place)
    monkeypatch.setattr("pipeline.validation.validate_tables",
                        lambda *a, **k: pytest.fail("a passed copy is not validated again"))
    report = landing.land(settings, D0)
    assert report.success and landing.is_valid(settings, D0)
    assert _digests(settings) == staged
    assert {t for t in TABLES if staged[t] != old[t]} == {"purchases", "add_to_cart"}
    marker = json.loads((landing.report_dir(settings, D0) / landing.SUCCESS).read_text())
    assert marker["sha256"] == staged
    assert not landing.staging_root(settings, D0).exists()
    for table in ("purchases", "add_to_cart"):  # the old validated copies, kept
        kept = list((settings.home / "superseded" / f"date={D0}").glob(f"*/{table}/*.parquet"))
        assert [hashlib.sha256(k.read_bytes()).hexdigest() for k in kept] == [old[table]]
