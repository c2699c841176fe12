"""The real scheduler path, end to end on tiny data: Airflow's API server, DAG processor and
scheduler started through ``pipeline.services`` on a temporary home, ``ingest`` backfilled and
unpaused through ``rankline airflow``, runs executed by the LocalExecutor.

A regression test too: a ``dag.test()`` run (``rankline run-dag ingest --date D``, what the demo
makes) of the date the scheduler wants first used to make the scheduler loop "run already
exists; skipping dagrun creation" and create nothing (``pipeline/airflow_env.py`` says why).
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import services
from tests.conftest import TINY

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TODAY = dt.datetime.now(dt.UTC).date()
TIMEOUT_S = 240


def day(n: int) -> str:
    """The ISO date ``n`` days before today (UTC)."""
    return (TODAY - dt.timedelta(days=n)).isoformat()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    return services.free_port()


class Deployment:
    """The Airflow components of a temporary home, started and stopped by PID."""

    def __init__(self, home: Path) -> None:
        from pipeline.settings import Settings

        self.home = home
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RANKLINE_"))}
        # ingest's start date (and first scheduled logical date) is two days ago
        base.update(TINY, RANKLINE_HOME=str(home), RANKLINE_START_DATE=day(2),
                    RANKLINE_CATCHUP_DAYS="3")
        settings = Settings(home=home)
        self.services = services.airflow_services(settings, base, free_port())
        self.env = self.services[0].env  # the components' environment, AIRFLOW_* included
        self.db = Path(self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///"))

    def rankline(self, *args: str, timeout: float = 300) -> str:
        """``rankline <args>`` in a subprocess with the components' environment."""
        res = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=self.env,
                             cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        assert res.returncode == 0, \
            f"rankline {' '.join(args)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
        return res.stdout

    def start(self) -> None:
        for svc in self.services:
            services.start(svc.name, svc.argv, svc.env, self.home)

    def stop(self) -> None:
        for svc in reversed(self.services):
            services.stop(svc.name, self.home, timeout=20)

    def runs(self) -> list[tuple[str, str, str]]:
        """``ingest``'s runs as (logical date, run type, state), read-only from the database."""
        if not self.db.exists():
            return []
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            rows = con.execute("SELECT logical_date, run_type, state FROM dag_run "
                               "WHERE dag_id = 'ingest' ORDER BY logical_date").fetchall()
        finally:
            con.close()
        return [(str(d)[:10], t, s) for d, t, s in rows]

    def diagnosis(self) -> str:
        """What a failure message shows: the runs, the processes, the scheduler's log tail."""
        log = services.log_file("airflow-scheduler", self.home)
        loops = log.read_text(errors="replace").count("run already exists") if log.exists() else 0
        alive = {svc.name: services.running_pid(svc.name, self.home) for svc in self.services}
        lines = "\n".join(line[:400] for line in services.tail(log, 15).splitlines())
        return (f"runs: {self.runs()}\nprocesses: {alive}\n'run already exists' logged {loops}x"
                f"\n--- {log} (tail):\n{lines}")


@pytest.fixture
def deployment(tmp_path: Path):
    dep = Deployment(tmp_path / "var")
    try:
        yield dep
    finally:
        dep.stop()
        leftover = {svc.name: services.running_pid(svc.name, dep.home) for svc in dep.services}
        assert not any(leftover.values()), f"still running: {leftover}"


def test_scheduler_runs_backfills_and_schedules_after_a_dag_test_run(deployment):
    dep = deployment
    t0 = time.monotonic()
    # a dag.test() run of the very date the scheduler wants first (its start date), before
    # the scheduler starts: it migrates the database and records a manual run
    dep.rankline("run-dag", "ingest", "--date", day(2))
    assert dep.runs() == [(day(2), "manual", "success")]
    assert services.ensure_db(dep.env, dep.home) is False  # migrated: up would not migrate again
    dep.start()
    dep.rankline("airflow", "backfill", "create", "--dag-id", "ingest",
                 "--from-date", day(4), "--to-date", day(3))
    dep.rankline("airflow", "dags", "unpause", "ingest")

    deadline = time.monotonic() + TIMEOUT_S
    while True:
        runs = dep.runs()
        backfills = {d: s for d, t, s in runs if t == "backfill"}
        scheduled = {d: s for d, t, s in runs if t == "scheduled"}
        assert "failed" not in backfills.values(), f"a backfill run failed\n{dep.diagnosis()}"
        if backfills == {day(4): "success", day(3): "success"} and scheduled:
            break
        assert time.monotonic() < deadline, (
            f"after {TIMEOUT_S}s: want 2 successful backfill runs ({day(4)}, {day(3)}) and a "
            f"scheduled run created\n{dep.diagnosis()}")
        for svc in dep.services:
            assert services.running_pid(svc.name, dep.home), f"{svc.name} exited\n{dep.diagnosis()}"
        time.sleep(3)
    # the scheduler takes the dag.test() run as its run of that date and goes on to the next
    assert scheduled == {day(1): scheduled[day(1)]}, dep.diagnosis()
    assert scheduled[day(1)] in ("queued", "running", "success"), dep.diagnosis()
    listed = dep.rankline("airflow", "dags", "list-runs", "ingest", "-o", "plain")
    assert "backfill__" in listed and "scheduled__" in listed and "manual__" in listed, listed
    print(f"scheduler path ok in {time.monotonic() - t0:.0f}s: {dep.runs()}")


def test_services_start_once_replace_a_stale_pid_file_and_stop_the_whole_group(tmp_path):
    """What ``make up`` / ``make down`` rely on, with a shell that forks a child (as the
    scheduler forks workers and MLflow its job runner)."""
    home = tmp_path / "var"
    argv = ["sh", "-c", "sleep 300 & echo child $!; wait"]
    pid = services.start("toy", argv, os.environ, home)
    try:
        assert services.start("toy", argv, os.environ, home) == pid  # a live PID file: no twin
        assert services.status(home) == {"toy": pid}
        deadline = time.monotonic() + 10
        while len(services.group_members(pid)) < 2:  # the shell and its sleep
            assert time.monotonic() < deadline, services.tail(services.log_file("toy", home))
            time.sleep(0.05)
        child = next(p for p in services.group_members(pid) if p != pid)
        os.kill(pid, 9)  # the leader dies, its child lives on: a stale PID file
        deadline = time.monotonic() + 10
        while services.is_running(pid):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert services.status(home) == {"toy": None} and services.is_running(child)
        new = services.start("toy", argv, os.environ, home)  # replaced; the orphan stopped
        assert new != pid and not services.is_running(child)
        assert services.read_pid("toy", home) == new
        assert "child" in services.log_file("toy", home).read_text()
    finally:
        services.stop("toy", home, timeout=5)
    assert services.group_members(new) == [] and services.status(home) == {}
    assert services.stop("toy", home) is False  # nothing to stop is no error
