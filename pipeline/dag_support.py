"""What the rankline DAGs share: assets, default arguments, helpers (parsed with every DAG).

Kept free of heavy imports: DAG parsing must stay fast and side-effect free.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Iterator
from typing import Any

from airflow.sdk import Asset

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
    history to pre-train an encoder on."""
    from models.sequence import NotEnoughSequences
    from pipeline.landing import NothingStaged, UnvalidatedDate
    from pipeline.steps import NoChampion
    from pipeline.validation import ValidationFailed

    try:
        yield
    except (ValidationFailed, UnvalidatedDate, NothingStaged, NoChampion,
            NotEnoughSequences) as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(exc)) from exc


def check_conf(context: dict[str, Any], requires: dict[str, str] | None = None) -> None:
    """Fail the run at once when its conf has a key the DAG does not declare, or a key given
    without the one it ``requires`` (``{"rollback_to": "rollback"}``: only with rollback: true).

    A key counts as given when its value differs from the param's default: the Airflow UI
    sends every param with its default.
    """
    conf = dict(getattr(context.get("dag_run"), "conf", None) or {})
    declared = context["dag"].params
    defaults = {k: _default(declared, k) for k in declared}
    problems = []
    if unknown := sorted(set(conf) - set(defaults)):
        problems.append(f"unknown conf key(s) {unknown}; {context['dag'].dag_id} takes "
                        f"{sorted(defaults) or 'no params'}")
    given = {k: v for k, v in conf.items() if k in defaults and v != defaults[k]}
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


def as_of_date(context: dict[str, Any]) -> dt.date:
    """The date a run works on: ``params.as_of``, else the newest triggering feature date,
    else the run's logical date, else the newest date with features."""
    param = (context.get("params") or {}).get("as_of")
    if param:
        return dt.date.fromisoformat(str(param))
    dates = []
    for events in (context.get("triggering_asset_events") or {}).values():
        for ev in events:
            day = (ev.extra or {}).get("date") or (ev.extra or {}).get("as_of")
            if day:
                dates.append(dt.date.fromisoformat(day))
    if dates:
        return max(dates)
    logical = context.get("logical_date")
    if logical is not None and context["dag_run"].run_type == "scheduled":
        return (logical - dt.timedelta(days=1)).date() if context["dag"].dag_id == "hulk_refresh" \
            else logical.date()
    from pipeline.steps import latest_feature_date

    return latest_feature_date(settings())


def mlflow_run(context: dict[str, Any]) -> str:
    """The MLflow run of this DAG run (created by the first task that asks)."""
    from pipeline.tracking import context_run

    return context_run(settings(), context)
