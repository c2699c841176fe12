"""The whole pipeline through Airflow's scheduler (``rankline demo``: a real API server, DAG
processor and LocalExecutor scheduler on a temporary home, ingest as a backfill, train and the
refresh fired by the scheduler) at a tiny scale, then a recommendation read over HTTP."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys

import httpx
import pandas as pd
import pytest

from feature_store.definitions import model_features
from tests.e2e.conftest import cli_env, rankline, run_cli, serve

pytestmark = pytest.mark.e2e


def test_dag_runs_are_recorded_in_airflow(demo):
    home, _, out = demo
    db = sqlite3.connect(home / "airflow" / "airflow.db")
    runs = db.execute("SELECT dag_id, run_type, state, COUNT(*) FROM dag_run "
                      "GROUP BY dag_id, run_type, state").fetchall()
    got = {(d, t, s): n for d, t, s, n in runs}
    # ingest as one backfill; train and the refresh as the scheduler fires them at unpause
    assert got == {("ingest", "backfill", "success"): 20, ("train", "scheduled", "success"): 1,
                   ("hulk_refresh", "scheduled", "success"): 1}, got
    # ordinary runs: started when they ran, not at their logical date
    age = db.execute("SELECT julianday('now') - julianday(MIN(start_date)) FROM dag_run "
                     "WHERE dag_id = 'ingest'").fetchone()[0]
    assert 0 <= age < 1  # days: each run started when it ran, not at its 2026-01 logical date
    paused = dict(db.execute("SELECT dag_id, is_paused FROM dag").fetchall())
    assert paused == {"ingest": 1, "train": 1, "hulk_refresh": 1, "sweep": 1}  # restored
    assert "[demo] ingest 2026-01-20 ok (20/20" in out and "[demo] hulk_refresh ok" in out
    logs = home / "airflow" / "logs" / "dag_id=ingest"
    assert len(list(logs.glob("run_id=backfill__*/task_id=validate/attempt=1.log"))) == 20
    from pipeline import services

    assert services.status(home) == {}  # every component stopped, its PID file removed


def test_mlflow_runs_and_model_beats_popularity(demo):
    home, env, _ = demo
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("rankline")
    runs = mlflow.search_runs([exp.experiment_id])
    assert set(runs["tags.airflow.dag_id"]) == {"ingest", "train", "hulk_refresh"}
    train = runs[runs["tags.airflow.dag_id"] == "train"].iloc[0]
    assert train["tags.airflow.run_id"] and train["tags.airflow.logical_date"] is not None
    assert train["metrics.test_xgboost_ndcg_at_10"] > train["metrics.test_popularity_ndcg_at_10"]
    assert train["metrics.test_popularity_ndcg_at_10"] > train["metrics.test_random_ndcg_at_10"]
    assert train["metrics.test_oracle_ndcg_at_10"] > train["metrics.test_xgboost_ndcg_at_10"]
    assert train["tags.promoted"] == "True"
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(train["run_id"])}
    assert {"evaluation.csv", "features.json", "plots"} <= arts
    model = mlflow.MlflowClient().get_model_version_by_alias("rankline-ranker", "champion")
    assert model.run_id == train["run_id"]
    assert model.tags["family"] == train["tags.promoted_family"] == "xgboost"
    info = mlflow.models.get_model_info(f"models:/rankline-ranker/{model.version}")
    assert info.signature is not None and len(info.signature.inputs.input_names()) == len(model_features())
    assert info.metadata["family"] == "xgboost"
    assert info.metadata["features"]["i_ctr_7d"] == 1
    assert info.metadata["features"]["i_coec_28d"] == 1  # the 28-day views are inputs too
    # the encoder's embedding views fed od_encoder_score to the training rows (from the
    # encoder pre-trained on the dates before the training window)
    assert train["tags.encoder_data_end"] == "2026-01-07"
    rows = pd.read_parquet(home / "work" / "rows" / "date=2026-01-10", columns=["od_encoder_score"])
    assert rows["od_encoder_score"].notna().mean() > 0.5
    assert (home / "offline" / "encoder_user" / "v1" / "date=2026-01-20").is_dir()


def test_summary_prints_metrics_store_and_an_answer(demo):
    _, _, out = demo
    for needle in ("Rows acquired and validated", "Held-out metrics", "oracle", "popularity",
                   "Serving store", "GET /v1/recommendations/"):
        assert needle in out, needle


def test_recommendation_over_http_names_model_and_version(demo):
    home, env, _ = demo
    with serve(env) as (base, health):
        known = httpx.get(f"{base}/v1/recommendations/5", params={"k": 7}).json()
        assert known["cold_start"] is False and len(known["items"]) == 7
        assert known["store_version"] == health["store_version"] == 1
        assert known["model"].startswith("models:/rankline-ranker/")
        scores = [i["score"] for i in known["items"]]
        assert scores == sorted(scores, reverse=True)
        cold = httpx.get(f"{base}/v1/recommendations/unknown-user").json()
        assert cold["cold_start"] is True and cold["items"]
        assert httpx.get(f"{base}/v1/recommendations/5", params={"k": 0}).status_code == 422


@pytest.mark.integration
def test_refresh_publishes_to_redis_where_the_api_and_the_client_read(demo):
    """The production path: the refresh DAG publishes to the real Redis, the API (with an API
    key) and the reader client answer from it; the SQLite store is not touched. This refresh
    blends its pools by Thompson sampling (from the pools the demo's logs carry): each served
    item names its pool."""
    from serving.client import RecsClient
    from tests.store_support import REDIS_URL, purge, require_redis

    require_redis()
    home, env, _ = demo
    prefix = f"rltest_e2e_{os.getpid()}"
    redis_env = {**env, "RANKLINE_STORE_BACKEND": "redis", "RANKLINE_REDIS_URL": REDIS_URL,
                 "RANKLINE_REDIS_PREFIX": prefix, "RANKLINE_API_KEY": "e2e-key",
                 "RANKLINE_BLEND": "thompson",
                 "RANKLINE_POOLS": "popular:20,category:20,co_clicks:20,new_items:10",
                 # the tiny catalog's late items all launch in the demo's first 12 days
                 "RANKLINE_NEW_ITEM_DAYS": "20"}
    sqlite_before = rankline(env, "store", "versions")
    try:
        rankline(redis_env, "run-dag", "hulk_refresh")
        assert rankline(redis_env, "store", "versions").split()[:2] == ["1", "live"]
        with serve(redis_env) as (base, health):
            assert health["store_version"] == 1 and health["keys"] > 100
            assert httpx.get(f"{base}/v1/recommendations/5").status_code == 401
            body = httpx.get(f"{base}/v1/recommendations/5", params={"k": 5},
                             headers={"X-API-Key": "e2e-key"}).json()
        with RecsClient.connect(REDIS_URL, prefix=prefix) as recs:
            direct = recs.get_many(["5", "nobody"], k=5)
            cold = recs.get("nobody", k=20)
        assert direct["5"].item_ids == [i["item_id"] for i in body["items"]]
        assert direct["5"].pools == [i["pool"] for i in body["items"]]
        assert set(direct["5"].pools) <= {"popular", "category", "co_clicks", "new_items"}
        # a user never seen: the cold-start list blends the pools that need no history (the
        # catalog grows: there are new items), every one of them
        assert set(cold.pools) == {"popular", "new_items"} and cold.cold_start
        assert not direct["5"].cold_start and direct["nobody"].cold_start
        assert direct["5"].store_version == body["store_version"] == 1
        assert rankline(env, "store", "versions") == sqlite_before
    finally:
        purge(f"redis:{prefix}")


def test_rerun_overwrites_and_refresh_publishes_a_new_version(demo):
    home, env, _ = demo
    import pyarrow.parquet as pq

    day = dt.date(2026, 1, 14)
    part = home / "raw" / "clicks" / f"date={day}" / "part-0.parquet"
    before = pq.read_table(part)
    rankline(env, "run-dag", "ingest", "--date", day.isoformat())
    assert pq.read_table(part).equals(before)
    assert len(list(part.parent.iterdir())) == 1
    rankline(env, "run-dag", "hulk_refresh", "--date", day.isoformat())
    out = rankline(env, "store", "versions")
    assert out.split()[:2] == ["2", "live"]
    rankline(env, "store", "rollback", "--why", "e2e")
    assert "1  live" in rankline(env, "store", "versions")
    # the same as a parameter of the refresh DAG: no publish, a switch back to version 2
    rankline(env, "run-dag", "hulk_refresh", "--conf",
              '{"rollback": true, "rollback_to": 2, "reason": "dag says so"}')
    out = rankline(env, "store", "versions")
    assert out.split()[:2] == ["2", "live"] and "dag says so" in out

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True,
                              filter_string="tags.`rollback.to_version` != ''")
    got = {(r["tags.rollback.from_version"], r["tags.rollback.to_version"], r["tags.rollback.why"])
           for _, r in runs.iterrows()}
    assert got == {("2", "1", "e2e"), ("1", "2", "dag says so")}
    assert runs["tags.rollback.who"].str.len().min() > 0
    assert (runs["tags.airflow.dag_id"] == "hulk_refresh").sum() == 1  # logged in the DAG run's run
    assert set(runs["status"]) == {"FINISHED"}  # the DAG's rollback run is ended too


def test_every_mlflow_run_ends_and_a_failed_refresh_is_failed_at_once(demo):
    """A refresh for a date that was never ingested fails in one try (no retries) with a
    message that says what to do, and its MLflow run is FAILED, not RUNNING forever."""
    home, env, _ = demo
    res = run_cli(env, "run-dag", "hulk_refresh", "--date", "2026-03-01", check=False)
    assert res.returncode != 0
    assert "2026-03-01: not ingested: run `rankline run-dag ingest --date 2026-03-01`" in (
        res.stdout + res.stderr)
    db = sqlite3.connect(home / "airflow" / "airflow.db")
    run_id = db.execute("SELECT run_id FROM dag_run WHERE dag_id='hulk_refresh' "
                        "ORDER BY id DESC LIMIT 1").fetchone()[0]
    tries = dict(db.execute("SELECT task_id, try_number FROM task_instance WHERE run_id=? AND "
                            "state='failed'", (run_id,)))
    assert tries == {"publish": 1}

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True)
    failed = runs[runs["tags.airflow.run_id"] == run_id]
    assert list(failed["status"]) == ["FAILED"]
    assert set(runs.loc[runs["tags.airflow.run_id"] != run_id, "status"]) == {"FINISHED"}


def test_a_retrained_identical_model_is_refused_and_announces_nothing(demo):
    """The same data and seed give the same model: its difference with the champion is zero,
    inside the noise, so the gate refuses it and the model asset is not updated."""
    home, env, _ = demo
    rankline(env, "run-dag", "train", "--date", "2026-01-20")  # the demo's split and encoder
    db = sqlite3.connect(home / "airflow" / "airflow.db")
    run_id = db.execute("SELECT run_id FROM dag_run WHERE dag_id='train' ORDER BY id DESC "
                        "LIMIT 1").fetchone()[0]
    states = dict(db.execute("SELECT task_id, state FROM task_instance WHERE run_id=?", (run_id,)))
    assert states["evaluate"] == "success" and states["announce_champion"] == "skipped"
    events = db.execute("SELECT COUNT(*) FROM asset_event e JOIN asset a ON a.id = e.asset_id "
                        "WHERE a.name='rankline_model'").fetchone()[0]
    assert events == 1  # the demo's first promotion only

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    run = mlflow.search_runs(search_all_experiments=True,
                             filter_string=f"tags.`airflow.run_id` = '{run_id}'").iloc[0]
    assert run["tags.promoted"] == "False"
    assert "+0.0000 NDCG@10 [+0.0000, +0.0000]; not promoted" in run["tags.promotion_reason"]
    assert run["metrics.gate_groups"] >= 100


NEURAL = {"RANKLINE_MODELS": "xgboost,neural,neural_scratch", "RANKLINE_NEURAL_EPOCHS": "2",
          "RANKLINE_PRETRAIN_EPOCHS": "2", "RANKLINE_EMBED_DIM": "16", "RANKLINE_SEQ_LEN": "20"}


def test_every_family_trains_as_its_own_task_and_a_neural_champion_is_served(demo):
    """The train DAG with three families: one mapped task each (named after its family), a
    pre-training task, every family in the evaluation table, each version tagged with its
    family; a neural champion (promoted by hand) is what the refresh then serves."""
    home, env, _ = demo
    env = {**env, **NEURAL}
    rankline(env, "run-dag", "train", "--date", "2026-01-14")
    db = sqlite3.connect(home / "airflow" / "airflow.db")
    run_id = db.execute("SELECT run_id FROM dag_run WHERE dag_id='train' ORDER BY id DESC "
                        "LIMIT 1").fetchone()[0]
    mapped = db.execute("SELECT map_index, rendered_map_index, state FROM task_instance WHERE "
                        "run_id=? AND task_id='train_model' ORDER BY map_index",
                        (run_id,)).fetchall()
    assert mapped == [(0, "xgboost", "success"), (1, "neural", "success"),
                      (2, "neural_scratch", "success")]
    states = dict(db.execute("SELECT task_id, state FROM task_instance WHERE run_id=? AND "
                             "map_index=-1", (run_id,)))
    assert states["pretrain"] == states["evaluate"] == "success"

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    run = mlflow.search_runs(search_all_experiments=True,
                             filter_string=f"tags.`airflow.run_id` = '{run_id}'").iloc[0]
    for family in ("xgboost", "neural", "neural_scratch", "popularity", "oracle"):
        assert run[f"metrics.test_{family}_ndcg_at_10"] > 0, family
    assert run["metrics.pretrain_samples_per_s"] > 0 and run["tags.encoder_data_end"] == \
        "2026-01-01"  # the day before the first training date: no ranker's row is seen
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run["run_id"], "encoder")}
    assert arts == {"encoder/encoder.pt", "encoder/item_embeddings.parquet"}
    for family in ("neural", "neural_scratch"):
        assert f"gate.{family}" in {k.removeprefix("tags.") for k in run.index if
                                    k.startswith("tags.") and isinstance(run[k], str)}
    versions = {v.tags["family"]: str(v.version) for v in mlflow.MlflowClient().search_model_versions(
        "name='rankline-ranker'") if v.run_id == run["run_id"]}
    assert set(versions) == {"xgboost", "neural", "neural_scratch"}

    rankline(env, "model", "promote", versions["neural"], "--reason", "e2e: serve a neural model")
    rankline(env, "run-dag", "hulk_refresh", "--date", "2026-01-14")
    with serve(env) as (base, health):
        body = httpx.get(f"{base}/v1/recommendations/5", params={"k": 5}).json()
    assert body["model"] == f"models:/rankline-ranker/{versions['neural']}"
    assert len(body["items"]) == 5 and not body["cold_start"]


def test_bad_partition_fails_the_ingest_run_and_stops_downstream(tmp_path):
    """Through Airflow: the Parquet source serves a corrupted day; validate fails naming the
    expectation and the offending id, the staged copy is quarantined, features never run, and
    raw/ never sees it."""
    from pipeline.sources.synthetic import SyntheticSource

    day = dt.date(2026, 1, 1)
    lake = tmp_path / "lake"
    SyntheticSource(n_users=300, n_items=120, n_categories=6, impressions_per_day=6000).acquire(
        day, lake)
    import pyarrow.parquet as pq

    clicks = lake / "clicks" / f"date={day}" / "part-0.parquet"
    bad = pq.read_table(clicks).to_pandas()
    bad.loc[0, "impression_id"] = 42  # a click without its impression
    bad.to_parquet(clicks)

    home = tmp_path / "var"
    env = {**cli_env(home), "RANKLINE_SOURCE": "parquet", "RANKLINE_SOURCE_URI": str(lake)}
    res = subprocess.run([sys.executable, "-m", "pipeline.cli", "run-dag", "ingest", "--date",
                          day.isoformat()], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode != 0
    assert "every click has its impression" in res.stdout + res.stderr
    assert str(bad.loc[0, "event_id"]) in res.stdout + res.stderr  # the offending click's id
    db = sqlite3.connect(home / "airflow" / "airflow.db")
    states = dict(db.execute("SELECT task_id, state FROM task_instance WHERE dag_id='ingest'"))
    assert states == {"acquire": "success", "validate": "failed", "features": "upstream_failed"}
    q = home / "quarantine" / f"date={day}"
    assert (q / "report" / "results.json").exists()
    assert pq.read_table(q / "raw" / "clicks" / "part-0.parquet").to_pandas().equals(bad)
    assert not (home / "offline").exists()
    assert not (home / "raw").exists()  # nothing that failed validation reaches raw/
