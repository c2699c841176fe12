"""Deliberately corrupted partitions, one per kind of fault: each must be caught, quarantined
with its report and Data Docs, and leave the raw files untouched. (The full corpus of faults,
through :func:`~pipeline.validation.validate_tables`, is in ``test_validation_corpus.py``.)"""

import hashlib

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline import io
from pipeline.sources.base import TABLES
from pipeline.validation import ValidationFailed, is_valid, prepare_frames, validate_partition
from tests.bad_partitions import case
from tests.conftest import D0


def _digest(settings):
    return {t: hashlib.sha256(io.partition_path(settings.raw_dir, t, D0).read_bytes()).hexdigest()
            for t in TABLES}


def _drop_column(df):
    return df.drop(columns=["position"])


def _wrong_type(df):
    return df.assign(position=df["position"].astype(str))


def _null_key(df):
    df = df.astype({"user_id": "float64"})
    df.loc[3, "user_id"] = np.nan
    return df


def _out_of_range(df):
    df = df.copy()
    df.loc[0, "price"] = -5.0
    return df


def _duplicate_id(df):
    df = df.copy()
    df.loc[1, "event_id"] = df.loc[0, "event_id"]
    return df


def _unknown_user(df):
    df = df.copy()
    df.loc[0, "user_id"] = 10_000_000
    return df


def _orphan_click(df):
    df = df.copy()
    df.loc[0, "impression_id"] = 42
    return df


def _purchase_without_click(df):
    df = df.copy()
    df.loc[0, "click_id"] = 42
    return df


FAULTS = [
    ("impressions", _drop_column, "has exactly the columns"),
    ("impressions", _wrong_type, "impressions.position is int16"),
    ("impressions", _null_key, "impressions.user_id is never null"),
    ("purchases", _out_of_range, "purchases.price lies in"),
    ("clicks", _duplicate_id, "clicks.event_id is unique"),
    ("impressions", _unknown_user, "every impressions.user_id exists in users"),
    ("clicks", _orphan_click, "every click has its impression"),
    ("purchases", _purchase_without_click, "every purchase has its click"),
]


def test_clean_partition_passes(settings, source):
    source.acquire(D0, settings.raw_dir)
    report = validate_partition(settings.raw_dir, D0, settings.validation_dir,
                                settings.quarantine_dir)
    assert report.success and report.failures == []
    assert is_valid(settings.validation_dir, D0)
    assert (settings.validation_dir / f"date={D0}" / "data_docs" / "index.html").exists()


@pytest.mark.parametrize(("table", "corrupt", "expected"), FAULTS,
                         ids=[f[1].__name__.strip("_") for f in FAULTS])
def test_fault_is_caught_and_quarantined(settings, source, table, corrupt, expected):
    source.acquire(D0, settings.raw_dir)
    if table == "purchases" and len(io.read_partition(settings.raw_dir, table, D0)) == 0:
        pytest.fail("fixture day has no purchases to corrupt")
    bad = corrupt(io.read_partition(settings.raw_dir, table, D0))
    io.write_partition(bad, settings.raw_dir, table, D0)
    before = _digest(settings)

    with pytest.raises(ValidationFailed) as err:
        validate_partition(settings.raw_dir, D0, settings.validation_dir, settings.quarantine_dir)

    assert expected in str(err.value)
    assert _digest(settings) == before, "raw files must stay untouched"
    q = settings.quarantine_dir / f"date={D0}"
    assert (q / "raw" / table / io.PART).exists()
    assert (q / "report" / "results.json").exists()
    assert list((q / "report" / "data_docs").rglob("*.html"))
    assert not is_valid(settings.validation_dir, D0)


def test_missing_table_is_a_clear_error(settings, source):
    source.acquire(D0, settings.raw_dir)
    io.partition_path(settings.raw_dir, "clicks", D0).unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks tables \['clicks'\]"):
        validate_partition(settings.raw_dir, D0, settings.validation_dir, settings.quarantine_dir)


def test_prepare_frames_does_not_modify_inputs(source):
    frames = {t: v.to_pandas() for t, v in source.frames(D0).items()}
    cols = {t: list(df.columns) for t, df in frames.items()}
    out = prepare_frames(frames)
    assert {t: list(df.columns) for t, df in frames.items()} == cols
    assert out["clicks"]["_impression_known"].all()


def test_non_utf8_text_is_quarantined_with_its_report(settings, source, tmp_path):
    """It used to crash inside Great Expectations, with no report and no quarantine."""
    source.acquire(D0, settings.raw_dir)
    path = io.partition_path(settings.raw_dir, "users", D0)
    frames = {t: pq.read_table(io.partition_path(settings.raw_dir, t, D0)) for t in TABLES}
    io.write_table(case("non_utf8_region").damage(frames, tmp_path, D0)["users"], path)

    with pytest.raises(ValidationFailed) as err:
        validate_partition(settings.raw_dir, D0, settings.validation_dir, settings.quarantine_dir)

    assert "users: users.region is valid UTF-8 text — 1 unexpected (e.g. user_id=[0])" in str(err.value)
    q = settings.quarantine_dir / f"date={D0}"
    assert (q / "raw" / "users" / io.PART).exists() and (q / "report" / "results.json").exists()
    assert not is_valid(settings.validation_dir, D0)


def _ts(hms: str) -> pd.Timestamp:
    return pd.Timestamp(f"{D0} {hms}", tz="UTC")


def test_prepare_frames_flags_events_earlier_than_the_event_they_follow():
    ev = {"user_id": 1, "item_id": 7}
    frames = {
        "users": pd.DataFrame({"user_id": [1]}),
        "items": pd.DataFrame({"item_id": [7]}),
        "impressions": pd.DataFrame({"event_id": [10, 11], **ev, "ts": [_ts("01:00"), _ts("02:00")]}),
        "clicks": pd.DataFrame({"event_id": [20, 21, 22], "impression_id": [10, 11, 99], **ev,
                                "ts": [_ts("01:00"), _ts("01:00"), _ts("00:00")]}),
        "add_to_cart": pd.DataFrame({"event_id": [30, 31], "click_id": [20, 21], **ev,
                                     "ts": [_ts("00:59:59"), _ts("03:00")]}),
        "purchases": pd.DataFrame({"event_id": [40], "click_id": [20], **ev, "ts": [_ts("05:00")]}),
    }
    out = prepare_frames(frames)
    # equal times are in order; an unknown impression fails its own check, not this one
    assert out["clicks"]["_after_impression"].tolist() == [True, False, True]
    assert out["clicks"]["_impression_known"].tolist() == [True, True, False]
    assert out["add_to_cart"]["_after_click"].tolist() == [False, True]
    assert out["purchases"]["_after_click"].tolist() == [True]
    assert "_after_impression" not in frames["clicks"]
