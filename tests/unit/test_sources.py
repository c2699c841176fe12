import datetime as dt

import numpy as np
import pytest

from pipeline.sources.base import RAW_SCHEMAS, id_base
from pipeline.sources.synthetic import SyntheticSource
from tests.conftest import D0


def test_same_date_same_partitions_different_dates_differ(source):
    a, b = source.frames(D0), source.frames(D0)
    for t in RAW_SCHEMAS:
        assert a[t].equals(b[t]), t
    c = source.frames(D0 + dt.timedelta(days=1))
    assert not a["impressions"].equals(c["impressions"])


def test_tables_follow_schema_and_funnel(source):
    f = source.frames(D0)
    for t, schema in RAW_SCHEMAS.items():
        assert f[t].schema.equals(schema), t
    imp = f["impressions"].to_pandas()
    clicks = f["clicks"].to_pandas()
    carts = f["add_to_cart"].to_pandas()
    buys = f["purchases"].to_pandas()
    assert clicks["impression_id"].isin(imp["event_id"]).all()
    assert carts["click_id"].isin(clicks["event_id"]).all()
    assert buys["click_id"].isin(carts["click_id"]).all()
    assert imp["event_id"].min() >= id_base(D0)
    assert 0 < len(clicks) < len(imp)


def test_ground_truth_is_not_in_raw_data(source):
    names = {n for s in RAW_SCHEMAS.values() for n in s.names}
    assert not names & {"utility", "relevance", "quality", "affinity"}
    u = np.array([0, 1, 2])
    assert source.oracle(u, u).shape == (3,)


def test_position_bias_top_positions_clicked_more(source):
    imp = source.frames(D0)["impressions"].to_pandas()
    clicked = imp["event_id"].isin(source.frames(D0)["clicks"].to_pandas()["impression_id"])
    ctr = clicked.groupby(imp["position"]).mean()
    assert ctr.loc[1] > ctr.loc[ctr.index.max()]


def test_bad_scale_is_rejected():
    with pytest.raises(ValueError, match="n_items >= n_categories"):
        SyntheticSource(n_items=3, n_categories=10)


def test_movielens_replay_is_valid(tmp_path):
    from feature_store import io
    from pipeline.sources.base import TABLES
    from pipeline.sources.movielens import MovieLensSource
    from pipeline.validation import validate_tables

    src = MovieLensSource(D0)
    for day in (D0, D0 + dt.timedelta(days=3)):
        src.acquire(day, tmp_path / "raw")
        paths = {t: io.partition_path(tmp_path / "raw", t, day) for t in TABLES}
        report = validate_tables(paths, day, tmp_path / "report")
        assert report.success, report.failures
        assert report.rows["impressions"] > 0
