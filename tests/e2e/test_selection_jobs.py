"""Model-selection commands on the shared demo's home, each logging one MLflow run: the
sampler comparison (last line as documented), learning curves and rolling-origin CV."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from tests.e2e.conftest import rankline

pytestmark = pytest.mark.e2e


def _job_run(home, job: str, folder: str):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("rankline")
    runs = mlflow.search_runs([exp.experiment_id], filter_string=f"tags.`rankline.job` = '{job}'")
    assert len(runs) == 1, runs
    run = runs.iloc[0]
    assert run["status"] == "FINISHED"
    files = {a.path for a in mlflow.MlflowClient().list_artifacts(run["run_id"], folder)}
    return run, files


def test_sweep_compare_prints_the_test_last_and_logs_the_traces(demo):
    home, env, _ = demo
    out = rankline(env, "sweep", "compare", "--repeats", "4", "--trials", "1",
                   "--fraction", "0.5").strip().splitlines()
    assert re.fullmatch(r"mann-whitney p: [0-9.e+-]+ \((tpe beat random|random beat tpe|"
                        r"no significant difference)\)", out[-1]), out
    run, files = _job_run(home, "sweep-compare", "compare")
    assert files == {"compare/result.json", "compare/best_seen.png"}
    assert 0 <= run["metrics.mw_p_best"] <= 1 and 0 <= run["metrics.mw_p_auc"] <= 1
    assert f"{run['metrics.mw_p_best']:.3g}" in out[-1]
    import mlflow

    result = mlflow.artifacts.load_dict(f"{run['artifact_uri']}/compare/result.json")
    assert {s: [len(v) for v in vs] for s, vs in result["values"].items()} == {
        "tpe": [1] * 4, "random": [1] * 4}
    # independent sweeps: every one drew its own first trial
    firsts = [v[0] for vs in result["values"].values() for v in vs]
    assert len(set(firsts)) > 1


def test_learning_curve_and_cross_validation_log_their_tables(demo, tmp_path):
    home, env, _ = demo
    rankline(env, "learning-curve", "--fractions", "0.2,1", "--seeds", "2")
    run, files = _job_run(home, "learning-curve", "learning_curve")
    assert files == {"learning_curve/table.csv", "learning_curve/ndcg.png"}
    import mlflow

    table = pd.read_csv(mlflow.artifacts.download_artifacts(
        f"{run['artifact_uri']}/learning_curve/table.csv", dst_path=str(tmp_path)))
    assert len(table) == 4 and set(table["fraction"]) == {0.2, 1.0}
    rows = table.groupby("fraction")["train_rows"].first()
    assert rows[0.2] < 0.4 * rows[1.0]
    assert table["test_ndcg@10"].between(0, 1).all()
    assert table["test_groups"].nunique() == 1  # the same held-out groups for every fit

    out = rankline(env, "cv", "--folds", "2")
    run, files = _job_run(home, "cv", "cv")
    assert files == {"cv/folds.csv", "cv/ndcg.png"}
    folds = pd.read_csv(mlflow.artifacts.download_artifacts(
        f"{run['artifact_uri']}/cv/folds.csv", dst_path=str(tmp_path)))
    assert folds["test_dates"].nunique() == 2
    assert {"xgboost", "popularity", "random", "oracle"} <= set(folds["model"])
    assert (folds.groupby("fold")["groups"].nunique() == 1).all()  # paired within a fold
    pop = folds[folds["model"] == "popularity"]["minus_popularity"]
    assert (pop == 0).all()
    assert run["metrics.cv_xgboost_ndcg_at_10_mean"] == pytest.approx(
        folds[folds["model"] == "xgboost"]["ndcg@10"].mean())
    assert "xgboost" in out and "oracle" in out


def test_select_features_logs_a_proposal_the_setting_accepts(demo, tmp_path):
    from feature_store.definitions import model_features

    home, env, _ = demo
    out = rankline(env, "select-features", "--fraction", "0.3", "--repeats", "1")
    last = out.strip().splitlines()[-1]
    assert "accept with: RANKLINE_DROP_FEATURES=" in last, out
    run, files = _job_run(home, "select-features", "selection")
    assert files == {"selection/proposal.json", "selection/stage1.csv", "selection/stages.png"}
    import mlflow

    proposal = mlflow.artifacts.load_dict(f"{run['artifact_uri']}/selection/proposal.json")
    assert sorted(proposal["kept"] + proposal["dropped"]) == sorted(model_features())
    assert proposal["kept"] and set(proposal["stage1"]["screened_out"]) <= set(
        proposal["dropped"])
    assert last.endswith("RANKLINE_DROP_FEATURES=" + ",".join(proposal["dropped"]))
    assert set(proposal["selected_minus"]) == {"all", "random"} and proposal["groups"] > 0
    steps = proposal["stage2"]
    assert [s["feature"] for s in steps[1:]] == proposal["stage1"]["survivors"][:len(steps) - 1]
