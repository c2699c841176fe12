"""Sweep DAG: one family's hyperparameters tuned by Optuna, each trial a mapped task."""

from __future__ import annotations

from airflow.sdk import Param, TriggerRule, dag, get_current_context, task

from pipeline.dag_support import (
    as_of_param,
    dag_kwargs,
    fail_fast,
    settings,
    sweep_parallel,
    training_split_tasks,
)


@dag(
    dag_id="sweep",
    schedule=None,  # by hand (UI, airflow dags trigger sweep, rankline sweep)
    params={
        **as_of_param("Last date of the split (default: newest validated features)"),
        "family": Param(None, type=["null", "string"],
                        description="The model family to tune (default: the first of "
                        "RANKLINE_MODELS)"),
        "trials": Param(None, type=["null", "integer"], minimum=1,
                        description="Trials (default: RANKLINE_SWEEP_TRIALS)"),
        "sampler": Param(None, type=["null", "string"], enum=[None, "tpe", "random", "grid"],
                         description="Optuna sampler (default: RANKLINE_SWEEP_SAMPLER)"),
    },
    **dag_kwargs("sweep"),
)
def sweep() -> None:
    """### Sweep: tune one family's hyperparameters

    Triggered by hand. The split as `train` would make it as of `as_of` (the same training
    rows, the same encoder), then an Optuna study of `trials` trials of `family`: each trial
    is a mapped `trial` task (`RANKLINE_SWEEP_PARALLEL` at a time) that asks the shared study
    for parameters from the family's search space, trains on the training dates, reports each
    step's **validation** NDCG@10 (the median pruner stops a trial that falls behind) and
    tells the study its best. The test dates are never looked at. Every trial is a nested
    MLflow run under this run; `finish` logs the best trial's parameters
    (`sweep/<family>/best_params.json`) and the history plot, and adopts them only if they
    beat the parameters in use on the last validation date, which the trials never saw
    (paired bootstrap interval above zero). The
    next `train` starts that family from the newest adopted sweep (`RANKLINE_SWEEP_DEFAULTS`).
    """

    @task
    def plan(assembled: dict, **context) -> dict:
        from pipeline.sweep import plan_sweep

        s, params = settings(), context["params"]
        with fail_fast():
            return plan_sweep(s, assembled["split"], assembled["mlflow_run_id"],
                              params.get("family") or s.model_families[0],
                              params.get("trials") or s.sweep_trials,
                              params.get("sampler") or s.sweep_sampler)

    @task
    def indices(planned: dict) -> list[int]:
        return planned["indices"]

    @task(map_index_template="{{ trial_index }}",
          max_active_tis_per_dagrun=sweep_parallel())
    def trial(planned: dict, encoder: dict | None, index: int) -> dict:
        from pipeline.sweep import run_trial

        get_current_context()["trial_index"] = f"trial {index}"
        return run_trial(settings(), planned, index, encoder)

    @task(trigger_rule=TriggerRule.ALL_DONE)  # the trials that completed count
    def finish(planned: dict, encoder: dict | None) -> dict:
        from pipeline.sweep import finish_sweep

        with fail_fast():
            return finish_sweep(settings(), planned, encoder)

    _, encoder, assembled = training_split_tasks()
    sweep_plan = plan(assembled)
    done = trial.partial(planned=sweep_plan, encoder=encoder).expand(index=indices(sweep_plan))
    done >> finish(sweep_plan, encoder)


sweep_dag = sweep()
