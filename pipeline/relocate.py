"""Moving ``RANKLINE_HOME`` (``var/``) to another directory.

Everything under the home is found from ``RANKLINE_HOME`` at run time except what MLflow stores
as absolute URIs in its local database (``<home>/mlflow.db``): each experiment's artifact
location, each run's artifact URI, each logged model's and model version's storage location,
and links in tags (the validation Data Docs). Airflow's ``airflow.cfg`` under the home is not
read for paths: :func:`pipeline.airflow_env.airflow_env` sets every path option from the home.
Old XCom values and rendered task fields in Airflow's database keep the paths of their time;
nothing reads them again.

The home records where it was created (:data:`MARKER`). :func:`check_home` fails with the
command to run when the home has moved; ``rankline relocate`` (:func:`relocate`) rewrites the
MLflow database and the marker.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

MARKER = ".rankline-home"
"""File under the home holding the absolute path it was created at."""

# (table, column) of MLflow's database that hold artifact URIs or paths under the home
_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
    ("tags", "value"),
)


class HomeMoved(RuntimeError):
    """The home was created at another path; ``rankline relocate`` rewrites what points there."""


def recorded_home(home: Path) -> Path | None:
    """The path ``home`` was created at, or None when it carries no marker yet."""
    marker = home / MARKER
    return Path(marker.read_text().strip()) if marker.is_file() else None


def check_home(home: Path, tracking_uri: str) -> None:
    """Record the home's path the first time; afterwards fail when it has moved and the local
    MLflow database still points at the old path.

    Raises:
        HomeMoved: with the command that fixes it.
    """
    home = home.resolve()
    old = recorded_home(home)
    if old is None:
        home.mkdir(parents=True, exist_ok=True)
        (home / MARKER).write_text(f"{home}\n")
        return
    if old != home and _local_db(home, tracking_uri) is not None:
        raise HomeMoved(f"RANKLINE_HOME moved from {old} to {home}: MLflow's database still "
                        f"points at the old place. Run: rankline relocate  (with RANKLINE_HOME="
                        f"{home}; it rewrites the paths, nothing else changes)")


def _local_db(home: Path, tracking_uri: str) -> Path | None:
    """The MLflow SQLite file when tracking is local to the home, else None."""
    db = home / "mlflow.db"
    return db if tracking_uri == f"sqlite:///{db}" and db.is_file() else None


def relocate(home: Path, tracking_uri: str) -> dict[str, int]:
    """Rewrite every path of the recorded old home to ``home`` in the local MLflow database
    and the marker; return the rows changed per ``table.column`` (a no-op when not moved)."""
    home = home.resolve()
    old = recorded_home(home)
    changed: dict[str, int] = {}
    if old is None or old == home:
        return changed
    db = _local_db(home, tracking_uri)
    if db is not None:
        pairs = ((old.as_uri(), home.as_uri()), (str(old), str(home)))
        with sqlite3.connect(db) as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            for table, column in _COLUMNS:
                if table not in tables:
                    continue
                n = 0
                for before, after in pairs:  # the URI form first: it contains the path form
                    n += con.execute(
                        f'UPDATE "{table}" SET "{column}" = ? || substr("{column}", ?) '  # noqa: S608
                        f'WHERE "{column}" = ? OR substr("{column}", 1, ?) = ?',
                        (after, len(before) + 1, before, len(before) + 1, before + "/")).rowcount
                if n:
                    changed[f"{table}.{column}"] = n
    (home / MARKER).write_text(f"{home}\n")
    return changed
