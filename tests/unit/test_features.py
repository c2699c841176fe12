import datetime as dt
import os

import numpy as np
import pandas as pd
import pytest

from feature_store import io
from feature_store.compute import compute_views, join_features
from feature_store.definitions import VIEWS, W, model_features
from feature_store.offline import build_features, read_views
from pipeline.labels import build_rows
from tests.conftest import D0


def _tiny():
    users = pd.DataFrame({"user_id": [1, 2], "age_band": [3, 4]})
    items = pd.DataFrame({"item_id": [10, 11, 12], "category": [0, 0, 1], "price": [1.0, 2.0, 4.0]})
    imp = pd.DataFrame({"event_id": [100, 101, 102], "user_id": [1, 1, 2], "item_id": [10, 12, 10],
                        "position": [1, 2, 1]})
    clicks = pd.DataFrame({"user_id": [1], "item_id": [10], "impression_id": [100]})
    empty = clicks.iloc[0:0]
    return users, items, imp, clicks, empty


def test_compute_views_counts_and_defaults():
    users, items, imp, clicks, empty = _tiny()
    v = compute_views(users, items, imp, clicks, empty, empty)
    u = v["user"].set_index("user_id")
    assert u.loc[1, f"u_impressions_{W}"] == 2 and u.loc[1, f"u_clicks_{W}"] == 1
    assert u.loc[2, f"u_clicks_{W}"] == 0
    assert np.isnan(u.loc[2, f"u_log_price_clicked_{W}"])
    it = v["item"].set_index("item_id")
    assert it.loc[11, f"i_impressions_{W}"] == 0  # every item listed, zero when unseen
    uc = v["user_category"].set_index(["user_id", "category"])
    assert uc.loc[(1, 0), f"uc_click_share_{W}"] == 1.0
    for view in VIEWS:
        assert list(v[view.name].columns) == [*view.keys, *view.names]


def test_long_window_views_count_older_days_and_free_ctr_of_position():
    from feature_store.definitions import L

    users, items, imp, clicks, empty = _tiny()
    older = {"impressions": pd.DataFrame({"event_id": [90], "user_id": [2], "item_id": [12],
                                          "position": [1]}),
             "clicks": pd.DataFrame({"user_id": [2], "item_id": [12], "impression_id": [90]}),
             "purchases": empty}
    v = compute_views(users, items, imp, clicks, empty, empty, older)
    u = v[f"user_{L}"].set_index("user_id")
    assert u.loc[2, f"u_clicks_{L}"] == 1 and v["user"].set_index("user_id").loc[2, f"u_clicks_{W}"] == 0
    assert u.loc[1, f"u_ctr_{L}"] == pytest.approx(2 / 12)
    uc = v[f"user_category_{L}"].set_index(["user_id", "category"])
    assert uc.loc[(2, 1), f"uc_click_share_{L}"] == 1.0
    # CTR at position 1: 2 of 3 impressions clicked, position 2: 0 of 1. Item 10 had its click at
    # the top twice (expected 4/3), item 12 its click from position 1 once and position 2 once
    # (expected 2/3): the same clicks weigh more where fewer were expected.
    it = v[f"item_{L}"].set_index("item_id")
    assert it.loc[10, f"i_coec_{L}"] == pytest.approx((1 + 1) / (4 / 3 + 1))
    assert it.loc[12, f"i_coec_{L}"] == pytest.approx((1 + 1) / (2 / 3 + 1))
    assert it.loc[11, f"i_coec_{L}"] == 1.0  # never shown: the default
    # without older days the long views count the short window alone
    short = compute_views(users, items, imp, clicks, empty, empty)
    assert short[f"user_{L}"].set_index("user_id").loc[2, f"u_clicks_{L}"] == 0
    # a history of 7 days: the 28-day counts are scaled to 28 days, the rates are not
    scaled = compute_views(users, items, imp, clicks, empty, empty, older, long_days=7)
    su = scaled[f"user_{L}"].set_index("user_id")
    assert su.loc[2, f"u_clicks_{L}"] == 4 and su.loc[1, f"u_ctr_{L}"] == u.loc[1, f"u_ctr_{L}"]
    sit = scaled[f"item_{L}"].set_index("item_id")
    assert sit.loc[10, f"i_impressions_{L}"] == 8
    assert sit.loc[10, f"i_coec_{L}"] == it.loc[10, f"i_coec_{L}"]


def test_expected_clicks_match_each_click_to_its_own_dates_impression():
    """Event ids need only be unique within a date: the same id on two dates is two impressions."""
    from feature_store.compute import expected_clicks

    d1, d2 = dt.date(2026, 1, 1), dt.date(2026, 1, 2)
    imp = pd.DataFrame({"date": [d1, d1, d2, d2], "event_id": [1, 2, 1, 2],
                        "item_id": [10, 11, 11, 10], "position": [2, 1, 1, 2]})
    clicks = pd.DataFrame({"date": [d2], "impression_id": [1]})  # d2's id 1: position 1
    # CTR at position 1: 1 of 2 shown, at position 2: 0 of 2. Item 11 was shown at position 1
    # on both dates, item 10 at position 2 (matched by id alone, the click would be d1's, at 2).
    assert expected_clicks(imp, clicks).to_dict() == {10: 0.0, 11: 1.0}
    # without dates, ids are taken as unique
    assert expected_clicks(imp.drop(columns="date").iloc[:2],
                           pd.DataFrame({"impression_id": [1]})).to_dict() == {10: 1.0, 11: 0.0}


from feature_store.definitions import SEQ, SEQ_KEEP  # noqa: E402
from feature_store.sequences import extend, read_sequences  # noqa: E402


def test_join_features_keeps_rows_and_fills_unknown_entities():
    users, items, imp, clicks, empty = _tiny()
    v = compute_views(users, items, imp, clicks, empty, empty)
    rows = pd.DataFrame({"user_id": [2, 1, 99], "item_id": [11, 10, 12], "tag": ["a", "b", "c"]})
    out = join_features(rows, v)
    assert list(out["tag"]) == ["a", "b", "c"]
    assert set(model_features()) <= set(out.columns)
    assert out.loc[2, f"u_clicks_{W}"] == 0  # unknown user gets the default
    assert out.loc[1, f"ui_clicks_{W}"] == 1


def test_recent_views_count_back_from_the_last_day_by_product_line():
    users, items, imp, clicks, empty = _tiny()
    day = dt.date(2026, 2, 10)
    before = day - dt.timedelta(days=1)
    imp = imp.assign(date=[day, before, day - dt.timedelta(days=3)])  # 10 today, 12 yesterday
    clicks = clicks.assign(date=[day])
    lined = items.assign(line=[5, 5, 6])  # items 10 and 11 are one product line
    v = compute_views(users, lined, imp, clicks, empty, empty, as_of=day)
    ul = v["user_line"].set_index(["user_id", "line"])
    assert ul.loc[(1, 5), "ul_impressions_1d"] == 1 and ul.loc[(1, 5), "ul_clicks_1d"] == 1
    assert ul.loc[(1, 6), "ul_impressions_1d"] == 0 and ul.loc[(1, 6), "ul_impressions_2d"] == 1
    assert ul.loc[(2, 5), "ul_impressions_2d"] == 0  # 3 days ago: only in the 7-day columns
    assert ul.loc[(2, 5), f"ul_days_shown_{W}"] == 1 and ul.loc[(2, 5), f"ul_last_shown_{W}"] == 3
    # joined on the item's line: item 11, never shown, inherits its line's activity
    rows = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [11, 12, 11]})
    out = join_features(rows, v)
    assert out["ul_impressions_1d"].tolist() == [1, 0, 0]
    assert out["ul_impressions_2d"].tolist() == [1, 1, 0]
    assert out["ui_impressions_2d"].tolist() == [0, 1, 0]
    assert out["uc_impressions_2d"].tolist() == [1, 1, 0]  # category 0 holds 10 and 11
    assert "i_line" not in model_features() and "line" not in out
    # without a line column, every item is its own line
    own = compute_views(users, items, imp, clicks, empty, empty, as_of=day)
    assert join_features(rows, own)["ul_impressions_1d"].tolist() == [0, 0, 0]


def test_line_next_learns_where_interests_move_and_scores_the_users_next_line():
    from feature_store.compute import line_next, line_next_score

    d0 = dt.date(2026, 2, 1)
    day = [d0 + dt.timedelta(days=k) for k in range(4)]
    line = pd.Series([1, 2, 3, 4], index=[10, 20, 30, 40])  # item -> line
    # users 1-3 move from line 1 to line 2 (one day or two later), user 4 from line 1 to line 3;
    # user 5 clicks line 1 then line 4 three days later: too late to count
    clicks = pd.DataFrame({
        "user_id": [1, 1, 2, 2, 3, 3, 4, 4, 5, 5],
        "item_id": [10, 20, 10, 20, 10, 20, 10, 30, 10, 40],
        "date": [day[0], day[1], day[0], day[2], day[1], day[2], day[0], day[1], day[0], day[3]]})
    nxt = line_next(clicks, line).set_index(["line", "next_line"])["ln_share_28d"]
    assert nxt[(1, 2)] == 0.75 and nxt[(1, 3)] == 0.25 and (1, 4) not in nxt.index
    # user 7 was shown line 1 three times and line 3 once yesterday
    user_line = pd.DataFrame({"user_id": [7, 7], "line": [1, 3], "ul_impressions_1d": [3.0, 1.0]})
    rows = pd.DataFrame({"user_id": [7, 7, 7, 8], "line": [2, 3, 4, 2]})
    got = line_next_score(rows, user_line, nxt.reset_index())
    np.testing.assert_allclose(got, [0.75 * 0.75, 0.75 * 0.25, 0.0, 0.0])


def test_recent_line_features_of_a_dates_rows_are_the_day_before(settings, ingested):
    d = ingested[-1]
    rows = build_rows(settings.raw_dir, settings.offline_dir, d, 0, settings.seed)
    line = io.read_partition(settings.raw_dir, "items", d).set_index("item_id")["line"]
    imp = io.read_dates(settings.raw_dir, "impressions", ingested, columns=["user_id", "item_id"])
    imp["line"] = line.reindex(imp["item_id"]).to_numpy()
    yesterday = imp[imp["date"] == d - dt.timedelta(days=1)].groupby(["user_id", "line"]).size()
    two = imp[imp["date"] < d].groupby(["user_id", "line"]).size()
    known = io.read_partition(settings.raw_dir, "items", d - dt.timedelta(days=1))["item_id"]
    rows = rows[rows["item_id"].isin(known)]  # an item launched on D has no line as of D-1
    r = rows.assign(line=line.reindex(rows["item_id"]).to_numpy()).drop_duplicates(
        ["user_id", "line"]).set_index(["user_id", "line"])
    np.testing.assert_array_equal(r["ul_impressions_1d"].to_numpy(),
                                  yesterday.reindex(r.index).fillna(0).to_numpy())
    np.testing.assert_array_equal(r["ul_impressions_2d"].to_numpy(),
                                  two.reindex(r.index).fillna(0).to_numpy())
    assert (r["ul_impressions_1d"] > 0).sum() > 10


def test_no_leakage_from_the_training_date(settings, ingested):
    """Nothing computed from D's events may reach D's training rows."""
    d = ingested[-1]
    before = build_rows(settings.raw_dir, settings.offline_dir, d, 3, settings.seed)
    # Rewrite D's events entirely (keep the impressions so the rows exist) and rebuild D's and
    # D-1's features as the ingest DAG would.
    io.write_partition(io.read_partition(settings.raw_dir, "clicks", d).iloc[0:0],
                       settings.raw_dir, "clicks", d)
    for day in (d - dt.timedelta(days=1), d):
        build_features(settings.raw_dir, settings.offline_dir, day)
    after = build_rows(settings.raw_dir, settings.offline_dir, d, 3, settings.seed)
    cols = model_features()
    pd.testing.assert_frame_equal(before[cols], after[cols])
    assert (before["label"] != after["label"]).any()  # labels do come from D
    # the user sequences too: D's clicks are in D's partition, not in D's rows
    assert before[SEQ].map(len).sum() > 0
    assert all(np.array_equal(a, b) for a, b in zip(before[SEQ], after[SEQ], strict=True))
    seq_d = read_sequences(settings.offline_dir, d).set_index("user_id")["seq"]
    assert sum(map(len, seq_d)) < sum(map(len, read_sequences(  # D's clicks were removed
        settings.offline_dir, d - dt.timedelta(days=1))["seq"])) + 1


def test_user_sequences_are_the_clicks_up_to_the_date_in_time_order(settings, ingested):
    clicks = io.read_dates(settings.raw_dir, "clicks", ingested, columns=["user_id", "item_id",
                                                                          "ts"])
    clicks = clicks.sort_values(["ts", "item_id"], kind="stable")
    expected = clicks.groupby("user_id")["item_id"].agg(lambda s: s.to_numpy()[-SEQ_KEEP:])
    got = read_sequences(settings.offline_dir, ingested[-1]).set_index("user_id")["seq"]
    assert len(got) == len(expected) > 10
    for user, seq in expected.items():
        np.testing.assert_array_equal(got[user], seq)
    # the first date's partition was built from scratch, the later ones incrementally: equal
    # to rebuilding the last one from scratch
    rebuilt = extend(pd.DataFrame({"user_id": pd.Series(dtype="int64"), "seq": []}), clicks)
    assert all(np.array_equal(a, b) for a, b in zip(rebuilt["seq"], got.to_numpy(), strict=True))


def test_extend_keeps_the_last_items():
    base = pd.DataFrame({"user_id": [1, 2], "seq": [np.array([5, 6, 7]), np.array([9])]})
    ev = pd.DataFrame({"user_id": [1, 3, 1], "item_id": [8, 4, 9],
                       "ts": pd.to_datetime(["2026-01-01 10:00", "2026-01-01 09:00",
                                             "2026-01-01 08:00"])})
    out = extend(base, ev, keep=4).set_index("user_id")["seq"]
    assert out[1].tolist() == [6, 7, 9, 8] and out[2].tolist() == [9] and out[3].tolist() == [4]


def test_features_are_as_of_the_end_of_the_previous_day(settings, ingested):
    d = ingested[-1]
    rows = build_rows(settings.raw_dir, settings.offline_dir, d, 0, settings.seed)
    clicks = io.read_dates(settings.raw_dir, "clicks", ingested[:-1])
    expected = clicks.groupby("user_id").size()
    got = rows.drop_duplicates("user_id").set_index("user_id")[f"u_clicks_{W}"]
    common = got.index.intersection(expected.index)
    assert len(common) > 10
    np.testing.assert_array_equal(got[common].to_numpy(), expected[common].to_numpy())


def test_read_views_missing_date_is_clear(settings, ingested):
    import pytest

    with pytest.raises(FileNotFoundError, match="run the ingest DAG"):
        read_views(settings.offline_dir, D0 - dt.timedelta(days=5))


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_online_features_match_the_offline_store(settings, ingested, backend, monkeypatch):
    from feature_store.definitions import ONLINE_VIEWS, USER
    from feature_store.online import get_online_features, materialize_online
    from pipeline.settings import get_settings
    from serving.backends import open_store, opened
    from serving.codec import decode_vector
    from tests.store_support import REDIS_URL, purge, require_redis

    if backend == "redis":
        require_redis()
        prefix = f"rltest_online_{os.getpid()}"
        monkeypatch.setenv("RANKLINE_STORE_BACKEND", "redis")
        monkeypatch.setenv("RANKLINE_REDIS_URL", REDIS_URL)
        monkeypatch.setenv("RANKLINE_REDIS_PREFIX", prefix)
        get_settings.cache_clear()
        settings = get_settings()
    d = ingested[-1]
    with opened(settings, settings.online_store_path) as online:
        out = materialize_online(online, settings.offline_dir, d, keep=settings.keep_versions)
    offline = read_views(settings.offline_dir, d)
    assert out["keys"] == sum(len(offline[v.name]) for v in ONLINE_VIEWS)
    store = open_store(settings, settings.online_store_path)
    user = offline["user"].iloc[7]
    value, info = store.get("features", f"user:{int(user['user_id'])}")
    np.testing.assert_allclose(decode_vector(value), user[USER.names].to_numpy(dtype=np.float32))
    uc = offline["user_category"].iloc[3]
    assert store.get("features", f"user_category:{int(uc['user_id'])}:{int(uc['category'])}")[0]
    assert info.meta["as_of"] == d.isoformat()
    users = offline["user"]["user_id"].head(5).tolist() + [-1]
    matrix, _ = get_online_features(store, "user", users, len(USER.names))
    np.testing.assert_allclose(matrix[:5], offline["user"][USER.names].head(5).to_numpy(np.float32))
    assert np.isnan(matrix[5]).all()
    store.close()
    if backend == "redis":
        purge(f"redis:{prefix}")


def _log_encoder(settings, data_end: dt.date, seed: int) -> str:
    """An MLflow run holding an (untrained, seeded) encoder checkpoint whose data ends on
    ``data_end``, as the pre-training step logs it."""
    import tempfile
    from pathlib import Path

    import mlflow
    import torch

    from models.sequence import EncoderCheckpoint, EncoderConfig, build_encoder
    from pipeline.pretraining import ARTIFACT, DATA_END_TAG
    from pipeline.tracking import configure

    torch.manual_seed(seed)
    cfg = EncoderConfig(dim=8, layers=1, heads=1, max_len=10)
    ids = np.arange(settings.n_items, dtype=np.int64)
    ck = EncoderCheckpoint(build_encoder(len(ids) + 1, cfg).state_dict(), ids, cfg, {})
    with (mlflow.start_run(experiment_id=configure(settings)) as run,
          tempfile.TemporaryDirectory() as tmp):
        mlflow.log_artifact(str(ck.save(Path(tmp) / "encoder.pt")), ARTIFACT.rsplit("/", 1)[0])
        mlflow.set_tag(DATA_END_TAG, data_end.isoformat())
    return run.info.run_id


def test_encoder_features_use_only_encoders_and_sequences_up_to_the_day_before(settings,
                                                                               ingested):
    """D's rows get od_encoder_score from D-1's embedding views, computed with the newest
    encoder trained on data up to D-1 and the sequences as of D-1: an encoder that saw D, or
    D's clicks rewritten, change nothing in D's rows."""
    from feature_store.definitions import ENCODER_ITEM, ENCODER_USER
    from feature_store.embeddings import read_embeddings, vector_columns
    from models.sequence import EncoderCheckpoint
    from pipeline.pretraining import embed_dates

    d = ingested[-1]
    prev = d - dt.timedelta(days=1)
    old = _log_encoder(settings, ingested[0], seed=1)
    mid = _log_encoder(settings, prev, seed=2)
    assert embed_dates(settings, ingested) == {ingested[0].isoformat(): old,
                                               prev.isoformat(): mid, d.isoformat(): mid}
    assert embed_dates(settings, ingested) == {}  # already computed by the chosen encoders
    before = build_rows(settings.raw_dir, settings.offline_dir, d, 3, settings.seed)
    score = before["od_encoder_score"].to_numpy()
    known = before["user_id"].isin(read_sequences(settings.offline_dir, prev)["user_id"])
    assert known.any() and np.isfinite(score[known.to_numpy()]).all()
    assert np.isnan(score[~known.to_numpy()]).all()  # no history as of D-1: unknown

    # the score is the chosen encoder's: its state of the D-1 sequence . the item's embedding
    views = read_embeddings(settings.offline_dir, prev)
    assert set(views[ENCODER_USER]["encoder"]) == {mid}
    from mlflow.artifacts import download_artifacts

    ck = EncoderCheckpoint.load(download_artifacts(f"runs:/{mid}/encoder/encoder.pt"))
    row = before[known].iloc[0]
    seq = read_sequences(settings.offline_dir, prev).set_index("user_id")["seq"][row["user_id"]]
    ids, vecs = ck.item_embeddings()
    expect = ck.user_states([seq])[0] @ vecs[np.searchsorted(ids, row["item_id"])]
    assert row["od_encoder_score"] == pytest.approx(expect, rel=1e-4, abs=1e-5)
    items = views[ENCODER_ITEM].set_index("item_id")[vector_columns(views[ENCODER_ITEM])]
    np.testing.assert_allclose(items.loc[int(row["item_id"])].to_numpy(),
                               vecs[np.searchsorted(ids, row["item_id"])])

    # An encoder that saw D, and D's clicks rewritten, rebuilt as the ingest DAG would.
    late = _log_encoder(settings, d, seed=3)
    io.write_partition(io.read_partition(settings.raw_dir, "clicks", d).iloc[0:0],
                       settings.raw_dir, "clicks", d)
    build_features(settings.raw_dir, settings.offline_dir, d)
    assert embed_dates(settings, [prev, d]) == {d.isoformat(): late}
    after = build_rows(settings.raw_dir, settings.offline_dir, d, 3, settings.seed)
    pd.testing.assert_frame_equal(before[model_features()], after[model_features()])


def test_rows_hold_negatives_from_every_source_never_shown_to_the_request(settings, ingested):
    d = ingested[-1]
    rows = build_rows(settings.raw_dir, settings.offline_dir, d, 3, settings.seed)
    neg = rows[rows["is_negative"]]
    assert set(rows.loc[~rows["is_negative"], "negative_source"]) == {0}
    per = neg.groupby(["request_id", "negative_source"]).size()
    assert set(per.index.get_level_values(1)) == {1, 2} and per.max() <= 3
    shown = set(zip(rows.loc[~rows["is_negative"], "request_id"],
                    rows.loc[~rows["is_negative"], "item_id"], strict=True))
    assert not shown & set(zip(neg["request_id"], neg["item_id"], strict=True))
    # a rebuild is the same rows (a rerun of the task is an overwrite with the same content)
    again = build_rows(settings.raw_dir, settings.offline_dir, d, 3, settings.seed)
    pd.testing.assert_frame_equal(rows, again)
