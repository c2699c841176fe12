"""Ingest DAG: acquire → validate → features, one logical date per run."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronDataIntervalTimetable, dag, task

from pipeline.dag_support import (
    FEATURES,
    check_conf,
    dag_kwargs,
    fail_fast,
    ingest_start_date,
    mlflow_run,
    settings,
)


@dag(
    dag_id="ingest",
    # Keyed on the data interval: the run for ds=D starts once day D is over.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    # Catch-up bounded to the last RANKLINE_CATCHUP_DAYS days through the start date.
    # Two runs at once: a date's acquire and validate overlap the previous date's features,
    # which stay in date order (depends_on_past on `features` below).
    **dag_kwargs("ingest", catchup=True, start_date=ingest_start_date(), max_active_runs=2),
)
def ingest() -> None:
    """### Ingest: acquire → validate → features, one logical date per run

    Every day, the configured source (the seeded synthetic marketplace by default,
    MovieLens-100K, or a Parquet location) writes the day's tables to **staging**
    (`staging/date=<ds>/`). Great Expectations suites judge them there: columns and types,
    nulls, ranges, string lengths and UTF-8, unique ids, timestamps inside the day, known users
    and items, and the funnel in time order. **Only a passing copy is moved into
    `raw/<table>/date=<ds>/`** (its `_SUCCESS` marker written last); a failing one is
    quarantined with its report and Data Docs under `quarantine/date=<ds>/`, the run fails at
    once naming each failed expectation with sample ids, and nothing downstream runs.
    Re-ingesting a valid day from a broken source leaves its validated copy untouched.

    The features task writes user, item, user×category and user×item features as of the end
    of `ds` to the offline store, materializes them to the online store, and updates the
    `rankline_features` asset (the date in its extra; `train` runs on its own daily schedule).
    Reruns and backfills overwrite their own partition.

    **Two dates at a time, features in date order.** Up to two runs are active (backfills:
    `--max-active-runs 2`); a date's acquire and validate run beside the previous date's
    features, but `features` waits for the previous date's `features` to succeed
    (`depends_on_past`), because its 28-day views read the dates before it. So a backfill,
    a catch-up and day-by-day runs write byte-identical partitions. A failed date therefore
    holds the next date's features ("depends_on_past ... not in a successful state" in its
    task details) until it is fixed: re-ingest it with `airflow backfill create --dag-id
    ingest --from-date D --to-date D --reprocess-behavior failed` (a backfill has run slots
    of its own; if D failed inside a backfill, cancel that one first: its later dates wait on D,
    so it never completes, and Airflow allows one active backfill per DAG: the Backfills tab, or
    `PUT /api/v2/backfills/{id}/cancel`), or, to go on without that date, mark its `features`
    task *skipped*. Clearing D alone in the UI can deadlock (the two run slots are held by the
    dates waiting on it): clear D together with the later held runs. Not `rankline run-dag`:
    its manual run replaces D's, and the next date does not wait for manual runs.

    **Catch-up is bounded**: the start date is the later of `RANKLINE_START_DATE` and today
    minus `RANKLINE_CATCHUP_DAYS` (default 3; 0: no past day), computed when the file is
    parsed. Unpausing the DAG, or restarting the scheduler after an outage, runs at most those
    last days, not every day since `RANKLINE_START_DATE`. Older dates: `airflow backfill create
    --dag-id ingest --from-date … --to-date … --reprocess-behavior failed` (backfill runs
    ignore the start date) or `rankline run-dag ingest --date …`. Not a manual trigger with an
    older logical date: Airflow gives such a run no task instances, and it succeeds having done
    nothing.
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

    @task(outlets=[FEATURES], depends_on_past=True)
    def features(report: dict, ds: str | None = None, **context) -> dict:
        from pipeline import steps

        with fail_fast():
            out = steps.features(settings(), dt.date.fromisoformat(ds), mlflow_run(context),
                                 report)
        context["outlet_events"][FEATURES].extra = {"date": ds}
        return out

    features(validate(acquire()))


ingest_dag = ingest()
