"""Sweep pieces without Airflow: search spaces build the families, and median pruning stops a
planted bad trial through the family's per-step hook."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from models.base import TrainingSet
from models.registry import FAMILIES, family_class
from models.xgb import XGBoostRanker
from pipeline.sweep import pruning_hook
from tests.unit.test_model_contract import tiny_rows


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_search_space_builds_its_family(family):
    cls = family_class(family)
    trial = optuna.create_study().ask()
    params = cls.search_space(trial)
    assert params and set(params) == set(trial.params)
    cls(**params)  # constructor arguments, all of them


def test_the_median_pruner_stops_a_planted_bad_trial(tmp_path: Path):
    paths = {}
    for part, (n, seed) in {"train": (300, 1), "valid": (80, 2)}.items():
        (tmp_path / part).mkdir()
        tiny_rows(n, seed).to_parquet(tmp_path / part / "p.parquet")
        paths[part] = (tmp_path / part,)
    data = TrainingSet(paths["train"], paths["valid"])
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(
        n_startup_trials=2, n_warmup_steps=3))
    # two ordinary trials, then one that can never split a node: every score ties
    for params in ({}, {"max_depth": 4}, {"min_child_weight": 1e6}):
        trial = study.ask()
        steps: list[float] = []
        model = XGBoostRanker(n_estimators=12, device="cpu", n_jobs=1,
                              early_stopping_rounds=50, **params)
        model.on_step = pruning_hook(trial, steps)
        try:
            report = model.fit(data)
            study.tell(trial, max(report.curves["valid_ndcg@10"]))
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    states = [t.state for t in study.trials]
    assert states[:2] == [optuna.trial.TrialState.COMPLETE] * 2
    assert states[2] == optuna.trial.TrialState.PRUNED
    assert len(study.trials[2].intermediate_values) == 4  # stopped at the first step it may


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_grid_sweeps_cover_every_point_once_across_tasks(family):
    """Trial tasks each load the study with their own sampler (as the sweep DAG's mapped
    tasks do); with the grid sampler they still walk one grid: every point once, each inside
    the family's search space, with no warning of a value out of range."""
    import itertools
    import warnings

    from pipeline.settings import Settings
    from pipeline.sweep import grid_size, trial_sampler

    grid = family_class(family).search_grid()
    points = {tuple(p) for p in itertools.product(*(grid[k] for k in sorted(grid)))}
    assert grid_size(family) == len(points)
    storage = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name="s", storage=storage, direction="maximize")
    plan = {"sampler": "grid", "family": family}
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for index in range(len(points)):
            study = optuna.load_study(study_name="s", storage=storage,
                                      sampler=trial_sampler(Settings(), plan, index))
            trial = study.ask()
            params = family_class(family).search_space(trial)
            study.tell(trial, 0.5)
            seen.append(tuple(params[k] for k in sorted(grid)))
    assert sorted(seen) == sorted(points)
    # a retried task (its first try failed) takes its own point again, not the next one
    study = optuna.load_study(study_name="s", storage=storage,
                              sampler=trial_sampler(Settings(), plan, 2))
    trial = study.ask()
    assert tuple(family_class(family).search_space(trial)[k] for k in sorted(grid)) == seen[2]


def test_train_takes_the_newest_adopted_sweep_only(tmp_path: Path, monkeypatch):
    """best_params: a sweep whose best did not beat the defaults on evidence is skipped."""
    import mlflow

    from pipeline.settings import get_settings
    from pipeline.sweep import ADOPTED_TAG, SWEEP_TAG, best_params
    from pipeline.tracking import configure

    monkeypatch.setenv("RANKLINE_HOME", str(tmp_path / "var"))
    get_settings.cache_clear()
    s = get_settings()
    exp = configure(s)
    assert best_params(s, "xgboost") is None

    def sweep(adopted: bool, depth: int) -> str:
        with mlflow.start_run(experiment_id=exp) as run:
            mlflow.set_tags({SWEEP_TAG: "xgboost", ADOPTED_TAG: str(adopted).lower()})
            mlflow.log_metric("sweep_best_valid_ndcg_at_10", 0.5)
            mlflow.log_dict({"params": {"max_depth": depth}, "value": 0.5},
                            "sweep/xgboost/best_params.json")
        return run.info.run_id

    adopted = sweep(True, 4)
    sweep(False, 9)  # newer, not adopted
    found = best_params(s, "xgboost")
    assert found["run_id"] == adopted and found["params"] == {"max_depth": 4}
    get_settings.cache_clear()
