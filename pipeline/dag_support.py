"""What the rankline DAGs share: assets, default arguments, helpers (parsed with every DAG).

Kept free of heavy imports: DAG parsing must stay fast and side-effect free.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset

if TYPE_CHECKING:
    from pipeline.settings import Settings

FEATURES = Asset(name="rankline_features", uri="file:///rankline/offline/features")
"""Updated by ``ingest`` when a date's features are written; the extra holds the date."""
MODEL = Asset(name="rankline_model", uri="file:///rankline/models/champion")
"""Updated by ``train`` when a model was promoted to champion (and only then)."""

def mark_mlflow_failed(context: dict[str, Any]) -> None:
    """Task failure callback: the DAG run's MLflow run is marked FAILED (it would otherwise stay
    RUNNING forever). Never raises: the task's own error is what matters."""
    try:
        from pipeline.settings import get_settings
        from pipeline.tracking import fail_dag_run

        run = context["dag_run"]
        fail_dag_run(get_settings(), run.dag_id, run.run_id)
    except Exception:  # noqa: BLE001
        logging.getLogger(__name__).warning("could not mark the MLflow run FAILED", exc_info=True)


DEFAULT_ARGS: dict[str, Any] = {
    "owner": "rankline",
    "on_failure_callback": mark_mlflow_failed,
    "retries": 2,
    "retry_delay": dt.timedelta(seconds=20),
    "retry_exponential_backoff": True,
    "max_retry_delay": dt.timedelta(minutes=10),
}
TAGS = ["rankline"]


def dag_kwargs(tag: str, **overrides: Any) -> dict[str, Any]:
    """The ``@dag`` arguments every rankline DAG shares: one run at a time, retries with
    backoff, the rankline tag plus ``tag``; ``overrides`` win."""
    return {"start_date": start_date(), "catchup": False, "max_active_runs": 1,
            "default_args": DEFAULT_ARGS, "tags": [*TAGS, tag], **overrides}


def as_of_param(description: str) -> dict[str, Any]:
    """The optional ``as_of`` date parameter of the DAGs that work on one date."""
    from airflow.sdk import Param

    return {"as_of": Param(None, type=["null", "string"], format="date", description=description)}


def start_date() -> dt.datetime:
    """First logical date (``RANKLINE_START_DATE``, default 2026-01-01), read without pydantic."""
    raw = os.environ.get("RANKLINE_START_DATE", "2026-01-01")
    try:
        day = dt.date.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"RANKLINE_START_DATE={raw}: must be a date (YYYY-MM-DD) (First logical "
                         "date of the demo and of catchup.)") from None
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def sweep_parallel() -> int:
    """``RANKLINE_SWEEP_PARALLEL`` (default 2), read at parse time without pydantic."""
    raw = os.environ.get("RANKLINE_SWEEP_PARALLEL", "2")
    try:
        return max(1, int(raw))
    except ValueError:
        raise ValueError(f"RANKLINE_SWEEP_PARALLEL={raw}: must be an integer >= 1 (trials of "
                         "a sweep that run at once)") from None


CATCHUP_DAYS = 3
"""Default of ``RANKLINE_CATCHUP_DAYS`` (the setting's default, read here without pydantic)."""


def catchup_days() -> int:
    """``RANKLINE_CATCHUP_DAYS``: how many past days the scheduler's ``ingest`` catches up."""
    raw = os.environ.get("RANKLINE_CATCHUP_DAYS", str(CATCHUP_DAYS))
    try:
        days = int(raw)
    except ValueError:
        days = -1
    if not 0 <= days <= 3660:
        raise ValueError(f"RANKLINE_CATCHUP_DAYS={raw}: must be an integer >= 0 and <= 3660 "
                         "(days of ingest's catch-up under the scheduler)")
    return days


def catchup_start(first: dt.datetime, days: int, today: dt.date) -> dt.datetime:
    """The start date that bounds a daily DAG's catch-up to the last ``days`` days before
    ``today`` (midnight UTC), never before ``first``; ``days=0``: from ``today`` on."""
    bound = today - dt.timedelta(days=days)
    return max(first, dt.datetime(bound.year, bound.month, bound.day, tzinfo=dt.UTC))


def ingest_start_date(today: dt.date | None = None) -> dt.datetime:
    """``ingest``'s start date: ``RANKLINE_START_DATE``, or today minus ``RANKLINE_CATCHUP_DAYS``
    when that is later.

    Derived from today's date at parse time on purpose: the start date is the only bound
    Airflow puts on how far back ``catchup=True`` reaches, at unpause and after an outage
    alike (the next run is the later of the day after the last run and the start date). It is
    truncated to the day (the DAG changes once a day, not on every parse) and names no data:
    each run still works on its own data interval. Backfill runs ignore it.
    """
    today = today or dt.datetime.now(dt.UTC).date()
    return catchup_start(start_date(), catchup_days(), today)


def settings():  # noqa: ANN201 - pipeline.settings.Settings, imported lazily
    """The rankline settings (imported inside tasks only); invalid settings fail the task at
    once, without retries (the same environment would fail the same way)."""
    from pipeline.settings import SettingsError, get_settings

    try:
        return get_settings()
    except SettingsError as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(exc)) from None


@contextlib.contextmanager
def fail_fast() -> Iterator[None]:
    """Fail the task without retries on errors a retry cannot fix: data that failed
    validation, dates that did not pass it, nothing staged to validate, no champion yet, no
    history to pre-train an encoder on, no store version to roll back to."""
    from models.sequence import NotEnoughSequences
    from pipeline.landing import NothingStaged, UnvalidatedDate
    from pipeline.steps import NoChampion
    from pipeline.validation import ValidationFailed
    from serving.store import NoRollbackTarget

    try:
        yield
    except (ValidationFailed, UnvalidatedDate, NothingStaged, NoChampion,
            NotEnoughSequences, NoRollbackTarget) as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(exc)) from exc


def check_conf(context: dict[str, Any], requires: dict[str, str] | None = None) -> None:
    """Fail the run at once when its conf has a key the DAG does not declare, or a key given
    without the one it ``requires`` (``{"rollback_to": "rollback"}``: only with rollback: true).

    A key counts as given when its value differs from the param's default and is not empty
    (``None`` or ``""``): the Airflow UI sends every param with its default, and an emptied
    text field as ``null``.
    """
    conf = dict(getattr(context.get("dag_run"), "conf", None) or {})
    declared = context["dag"].params
    defaults = {k: _default(declared, k) for k in declared}
    problems = []
    if unknown := sorted(set(conf) - set(defaults)):
        problems.append(f"unknown conf key(s) {unknown}; {context['dag'].dag_id} takes "
                        f"{sorted(defaults) or 'no params'}")
    given = {k: v for k, v in conf.items()
             if k in defaults and v != defaults[k] and v is not None and v != ""}
    params = context.get("params") or {}
    for key, needs in (requires or {}).items():
        if key in given and not params.get(needs):
            problems.append(f"{key}={given[key]!r} only makes sense with {needs}: true")
    if problems:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException("bad run conf: " + "; ".join(problems))


def _default(params: Any, key: str) -> Any:
    """A declared param's default (``ParamsDict`` holds ``Param`` objects, tests plain dicts)."""
    getter = getattr(params, "get_param", None)
    return getter(key).value if getter else params[key]


class NoFeatures(LookupError):
    """No date has validated features yet: nothing to train or refresh with."""


def pick_as_of(as_of: str | None, event_dates: Iterable[str],
               newest: Callable[[], dt.date]) -> dt.date:
    """The date a run works on: ``as_of`` when given, else the newest of ``event_dates`` (the
    dates its triggering asset events carry), else ``newest()`` (the newest features date).

    A run's logical date plays no part: it says when the run was due, not which features
    exist (the refresh Airflow fires at unpause for the latest 03:00 asked for a date that was
    never ingested and failed).
    """
    if as_of:
        return dt.date.fromisoformat(str(as_of))
    if dates := [dt.date.fromisoformat(d) for d in event_dates if d]:
        return max(dates)
    return newest()


def newest_features_date(settings: Settings) -> dt.date:
    """The newest date with every feature view built and validated raw data.

    Raises:
        NoFeatures: there is none (ingest has not run yet); the message says what to do.
    """
    from feature_store.offline import feature_dates
    from pipeline.landing import is_valid

    dates = [d for d in feature_dates(settings.offline_dir) if is_valid(settings, d)]
    if not dates:
        raise NoFeatures(f"no validated features under {settings.offline_dir}: run the ingest "
                         "DAG first (unpause it, airflow backfill create --dag-id ingest "
                         "--reprocess-behavior failed, or "
                         "rankline run-dag ingest --date YYYY-MM-DD)")
    return dates[-1]


def as_of_date(context: dict[str, Any]) -> dt.date:
    """The date a run works on (:func:`pick_as_of`): ``params.as_of``, else the newest date of
    its triggering asset events, else the newest validated features date; with no features at
    all the task fails at once, without retries."""
    events = [(ev.extra or {}).get("date") or (ev.extra or {}).get("as_of")
              for evs in (context.get("triggering_asset_events") or {}).values() for ev in evs]
    try:
        return pick_as_of((context.get("params") or {}).get("as_of"), events,
                          lambda: newest_features_date(settings()))
    except NoFeatures as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(exc)) from None


def mlflow_run(context: dict[str, Any]) -> str:
    """The MLflow run of this DAG run (created by the first task that asks)."""
    from pipeline.tracking import context_run

    return context_run(settings(), context)


def training_split_tasks() -> tuple[Any, Any, Any]:
    """The tasks ``train`` and ``sweep`` start with, added to the DAG being defined: ``split``
    (the dates as of the run's ``as_of``, checked, and the DAG run's MLflow run), ``pretrain``
    (the split's encoder and its embedding views) and ``training_set`` (the labelled rows,
    after the embedding features). Returns their outputs: ``(planned, encoder, assembled)``."""
    from airflow.sdk import task

    @task
    def split(**context) -> dict:
        from pipeline.training import plan_split

        check_conf(context)
        as_of = as_of_date(context)
        with fail_fast():
            dates = plan_split(settings(), as_of)
        return {"as_of": as_of.isoformat(), "split": dates, "mlflow_run_id": mlflow_run(context)}

    @task
    def pretrain(planned: dict) -> dict | None:
        from pipeline.pretraining import pretrain_encoder

        with fail_fast():
            return pretrain_encoder(settings(), planned["split"], planned["mlflow_run_id"])

    @task
    def training_set(planned: dict, encoder: dict | None) -> dict:
        from pipeline.row_choice import resolve
        from pipeline.training import write_training_rows

        write_training_rows(settings(), planned["split"])  # after the embedding features
        # which negatives and debiasing every family trains with, chosen on validation
        resolve(settings(), planned["split"], planned["mlflow_run_id"], fresh=True)
        return planned

    planned = split()
    encoder = pretrain(planned)
    return planned, encoder, training_set(planned, encoder)
