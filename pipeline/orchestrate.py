"""The demo the way production runs: Airflow's scheduler, not ``dag.test()``.

:func:`run_demo` starts an API server (on a free 127.0.0.1 port), a DAG processor and a
LocalExecutor scheduler for the home (PIDs and logs as ``rankline up``'s), and drives them over
Airflow's REST API, as a user would from the UI:

1. ``ingest``'s dates created as one backfill (while it is paused, then unpaused: see
   :meth:`Scheduler.backfill`), two runs at a time (a date's
   acquire and validate beside the previous date's features, which go in date order: each
   date's 28-day features read the dates before it), progress per finished date;
2. ``train`` unpaused: the scheduler fires its latest missed 02:00 run, which trains as of the
   newest validated features (the last demo date); when that run exists already (a second demo
   the same day) the demo triggers one;
3. after a promotion, ``hulk_refresh`` unpaused likewise: its latest missed 03:00 run publishes
   with the new champion.

Each DAG's pause state is restored afterwards and the components are stopped by PID, so the
runs are ordinary runs in the UI (true durations, logs under ``<home>/airflow/logs``) and
unpausing a DAG later goes on from there. The scheduler runs with ``RANKLINE_CATCHUP_DAYS=0``:
while the demo's past dates are backfilled, nothing else is due.

The components' own records go to ``<home>/logs/<name>.log``; this module prints a line a step.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pipeline import services
from pipeline.settings import Settings

DAG_IDS = ("ingest", "train", "hulk_refresh")
TERMINAL = {"success", "failed"}
POLL_S = 2.0
PAGE = 100  # Airflow's default [api] maximum_page_limit


class DemoFailed(RuntimeError):
    """A run of the demo failed; the message says which task and where its log is."""


def _iso(day: dt.date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


@dataclass
class Scheduler:
    """Airflow's API server, DAG processor and scheduler for one home, and a REST client."""

    settings: Settings
    port: int
    echo: Callable[[str], None]

    def __post_init__(self) -> None:
        base = dict(os.environ)
        base.update(RANKLINE_HOME=str(self.settings.home), RANKLINE_CATCHUP_DAYS="0")
        self.services = services.airflow_services(self.settings, base, self.port)
        self.env = self.services[0].env
        self.base = f"http://{services.HOST}:{self.port}"
        self._client: Any = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 180) -> None:
        """Migrate if needed, start the three components, wait for the API and the DAGs."""
        home = self.settings.home
        if running := [s.name for s in self.services if services.running_pid(s.name, home)]:
            raise DemoFailed(f"{', '.join(running)} already running for {home} (rankline up): "
                             "the demo starts its own; stop them first with make down")
        services.ensure_db(self.env, home)
        for svc in self.services:
            services.start(svc.name, svc.argv, svc.env, home)
        deadline = time.monotonic() + timeout
        while not services.answers(self.port):
            self._alive()
            if time.monotonic() > deadline:
                raise DemoFailed(f"Airflow's API server did not answer within {timeout:.0f}s; "
                                 f"see {services.log_file('airflow-api-server', home)}")
            time.sleep(0.5)
        import httpx

        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per poll otherwise
        token = httpx.get(f"{self.base}/auth/token", timeout=30).json()["access_token"]
        self._client = httpx.Client(base_url=f"{self.base}/api/v2", timeout=60,
                                    headers={"Authorization": f"Bearer {token}"})
        while missing := [d for d in DAG_IDS if self._get(f"/dags/{d}", ok=(200, 404)) is None]:
            self._alive()
            if time.monotonic() > deadline:
                raise DemoFailed(f"DAGs {missing} not parsed within {timeout:.0f}s; see "
                                 f"{services.log_file('airflow-dag-processor', home)}")
            time.sleep(1)

    def stop(self) -> None:
        """Stop the components (scheduler first), each by its process group."""
        if self._client is not None:
            self._client.close()
        for svc in reversed(self.services):
            services.stop(svc.name, self.settings.home, timeout=30)

    def _alive(self) -> None:
        for svc in self.services:
            if services.running_pid(svc.name, self.settings.home) is None:
                log = services.log_file(svc.name, self.settings.home)
                raise DemoFailed(f"{svc.name} exited; the end of {log}:\n{services.tail(log, 20)}")

    # -- REST ------------------------------------------------------------------------------
    def _get(self, path: str, ok: tuple[int, ...] = (200,), **params: Any) -> Any:
        res = self._client.get(path, params=params)
        if res.status_code not in ok:
            raise DemoFailed(f"GET {path}: {res.status_code} {res.text[:500]}")
        return res.json() if res.status_code == 200 else None

    def _send(self, method: str, path: str, body: dict[str, Any], retry_s: float = 60) -> Any:
        """One write; a 503 (SQLite locked by the scheduler, e.g. for a backfill) is retried
        for up to ``retry_s`` seconds."""
        deadline = time.monotonic() + retry_s
        while (res := self._client.request(method, path, json=body)).status_code == 503 \
                and time.monotonic() < deadline:
            time.sleep(1)
        if res.status_code >= 300:
            raise DemoFailed(f"{method} {path}: {res.status_code} {res.text[:500]}")
        return res.json()

    def paused(self, dag_id: str) -> bool:
        """Whether ``dag_id`` is paused."""
        return bool(self._get(f"/dags/{dag_id}")["is_paused"])

    def set_run_state(self, dag_id: str, run_id: str, state: str) -> None:
        """Mark one run ``success`` or ``failed`` (its unfinished tasks end with it)."""
        self._send("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}", {"state": state})

    @property
    def ready(self) -> bool:
        """Whether :meth:`start` got as far as the REST client."""
        return self._client is not None

    def set_paused(self, dag_id: str, paused: bool) -> None:
        """Pause or unpause ``dag_id``."""
        self._send("PATCH", f"/dags/{dag_id}", {"is_paused": paused})

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every run of ``dag_id``, page by page: the API answers at most
        ``[api] maximum_page_limit`` (100) runs a request, whatever ``limit`` asks."""
        out: list[dict[str, Any]] = []
        while True:
            page = self._get(f"/dags/{dag_id}/dagRuns", limit=PAGE, offset=len(out),
                             order_by="id")
            out += page["dag_runs"]
            if not page["dag_runs"] or len(out) >= page["total_entries"]:
                return out

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """One run of ``dag_id``."""
        return self._get(f"/dags/{dag_id}/dagRuns/{run_id}")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """A manual run of ``dag_id``; its run id."""
        return self._send("POST", f"/dags/{dag_id}/dagRuns",
                          {"logical_date": None, "conf": conf or {}})["dag_run_id"]

    def backfill(self, dag_id: str, first: dt.date, last: dt.date, runs: int = 2) -> None:
        """One backfill of ``first``..``last``, ``runs`` runs at a time; dates whose run
        succeeded already are kept, failed ones run again.

        Create it while ``dag_id`` is paused (:func:`run_demo` does): Airflow commits the
        backfill's runs one by one, and when its SQLite database stays locked mid-way it answers
        503 and deletes the runs it made. A scheduler that had already started one of them then
        dies on it (``FOREIGN KEY constraint failed`` creating its task instances, then
        ``ObjectDeletedError``). The scheduler starts no run of a paused DAG, so the clean-up
        is harmless and the retry of a 503 creates the backfill whole.
        """
        if not self.paused(dag_id):
            raise DemoFailed(f"{dag_id} must be paused while its backfill is created (a 503 "
                             "mid-way deletes runs the scheduler may have started)")
        self._send("POST", "/backfills", {
            "dag_id": dag_id, "from_date": _iso(first), "to_date": _iso(last),
            "reprocess_behavior": "failed", "max_active_runs": runs})

    def cancel_backfills(self, dag_id: str) -> list[int]:
        """Cancel ``dag_id``'s unfinished backfills; their ids. With ``depends_on_past``, a
        backfill with a failed date never completes (the later dates wait on it), and Airflow
        refuses a new backfill of the DAG while one is active."""
        found = self._get("/backfills", dag_id=dag_id, limit=100)["backfills"]
        active = [b["id"] for b in found if b.get("completed_at") is None]
        for backfill_id in active:
            self._send("PUT", f"/backfills/{backfill_id}/cancel", {})
        return active

    def failure(self, dag_id: str, run_id: str) -> str:
        """Which task of a failed run failed, and where its log is."""
        tis = self._get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        bad = [t for t in tis if t["state"] in ("failed", "upstream_failed")]
        first = next((t for t in bad if t["state"] == "failed"), bad[0] if bad else None)
        if first is None:
            return f"{dag_id} run {run_id} failed"
        logs = self.settings.home.resolve() / "airflow" / "logs" / f"dag_id={dag_id}" / \
            f"run_id={run_id}" / f"task_id={first['task_id']}"
        return (f"{dag_id} run {run_id}: task {first['task_id']} failed; its log: {logs}/ "
                f"(or the Airflow UI: rankline up)")

    # -- waiting ---------------------------------------------------------------------------
    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The task instances of one run (mapped ones each with its ``map_index``)."""
        return self._get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float) -> float:
        """Wait for one run to end, printing each task as it finishes; its seconds.

        Raises:
            DemoFailed: it failed (naming the task and its log) or did not end in time.
        """
        t0, seen = time.monotonic(), set()
        while True:
            self._alive()
            run = self.run(dag_id, run_id)
            tis = self.task_instances(dag_id, run_id)
            for t in sorted(tis, key=lambda t: t.get("end_date") or ""):
                key = (t["task_id"], t.get("map_index", -1))
                if t["state"] == "success" and key not in seen:
                    seen.add(key)
                    name = t["task_id"] + (f"[{t['rendered_map_index'] or t['map_index']}]"
                                           if t.get("map_index", -1) >= 0 else "")
                    self.echo(f"[demo]   {dag_id}: {name} ok ({t.get('duration') or 0:.0f}s)")
            if run["state"] == "success":
                return time.monotonic() - t0
            if run["state"] == "failed":
                raise DemoFailed(self.failure(dag_id, run_id))
            if time.monotonic() - t0 > timeout:
                raise DemoFailed(f"{dag_id} run {run_id} still {run['state']} after "
                                 f"{timeout:.0f}s; see {services.log_dir(self.settings.home)}")
            time.sleep(POLL_S)

    def scheduled_or_triggered(self, dag_id: str, conf: dict[str, Any], wait: float = 60) -> str:
        """Unpause ``dag_id`` and return the run the scheduler fires for its latest missed time;
        when none comes within ``wait`` seconds (that run exists already), trigger one."""
        before = {r["dag_run_id"] for r in self.runs(dag_id)}
        self.set_paused(dag_id, False)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            self._alive()
            new = [r for r in self.runs(dag_id) if r["dag_run_id"] not in before]
            if new:
                self.echo(f"[demo] {dag_id}: unpaused, the scheduler fired "
                          f"{new[0]['dag_run_id']}")
                return new[0]["dag_run_id"]
            time.sleep(POLL_S)
        run_id = self.trigger(dag_id, conf)
        self.echo(f"[demo] {dag_id}: its latest scheduled time has run already; triggered "
                  f"{run_id}")
        return run_id


def run_demo(settings: Settings, dates: list[dt.date], echo: Callable[[str], None],
             train_timeout: float = 3600) -> bool:
    """The demo's DAG runs through the scheduler (see the module docstring); whether a model
    was promoted and published.

    Raises:
        DemoFailed: a run failed or a component stopped, with what to read next.
    """

    sched = Scheduler(settings, services.free_port(), echo)
    t0 = time.monotonic()
    echo(f"[demo] starting Airflow (API server on {sched.base}, DAG processor, scheduler); "
         f"their logs: {services.log_dir(settings.home)}")
    paused: dict[str, bool] = {}
    with stopped_by_signals() as interrupted:
        try:
            sched.start()
            paused = {d: sched.paused(d) for d in DAG_IDS}
            return _demo_runs(sched, settings, dates, echo, train_timeout, t0)
        finally:
            if interrupted and sched.ready:
                _settle_interrupted(sched, echo, interrupted[0])
            for dag_id, state in paused.items():
                try:
                    sched.set_paused(dag_id, state)
                except Exception:  # noqa: BLE001 - stopping matters more than the pause flag
                    pass
            echo("[demo] stopping Airflow")
            sched.stop()


class Interrupted(BaseException):
    """SIGTERM or SIGINT reached the demo: it stops its Airflow components and exits (a
    ``BaseException``, like ``KeyboardInterrupt``, so no ``except Exception`` swallows it)."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[list[str]]:
    """While inside, SIGTERM (what ``kill``, ``timeout``, systemd and docker send) and SIGINT
    (Ctrl-C) raise :class:`Interrupted` in the main thread, so the ``finally`` blocks that stop
    the children run; the handlers before are restored on the way out. Yields a list the caller
    fills with the signal's name once it has been caught (a second signal while stopping is
    ignored: stopping is already under way)."""
    caught: list[str] = []

    def handler(signum: int, _frame: Any) -> None:
        if caught:
            return
        caught.append(signal.Signals(signum).name)
        raise Interrupted(caught[0])

    if threading.current_thread() is not threading.main_thread():
        yield caught  # signals reach the main thread only
        return
    before = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield caught
    finally:
        for sig, old in before.items():
            signal.signal(sig, old)


def _settle_interrupted(sched: Scheduler, echo: Callable[[str], None], signame: str) -> None:
    """After a signal: cancel the unfinished backfills and mark every queued or running run of
    the demo's DAGs failed, so no run is left ``running`` or ``queued`` for the next scheduler
    (a later ``rankline demo`` or backfill runs those dates again: failed dates are
    reprocessed)."""
    echo(f"[demo] {signame}: cancelling the unfinished runs")
    for dag_id in DAG_IDS:
        try:
            sched.cancel_backfills(dag_id)
            for run in sched.runs(dag_id):
                if run["state"] in ("queued", "running"):
                    sched.set_run_state(dag_id, run["dag_run_id"], "failed")
        except Exception as exc:  # noqa: BLE001 - stop the components whatever happens here
            echo(f"[demo] could not settle {dag_id}'s runs: {exc}")


def _demo_runs(sched: Scheduler, settings: Settings, dates: list[dt.date],
               echo: Callable[[str], None], train_timeout: float, t0: float) -> bool:
    """The demo's DAG runs on a started :class:`Scheduler` (:func:`run_demo`)."""
    from pipeline.tracking import champion_version

    echo(f"[demo] Airflow ready ({time.monotonic() - t0:.0f}s); ingest: backfill "
         f"{dates[0]}..{dates[-1]}")
    sched.set_paused("ingest", True)  # while the backfill is created: Scheduler.backfill
    if stale := sched.cancel_backfills("ingest"):  # an earlier demo's, held by a failure
        echo(f"[demo] cancelled unfinished ingest backfill(s) {stale}")
    sched.backfill("ingest", dates[0], dates[-1])
    sched.set_paused("ingest", False)
    try:
        _wait_dates(sched, dates, echo)
    except DemoFailed:
        sched.cancel_backfills("ingest")  # its later dates would wait on the failed one
        raise
    before = getattr(champion_version(settings), "version", None)
    run_id = sched.scheduled_or_triggered("train", {"as_of": dates[-1].isoformat()})
    took = sched.wait_run("train", run_id, train_timeout)
    echo(f"[demo] train ok ({took:.0f}s)")
    after = getattr(champion_version(settings), "version", None)
    if after is None or after == before:
        return after is not None
    run_id = sched.scheduled_or_triggered("hulk_refresh", {})
    took = sched.wait_run("hulk_refresh", run_id, 1800)
    echo(f"[demo] hulk_refresh ok ({took:.0f}s)")
    return True


def _wait_dates(sched: Scheduler, dates: list[dt.date], echo: Callable[[str], None],
                timeout_per_date: float = 900) -> None:
    """Wait until every date has a successful ``ingest`` run, a line per finished date."""
    want = {d.isoformat() for d in dates}
    t0, done, last_change = time.monotonic(), set(), time.monotonic()
    while True:
        sched._alive()
        runs = {r["logical_date"][:10]: r for r in sched.runs("ingest")
                if r.get("logical_date") and r["logical_date"][:10] in want}
        for day, run in sorted(runs.items()):
            if run["state"] == "success" and day not in done:
                done.add(day)
                last_change = time.monotonic()
                spent = time.monotonic() - t0
                rate = len(done) / spent if spent else 0.0
                eta = (len(want) - len(done)) / rate if rate else 0.0
                echo(f"[demo] ingest {day} ok ({len(done)}/{len(want)}, "
                     f"{rate * 60:.1f} dates/min, ETA {eta:.0f}s)")
            elif run["state"] == "failed":
                raise DemoFailed(sched.failure("ingest", run["dag_run_id"]))
        if done == want:
            return
        if time.monotonic() - last_change > timeout_per_date:
            raise DemoFailed(f"no ingest run finished in {timeout_per_date:.0f}s; see "
                             f"{services.log_dir(sched.settings.home)}")
        time.sleep(POLL_S)
