"""The corpus of bad partitions (``tests/bad_partitions.py``): every fault fails
:func:`validate_tables` with a line that names it (and the offending row's id), a clean day
passes, and nothing raises for bad data."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from feature_store import io
from pipeline.landing import SUCCESS
from pipeline.sources.base import TABLES
from pipeline.sources.parquet import ParquetSource, SourceSchemaError
from pipeline.validation import ID_COLUMN, validate_tables
from tests.bad_partitions import CASES, write_case
from tests.conftest import D0, TINY


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pa.Table]:
    """One clean synthetic day at tiny scale, made once for the module."""
    from pipeline.settings import get_settings
    from pipeline.sources import get_source

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RANKLINE_HOME", str(tmp_path_factory.mktemp("home")))
        for k, v in TINY.items():
            mp.setenv(k, v)
        get_settings.cache_clear()
        try:
            return get_source(get_settings()).frames(D0)
        finally:
            get_settings.cache_clear()


def _write(frames: dict[str, pa.Table], root: Path) -> dict[str, Path]:
    return {t: io.write_table(frames[t], io.partition_path(root, t, D0)) for t in TABLES}


def test_clean_day_passes_and_replaces_the_report_dir(clean, tmp_path):
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    (report_dir / "stale.txt").write_text("from an earlier run")
    report = validate_tables(_write(clean, tmp_path / "raw"), D0, report_dir)
    assert report.success and report.failures == [], report.failures
    assert report.rows == {t: clean[t].num_rows for t in TABLES}
    assert not (report_dir / "stale.txt").exists()
    assert not (report_dir / SUCCESS).exists(), "validate_tables writes no marker"
    assert Path(report.data_docs).exists()
    saved = json.loads(Path(report.results_path).read_text())
    assert saved["success"] is True and set(saved["tables"]) == set(TABLES)


def test_corpus_case_names_are_unique():
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_partition_fails_with_a_line_that_names_the_fault(case, clean, tmp_path, reliability):
    report = validate_tables(write_case(case, clean, tmp_path, D0), D0, tmp_path / "report")

    assert not report.success
    matched = []
    for expected in case.expected_for(D0):
        lines = [f for f in report.failures if expected in f]
        assert lines, f"no failure line contains {expected!r}: {report.failures}"
        matched += lines
    if case.row is not None:
        id_col = ID_COLUMN[case.table]
        culprit = clean[case.table][id_col][case.row].as_py()
        assert any(f"{id_col}=[{culprit}" in line for line in matched), matched
    saved = json.loads(Path(report.results_path).read_text())
    assert saved["success"] is False and saved["failures"] == report.failures
    assert Path(report.data_docs).exists()
    reliability("bad partition", case.name, "fails validation: quarantined, raw/ untouched",
                matched[0])


def test_part_files_that_cannot_be_unified_are_a_clear_source_error(clean, tmp_path, reliability):
    folder = io.partition_dir(tmp_path, "impressions", D0)
    imp = clean["impressions"]
    io.write_table(imp.slice(0, 10), folder / "part-0.parquet")
    bad = imp.slice(10)
    bad = bad.set_column(bad.schema.get_field_index("user_id"), "user_id",
                         bad["user_id"].cast(pa.string()))
    io.write_table(bad, folder / "part-1.parquet")
    for t in TABLES:
        if t != "impressions":
            io.write_table(clean[t], io.partition_path(tmp_path, t, D0))

    with pytest.raises(SourceSchemaError) as err:
        ParquetSource(str(tmp_path)).frames(D0)

    msg = str(err.value)
    reliability("bad partition", "part_files_incompatible_types",
                "fails at acquire: quarantined with a report, raw/ untouched", msg)
    assert "impressions" in msg and str(D0) in msg
    assert "['part-0.parquet', 'part-1.parquet']" in msg
    assert "part-1.parquet vs part-0.parquet: user_id is string not int64" in msg
    assert isinstance(err.value, ValueError)


def test_part_files_with_one_schema_are_concatenated_in_order(clean, tmp_path):
    imp = clean["impressions"]
    folder = io.partition_dir(tmp_path, "impressions", D0)
    io.write_table(imp.slice(0, 10), folder / "part-0.parquet")
    io.write_table(imp.slice(10), folder / "part-1.parquet")
    for t in TABLES:
        if t != "impressions":
            io.write_table(clean[t], io.partition_path(tmp_path, t, D0))
    frames = ParquetSource(str(tmp_path)).frames(D0)
    assert frames["impressions"].equals(imp)
    assert not (frames["impressions"].schema.metadata or {}).get(b"rankline.part_schema_mismatch")


def test_a_crash_inside_validation_is_a_failure_line_not_an_exception(clean, tmp_path, monkeypatch):
    from pipeline import validation

    real = validation.build_suite

    def crashing(table, date, columns=()):
        if table == "clicks":
            raise RuntimeError("boom\nsecond line")
        return real(table, date, columns)

    monkeypatch.setattr(validation, "build_suite", crashing)
    report = validate_tables(_write(clean, tmp_path / "raw"), D0, tmp_path / "report")
    assert not report.success
    assert report.failures == ["validation crashed on clicks: RuntimeError: boom"]
    saved = json.loads(Path(report.results_path).read_text())
    assert saved["failures"] == report.failures
    assert "RuntimeError: boom" in saved["crashes"][0]["traceback"]
    assert "clicks" not in saved["tables"] and "purchases" in saved["tables"]


def test_the_parquet_source_conforms_lossless_types_only(clean, tmp_path):
    """int32 ids and ns timestamps in another zone are cast to the raw schema; a string
    position is left as it is, for validation to report."""
    imp = clean["impressions"]
    i = imp.schema.get_field_index
    imp = imp.set_column(i("user_id"), "user_id", imp["user_id"].cast(pa.int32()))
    imp = imp.set_column(i("ts"), "ts", imp["ts"].cast(pa.timestamp("ns", tz="Europe/Berlin")))
    imp = imp.set_column(i("position"), "position", imp["position"].cast(pa.string()))
    for t in TABLES:
        io.write_table(imp if t == "impressions" else clean[t], io.partition_path(tmp_path, t, D0))
    got = ParquetSource(str(tmp_path)).frames(D0)["impressions"]
    assert got.schema.field("user_id").type == pa.int64()
    assert got.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert got["ts"].equals(clean["impressions"]["ts"])
    assert got.schema.field("position").type == pa.string()


def test_provenance_columns_are_optional_and_checked_when_present(clean, tmp_path):
    imp = clean["impressions"]
    assert {"pool", "propensity"} <= set(imp.column_names)  # the synthetic logs carry them
    # without them (a source that does not know its pools), the day still passes
    bare = {**clean, "impressions": imp.drop_columns(["pool", "propensity"])}
    report = validate_tables(_write(bare, tmp_path / "bare"), D0, tmp_path / "r1")
    assert report.success, report.failures
    # a propensity of 0 (the item could not have been shown) and a missing pool are named
    i = imp.column_names.index("propensity")
    prop = imp.column("propensity").to_numpy().copy()
    prop[:2] = 0.0
    pools = imp.column("pool").to_pylist()
    pools[3] = None
    bad = imp.set_column(i, "propensity", pa.array(prop))
    bad = bad.set_column(bad.column_names.index("pool"), "pool", pa.array(pools, pa.string()))
    report = validate_tables(_write({**clean, "impressions": bad}, tmp_path / "bad"), D0,
                             tmp_path / "r2")
    assert not report.success
    text = "\n".join(report.failures)
    assert "impressions.propensity lies in (0, 1]" in text
    assert "impressions.pool is never null" in text
