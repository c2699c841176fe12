"""Hulk refresh DAG: the nightly batch that publishes every user's top-k recommendations."""

from __future__ import annotations

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from pipeline.dag_support import MODEL, as_of_date, as_of_param, dag_kwargs, mlflow_run, settings


@dag(
    dag_id="hulk_refresh",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * *", timezone="UTC"), assets=[MODEL]),
    params=as_of_param("Features date to score with (default: newest)"),
    **dag_kwargs("serving"),
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
    """

    @task
    def champion() -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from pipeline import steps

        try:
            return steps.champion_uri(settings())
        except LookupError as exc:  # no champion yet: retrying cannot help
            raise AirflowFailException(str(exc)) from exc

    @task
    def publish(champ: dict, **context) -> dict:
        from pipeline import steps

        return steps.refresh(settings(), as_of_date(context), champ, mlflow_run(context))

    @task
    def verify(summary: dict) -> dict:
        from pipeline import steps

        return steps.verify_published(settings(), summary["store_version"])

    verify(publish(champion()))


hulk_refresh_dag = hulk_refresh()
