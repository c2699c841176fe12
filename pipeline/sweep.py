"""Hyperparameter sweeps: one Optuna study per sweep DAG run, its trials Airflow tasks.

The ``sweep`` DAG (and ``rankline sweep``) plans a study for one family (:func:`plan_sweep`),
runs its trials as mapped tasks that share it (:func:`run_trial`: ``ask`` a trial, fit the
family with the parameters its search space suggests, ``tell`` the best validation NDCG@10),
then logs the best trial (:func:`finish_sweep`). The study lives in Optuna's journal file under
``RANKLINE_HOME/sweeps`` on the embedded setup, or in the database at ``RANKLINE_SWEEP_STORAGE``
(Postgres in production), so trials running in other processes, or on other hosts, share it.

- **Samplers:** TPE (default; ``constant_liar`` so parallel trials spread out), random (each
  task's sampler seeded by the sweep's seed and the trial's index) or grid (the family's
  ``search_grid``, its points in an order seeded by the sweep's seed: trial task ``i`` takes
  point ``i``, a retry the same, so a sweep of as many trials as points covers the grid once,
  and a shorter one a random part of it).
- **Pruning:** each step's validation NDCG@10 is reported to the trial; Optuna's median pruner
  stops a trial whose curve falls below the median of the trials before it at that step.
- **Tracking:** the sweep's MLflow run is the DAG run's; every trial is a nested run under it
  (params, curve, value, state). The best trial's parameters are the artifact
  ``sweep/<family>/best_params.json`` of that run, tagged ``rankline.sweep_family``.
- **Adopted on evidence:** the best trial's value is the maximum of many noisy values (a
  winner's curse), so it is confirmed on data no trial saw: the trials validate on every
  validation date but the last; ``finish`` trains the family with the best parameters and with
  what ``train`` uses now and scores both on the last validation date's (user, day) groups. The
  best parameters are adopted (tag ``rankline.sweep_adopted=true``) only when the paired
  bootstrap interval of best - current over those groups (``RANKLINE_GATE_CONFIDENCE``,
  ``_BOOTSTRAP``) lies above zero (never with ``RANKLINE_VALID_DAYS=1``). The next ``train`` of
  that family starts from the newest adopted sweep (:func:`best_params`, with
  ``RANKLINE_SWEEP_DEFAULTS``), recorded as ``<family>.sweep_run``.
- **Validation only:** trials train on the training dates and are judged on the validation
  dates (all but the last, which confirms the best); the test dates stay for the train DAG's
  gate.
"""

from __future__ import annotations

import itertools
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.settings import Settings

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random", "grid")
SWEEP_TAG = "rankline.sweep_family"
"""Tag of a sweep's MLflow run: the family it tuned (its best parameters are an artifact)."""
ADOPTED_TAG = "rankline.sweep_adopted"
"""Tag of a sweep's MLflow run: whether its best parameters beat the defaults on evidence."""


def storage(settings: Settings) -> Any:
    """The Optuna storage every trial of every sweep shares: ``RANKLINE_SWEEP_STORAGE`` (an
    RDB URL), or a journal file under ``RANKLINE_HOME/sweeps``."""
    if settings.sweep_storage:
        return settings.sweep_storage
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = settings.home / "sweeps" / "optuna.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def make_sampler(name: str, seed: int, family: str | None = None) -> Any:
    """An Optuna sampler by name (:data:`SAMPLERS`); ``grid`` needs the ``family``."""
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=5)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        from models.registry import family_class

        if family is None:
            raise ValueError("the grid sampler needs the family whose grid it walks")
        return _grid_sampler(family_class(family).search_grid(), seed)
    raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)} "
                     "(RANKLINE_SWEEP_SAMPLER or the sweep run's sampler parameter)")


def grid_size(family: str) -> int:
    """Points of the family's grid."""
    return len(grid_points(family, 0))


def _grid_sampler(search_space: dict[str, list[Any]], seed: int) -> Any:
    """Optuna's grid sampler without its ``study.stop()`` once the grid is covered (which
    raises outside ``optimize``: the sweep's trials are ask/tell tasks that count themselves)."""
    import optuna

    class Grid(optuna.samplers.GridSampler):
        def after_trial(self, *args: Any) -> None:
            pass

    return Grid(search_space, seed=seed)


def pruner(warmup: int = 3) -> Any:
    """The median pruner: after ``warmup`` steps (the family's ``prune_warmup``), a trial
    below the median of the earlier trials at the same step stops."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup)


def plan_sweep(settings: Settings, split: dict[str, list[str]], run_id: str, family: str,
               trials: int, sampler: str) -> dict[str, Any]:
    """Create the sweep's study (named after its MLflow run); return what each trial task
    needs, ``indices`` the trials to map over."""
    import optuna

    from models.registry import family_class

    family_class(family).search_space  # noqa: B018 - an unknown family fails here, at once
    make_sampler(sampler, settings.seed, family)
    if trials < 1:
        raise ValueError(f"a sweep needs at least one trial, not {trials} (RANKLINE_SWEEP_TRIALS)")
    if sampler == "grid" and trials > (points := grid_size(family)):
        log.info("the grid of %s has %d points: %d trials, not %d", family, points, points,
                 trials)
        trials = points
    name = f"{family}-{run_id}"
    optuna.create_study(study_name=name, storage=storage(settings), direction="maximize",
                        load_if_exists=True)
    import mlflow

    from pipeline.tracking import configure

    configure(settings)
    mlflow.MlflowClient().set_tag(run_id, SWEEP_TAG, family)
    # the last validation date confirms the best (adopt); the trials never see it
    trial_split = {**split, "valid": split["valid"][:-1]} if len(split["valid"]) > 1 else split
    confirm = split["valid"][-1:] if len(split["valid"]) > 1 else []
    if not confirm:
        log.warning("RANKLINE_VALID_DAYS=1: no validation date left to confirm the sweep's best "
                    "on, so it will not be adopted (2 or more validation days give one)")
    return {"study": name, "family": family, "sampler": sampler, "split": split,
            "trial_split": trial_split, "confirm": confirm,
            "run_id": run_id, "trials": trials, "indices": list(range(trials))}


def run_trial(settings: Settings, plan: dict[str, Any], index: int,
              encoder: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trial ``index`` of the planned sweep: ask the study, fit, tell. A rerun of the task
    finds its trial done and returns it; a trial of an earlier try left running (a killed
    task) is marked failed and asked again."""
    import mlflow
    import optuna

    from models.registry import build, family_class
    from pipeline.pretraining import encoder_path
    from pipeline.row_choice import resolve
    from pipeline.tracking import configure
    from pipeline.training import training_set

    exp_id = configure(settings)
    settings = resolve(settings, plan["split"])  # the training rows the train DAG would use
    study = optuna.load_study(study_name=plan["study"], storage=storage(settings),
                              sampler=trial_sampler(settings, plan, index),
                              pruner=pruner(family_class(plan["family"]).prune_warmup))
    for old in study.get_trials(deepcopy=False):
        if old.user_attrs.get("task_index") != index:
            continue
        if old.state.is_finished():
            return _summary(study, old.number, old.state.name, old.value)
        study.tell(old.number, state=optuna.trial.TrialState.FAIL)  # an earlier try's leftover
    trial = study.ask()
    trial.set_user_attr("task_index", index)
    params = family_class(plan["family"]).search_space(trial)
    model = build(plan["family"], settings, **params)
    # the sweep's parallel trials share the cores: one thread pool each, no oversubscription
    model.set_threads(max(1, settings.n_threads // settings.sweep_parallel))
    steps: list[float] = []
    model.on_step = pruning_hook(trial, steps)
    t0 = time.perf_counter()
    # nested through the parent tag: the sweep's run need not be active (other tasks end it)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"trial {trial.number}",
                          tags={"mlflow.parentRunId": plan["run_id"],
                                "rankline.study": plan["study"],
                                "rankline.trial": str(trial.number)}) as run:
        mlflow.log_params(params)
        state, value = "COMPLETE", None
        with tempfile.TemporaryDirectory() as tmp:
            pretrained = encoder_path(encoder, Path(tmp)) if model.needs_pretrained else None
            try:
                report_ = model.fit(training_set(settings, plan["trial_split"], pretrained))
                value = max(report_.curves["valid_ndcg@10"])
            except optuna.TrialPruned as pruned:
                state = "PRUNED"
                log.info("trial %d pruned: %s", trial.number, pruned)
            except BaseException:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                mlflow.set_tag("rankline.trial_state", "FAIL")
                raise
        for step, v in enumerate(steps):
            mlflow.log_metric("valid_ndcg_at_10", v, step=step)
        mlflow.set_tag("rankline.trial_state", state)
        if value is not None:
            mlflow.log_metric("best_valid_ndcg_at_10", value)
            study.tell(trial, value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        mlflow.log_metric("trial_seconds", time.perf_counter() - t0)
    out = _summary(study, trial.number, state, value)
    log.info("sweep %s: trial %d %s%s; %d of %d trials finished, best so far %s (%s)",
             plan["study"], trial.number, state.lower(),
             f" at {value:.4f}" if value is not None else "", out["finished"], plan["trials"],
             f"{out['best_value']:.4f}" if out["best_value"] is not None else "none",
             f"trial {out['best_trial']}" if out["best_trial"] is not None else "-")
    return {**out, "mlflow_run_id": run.info.run_id}


def trial_sampler(settings: Settings, plan: dict[str, Any], index: int) -> Any:
    """The sampler of trial task ``index``: seeded per trial; with the grid, one that suggests
    the ``index``-th point of the grid shuffled by the sweep's seed (so every task takes its
    own point, and a retried task the same one)."""
    if plan["sampler"] == "grid":
        points = grid_points(plan["family"], settings.seed)
        return _point_sampler(points[index % len(points)])
    return make_sampler(plan["sampler"], settings.seed * 1000 + index, plan["family"])


def grid_points(family: str, seed: int) -> list[dict[str, Any]]:
    """Every point of the family's grid, in an order shuffled by ``seed``."""
    import numpy as np

    from models.registry import family_class

    grid = family_class(family).search_grid()
    names = sorted(grid)
    points = [dict(zip(names, values, strict=True))
              for values in itertools.product(*(grid[n] for n in names))]
    order = np.random.default_rng(seed).permutation(len(points))
    return [points[i] for i in order]


def _point_sampler(point: dict[str, Any]) -> Any:
    """An Optuna sampler that suggests ``point``'s value for each parameter."""
    import optuna

    class Point(optuna.samplers.BaseSampler):
        def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
            return {}

        def sample_relative(self, study: Any, trial: Any, space: Any) -> dict[str, Any]:
            return {}

        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            if name not in point:
                raise ValueError(f"the grid has no values for {name!r}: the family's "
                                 "search_grid must cover its search_space")
            return point[name]

    return Point()


def pruning_hook(trial: Any, steps: list[float]) -> Any:
    """A family's ``on_step``: report each step's validation NDCG@10 to ``trial`` (and append
    it to ``steps``), and stop the fit (``optuna.TrialPruned``) when the pruner says so."""
    import optuna

    def report(step: int, value: float) -> None:
        steps.append(value)
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"step {step}: {value:.4f} below the median")

    return report


def _summary(study: Any, number: int, state: str, value: float | None) -> dict[str, Any]:
    import optuna

    done = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    complete = [t for t in done if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value) if complete else None
    return {"trial": number, "state": state, "value": value, "finished": len(done),
            "best_value": best.value if best else None,
            "best_trial": best.number if best else None}


def finish_sweep(settings: Settings, plan: dict[str, Any],
                 encoder: dict[str, Any] | None = None) -> dict[str, Any]:
    """Log the sweep's best trial to its MLflow run (params ``sweep.<name>``, the metric
    ``sweep_best_valid_ndcg_at_10``, ``sweep/<family>/best_params.json``), decide whether it
    is adopted (:func:`adopt`: tag ``rankline.sweep_adopted``, metrics ``sweep_gain_*``) and
    plot the history (each trial's value and the best so far)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import optuna

    from pipeline.tracking import configure, log_figure

    configure(settings)
    study = optuna.load_study(study_name=plan["study"], storage=storage(settings))
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"sweep {plan['study']}: no trial completed ({len(trials)} tried: "
                           "see the trial tasks' logs); nothing to keep")
    best = max(complete, key=lambda t: t.value)
    states = {s.name: sum(t.state == s for t in trials) for s in optuna.trial.TrialState}
    gain = adopt(settings, plan, best.params, encoder)
    result = {"family": plan["family"], "params": best.params, "value": best.value,
              "trial": best.number, "study": plan["study"], "sampler": plan["sampler"],
              "trials": len(trials), "states": {k: v for k, v in states.items() if v},
              "gain": gain}
    with mlflow.start_run(run_id=plan["run_id"]):
        mlflow.log_params({f"sweep.{k}": v for k, v in best.params.items()})
        mlflow.log_params({"sweep.family": plan["family"], "sweep.sampler": plan["sampler"],
                           "sweep.trials": len(trials)})
        mlflow.log_metric("sweep_best_valid_ndcg_at_10", best.value)
        mlflow.log_metrics({f"sweep_gain_{k}": gain[k] for k in ("mean", "low", "high")})
        mlflow.log_metric("sweep_gain_groups", gain["groups"])
        mlflow.set_tag(ADOPTED_TAG, str(gain["adopted"]).lower())
        mlflow.log_dict(result, f"sweep/{plan['family']}/best_params.json")
        done = sorted(complete, key=lambda t: t.number)
        numbers, values = [t.number for t in done], [t.value for t in done]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.scatter(numbers, values, s=14, label="trial")
        ax.step(numbers, list(itertools.accumulate(values, max)), where="post", color="C1",
                label="best so far")
        ax.set(xlabel="trial", ylabel="validation NDCG@10",
               title=f"Sweep of {plan['family']} ({plan['sampler']})")
        ax.legend()
        log_figure(fig, f"sweep/{plan['family']}/history.png")
    log.info("sweep %s: best trial %d, validation NDCG@10 %.4f, %s; best - defaults on the "
             "validation groups %+.4f [%+.4f, %+.4f] over %d groups: %s", plan["study"],
             best.number, best.value, json.dumps(best.params), gain["mean"], gain["low"],
             gain["high"], gain["groups"],
             "adopted" if gain["adopted"] else "not adopted, the defaults stay")
    return result


def adopt(settings: Settings, plan: dict[str, Any], params: dict[str, Any],
          encoder: dict[str, Any] | None = None) -> dict[str, Any]:
    """The best parameters against what ``train`` uses now (the newest adopted sweep's, or
    the settings'), on the confirmation date (the last validation date, which no trial saw):
    both trained as the trials were, the paired bootstrap interval of best - current of
    per-group NDCG@10 over its (user, day) groups; ``adopted`` when its lower bound is above
    zero."""
    from models.metrics import paired_bootstrap, per_group_metrics
    from models.registry import build
    from pipeline.pretraining import encoder_path
    from pipeline.row_choice import resolve
    from pipeline.training import _read, eval_rows, training_set

    none = {"mean": 0.0, "low": 0.0, "high": 0.0, "groups": 0, "adopted": False}
    if not plan.get("confirm"):
        return none
    settings = resolve(settings, plan["split"])
    rows = eval_rows(_read(settings, plan["confirm"]))
    groups, labels = rows["group"].to_numpy(), rows["label"].to_numpy()
    current = best_params(settings, plan["family"]) if settings.sweep_defaults else None
    ndcg = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in (("best", params), ("defaults", current["params"] if current
                                                             else {})):
            model = build(plan["family"], settings, **overrides)
            pretrained = encoder_path(encoder, Path(tmp)) if model.needs_pretrained else None
            model.fit(training_set(settings, plan["trial_split"], pretrained))
            ndcg[name] = per_group_metrics(groups, labels, model.score(rows),
                                           seed=settings.seed)["ndcg@10"]
    diff = (ndcg["best"] - ndcg["defaults"]).to_numpy()
    if not len(diff):
        log.warning("no group with a relevant item on %s: nothing to confirm the sweep on",
                    plan["confirm"])
        return none
    mean, low, high = paired_bootstrap(diff, settings.gate_bootstrap, settings.gate_confidence,
                                       settings.seed)
    return {"mean": mean, "low": low, "high": high, "groups": len(diff),
            "adopted": bool(low > 0)}


def best_params(settings: Settings, family: str) -> dict[str, Any] | None:
    """``{"params", "run_id", "value"}`` of the newest adopted sweep of ``family`` (None when
    there is none)."""
    import mlflow

    from pipeline.tracking import configure

    exp_id = configure(settings)
    runs = mlflow.MlflowClient().search_runs(
        [exp_id], filter_string=f"tags.`{SWEEP_TAG}` = '{family}' "
        f"and tags.`{ADOPTED_TAG}` = 'true' and metrics.sweep_best_valid_ndcg_at_10 > -1",
        order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    run = runs[0]
    found = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/sweep/{family}/best_params.json")
    return {"params": found["params"], "run_id": run.info.run_id, "value": found["value"]}
