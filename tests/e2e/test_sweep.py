"""A sweep on the shared demo's home: ``rankline sweep`` runs the sweep DAG (dag.test in this
process's child) with 4 mapped trials sharing one Optuna study, each a nested MLflow run; the
next train starts from the best parameters. Runs after the other e2e modules (file order), so
their trains use the settings' parameters."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.e2e.conftest import rankline

pytestmark = pytest.mark.e2e


def test_a_four_trial_sweep_writes_one_study_nested_runs_and_the_next_train_uses_it(demo):
    import mlflow
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    home, env, _ = demo
    rankline(env, "sweep", "--family", "xgboost", "--trials", "4")

    storage = JournalStorage(JournalFileBackend(str(home / "sweeps" / "optuna.journal")))
    names = optuna.get_all_study_names(storage)
    assert len(names) == 1 and names[0].startswith("xgboost-"), names
    study = optuna.load_study(study_name=names[0], storage=storage)
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state.is_finished() for t in trials)
    assert sorted(t.user_attrs["task_index"] for t in trials) == [0, 1, 2, 3]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name("rankline")
    runs = mlflow.search_runs([exp.experiment_id])
    sweep = runs[runs["tags.airflow.dag_id"] == "sweep"]
    assert len(sweep) == 1
    sweep = sweep.iloc[0]
    nested = runs[runs["tags.mlflow.parentRunId"] == sweep["run_id"]]
    assert len(nested) == 4 and set(nested["tags.rankline.study"]) == {names[0]}
    # validation only: no trial logged anything about the test dates
    logged = [c for c in nested.columns if c.startswith("metrics.") and nested[c].notna().any()]
    assert "metrics.best_valid_ndcg_at_10" in logged or "metrics.valid_ndcg_at_10" in logged
    assert not [c for c in logged if "test" in c], logged
    best = max(complete, key=lambda t: t.value)
    assert sweep["metrics.sweep_best_valid_ndcg_at_10"] == pytest.approx(best.value)
    found = mlflow.artifacts.load_dict(
        f"{sweep['artifact_uri']}/sweep/xgboost/best_params.json")
    assert found["params"] == best.params and found["trials"] == 4
    assert "sweep/xgboost/history.png" in {
        a.path for a in mlflow.MlflowClient().list_artifacts(sweep["run_id"], "sweep/xgboost")}

    # adopted only on evidence: best - defaults on the validation groups, interval above zero
    low, high = sweep["metrics.sweep_gain_low"], sweep["metrics.sweep_gain_high"]
    assert low <= sweep["metrics.sweep_gain_mean"] <= high and sweep["metrics.sweep_gain_groups"] > 0
    adopted = sweep["tags.rankline.sweep_adopted"]
    assert adopted == ("true" if low > 0 else "false")

    rankline(env, "run-dag", "train")
    runs = mlflow.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    train = runs[runs["tags.airflow.dag_id"] == "train"].iloc[0]
    if adopted == "true":
        assert train["params.xgboost.sweep_run"] == sweep["run_id"]
        for name, value in best.params.items():
            assert json.loads(train[f"params.xgboost.{name}"]) == pytest.approx(value), name
    else:  # the defaults stay
        assert pd.isna(train.get("params.xgboost.sweep_run"))
