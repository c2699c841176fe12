import datetime as dt

import numpy as np
import pytest

from pipeline.sources.base import OPTIONAL_COLUMNS, RAW_SCHEMAS, id_base, table_schema
from pipeline.sources.synthetic import (
    INTENT_BOOST,
    LINE_BOOST,
    LINE_SIZE,
    LOGGING_POOLS,
    SyntheticSource,
)
from tests.conftest import D0


def test_same_date_same_partitions_different_dates_differ(source):
    a, b = source.frames(D0), source.frames(D0)
    for t in RAW_SCHEMAS:
        assert a[t].equals(b[t]), t
    c = source.frames(D0 + dt.timedelta(days=1))
    assert not a["impressions"].equals(c["impressions"])


def test_tables_follow_schema_and_funnel(source):
    f = source.frames(D0)
    for t in RAW_SCHEMAS:
        optional = OPTIONAL_COLUMNS[t].names if t in OPTIONAL_COLUMNS else []
        assert f[t].schema.equals(table_schema(t, optional)), t
    imp = f["impressions"].to_pandas()
    assert set(imp["pool"]) == set(LOGGING_POOLS)
    assert imp["propensity"].between(0, 1, inclusive="right").all()
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
    assert source.oracle(u, u, np.full(3, id_base(D0))).shape == (3,)


def test_lines_partition_each_category():
    w = SyntheticSource(seed=3, n_users=10, n_items=400, n_categories=12).world
    # every item in exactly one line, a line within one category, at most LINE_SIZE items
    members = w.line_members[w.line_members >= 0]
    assert np.array_equal(np.sort(members), np.arange(400))
    assert np.array_equal(w.item_line[w.line_members[:, 0]], np.arange(len(w.line_size)))
    assert (w.item_category[w.line_members[:, 0]] == w.line_category).all()
    assert (w.line_size <= LINE_SIZE).all() and (w.line_size >= 1).all()
    # a line's successor lies in the successor category
    assert (w.line_category[w.line_next] == w.category_next[w.line_category]).all()


def test_intents_persist_then_follow_the_successor_map():
    src = SyntheticSource(seed=3, n_users=4000, n_items=400, n_categories=12)
    w = src.world
    days = [D0 + dt.timedelta(days=k) for k in range(12)]
    intent = np.stack([src.intents(d) for d in days])  # (days, users): product lines
    changed = intent[1:] != intent[:-1]
    # An intent lasts INTENT_DAYS days: it changes on about a third of the user-days...
    assert 0.2 < changed.mean() < 0.4
    # ...and when it moves on, it mostly moves to the successor of the line it leaves (80% of
    # moves within a chain; a chain restarts every INTENT_CHAIN periods): 5/6 * 0.8 ~ 0.67.
    followed = intent[1:] == w.line_next[intent[:-1]]
    assert 0.55 < followed[changed].mean() < 0.75
    assert np.array_equal(src.intents(D0), intent[0])  # deterministic in (seed, date)


def test_oracle_knows_the_intent_and_clicks_follow_it(source):
    f = source.frames(D0)
    imp = f["impressions"].to_pandas()
    clicked = imp["event_id"].isin(f["clicks"].to_pandas()["impression_id"])
    users, items = imp["user_id"].to_numpy(), imp["item_id"].to_numpy()
    w, line = source.world, source.intents(D0)[users]
    in_line = w.item_line[items] == line
    in_cat = (w.item_category[items] == w.line_category[line]) & ~in_line
    other = ~in_line & ~in_cat
    # the intent's line is clicked most, its category's other items more than the rest
    assert in_line.sum() > 100
    assert clicked[in_line].mean() > 1.5 * clicked[in_cat].mean()
    assert clicked[in_cat].mean() > 1.2 * clicked[other].mean()
    # The same pairs on a date where the intent differs: the oracle's utility moves with it.
    later = D0 + dt.timedelta(days=9)
    today = source.oracle(users, items, np.full(len(users), id_base(D0)))
    then = source.oracle(users, items, np.full(len(users), id_base(later)))
    line2 = source.intents(later)[users]
    boost = lambda ln: (INTENT_BOOST * (w.item_category[items] == w.line_category[ln])  # noqa: E731
                        + LINE_BOOST * (w.item_line[items] == ln))
    assert (boost(line) != boost(line2)).any()
    assert np.allclose(today - then, boost(line) - boost(line2))


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


@pytest.mark.parametrize("new_items_per_day", [0, 3])
def test_logged_propensities_add_up_to_the_slates_size(new_items_per_day):
    """Each impression's propensity is P(the request's slate holds the item); over every item,
    those probabilities add up to the expected number of distinct items of a slate, which the
    logs show (with every item on sale, and in a growing catalog)."""
    src = SyntheticSource(n_users=40, n_items=60, n_categories=4, impressions_per_day=40_000,
                          slots_per_request=10, new_items_per_day=new_items_per_day,
                          start=D0 - dt.timedelta(days=1))
    imp = src.frames(D0)["impressions"].to_pandas()
    intent = src.intents(D0)
    per_request = imp.groupby("request_id")["user_id"].agg(["first", "size"])
    users = per_request["first"].to_numpy()
    items = np.arange(src.n_items)
    expected = np.array([src.propensity(np.full(60, u), items, np.full(60, intent[u]),
                                        D0).sum() for u in users])
    assert expected.mean() == pytest.approx(per_request["size"].mean(), rel=0.01)
    # and per item: how often a request of user 0 held it, against its propensity
    mine = imp[imp["user_id"] == users[0]]
    n_req = mine["request_id"].nunique()
    seen = mine.groupby("item_id").size().reindex(items, fill_value=0) / n_req
    prop = src.propensity(np.full(60, users[0]), items, np.full(60, intent[users[0]]), D0)
    assert np.abs(seen.to_numpy() - prop).max() < 4 * np.sqrt(0.25 / n_req)


def test_the_catalog_grows_and_unlaunched_items_are_never_shown():
    start = D0 - dt.timedelta(days=1)
    src = SyntheticSource(n_users=200, n_items=100, n_categories=5, impressions_per_day=5000,
                          new_items_per_day=2, start=start)
    late = np.flatnonzero(src.launch > start.toordinal())
    assert len(late) == 20  # a fifth of the catalog at most
    for day in range(4):
        d = D0 + dt.timedelta(days=day)
        f = src.frames(d)
        on_sale = set(f["items"].column("item_id").to_pylist())
        assert len(on_sale) == 80 + 2 * (day + 1)  # 2 launch each day after the start
        assert set(f["impressions"].column("item_id").to_pylist()) <= on_sale
        for t in ("clicks", "purchases"):
            assert set(f[t].column("item_id").to_pylist()) <= on_sale
    # the same day gives the same tables
    assert src.frames(D0)["impressions"].equals(src.frames(D0)["impressions"])


def test_the_ceiling_knows_what_the_logs_up_to_yesterday_show(source):
    from pipeline.sources.synthetic import INTENT_DAYS, utility

    w = source.world
    users = np.arange(min(source.n_users, 400))
    items = np.resize(np.arange(source.n_items), len(users))
    day = D0 + dt.timedelta(days=30)
    req = np.full(len(users), id_base(day))
    yesterday = day.toordinal() - 1
    oracle = source.oracle(users, items, req)
    ceiling = source.ceiling(users, items, req, np.full(len(users), yesterday))
    # shown yesterday, in the same intent period today: the intent is known, as the oracle's
    same = (yesterday + w.user_phase[users]) // INTENT_DAYS == (
        day.toordinal() + w.user_phase[users]) // INTENT_DAYS
    assert same.any() and (~same).any()
    np.testing.assert_allclose(ceiling[same], oracle[same], rtol=1e-9, atol=1e-9)
    # a new period: the expected boost lies between none and the full one, never knowing today
    base = utility(w, users, items, None)
    assert np.all(ceiling[~same] >= base[~same] - 1e-9)
    assert np.all(ceiling[~same] <= base[~same] + INTENT_BOOST + LINE_BOOST + 1e-9)
    # never shown anything: the same expectation whatever the date (the fresh-line draw)
    never = source.ceiling(users, items, req, np.zeros(len(users)))
    later = source.ceiling(users, items, np.full(len(users), id_base(day + dt.timedelta(days=4))),
                           np.zeros(len(users)))
    np.testing.assert_allclose(never, later)
    assert not np.allclose(never, ceiling)


def test_the_ceilings_affinity_is_the_posterior_given_the_logged_clicks(source):
    import pandas as pd

    w = source.world
    day = D0 + dt.timedelta(days=30)
    user = np.array([3, 3])
    cats = w.item_category
    a = int(np.flatnonzero(cats == cats[0])[0])  # an item of category cats[0]
    b = int(np.flatnonzero(cats != cats[0])[0])  # an item of another category
    items, req = np.array([a, b]), np.full(2, id_base(day))
    last = np.full(2, day.toordinal() - 1)
    nothing = pd.DataFrame({"user_id": [], "item_id": [], "date": []})
    many = pd.DataFrame({"user_id": [3] * 20, "item_id": [a] * 20,
                         "date": [day - dt.timedelta(days=2)] * 20})
    stale = many.assign(date=day - dt.timedelta(days=40))  # before the posterior's window
    known = source.ceiling(user, items, req, last)
    none = source.ceiling(user, items, req, last, nothing)
    clicked = source.ceiling(user, items, req, last, many)
    # 20 clicks in a's category: a rises against b, and above what no clicks at all give
    assert clicked[0] - clicked[1] > none[0] - none[1]
    assert clicked[0] > none[0]
    np.testing.assert_allclose(source.ceiling(user, items, req, last, stale), none)
    assert not np.allclose(none, known)
