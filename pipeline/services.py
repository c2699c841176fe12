"""The embedded deployment's background services: start, stop and list them by PID file.

``rankline up`` starts the Airflow API server (UI and the execution API its task workers
call), scheduler and DAG processor, the MLflow UI and the serving API, each bound to 127.0.0.1,
in a session of its own (so it outlives the shell and is stopped with its whole process group:
the scheduler's LocalExecutor workers and task processes, MLflow's job workers). Each writes
``<home>/run/<name>.pid`` and logs to ``<home>/logs/<name>.log``; ``rankline down`` stops them.

Plain functions, no Airflow import: this module only launches processes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.airflow_env import API_KEYS, API_PORT, airflow_env
from pipeline.settings import Settings

HOST = "127.0.0.1"
"""The only interface any service binds."""
MLFLOW_PORT = 5000
SERVE_PORT = 8000
STOP_TIMEOUT_S = 30.0
"""How long :func:`stop` waits after SIGTERM before it sends SIGKILL to the process group."""


@dataclass(frozen=True)
class Service:
    """One background process: its name (PID and log file names), command line, environment
    and, for an HTTP service, the URL it answers on."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(repr=False)
    url: str | None = None
    port: int | None = None


def run_dir(home: Path) -> Path:
    """Where the PID files are: ``<home>/run``."""
    return home / "run"


def log_dir(home: Path) -> Path:
    """Where the services' logs are: ``<home>/logs``."""
    return home / "logs"


def pid_file(name: str, home: Path) -> Path:
    """``<home>/run/<name>.pid``."""
    return run_dir(home) / f"{name}.pid"


def log_file(name: str, home: Path) -> Path:
    """``<home>/logs/<name>.log``."""
    return log_dir(home) / f"{name}.log"


def _bin(name: str) -> str:
    """A console script of this virtual environment (beside its python), else from PATH."""
    path = Path(sys.executable).with_name(name)
    return str(path) if path.exists() else name


def _state(pid: int) -> str | None:
    """The process's state letter from ``/proc/<pid>/stat`` (``Z``: zombie), None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is a child of this process (no zombie left)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live process (zombies count as gone)."""
    _reap(pid)
    return _state(pid) not in (None, "Z")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of the process group ``pgid``."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(proc.name))
    return out


def read_pid(name: str, home: Path) -> int | None:
    """The PID in ``name``'s PID file, or None (no file, or not a number)."""
    try:
        return int(pid_file(name, home).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def running_pid(name: str, home: Path) -> int | None:
    """The PID of ``name`` when its PID file names a live process, else None."""
    pid = read_pid(name, home)
    return pid if pid is not None and is_running(pid) else None


def start(name: str, argv: Sequence[str], env: Mapping[str, str], home: Path) -> int:
    """Start ``argv`` in the background as service ``name``; return its PID.

    A live PID file is respected (nothing is started; its PID is returned). A stale one is
    replaced, after stopping what is left of its process group. The process gets a session
    (and process group) of its own, stdin from /dev/null, stdout and stderr appended to
    ``<home>/logs/<name>.log``.
    """
    if (pid := running_pid(name, home)) is not None:
        return pid
    if read_pid(name, home) is not None:
        stop(name, home)  # stale: the leader is gone, its children may not be
    run_dir(home).mkdir(parents=True, exist_ok=True)
    log_dir(home).mkdir(parents=True, exist_ok=True)
    with open(log_file(name, home), "ab") as log:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(list(argv), env=dict(env), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    tmp = pid_file(name, home).with_suffix(".pid.tmp")
    tmp.write_text(f"{proc.pid}\n")
    tmp.replace(pid_file(name, home))
    return proc.pid


def _wait_gone(pgid: int, timeout: float) -> bool:
    """Wait until the process group ``pgid`` has no live member; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        _reap(pgid)
        if not group_members(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def stop(name: str, home: Path, timeout: float = STOP_TIMEOUT_S) -> bool:
    """Stop service ``name``: SIGTERM to its process group, SIGKILL after ``timeout`` seconds,
    then remove its PID file. Returns whether anything was running.

    The PID file's process started a session of its own, so the process group it leads is
    exactly what it started (a process of another group that reused the PID is left alone).
    """
    path = pid_file(name, home)
    pid = read_pid(name, home)
    was_running = False
    if pid is not None and group_members(pid):
        was_running = True
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            if _wait_gone(pid, wait):
                break
        else:
            raise RuntimeError(f"{name}: process group {pid} survived SIGKILL")
    path.unlink(missing_ok=True)
    return was_running


def status(home: Path) -> dict[str, int | None]:
    """Every service with a PID file under ``<home>/run``: its PID when running, else None."""
    return {p.stem: running_pid(p.stem, home) for p in sorted(run_dir(home).glob("*.pid"))}


def port_free(port: int, host: str = HOST) -> bool:
    """Whether ``host:port`` can be bound now."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    """A TCP port free on ``host`` now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def answers(port: int, host: str = HOST) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def ensure_db(env: Mapping[str, str], home: Path) -> bool:
    """``airflow db migrate`` under ``env`` when its SQLite database or ``airflow.cfg`` does
    not exist yet (any other database: always; migrating is idempotent). The first migrate
    writes ``airflow.cfg`` with the JWT secret every component must share, so it runs before
    any of them starts. Output goes to ``<home>/logs/airflow-db-migrate.log``.

    Returns:
        Whether it migrated.

    Raises:
        RuntimeError: the migration failed (with the log's tail).
    """
    conn = env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "")
    cfg = Path(env.get("AIRFLOW_HOME", "~/airflow")).expanduser() / "airflow.cfg"
    if conn.startswith("sqlite:///") and Path(conn.removeprefix("sqlite:///")).exists() \
            and cfg.exists():
        return False
    log_dir(home).mkdir(parents=True, exist_ok=True)
    log = log_file("airflow-db-migrate", home)
    with open(log, "wb") as out:
        res = subprocess.run([_bin("airflow"), "db", "migrate"], env=dict(env),
                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed (exit {res.returncode}), {log}:\n"
                           + tail(log))
    return True


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _with_defaults(base: Mapping[str, str], defaults: Mapping[str, str]) -> dict[str, str]:
    """``base`` plus the ``defaults`` it does not set (values already set win, as in
    :func:`pipeline.airflow_env.configure`)."""
    return {**defaults, **base}


def airflow_services(settings: Settings, base_env: Mapping[str, str] | None = None,
                     api_port: int = API_PORT) -> list[Service]:
    """The Airflow API server, DAG processor and scheduler (no log server: the API server reads
    the task logs from disk), with the embedded deployment's environment; the triggerer is left
    out (no rankline task defers)."""
    base = os.environ if base_env is None else base_env
    env = _with_defaults(base, airflow_env(settings, api_port))
    # the port given wins over an exported one: the task workers must reach this API server
    env.update({k: v for k, v in airflow_env(settings, api_port).items() if k in API_KEYS})
    airflow = _bin("airflow")
    return [
        Service("airflow-api-server", [airflow, "api-server", "--host", HOST, "--port",
                                       str(api_port), "--workers", "1"], env,
                f"http://{HOST}:{api_port}", api_port),
        Service("airflow-dag-processor", [airflow, "dag-processor"], env),
        Service("airflow-scheduler", [airflow, "scheduler", "--skip-serve-logs"], env),
    ]


def rankline_services(settings: Settings, base_env: Mapping[str, str] | None = None, *,
                      api_port: int = API_PORT, mlflow_port: int = MLFLOW_PORT,
                      serve_port: int = SERVE_PORT) -> list[Service]:
    """Every service ``rankline up`` starts, in start order: Airflow's three, the MLflow UI
    (only on the embedded SQLite tracking store; a tracking server of its own has its UI) and
    the serving API."""
    base = dict(os.environ if base_env is None else base_env)
    base["RANKLINE_HOME"] = str(settings.home.resolve())
    out = airflow_services(settings, base, api_port)
    if settings.tracking_uri.startswith("sqlite:"):
        # no job workers: they serve MLflow's GenAI features (8 processes, ~1.5 GiB here)
        env = _with_defaults(base, {"MLFLOW_ENABLE_PROACTIVE_NUDGES": "false",
                                    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        out.append(Service("mlflow-ui", [
            _bin("mlflow"), "ui", "--backend-store-uri", settings.tracking_uri,
            "--default-artifact-root", settings.artifact_root, "--host", HOST,
            "--port", str(mlflow_port), "--workers", "1"], env,
            f"http://{HOST}:{mlflow_port}", mlflow_port))
    out.append(Service("serving-api", [_bin("rankline"), "serve", "--host", HOST,
                                       "--port", str(serve_port)], base,
                       f"http://{HOST}:{serve_port}", serve_port))
    return out


def stop_order(home: Path) -> list[str]:
    """The services with a PID file, in the order ``rankline down`` stops them: the reverse of
    the start order (the serving API first, the Airflow API server last), then any other."""
    known = ["serving-api", "mlflow-ui", "airflow-scheduler", "airflow-dag-processor",
             "airflow-api-server"]
    names = list(status(home))
    return [n for n in known if n in names] + [n for n in names if n not in known]
