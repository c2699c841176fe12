"""Deliberately corrupted partitions, one per kind of fault: each must be caught, quarantined
with its report and Data Docs, and leave the raw files untouched."""

import hashlib

import numpy as np
import pytest

from pipeline import io
from pipeline.sources.base import TABLES
from pipeline.validation import ValidationFailed, is_valid, prepare_frames, validate_partition
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
