"""The generic interaction log: labels from RANKLINE_EVENT_LABELS, the funnel tables derived from
it (shared with MovieLens), and ``rankline source check``."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from pipeline.event_labels import parse_event_labels
from pipeline.sources.base import TABLES, id_base
from pipeline.sources.interactions import InteractionLogError, derive_day

D = dt.date(2026, 3, 2)
ROOT = Path(__file__).resolve().parents[2]


def _log(rows: list[tuple], date: dt.date = D, **extra: list) -> pa.Table:
    """(user, item, "HH:MM", event_type) rows of ``date``."""
    users, items, times, events = zip(*rows, strict=True)
    return pa.Table.from_pandas(pd.DataFrame({
        "user_id": list(users), "item_id": list(items),
        "ts": pd.to_datetime([f"{date} {t}" for t in times], utc=True),
        "event_type": list(events), **extra}), preserve_index=False)


LOG = [  # user 1 views 10, 11, 12 then clicks and buys 10; user 2 carts 11; user 3 only views
    (1, 10, "08:00", "view"), (1, 11, "08:01", "view"), (1, 12, "08:02", "view"),
    (1, 10, "08:03", "click"), (1, 10, "08:09", "purchase"),
    (2, 11, "09:00", "view"), (2, 11, "09:05", "cart"),
    (3, 12, "23:59", "view"),
]


def test_derivation_labels_collapse_positions_and_requests():
    t = {k: v.to_pandas() for k, v in derive_day(_log(LOG), D, parse_event_labels(
        "view:0,click:1,cart:2,purchase:3")).items()}
    base = id_base(D)
    imp = t["impressions"]
    # one request per user, one impression per (request, item): 8 rows collapse to 5
    assert list(zip(imp.user_id, imp.item_id, imp.position, strict=True)) == [
        (1, 10, 1), (1, 11, 2), (1, 12, 3), (2, 11, 1), (3, 12, 1)]
    assert list(imp.request_id - base) == [0, 0, 0, 1, 2]
    assert list(imp.event_id - base) == [0, 1, 2, 3, 4]
    assert str(imp.ts[0]) == f"{D} 08:00:00+00:00"  # the earliest row of the (request, item)
    # best label: item 10 of user 1 is a purchase (3), item 11 of user 2 an add-to-cart (2)
    assert list(zip(t["clicks"].user_id, t["clicks"].item_id, strict=True)) == [(1, 10), (2, 11)]
    assert list(t["clicks"].impression_id - base) == [0, 3]
    assert list(t["add_to_cart"].item_id) == [10, 11]
    assert list(t["add_to_cart"].click_id) == list(t["clicks"].event_id)
    assert list(t["purchases"].item_id) == [10] and list(t["purchases"].price) == [1.0]
    assert (t["clicks"].ts.to_numpy() == imp.ts[[0, 3]].to_numpy()).all()  # same ts
    # dimensions: distinct users and items of the day, defaults where the log has none
    assert list(t["users"].user_id) == [1, 2, 3] and t["users"].region.isna().all()
    assert list(t["users"].age_band) == [0, 0, 0] and t["users"].signup_date.isna().all()
    assert list(t["items"].item_id) == [10, 11, 12]
    assert list(t["items"].category) == [0, 0, 0] and list(t["items"].price) == [1.0] * 3
    assert {k: v.schema for k, v in derive_day(_log(LOG), D, parse_event_labels(
        "view:0,click:1,cart:2,purchase:3")).items()}.keys() == set(TABLES)


def test_given_requests_positions_and_item_attributes():
    rows = [(1, 10, "08:00", "v"), (1, 11, "08:00", "v"), (1, 12, "10:00", "v"),
            (1, 12, "10:01", "b")]
    data = _log(rows, request_id=[77, 77, 78, 78], position=[5, 2, 1, 1],
                category=[3, 4, 9, 9], price=[2.5, 4.0, 7.0, 6.5])
    t = {k: v.to_pandas() for k, v in derive_day(data, D, parse_event_labels("v:0,b:3")).items()}
    imp = t["impressions"]
    assert list(imp.request_id - id_base(D)) == [0, 0, 1]  # renumbered, unique across dates
    assert sorted(zip(imp.item_id, imp.position, strict=True)) == [(10, 5), (11, 2), (12, 1)]
    assert list(t["items"].category) == [3, 4, 9]
    assert list(t["items"].price) == [2.5, 4.0, 6.5]  # the latest row's price
    assert list(t["purchases"].price) == [7.0]  # the impression's (earliest row's) price


def test_positions_by_time_are_capped_at_1000():
    rows = [(1, i, f"{i // 60 % 24:02d}:{i % 60:02d}", "view") for i in range(1100)]
    imp = derive_day(_log(rows), D, parse_event_labels("view:0")).pop("impressions").to_pandas()
    assert imp.position.max() == 1000 and list(imp.position[:3]) == [1, 2, 3]


def test_rating_thresholds():
    labels = parse_event_labels("value>=3:1, value>=4:2 ,value>=5:3")
    df = pd.DataFrame({"value": [1.0, 2.9, 3.0, 4.5, 5.0, float("nan")]})
    assert list(labels.labels(df)) == [0, 0, 1, 2, 3, 0]
    rows = [(1, 10, "08:00", "rating"), (1, 11, "08:01", "rating")]
    t = derive_day(_log(rows, value=[5.0, 2.0]), D, labels)
    assert t["purchases"].num_rows == 1 and t["impressions"].num_rows == 2


@pytest.mark.parametrize("spec, why", [
    ("", "comma list of key:label"),
    ("view:0,,click:1", "comma list of key:label"),
    ("view", "is not key:label"),
    ("click:4", "label must be an integer 0-3"),
    ("click:one", "label must be an integer 0-3"),
    ("view:0,view:1", "given twice"),
    ("value>=x:1", "threshold must be a finite number"),
    ("value>3:1", "written value>=N:label"),
    ("click:1,value>=4:2", "mixes event types"),
    ("a b:1", "event type is 1-64"),
])
def test_bad_mappings(spec, why):
    with pytest.raises(ValueError, match=why):
        parse_event_labels(spec)


def test_a_bad_mapping_setting_names_the_variable(monkeypatch):
    from pipeline.settings import SettingsError, load_settings

    monkeypatch.setenv("RANKLINE_EVENT_LABELS", "view:0,click:7")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "RANKLINE_EVENT_LABELS=view:0,click:7: entry 'click:7': the label must be" in str(err.value)
    monkeypatch.setenv("RANKLINE_EVENT_LABELS", "value>=4:1")
    monkeypatch.setenv("RANKLINE_SOURCE", "interactions")
    with pytest.raises(SettingsError, match="source=interactions needs RANKLINE_SOURCE_URI"):
        load_settings()
    monkeypatch.setenv("RANKLINE_SOURCE_URI", "/data/log")
    s = load_settings()
    assert s.event_label_map.thresholds == ((4.0, 1),)


def test_bad_logs_are_refused_with_every_problem():
    labels = parse_event_labels("view:0,click:1")
    with pytest.raises(InteractionLogError, match=r"event types not in RANKLINE_EVENT_LABELS: "
                       r"\{'search': 2\}"):
        derive_day(_log([(1, 1, "08:00", "search"), (1, 2, "08:00", "search")]), D, labels)
    data = _log([(1, 1, "08:00", "view")]).drop_columns(["item_id"])
    with pytest.raises(InteractionLogError, match="missing column item_id"):
        derive_day(data, D, labels)
    with pytest.raises(InteractionLogError, match="missing column value"):
        derive_day(_log([(1, 1, "08:00", "view")]), D, parse_event_labels("value>=4:1"))


def test_a_derived_day_passes_validation(tmp_path):
    from feature_store import io
    from pipeline.validation import validate_tables

    tables = derive_day(_log(LOG), D, parse_event_labels("view:0,click:1,cart:2,purchase:3"))
    paths = {t: io.write_table(data, io.partition_path(tmp_path / "raw", t, D))
             for t, data in tables.items()}
    report = validate_tables(paths, D, tmp_path / "report")
    assert report.success, report.failures


def _write(root: Path, table: str, date: dt.date, data: pa.Table) -> None:
    import pyarrow.parquet as pq

    folder = root / table / f"date={date}"
    folder.mkdir(parents=True)
    pq.write_table(data, folder / "part-0.parquet")


def _check(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("RANKLINE_")}
    env.update(RANKLINE_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "source", "check", *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_source_check_on_good_and_bad_locations(tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    _write(good, "interactions", D, _log(LOG))
    out = _check(tmp_path, str(good))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "interactions shape, 1 date(s)" in out.stdout
    assert (f"{D}  ok  interactions=8  users=3  items=3  impressions=5  clicks=2  add_to_cart=2  "
            "purchases=1") in out.stdout
    assert not (tmp_path / "home").exists()  # nothing ingested

    late = D + dt.timedelta(days=1)
    _write(bad, "interactions", D, _log([(1, 1, "08:00", "search")]))
    _write(bad, "interactions", late, _log(LOG, date=late + dt.timedelta(days=1)))  # ts outside
    out = _check(tmp_path, str(bad))
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"{D}  FAILED  interactions=1" in out.stdout
    assert "event types not in RANKLINE_EVENT_LABELS: {'search': 1}" in out.stdout
    assert f"{late}  FAILED" in out.stdout and f"impressions.ts lies within {late}" in out.stdout
    assert "0 of 2 date(s) pass validation" in out.stdout
    out = _check(tmp_path, str(bad), "--limit-dates", "1", "--shape", "funnel")
    assert out.returncode == 1 and "funnel shape, 0 date(s)" in out.stdout


def test_source_check_on_a_funnel_location(tmp_path):
    root = tmp_path / "funnel"
    for table, data in derive_day(_log(LOG), D, parse_event_labels(
            "view:0,click:1,cart:2,purchase:3")).items():
        if table != "purchases":  # a missing table is a failure, named
            _write(root, table, D, data)
    out = _check(tmp_path, str(root))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "funnel shape, 1 date(s)" in out.stdout and f"{D}  FAILED  users=3" in out.stdout
    assert "purchases: no partition" in out.stdout


def test_an_unmappable_log_is_quarantined_at_acquire(settings, monkeypatch):
    """Through landing: an event type the mapping does not name fails the ingest at once with a
    report in quarantine; nothing reaches raw/."""
    from pipeline import landing
    from pipeline.sources.interactions import InteractionsSource
    from pipeline.validation import ValidationFailed

    lake = settings.home.parent / "lake"
    path = lake / "interactions" / f"date={D}" / "part-0.parquet"
    path.parent.mkdir(parents=True)
    import pyarrow.parquet as pq

    pq.write_table(_log([(1, 1, "08:00", "view"), (1, 2, "08:01", "search")]), path)
    source = InteractionsSource(str(lake), "view:0,click:1")
    monkeypatch.setattr("pipeline.sources.get_source", lambda s: source)
    with pytest.raises(ValidationFailed, match="event types not in RANKLINE_EVENT_LABELS"):
        landing.stage(settings, D)
    report = settings.quarantine_dir / f"date={D}" / "report" / "results.json"
    assert "search" in report.read_text()
    assert not settings.raw_dir.exists() and not landing.is_valid(settings, D)
