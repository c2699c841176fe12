"""Running rankline's DAGs in Airflow on the embedded defaults (SQLite under ``<home>/airflow``).

:func:`configure` must run before anything imports ``airflow`` in the process: Airflow reads
its configuration at import time. :func:`run_dag` runs one DAG run with ``dag.test()``: the run
and its task instances are recorded in Airflow's database like any other run.

**dag.test() runs and the scheduler** (reproduced by ``tests/integration/test_scheduler.py``).
``dag.test(logical_date=D)`` makes a manual run, and Airflow gives a manual run of a
data-interval timetable the last *complete* period before D: ``ingest``'s run of D got
[D-1, D), where the scheduler's (and a backfill's) run of D has [D, D+1); both have logical date
D (and ``ds`` = D, so the data was right). When the scheduler of an unpaused ``ingest`` came to
D, it found a run of D ("run already exists; skipping dagrun creation") and computed its next
run from that run's data interval, which ends at D: D again. It looped on D every second and
created no run at all, for D or any later date (a ``rankline run-dag ingest`` or ``make demo``
of a date inside the catch-up window was enough). :func:`scheduled_intervals` has ``dag.test()``
give a run at a scheduled time the interval the scheduler gives it, so the scheduler takes it
as its run of D and goes on to D+1 (the tasks see the interval a scheduled run would too).
A run recorded before this fix is mended by running its date again (``dag.test()`` replaces
the run of its logical date).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.settings import Settings

log = logging.getLogger(__name__)

DAGS_FOLDER = Path(__file__).resolve().parents[1] / "dags"
API_PORT = 8080
"""Port of the embedded Airflow API server: the UI, and the execution API task workers call."""
API_KEYS = ("AIRFLOW__API__HOST", "AIRFLOW__API__PORT", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL")
"""The variables that follow the API server's address."""
MAX_PARALLELISM = 4
"""Most task slots of the embedded LocalExecutor (it forks one worker per slot, even idle)."""


def parallelism() -> int:
    """Task slots of the embedded deployment: this process's cores, at most
    :data:`MAX_PARALLELISM` (Airflow's default of 32 forks 32 idle workers on 2 cores)."""
    return max(1, min(MAX_PARALLELISM, len(os.sched_getaffinity(0))))


def airflow_env(settings: Settings, api_port: int = API_PORT) -> dict[str, str]:
    """The ``AIRFLOW_*`` variables of the embedded deployment, its API server on
    ``127.0.0.1:api_port`` (:func:`configure`: values already set win)."""
    home = (settings.home / "airflow").resolve()
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # LocalExecutor, with the tasks' libraries imported once before its workers fork
        "AIRFLOW__CORE__EXECUTOR": "pipeline.airflow_executor.PreloadingLocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism()),
        # the DAG files change rarely here: re-parse each every 2 minutes (default 30 s) with one
        # parsing process, not two, so parsing does not compete with the tasks for 2 cores
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "120",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (settings.airflow_db_url
                                                or f"sqlite:///{home / 'airflow.db'}"),
        # every path option from the home: airflow.cfg's absolute copies are never read, so
        # the home can move (pipeline.relocate)
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": str(
            home / "logs" / "dag_processor"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        # where the scheduler's task workers report (default: localhost:8080, maybe ::1)
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "GX_ANALYTICS_ENABLED": "False",
        "MLFLOW_ENABLE_PROACTIVE_NUDGES": "false",
    }
    if settings.airflow_db_url.startswith("postgresql+psycopg://"):
        # Airflow derives its async engine's URL as postgresql+asyncpg (not installed); psycopg 3
        # serves both
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] = settings.airflow_db_url
    # The task processes read rankline settings from the environment: pass ours on.
    env["RANKLINE_HOME"] = str(settings.home.resolve())
    return env


def configure(settings: Settings, override: bool = False) -> dict[str, str]:
    """Export the Airflow variables into this process (before ``airflow`` is imported)."""
    env = airflow_env(settings)
    for key, value in env.items():
        if override or key not in os.environ:
            os.environ[key] = value
    Path(os.environ["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    return env


def migrate() -> None:
    """Create or upgrade Airflow's database (``airflow db migrate``)."""
    airflow = Path(sys.executable).with_name("airflow")
    cmd = [str(airflow) if airflow.exists() else "airflow", "db", "migrate"]
    log.info("airflow db migrate (%s)", os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=os.environ.copy())


def load_dags() -> dict[str, Any]:
    """Every DAG defined in the dags folder, by dag_id (parsing the files as Airflow would)."""
    from airflow.sdk import DAG

    dags: dict[str, Any] = {}
    for path in sorted(DAGS_FOLDER.glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"rankline_dag_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        for obj in vars(module).values():
            if isinstance(obj, DAG):
                dags[obj.dag_id] = obj
    return dags


def reach(dag: Any, when: dt.datetime) -> None:
    """Let an in-process run of ``dag`` reach ``when`` though it precedes the DAG's start date
    (``ingest``'s is bounded by ``RANKLINE_CATCHUP_DAYS``): Airflow gives a manual run, as
    ``dag.test()`` makes, no task instance of a task that starts later than the run's logical
    date. Only this parsed copy changes; the scheduler's DAG keeps its bound."""
    if dag.start_date is not None and when < dag.start_date:
        dag.start_date = when
        for task in dag.tasks:
            task.start_date = when


@contextlib.contextmanager
def scheduled_intervals(dag: Any) -> Iterator[None]:
    """While it lasts, a run of ``dag`` made in this process at one of its scheduled logical
    dates (``dag.test(logical_date=D)``) gets the data interval the scheduler gives D, not the
    one Airflow infers for a manual run (the period *before* D): see the module docstring."""
    from unittest import mock

    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import TimeRestriction

    cls = type(coerce_to_core_timetable(dag.timetable))
    manual = cls.infer_manual_data_interval

    def infer(self: Any, *, run_after: Any) -> Any:
        info = self.next_dagrun_info(last_automated_data_interval=None, restriction=TimeRestriction(
            earliest=run_after, latest=None, catchup=True))
        if info is not None and info.logical_date == run_after:
            return info.data_interval
        return manual(self, run_after=run_after)

    with mock.patch.object(cls, "infer_manual_data_interval", infer):
        yield


def run_dag(dag: Any, logical_date: dt.date | None = None,
            conf: dict[str, Any] | None = None) -> Any:
    """Run one DAG run in-process with ``dag.test()``; raise if it did not succeed.

    The date runs when asked: this parsed copy ignores ``depends_on_past`` (``ingest``'s
    features wait for the previous scheduled or backfilled date under the scheduler; in-process
    nothing else runs beside, and a failed earlier date would make ``dag.test()`` wait forever).
    A failed *scheduled* date is re-ingested with a backfill (``--reprocess-behavior failed``),
    not here: this run would replace it with a manual one the next date does not wait for."""
    for task in dag.tasks:
        task.depends_on_past = False
    kwargs: dict[str, Any] = {"run_conf": conf or {}}
    if logical_date is not None:
        kwargs["logical_date"] = dt.datetime(logical_date.year, logical_date.month,
                                             logical_date.day, tzinfo=dt.UTC)
        reach(dag, kwargs["logical_date"])
    with scheduled_intervals(dag):
        run = dag.test(**kwargs)
    state = str(getattr(run, "state", "unknown"))
    if "success" not in state:
        raise RuntimeError(f"DAG run {dag.dag_id} {logical_date or ''} ended {state}; see the "
                           "task logs above (or in the Airflow UI)")
    return run
