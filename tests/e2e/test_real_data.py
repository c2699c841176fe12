"""Real data end to end: MovieLens-100K as a generic interaction log, through Airflow.

``rankline source export-movielens`` writes the ratings of the first data-set days as
``interactions/date=D/``; ``rankline source check`` validates the location; ``rankline demo``
ingests it (``RANKLINE_SOURCE=interactions``), trains and gates. The gate's decision is checked
against the evidence recomputed here from the run's per-group NDCG@10 (an independent paired
bootstrap): promoted exactly when the lower bound against the best baseline is above zero over
enough groups. Whatever it decided, a model is then served (by hand with ``rankline model promote``
when the gate refused it, as an operator would) and the answers are checked: a personal list for a
user with history, none of whose items the user already interacted with.
"""

from __future__ import annotations

import datetime as dt

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.e2e.conftest import cli_env, rankline, run_cli, serve

pytestmark = pytest.mark.e2e

DAYS, TRAIN, VALID, TEST = 24, 12, 3, 8
MIN_GROUPS = 50  # RANKLINE_GATE_MIN_GROUPS: ~8 groups per held-out day this early in the data
START = dt.date(2026, 1, 1)


@pytest.fixture(scope="module")
def movielens(tmp_path_factory):
    from pipeline.sources.movielens import movielens_dir

    assert movielens_dir().is_dir(), "MovieLens-100K missing: make install puts recbole in the venv"
    tmp = tmp_path_factory.mktemp("movielens")
    env = {**cli_env(tmp / "var"),
           "RANKLINE_SOURCE": "interactions", "RANKLINE_SOURCE_URI": str(tmp / "lake"),
           "RANKLINE_START_DATE": START.isoformat(),
           "RANKLINE_EVENT_LABELS": "value>=3:1,value>=4:2,value>=5:3",
           "RANKLINE_CONSUMED": "impressions,clicks,add_to_cart,purchases",
           "RANKLINE_DEMO_DAYS": str(DAYS), "RANKLINE_TRAIN_DAYS": str(TRAIN),
           "RANKLINE_VALID_DAYS": str(VALID), "RANKLINE_TEST_DAYS": str(TEST),
           "RANKLINE_GATE_MIN_GROUPS": str(MIN_GROUPS),
           "RANKLINE_CANDIDATES_PER_USER": "200", "RANKLINE_TOP_K": "20"}
    out = rankline(env, "source", "export-movielens", str(tmp / "lake"), "--days", str(DAYS))
    assert f"{DAYS} date(s)" in out
    # in-process: this test is about the gate on real data; the scheduler path is the shared demo's
    demo = run_cli(env, "demo", "--in-process", check=False)
    assert demo.returncode in (0, 1), demo.stderr[-4000:]
    return tmp, env, demo


def test_source_check_reads_the_exported_log(movielens):
    tmp, env, _ = movielens
    out = rankline(env, "source", "check", str(tmp / "lake"), "--limit-dates", "3")
    assert "interactions shape" in out and "3 of 3 date(s) pass validation" in out


def test_gate_decides_on_the_evidence(movielens):
    import mlflow

    from models.metrics import paired_bootstrap
    from pipeline.settings import Settings

    tmp, env, demo = movielens
    assert "Held-out metrics" in demo.stdout, demo.stdout[-3000:] + demo.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'var' / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True,
                              filter_string="tags.`airflow.dag_id` = 'train'")
    assert len(runs) == 1
    run = runs.iloc[0]
    per = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run["run_id"],
                                                          artifact_path="per_group.csv"))
    per = per.rename(columns=lambda c: c.removeprefix("ndcg@10_"))
    n = len(per)
    assert n >= MIN_GROUPS, f"{n} held-out groups: too few for the test to mean anything"
    baseline = max(("popularity", "random"), key=lambda b: per[b].mean())
    seed = Settings.model_fields["seed"].default  # RANKLINE_SEED, not set here
    mean, low, high = paired_bootstrap((per["xgboost"] - per[baseline]).to_numpy(), 1000, 0.95,
                                       seed)
    # what MLflow recorded is this evidence, and the decision follows from it
    assert run["metrics.gate_groups"] == n
    assert run["metrics.gate_vs_baseline_mean"] == pytest.approx(mean, abs=1e-9)
    assert run["metrics.gate_vs_baseline_low"] == pytest.approx(low, abs=1e-9)
    assert run["metrics.gate_vs_baseline_high"] == pytest.approx(high, abs=1e-9)
    promoted = run["tags.promoted"] == "True"
    assert promoted == (low > 0), run["tags.promotion_reason"]  # n >= MIN_GROUPS here
    assert f"{n:,} groups" in run["tags.promotion_reason"]
    assert "promotion gate:" in demo.stdout
    # the demo's return code says whether anything could be published
    assert demo.returncode == (0 if promoted else 1)
    if not promoted:
        assert "rankline model promote" in demo.stderr


def test_refresh_serves_what_the_user_has_not_seen(movielens):
    tmp, env, demo = movielens
    as_of = (START + dt.timedelta(days=DAYS - 1)).isoformat()
    listed = rankline(env, "model", "list")
    if demo.returncode == 1:  # the gate refused: serve the model by hand, as an operator would
        assert listed.split()[1] == "-", listed  # version, champion mark, ...
        res = run_cli(env, "run-dag", "hulk_refresh", "--date", as_of, check=False)
        assert res.returncode != 0
        assert "rankline model promote" in res.stdout + res.stderr
        version = listed.split()[0]
        rankline(env, "model", "promote", version, "--reason", "e2e: serve the refused model")
        rankline(env, "run-dag", "hulk_refresh", "--date", as_of)
    assert rankline(env, "model", "list").split()[1] == "champion"

    raw = tmp / "var" / "raw" / "impressions"
    seen = pd.concat(pd.read_parquet(p, columns=["user_id", "item_id"])
                     for p in sorted(raw.glob("date=*")))
    # the most active users of the last 28 days (RANKLINE_HISTORY_DAYS): all get a personal list
    heavy = seen["user_id"].value_counts().index[:5].tolist()
    with serve(env) as (base, health):
        assert health["status"] == "ok", health
        for user in heavy:
            body = httpx.get(f"{base}/v1/recommendations/{user}", params={"k": 20},
                             timeout=30).json()
            assert not body["cold_start"], body
            items = [int(i["item_id"]) for i in body["items"]]
            assert len(items) == 20
            rated = set(seen.loc[seen["user_id"] == user, "item_id"].astype(int))
            assert not rated & set(items), f"user {user} was recommended items they rated"
            assert np.all(np.diff([i["score"] for i in body["items"]]) <= 0)
