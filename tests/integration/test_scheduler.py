"""The real scheduler path, end to end on tiny data, on SQLite and on Postgres.

``daily`` (SQLite): Airflow's API server, DAG processor and scheduler started through
``pipeline.services`` on a temporary home; the first of four dates ingested by ``dag.test()``
(``rankline run-dag``, what the in-process demo makes), ``ingest`` unpaused, the other three run
by the scheduler's catch-up (two at a time), then ``train`` as of the last date. A regression
test too: a ``dag.test()`` run of the date the scheduler wants first used to make the scheduler
loop "run already exists; skipping dagrun creation" and create nothing
(``pipeline/airflow_env.py`` says why).

The Postgres test: ``rankline demo`` with Airflow's metadata database and MLflow's backend store
on this machine's Postgres (127.0.0.1:5432), the same four dates as one backfill of two runs at
a time, ``train`` and ``hulk_refresh`` through the scheduler. A backfill must reproduce daily
runs: byte-identical raw and feature partitions, the same model metrics.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import sqlite3
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from pipeline import services
from tests.e2e.conftest import cli_env, rankline, run_cli

pytestmark = pytest.mark.integration
TODAY = dt.datetime.now(dt.UTC).date()
TIMEOUT_S = 240


def day(n: int) -> str:
    """The ISO date ``n`` days before today (UTC)."""
    return (TODAY - dt.timedelta(days=n)).isoformat()


# four dates, the minimum for a split of one training, one validation and one test date
SPLIT = {"RANKLINE_TRAIN_DAYS": "1", "RANKLINE_VALID_DAYS": "1", "RANKLINE_TEST_DAYS": "1",
         "RANKLINE_MODELS": "xgboost"}  # deterministic: the two deployments' metrics must match
DATES = [day(n) for n in (4, 3, 2, 1)]
PG = "127.0.0.1:5432"
ADMIN_DSN = f"postgresql://postgres@{PG}/postgres"


def base_env(home: Path, **extra: str) -> dict[str, str]:
    """The e2e tier's tiny settings under ``home`` with ``DATES`` as the demo's dates."""
    return {**cli_env(home), **SPLIT, "RANKLINE_START_DATE": DATES[0],
            "RANKLINE_DEMO_DAYS": str(len(DATES)), **extra}


def dated(files: dict[str, str]) -> dict[str, str]:
    """The files of ``DATES``' partitions (``…/date=<D>/…``)."""
    return {k: v for k, v in files.items()
            if any(f"date={d}" in k for d in DATES) or "date=" not in k}


def digests(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def train_run(tracking_uri: str) -> dict:
    """The one ``train`` MLflow run's tags, params and metrics."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("rankline")
    runs = [r for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("airflow.dag_id") == "train"]
    assert len(runs) == 1, [r.data.tags for r in runs]
    return {"tags": runs[0].data.tags, "params": runs[0].data.params,
            "metrics": runs[0].data.metrics}


class Deployment:
    """The Airflow components of a temporary home, started and stopped by PID."""

    def __init__(self, home: Path) -> None:
        from pipeline.settings import Settings

        self.home = home
        # ingest's start date (and first scheduled logical date) is the first of DATES
        base = base_env(home, RANKLINE_CATCHUP_DAYS=str(len(DATES)))
        settings = Settings(home=home)
        self.services = services.airflow_services(settings, base, services.free_port())
        self.env = self.services[0].env  # the components' environment, AIRFLOW_* included
        self.db = Path(self.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///"))

    def rankline(self, *args: str) -> str:
        """``rankline <args>`` in a subprocess with the components' environment."""
        return rankline(self.env, *args)

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

    def features_spans(self) -> list[tuple[str, str, str]]:
        """``ingest``'s features tasks as (logical date, start, end), by start time."""
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            rows = con.execute(
                "SELECT r.logical_date, t.start_date, t.end_date FROM task_instance t JOIN dag_run r "
                "ON r.run_id = t.run_id AND r.dag_id = t.dag_id WHERE t.dag_id = 'ingest' "
                "AND t.task_id = 'features' ORDER BY t.start_date").fetchall()
        finally:
            con.close()
        return [(str(d)[:10], str(a), str(b)) for d, a, b in rows]

    def diagnosis(self) -> str:
        """What a failure message shows: the runs, the processes, the scheduler's log tail."""
        log = services.log_file("airflow-scheduler", self.home)
        loops = log.read_text(errors="replace").count("run already exists") if log.exists() else 0
        alive = {svc.name: services.running_pid(svc.name, self.home) for svc in self.services}
        lines = "\n".join(line[:400] for line in services.tail(log, 15).splitlines())
        return (f"runs: {self.runs()}\nprocesses: {alive}\n'run already exists' logged {loops}x"
                f"\n--- {log} (tail):\n{lines}")


@pytest.fixture(scope="module")
def daily(tmp_path_factory):
    """The four dates run day by day (``dag.test()`` then the scheduler's catch-up), then
    ``train``: the deployment, what it saw, its data's digests and the training run."""
    dep = Deployment(tmp_path_factory.mktemp("daily") / "var")
    seen: dict = {}
    try:
        t0 = time.monotonic()
        # a dag.test() run of the very date the scheduler wants first (its start date), before
        # the scheduler starts: it migrates the database and records a manual run
        dep.rankline("run-dag", "ingest", "--date", DATES[0])
        seen["before"] = dep.runs()
        seen["migrated_again"] = services.ensure_db(dep.env, dep.home)
        dep.start()
        dep.rankline("airflow", "dags", "unpause", "ingest")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            runs = dep.runs()
            scheduled = {d: s for d, t, s in runs if t == "scheduled"}
            assert "failed" not in scheduled.values(), f"a run failed\n{dep.diagnosis()}"
            if set(scheduled) >= set(DATES[1:]) and \
                    all(scheduled[d] == "success" for d in DATES[1:]):
                break
            assert time.monotonic() < deadline, (
                f"after {TIMEOUT_S}s: want scheduled runs of {DATES[1:]} to succeed"
                f"\n{dep.diagnosis()}")
            for svc in dep.services:
                assert services.running_pid(svc.name, dep.home), \
                    f"{svc.name} exited\n{dep.diagnosis()}"
            time.sleep(3)
        # only DATES: a run of a later date appears if the UTC date changes during the test
        seen["runs"] = [r for r in dep.runs() if r[0] in DATES]
        seen["features"] = [f for f in dep.features_spans() if f[0] in DATES]
        seen["listed"] = dep.rankline("airflow", "dags", "list-runs", "ingest", "-o", "plain")
        dep.rankline("airflow", "dags", "pause", "ingest")
        print(f"scheduler path ok in {time.monotonic() - t0:.0f}s: {seen['runs']}")
    finally:
        dep.stop()
        leftover = {svc.name: services.running_pid(svc.name, dep.home) for svc in dep.services}
    assert not any(leftover.values()), f"still running: {leftover}"
    dep.rankline("run-dag", "train", "--date", DATES[-1])
    seen["digests"] = {tree: dated(digests(dep.home / tree)) for tree in ("raw", "offline")}
    seen["train"] = train_run(f"sqlite:///{dep.home / 'mlflow.db'}")
    return dep, seen


def test_scheduler_catches_up_after_a_dag_test_run_two_at_a_time_in_date_order(daily):
    dep, seen = daily
    assert seen["before"] == [(DATES[0], "manual", "success")]
    assert seen["migrated_again"] is False  # migrated by run-dag: up would not migrate again
    # the scheduler takes the dag.test() run as its run of that date and goes on to the next
    assert [(d, t) for d, t, _ in seen["runs"]] == \
        [(DATES[0], "manual")] + [(d, "scheduled") for d in DATES[1:]], dep.diagnosis()
    # depends_on_past: features in date order, each after the previous date's ended
    assert [d for d, _, _ in seen["features"]] == DATES
    for (_, _, end), (_, start, _) in zip(seen["features"], seen["features"][1:], strict=False):
        assert start >= end, seen["features"]
    assert "scheduled__" in seen["listed"] and "manual__" in seen["listed"], seen["listed"]
    for tree in ("raw", "offline"):
        assert any(DATES[-1] in k for k in seen["digests"][tree]), tree


def _admin():
    import psycopg

    try:
        return psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"Postgres at {PG} is not reachable ({exc}). This test needs a real Postgres "
                    "server (trust auth, user postgres): start it, e.g. `service postgresql "
                    "start`.", pytrace=False)


@pytest.fixture
def databases():
    """Two fresh databases (Airflow's, MLflow's), dropped afterwards."""
    names = [f"rl_{kind}_{uuid.uuid4().hex[:10]}" for kind in ("airflow", "mlflow")]
    with _admin() as con:
        for name in names:
            con.execute(f'CREATE DATABASE "{name}"')
    try:
        yield names
    finally:
        with _admin() as con:
            for name in names:
                con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_backfill_on_postgres_reproduces_the_daily_runs_byte_for_byte(daily, databases,
                                                                          tmp_path):
    import psycopg

    dep, seen = daily
    airflow_db, mlflow_db = databases
    home = tmp_path / "var"
    tracking = f"postgresql+psycopg://postgres@{PG}/{mlflow_db}"
    env = base_env(home, RANKLINE_AIRFLOW_DB_URL=f"postgresql+psycopg://postgres@{PG}/{airflow_db}",
                   RANKLINE_MLFLOW_TRACKING_URI=tracking)
    try:
        res = run_cli(env, "demo", check=False)
    finally:  # a demo killed on timeout leaves its Airflow components: stop them by PID
        for name in services.status(home):
            services.stop(name, home, timeout=20)
    # the gate may refuse a model trained on one date (exit 1, nothing published): both are
    # fine here, as long as the Postgres deployment decides as the SQLite one did
    out = res.stdout[-3000:] + res.stderr[-5000:]
    assert res.returncode in (0, 1), out
    promoted = res.returncode == 0
    assert "[demo] train ok" in res.stdout, out
    assert ("[demo] hulk_refresh ok" in res.stdout) == promoted, out
    assert seen["train"]["tags"]["promoted"] == str(promoted), out
    assert not (home / "airflow" / "airflow.db").exists()  # nothing went to SQLite
    assert not (home / "mlflow.db").exists()

    with psycopg.connect(f"postgresql://postgres@{PG}/{airflow_db}") as con:
        runs = con.execute("SELECT dag_id, run_type, state, COUNT(*) FROM dag_run "
                           "GROUP BY dag_id, run_type, state").fetchall()
        bf = con.execute("SELECT max_active_runs FROM backfill").fetchall()
        # two backfill runs were running at once
        overlap = con.execute(
            "SELECT COUNT(*) FROM dag_run a JOIN dag_run b ON a.id < b.id AND a.dag_id = b.dag_id "
            "WHERE a.dag_id = 'ingest' AND a.start_date < b.end_date AND b.start_date < a.end_date"
        ).fetchone()[0]
    want = {("ingest", "backfill", "success"): len(DATES), ("train", "scheduled", "success"): 1}
    if promoted:
        want[("hulk_refresh", "scheduled", "success")] = 1
    assert {(d, t, s): n for d, t, s, n in runs} == want
    assert bf == [(2,)] and overlap >= 1

    for tree in ("raw", "offline"):
        got, daily_digests = dated(digests(home / tree)), seen["digests"][tree]
        assert got.keys() == daily_digests.keys(), f"{tree}: {got.keys() ^ daily_digests.keys()}"
        differ = [k for k in got if got[k] != daily_digests[k]]
        # the encoder's embedding views name the MLflow run of their encoder (a new id in
        # each deployment): the embeddings themselves must be equal
        named = [k for k in differ if k.startswith("encoder_")]
        for k in named:
            pg_view, sqlite_view = (pd.read_parquet(h / tree / k).drop(columns="encoder")
                                    for h in (home, dep.home))
            pd.testing.assert_frame_equal(pg_view, sqlite_view, check_exact=True, obj=k)
        differ = [k for k in differ if k not in named]
        assert not differ, f"{tree}: {len(differ)} of {len(got)} file(s) differ, e.g. {differ[:3]}"

    pg = train_run(tracking)  # the runs went to MLflow's Postgres store, the model with them
    assert pg["metrics"].keys() == seen["train"]["metrics"].keys()
    for name, value in seen["train"]["metrics"].items():
        if name.startswith(("test_", "valid_")):
            assert pg["metrics"][name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    import mlflow

    versions = mlflow.MlflowClient(tracking).search_model_versions("name = 'rankline-ranker'")
    assert [v.tags["family"] for v in versions] == ["xgboost"]


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


def test_a_backfill_of_more_dates_than_the_demo_is_created_whole_and_run_by_the_scheduler(
        tmp_path, monkeypatch):
    """The demo's own REST client (``pipeline.orchestrate.Scheduler``) backfills 120 dates (the
    demo has 20; the real-log bench 150): created whole while ``ingest`` is paused, every date
    once, listed past the API's page of 100, then run by the scheduler in date order without the
    scheduler dying on a run that a failed creation deleted."""
    from pipeline import orchestrate
    from pipeline.settings import Settings

    home = tmp_path / "var"
    for k, v in base_env(home).items():
        monkeypatch.setenv(k, v)
    first, n = dt.date(2026, 1, 1), 120
    monkeypatch.setenv("RANKLINE_START_DATE", first.isoformat())
    sched = orchestrate.Scheduler(Settings(home=home), services.free_port(), print)
    log = services.log_file("airflow-scheduler", home)
    try:
        sched.start()
        sched.set_paused("ingest", False)
        with pytest.raises(orchestrate.DemoFailed, match="must be paused"):
            sched.backfill("ingest", first, first + dt.timedelta(days=n - 1))
        sched.set_paused("ingest", True)
        sched.backfill("ingest", first, first + dt.timedelta(days=n - 1))
        runs = sched.runs("ingest")
        dates = sorted(r["logical_date"][:10] for r in runs)
        assert dates == [(first + dt.timedelta(days=k)).isoformat() for k in range(n)]
        assert {r["run_type"] for r in runs} == {"backfill"}
        assert {r["state"] for r in runs} == {"queued"}  # paused: none started
        sched.set_paused("ingest", False)
        deadline = time.monotonic() + TIMEOUT_S
        while (done := sorted(r["logical_date"][:10] for r in sched.runs("ingest")
                              if r["state"] == "success")) [:3] != dates[:3]:
            sched._alive()  # raises DemoFailed with the scheduler's log if it died
            assert "failed" not in {r["state"] for r in sched.runs("ingest")}, log.read_text()
            assert time.monotonic() < deadline, f"after {TIMEOUT_S}s only {done} succeeded"
            time.sleep(2)
        assert len(sched.runs("ingest")) == n
        assert "IntegrityError" not in log.read_text()
    finally:
        try:
            sched.cancel_backfills("ingest")
        finally:
            sched.stop()


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_to_the_demo_stops_every_child_and_leaves_no_run_unfinished(tmp_path, sig):
    """``kill`` (SIGTERM, also what ``timeout``, systemd and docker send) and Ctrl-C (SIGINT)
    sent to ``rankline demo`` mid-backfill: the demo stops its API server, DAG processor and
    scheduler, frees their port, marks the runs it left queued or running failed, and exits
    with 128 + the signal's number."""
    import re
    import signal
    import subprocess
    import sys

    home = tmp_path / "var"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "demo"], env=base_env(home),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        port, db = None, home / "airflow" / "airflow.db"
        for line in proc.stdout:  # until the backfill's runs exist
            lines.append(line)
            if m := re.search(r"API server on http://127\.0\.0\.1:(\d+)", line):
                port = int(m.group(1))
            if "ingest: backfill" in line:
                break
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            with sqlite3.connect(db) as con:
                if con.execute("SELECT COUNT(*) FROM dag_run WHERE state IN ('queued', "
                               "'running')").fetchone()[0]:
                    break
            time.sleep(0.5)
        else:
            pytest.fail("no ingest run started:\n" + "".join(lines))
        proc.send_signal(getattr(signal, sig))
        rest, _ = proc.communicate(timeout=120)  # a guard, not a measure
        lines.append(rest)
        left = {name: pid for name, pid in services.status(home).items() if pid is not None}
    finally:
        if proc.poll() is None:
            proc.kill()
        for name in services.status(home):  # whatever the demo left, by PID
            services.stop(name, home, timeout=20)
    out = "".join(lines)
    assert proc.returncode == 128 + getattr(signal, sig), out
    assert f"[demo] stopped by {sig}" in out, out
    assert port is not None and services.port_free(port), out
    assert not left, (left, out)
    with sqlite3.connect(db) as con:
        states = dict(con.execute("SELECT state, COUNT(*) FROM dag_run GROUP BY state"))
    assert states and not {"queued", "running"} & set(states), states
