"""Deliberately corrupted partitions, one per kind of fault, landed through staging: each must be
caught, quarantined with its report and Data Docs, and never reach raw/. (The full corpus of faults,
through :func:`~pipeline.validation.validate_tables`, is in ``test_validation_corpus.py``.)"""

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from feature_store import io
from pipeline import landing
from pipeline.sources.base import TABLES
from pipeline.validation import ValidationFailed, prepare_frames
from tests.bad_partitions import case
from tests.conftest import D0


def _staged(settings) -> Path:
    """Stage D0 from the configured source; the root of its staged tables."""
    landing.stage(settings, D0)
    return landing.staging_root(settings, D0)


def _digest(root):
    return {t: hashlib.sha256(io.partition_path(root, t, D0).read_bytes()).hexdigest()
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


def test_clean_partition_passes(settings, source, capfd):
    _staged(settings)
    capfd.readouterr()
    report = landing.land(settings, D0)
    # no progress bar on stderr, where an Airflow task log shows each as an ERROR line
    assert "it/s]" not in capfd.readouterr().err
    assert report.success and report.failures == []
    assert landing.is_valid(settings, D0)
    assert (settings.validation_dir / f"date={D0}" / "data_docs" / "index.html").exists()


@pytest.mark.parametrize(("table", "corrupt", "expected"), FAULTS,
                         ids=[f[1].__name__.strip("_") for f in FAULTS])
def test_fault_is_caught_and_quarantined(settings, source, table, corrupt, expected):
    root = _staged(settings)
    if table == "purchases" and len(io.read_partition(root, table, D0)) == 0:
        pytest.fail("fixture day has no purchases to corrupt")
    bad = corrupt(io.read_partition(root, table, D0))
    io.write_partition(bad, root, table, D0)
    staged = _digest(root)

    with pytest.raises(ValidationFailed) as err:
        landing.land(settings, D0)

    assert expected in str(err.value)
    assert not settings.raw_dir.exists(), "nothing that failed validation reaches raw/"
    q = settings.quarantine_dir / f"date={D0}"
    for t in TABLES:  # the quarantined copy is the staged copy, byte for byte
        got = hashlib.sha256((q / "raw" / t / io.PART).read_bytes()).hexdigest()
        assert got == staged[t]
    assert (q / "report" / "results.json").exists()
    assert list((q / "report" / "data_docs").rglob("*.html"))
    assert not landing.is_valid(settings, D0)


def test_missing_table_is_a_failure_line(settings, source):
    root = _staged(settings)
    io.partition_path(root, "clicks", D0).unlink()
    with pytest.raises(ValidationFailed, match=r"clicks: the table file is missing"):
        landing.land(settings, D0)
    assert not landing.is_valid(settings, D0)


def test_prepare_frames_does_not_modify_inputs(source):
    frames = {t: v.to_pandas() for t, v in source.frames(D0).items()}
    cols = {t: list(df.columns) for t, df in frames.items()}
    out = prepare_frames(frames)
    assert {t: list(df.columns) for t, df in frames.items()} == cols
    assert out["clicks"]["_impression_known"].all()


def test_non_utf8_text_is_quarantined_with_its_report(settings, source, tmp_path):
    """It used to crash inside Great Expectations, with no report and no quarantine."""
    root = _staged(settings)
    path = io.partition_path(root, "users", D0)
    frames = {t: pq.read_table(io.partition_path(root, t, D0)) for t in TABLES}
    io.write_table(case("non_utf8_region").damage(frames, tmp_path, D0)["users"], path)

    with pytest.raises(ValidationFailed) as err:
        landing.land(settings, D0)

    assert "users: users.region is valid UTF-8 text — 1 unexpected (e.g. user_id=[0])" in str(err.value)
    q = settings.quarantine_dir / f"date={D0}"
    assert (q / "raw" / "users" / io.PART).exists() and (q / "report" / "results.json").exists()
    assert not landing.is_valid(settings, D0)
