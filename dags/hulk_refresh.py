"""Hulk refresh DAG: the nightly batch that publishes every user's top-k recommendations."""

from __future__ import annotations

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from pipeline.dag_support import (
    MODEL,
    as_of_date,
    as_of_param,
    check_conf,
    dag_kwargs,
    fail_fast,
    mlflow_run,
    settings,
)


@dag(
    dag_id="hulk_refresh",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * *", timezone="UTC"), assets=[MODEL]),
    # Every param may be null: Airflow's trigger form requires a field whose type lacks "null".
    params={
        **as_of_param("Features date to score with (default: newest validated features)"),
        "rollback": Param(False, type=["null", "boolean"],
                          description="Instead of publishing: serve an older kept version again"),
        "rollback_to": Param(None, type=["null", "integer"], minimum=1,
                             description="Version to roll back to (default: the previous one)"),
        "reason": Param(None, type=["null", "string"],
                        description="Why (recorded with a rollback)"),
    },
    **dag_kwargs("serving"),  # catchup=False: at most the latest missed 03:00 runs
)
def hulk_refresh() -> None:
    """### Hulk refresh: every user's top-k, published atomically

    Nightly at 03:00 UTC, and whenever `train` updates the `rankline_model` asset. Loads the
    **champion** model from the MLflow registry, builds candidates for every active user
    (recent popularity, the user's top categories, items co-clicked with the user's recent
    clicks; already-purchased items excluded), scores them in bounded batches, keeps the top k
    (default 50) and publishes them as a **new version** of the serving store. The switch is
    atomic: readers see the old or the new version, never a mix; older versions are kept for
    rollback. Unknown users get the cold-start list published with the same version.

    **Which features**: `as_of` when given; after `train`, the date the new champion was
    evaluated on; otherwise (the nightly run) the newest date with validated features, whatever
    the run's logical date, so a late or missed `ingest` day never fails the refresh. With
    `catchup=False`, unpausing the DAG runs the latest 03:00 at once (never older missed ones),
    on those newest features. With no features at all the run fails at once saying so.

    **Rollback**: trigger with `rollback: true` (and optionally `rollback_to`, `reason`) to
    switch back to a kept version instead of publishing; the switch is instant and logged to
    MLflow with who (the triggering user), when and why. Same as `rankline store rollback`.
    Every field of the trigger form is optional: a plain refresh needs none. A conf key the DAG
    does not declare, or `rollback_to` / `reason` without `rollback: true`, fails the run in
    its first task, before anything is published.
    """

    @task.branch
    def mode(**context) -> str:
        check_conf(context, requires={"rollback_to": "rollback", "reason": "rollback"})
        return "rollback" if context["params"].get("rollback") else "champion"

    @task
    def rollback(**context) -> dict:
        from pipeline import steps

        params, run = context["params"], context["dag_run"]
        by = getattr(run, "triggering_user_name", None) or f"airflow:{run.run_id}"
        with fail_fast():  # no version to go back to: retrying cannot help
            return steps.rollback(settings(), params.get("rollback_to"),
                                  params.get("reason") or "", by=str(by),
                                  run_id=mlflow_run(context))

    @task
    def champion() -> dict:
        from pipeline import steps

        with fail_fast():  # no champion yet: retrying cannot help
            return steps.champion_uri(settings())

    @task
    def publish(champ: dict, **context) -> dict:
        from pipeline import steps

        with fail_fast():
            return steps.refresh(settings(), as_of_date(context), champ, mlflow_run(context))

    @task
    def verify(summary: dict) -> dict:
        from pipeline import steps

        return steps.verify_published(settings(), summary["store_version"])

    champ = champion()
    mode() >> [rollback(), champ]
    verify(publish(champ))


hulk_refresh_dag = hulk_refresh()
