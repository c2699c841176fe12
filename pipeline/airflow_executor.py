"""The embedded deployment's executor: Airflow's LocalExecutor, with the libraries rankline's
tasks import loaded once in the scheduler before its workers fork.

Under the LocalExecutor every task runs in a process forked from a worker, itself forked from
the scheduler, and starts by importing what it needs: pandas and pyarrow, Great Expectations
(about 4 s here), MLflow, torch (the features task embeds with the encoder). An ingest date is
three tasks, so under the scheduler a tiny demo date cost ~16 s where one ``dag.test()`` process
spent a few. Imported here, before the workers exist, the modules are inherited by every fork
instead. Importing is all that happens before the fork: torch's and XGBoost's thread pools start
at their first parallel operation, in the task (as PyTorch's own DataLoader forks its workers
after importing torch).

Selected by ``AIRFLOW__CORE__EXECUTOR`` in :func:`pipeline.airflow_env.airflow_env`; the Celery
deployment (``docker/``) does not use it.
"""

from __future__ import annotations

import importlib
import logging

from airflow.executors.local_executor import LocalExecutor

log = logging.getLogger(__name__)

PRELOAD = ("pandas", "pyarrow.parquet", "pyarrow.dataset", "great_expectations", "mlflow",
           "torch", "xgboost", "feature_store.compute", "pipeline.landing", "pipeline.validation",
           "models.sequence")
"""Modules imported before the workers fork (each optional: a failure is logged, not fatal)."""


class PreloadingLocalExecutor(LocalExecutor):
    """:class:`LocalExecutor` that imports :data:`PRELOAD` before starting its workers."""

    def start(self) -> None:
        for name in PRELOAD:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - a task would import it again and say why
                log.warning("could not preload %s", name, exc_info=True)
        super().start()
