"""What the rankline DAGs share: assets, default arguments, helpers (parsed with every DAG).

Kept free of heavy imports: DAG parsing must stay fast and side-effect free.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.sdk import Asset

FEATURES = Asset(name="rankline_features", uri="file:///rankline/offline/features")
"""Updated by ``ingest`` when a date's features are written; the extra holds the date."""
MODEL = Asset(name="rankline_model", uri="file:///rankline/models/xgboost")
"""Updated by ``train`` when a model has been evaluated (and possibly promoted)."""

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "rankline",
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
    day = dt.date.fromisoformat(os.environ.get("RANKLINE_START_DATE", "2026-01-01"))
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def settings():  # noqa: ANN201 - pipeline.settings.Settings, imported lazily
    """The rankline settings (imported inside tasks only)."""
    from pipeline.settings import get_settings

    return get_settings()


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
