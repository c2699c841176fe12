"""MLflow helpers: one MLflow run per Airflow DAG run, and the champion alias.

Every task of a DAG run logs into the same MLflow run, found by its ``airflow.dag_id`` and
``airflow.run_id`` tags, so a rerun of a task writes into the run it belongs to.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.settings import Settings

log = logging.getLogger(__name__)

MODEL_NAME = "rankline-ranker"
"""The registered model every family's versions go to (tag ``family``); the champion alias
marks the served one."""
CHAMPION = "champion"


@contextlib.contextmanager
def _first_use_lock(tracking_uri: str) -> Iterator[None]:
    """For a SQLite tracking store, an exclusive lock (``<db>.lock``) across processes: the
    first processes to open a new database would otherwise run MLflow's table creation at the
    same time (two tasks of a backfill's first runs did) and leave it broken ("table
    _alembic_tmp_experiments already exists"), or both create the experiment."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    from pipeline.locks import file_lock

    with file_lock(Path(tracking_uri.removeprefix("sqlite:///") + ".lock")):
        yield


def configure(settings: Settings) -> str:
    """Point MLflow at the settings' tracking URI and make sure the experiment exists (one
    process at a time for a SQLite store: :func:`_first_use_lock`)."""
    from pipeline.relocate import check_home

    check_home(settings.home, settings.tracking_uri)  # a moved home: says to run rankline relocate
    with _first_use_lock(settings.tracking_uri):
        return _configure(settings)


EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
"""The experiment's tag that makes MLflow's UI open it on its runs (model development), not on
the empty GenAI overview it shows for an experiment without it."""


def _configure(settings: Settings) -> str:
    import mlflow

    # no artifact download bars: on stderr inside an Airflow task log each reads as an ERROR
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(settings.tracking_uri)
    try:
        exists = mlflow.get_experiment_by_name(settings.experiment) is not None
    except Exception as exc:  # noqa: BLE001 - MLflow's messages quote the URI, credentials too
        from serving.store import redact_text, redact_url

        raise RuntimeError(f"MLflow at {redact_url(settings.tracking_uri)} "
                           f"(RANKLINE_MLFLOW_TRACKING_URI) cannot be used: {type(exc).__name__}: "
                           f"{redact_text(exc)}") from None
    if not exists:
        kwargs = {}
        if not settings.tracking_uri.startswith(("http://", "https://", "databricks")):
            # a database-backed store would default to ./mlruns in the working directory
            kwargs["artifact_location"] = settings.artifact_root
        mlflow.create_experiment(settings.experiment, tags=dict([EXPERIMENT_KIND]), **kwargs)
    exp = mlflow.get_experiment_by_name(settings.experiment)
    if exp.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:  # made before the tag existed
        mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
    return exp.experiment_id


def dag_run(settings: Settings, dag_id: str, run_id: str, logical_date: str | None) -> str:
    """The MLflow run id of this DAG run, creating the run the first time."""
    import mlflow

    exp_id = configure(settings)
    if found := find_dag_run(settings, dag_id, run_id):
        return found
    client = mlflow.MlflowClient()
    run = client.create_run(
        exp_id,
        run_name=f"{dag_id}/{logical_date or run_id}",
        tags={"airflow.dag_id": dag_id, "airflow.run_id": run_id,
              "airflow.logical_date": str(logical_date or "")},
    )
    return run.info.run_id


def context_run(settings: Settings, context: dict[str, Any]) -> str:
    """:func:`dag_run` for an Airflow task context."""
    dag_run_obj = context["dag_run"]
    logical = context.get("logical_date")
    return dag_run(settings, dag_run_obj.dag_id, dag_run_obj.run_id,
                   logical.isoformat() if logical else None)


def log_figure(fig: Any, path: str) -> None:
    """Log a matplotlib figure to the active run and close it."""
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.log_figure(fig, path)
    plt.close(fig)


def champion_version(settings: Settings) -> Any | None:
    """The registered model version that holds the champion alias, or None when there is no
    champion yet; any other registry error is raised."""
    import mlflow
    from mlflow.exceptions import MlflowException

    configure(settings)
    try:
        return mlflow.MlflowClient().get_model_version_by_alias(MODEL_NAME, CHAMPION)
    except MlflowException as exc:
        # only "no such model" and "no such alias" mean no champion; any other error (the
        # registry is down, say) must not let a challenger skip facing the champion
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or (
                exc.error_code == "INVALID_PARAMETER_VALUE" and "alias" in str(exc)
                and "not found" in str(exc)):
            return None
        raise


def promote(settings: Settings, version: str, reason: str) -> None:
    """Give a registered model version the champion alias."""
    import mlflow

    configure(settings)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, version)
    client.set_model_version_tag(MODEL_NAME, version, "promotion", reason)
    log.info("model version %s is the champion: %s", version, reason)


def tag_version(settings: Settings, version: str, key: str, value: str) -> None:
    """Set a tag on a registered model version (the gate's decision, say)."""
    import mlflow

    configure(settings)
    mlflow.MlflowClient().set_model_version_tag(MODEL_NAME, version, key, value)


def model_versions(settings: Settings) -> list[Any]:
    """The registered model's versions, newest first (empty when none is registered yet)."""
    import mlflow

    configure(settings)
    found = mlflow.MlflowClient().search_model_versions(f"name='{MODEL_NAME}'")
    return sorted(found, key=lambda v: int(v.version), reverse=True)


def end_run(settings: Settings, run_id: str, status: str = "FINISHED") -> None:
    """Mark an MLflow run ended (``FINISHED`` or ``FAILED``)."""
    import mlflow

    configure(settings)
    mlflow.MlflowClient().set_terminated(run_id, status)


def find_dag_run(settings: Settings, dag_id: str, run_id: str) -> str | None:
    """The MLflow run id of a DAG run, or None if none was created."""
    import mlflow

    found = mlflow.search_runs(
        [configure(settings)],
        filter_string=f"tags.`airflow.dag_id` = '{dag_id}' and tags.`airflow.run_id` = '{run_id}'",
        output_format="list",
    )
    return found[0].info.run_id if found else None


def fail_dag_run(settings: Settings, dag_id: str, run_id: str) -> str | None:
    """Mark the MLflow run of a DAG run ``FAILED`` if it exists; its id, or None."""
    found = find_dag_run(settings, dag_id, run_id)
    if found:
        end_run(settings, found, "FAILED")
    return found
