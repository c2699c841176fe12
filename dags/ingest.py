"""Ingest DAG: acquire → validate → features, one logical date per run."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronDataIntervalTimetable, dag, task

from pipeline.dag_support import FEATURES, check_conf, dag_kwargs, fail_fast, mlflow_run, settings


@dag(
    dag_id="ingest",
    # Keyed on the data interval: the run for ds=D starts once day D is over.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    **dag_kwargs("ingest", catchup=True),
)
def ingest() -> None:
    """### Ingest: acquire → validate → features, one logical date per run

    Every day, the configured source (the seeded synthetic marketplace by default,
    MovieLens-100K, or a Parquet location) writes the day's raw partitions under
    `raw/<table>/date=<ds>/`. Great Expectations suites then check every table: columns and
    types, non-null keys, ranges, unique event ids, known users and items, and the funnel (no
    click without its impression, no purchase without its click). **A failing partition is
    quarantined with its report and Data Docs under `quarantine/date=<ds>/`, the run fails
    naming the failed expectations, and nothing downstream runs.** Raw data is never altered.

    The features task writes user, item, user×category and user×item features as of the end
    of `ds` to the offline store, materializes them to the online store, and updates the
    `rankline_features` asset, which triggers the `train` DAG. Reruns and backfills overwrite
    their own partition (`airflow backfill create --dag-id ingest --from-date … --to-date …`).
    """

    @task
    def acquire(ds: str | None = None, **context) -> dict[str, str]:
        from pipeline import steps

        check_conf(context)
        with fail_fast():
            return steps.acquire(settings(), dt.date.fromisoformat(ds))

    @task
    def validate(raw: dict[str, str], ds: str | None = None) -> dict:
        from pipeline import steps

        with fail_fast():
            return steps.validate(settings(), dt.date.fromisoformat(ds))

    @task(outlets=[FEATURES])
    def features(report: dict, ds: str | None = None, **context) -> dict:
        from pipeline import steps

        with fail_fast():
            out = steps.features(settings(), dt.date.fromisoformat(ds), mlflow_run(context),
                                 report)
        context["outlet_events"][FEATURES].extra = {"date": ds}
        return out

    features(validate(acquire()))


ingest_dag = ingest()
