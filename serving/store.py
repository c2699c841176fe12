"""The versioned key-value store that served predictions and online features live in.

A *namespace* (``recs``, ``features``) holds numbered versions. :meth:`KVStore.publish` writes a
new version beside the live one, verifies it, then switches the namespace's pointer in one
transaction: a reader sees the old version or the new one, never a mix. The last ``keep``
versions stay for :meth:`KVStore.rollback`; older ones are removed. Publishers of one namespace
take turns (a lock the operating system releases if the publisher dies), so the versions a
publish finds unfinished were left by a publisher that crashed, and are removed.

Backends: :class:`SQLiteStore` (the embedded default). Redis comes with the serving issue.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import fcntl
import getpass
import itertools
import json
import logging
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
_NAMESPACE = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
_LIVE = ("SELECT v.namespace, v.version, v.state, v.created_at, v.n_keys, v.meta "
         "FROM rl_current c JOIN rl_versions v USING(namespace, version) WHERE c.namespace=?")


class StoreError(RuntimeError):
    """A publish, read or rollback that cannot be done; the message says why."""


@dataclass(frozen=True)
class VersionInfo:
    """One version of a namespace."""

    namespace: str
    version: int
    state: str  # writing | live | standby | removed | failed
    created_at: str
    n_keys: int
    meta: dict[str, Any] = field(default_factory=dict)


def _check_namespace(ns: str) -> str:
    if not _NAMESPACE.match(ns):
        raise StoreError(f"invalid namespace {ns!r}: lowercase letters, digits and _ only")
    return ns


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class KVStore(abc.ABC):
    """Versioned namespaces of ``str -> bytes`` with atomic switch and rollback."""

    @abc.abstractmethod
    def publish(
        self, namespace: str, items: Iterable[tuple[str, bytes]], meta: dict[str, Any] | None = None,
        keep: int = 3, verify_sample: int = 100,
    ) -> VersionInfo:
        """Write a new version from ``items``, verify it, make it live; keep ``keep`` versions."""

    @abc.abstractmethod
    def get_many(self, namespace: str, keys: Sequence[str]) -> tuple[list[bytes | None], VersionInfo]:
        """Values of ``keys`` (None where absent), all from one version, and that version."""

    def get(self, namespace: str, key: str) -> tuple[bytes | None, VersionInfo]:
        """One value from the live version, and that version."""
        values, info = self.get_many(namespace, [key])
        return values[0], info

    @abc.abstractmethod
    def current(self, namespace: str) -> VersionInfo | None:
        """The live version, or None before the first publish."""

    @abc.abstractmethod
    def versions(self, namespace: str) -> list[VersionInfo]:
        """Every version still recorded, newest first."""

    @abc.abstractmethod
    def rollback(self, namespace: str, to: int | None = None, why: str = "") -> VersionInfo:
        """Make an older kept version live (default: the newest one before the live one)."""

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release connections."""


class SQLiteStore(KVStore):
    """The embedded backend: one SQLite file in WAL mode, one table per version.

    Readers run each lookup inside a read transaction, so the version pointer and the values
    come from one snapshot. Tuned for bulk loads: 16 KiB pages, batched ``executemany``.
    """

    def __init__(self, path: Path, batch_size: int = 10_000) -> None:
        self.path = Path(path)
        self.batch_size = batch_size
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._conn()
        conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS rl_versions(
                namespace TEXT NOT NULL, version INTEGER NOT NULL, state TEXT NOT NULL,
                created_at TEXT NOT NULL, n_keys INTEGER NOT NULL DEFAULT 0,
                meta TEXT NOT NULL DEFAULT '{}', PRIMARY KEY(namespace, version));
            CREATE TABLE IF NOT EXISTS rl_current(
                namespace TEXT PRIMARY KEY, version INTEGER NOT NULL, switched_at TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS rl_events(
                at TEXT NOT NULL, namespace TEXT NOT NULL, action TEXT NOT NULL,
                from_version INTEGER, to_version INTEGER, who TEXT, why TEXT);
            """
        )

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            fresh = not self.path.exists()
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30,
                                   check_same_thread=False)
            if fresh:
                conn.execute("PRAGMA page_size=16384")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA cache_size=-65536")
            self._local.conn = conn
        return conn

    @staticmethod
    def _table(namespace: str, version: int) -> str:
        return f"rl_data_{namespace}_{version}"

    def _info(self, row: tuple) -> VersionInfo:
        ns, version, state, created, n, meta = row
        return VersionInfo(ns, version, state, created, n, json.loads(meta))

    def _event(self, conn: sqlite3.Connection, ns: str, action: str, frm: int | None,
               to: int | None, why: str = "") -> None:
        conn.execute("INSERT INTO rl_events VALUES (?,?,?,?,?,?,?)",
                     (_now(), ns, action, frm, to, getpass.getuser(), why))

    def publish(
        self, namespace: str, items: Iterable[tuple[str, bytes]], meta: dict[str, Any] | None = None,
        keep: int = 3, verify_sample: int = 100,
    ) -> VersionInfo:
        ns = _check_namespace(namespace)
        if keep < 1:
            raise StoreError("keep must be at least 1 (the live version)")
        with self._publisher_lock(ns):
            return self._publish(ns, items, meta, keep, verify_sample)

    @contextlib.contextmanager
    def _publisher_lock(self, ns: str) -> Iterator[None]:
        """One publisher per namespace and file at a time (flock: released on process death)."""
        with open(self.path.with_name(f"{self.path.name}.{ns}.lock"), "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _publish(self, ns: str, items: Iterable[tuple[str, bytes]], meta: dict[str, Any] | None,
                 keep: int, verify_sample: int) -> VersionInfo:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        (version,) = conn.execute(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM rl_versions WHERE namespace=?", (ns,)
        ).fetchone()
        conn.execute("INSERT INTO rl_versions VALUES (?,?,?,?,?,?)",
                     (ns, version, "writing", _now(), 0, json.dumps(meta or {})))
        table = self._table(ns, version)
        conn.execute(f"CREATE TABLE {table}(k TEXT PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
        conn.execute("COMMIT")

        n, sample = 0, []
        it = iter(items)
        while batch := list(itertools.islice(it, self.batch_size)):
            conn.execute("BEGIN")
            conn.executemany(f"INSERT OR REPLACE INTO {table} VALUES (?, ?)", batch)
            conn.execute("COMMIT")
            n += len(batch)
            if len(sample) < verify_sample:
                sample += batch[: verify_sample - len(sample)]
        self._verify(conn, table, n, sample)

        conn.execute("BEGIN IMMEDIATE")
        prev = conn.execute("SELECT version FROM rl_current WHERE namespace=?", (ns,)).fetchone()
        conn.execute("UPDATE rl_versions SET state='standby' WHERE namespace=? AND state='live'",
                     (ns,))
        conn.execute("UPDATE rl_versions SET state='live', n_keys=? WHERE namespace=? AND version=?",
                     (n, ns, version))
        conn.execute("INSERT OR REPLACE INTO rl_current VALUES (?,?,?)", (ns, version, _now()))
        self._event(conn, ns, "publish", prev[0] if prev else None, version)
        conn.execute("COMMIT")
        log.info("published %s version %d (%d keys)", ns, version, n)
        self._cleanup(ns, version, keep)
        return self.current(ns)  # type: ignore[return-value]

    def _verify(self, conn: sqlite3.Connection, table: str, n: int,
                sample: list[tuple[str, bytes]]) -> None:
        (count,) = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        if count != n:
            raise StoreError(f"verification failed: {table} holds {count} keys, wrote {n} "
                             "(duplicate keys in the input?)")
        for key, value in sample:
            row = conn.execute(f"SELECT v FROM {table} WHERE k=?", (key,)).fetchone()
            if row is None or bytes(row[0]) != bytes(value):
                raise StoreError(f"verification failed: key {key!r} reads back differently")

    def _cleanup(self, ns: str, live: int, keep: int) -> None:
        """Drop versions past the newest ``keep`` and those of publishes that never finished."""
        conn = self._conn()
        rows = conn.execute(
            "SELECT version, state FROM rl_versions WHERE namespace=? AND state IN "
            "('live','standby','writing') ORDER BY version DESC", (ns,)).fetchall()
        kept = 0
        for version, state in rows:
            if state == "writing":  # we hold the publisher lock: its writer is gone
                new_state = "failed"
            elif state in ("live", "standby") and kept < keep:
                kept += 1
                continue
            else:
                new_state = "removed"
            conn.execute(f"DROP TABLE IF EXISTS {self._table(ns, version)}")
            conn.execute("UPDATE rl_versions SET state=? WHERE namespace=? AND version=?",
                         (new_state, ns, version))
            log.info("%s version %d %s", ns, version, new_state)

    def get_many(self, namespace: str, keys: Sequence[str]) -> tuple[list[bytes | None], VersionInfo]:
        ns = _check_namespace(namespace)
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            row = conn.execute(_LIVE, (ns,)).fetchone()
            if row is None:
                raise StoreError(f"namespace {ns!r} has no published version yet")
            table = self._table(ns, row[1])
            values = []
            for key in keys:
                r = conn.execute(f"SELECT v FROM {table} WHERE k=?", (key,)).fetchone()
                values.append(bytes(r[0]) if r else None)
        finally:
            conn.execute("COMMIT")
        return values, self._info(row)

    def current(self, namespace: str) -> VersionInfo | None:
        row = self._conn().execute(_LIVE, (_check_namespace(namespace),)).fetchone()
        return self._info(row) if row else None

    def versions(self, namespace: str) -> list[VersionInfo]:
        rows = self._conn().execute(
            "SELECT namespace, version, state, created_at, n_keys, meta FROM rl_versions "
            "WHERE namespace=? ORDER BY version DESC", (_check_namespace(namespace),)).fetchall()
        return [self._info(r) for r in rows]

    def rollback(self, namespace: str, to: int | None = None, why: str = "") -> VersionInfo:
        ns = _check_namespace(namespace)
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            live = conn.execute("SELECT version FROM rl_current WHERE namespace=?", (ns,)).fetchone()
            if live is None:
                raise StoreError(f"namespace {ns!r} has nothing published to roll back")
            standby = [v for (v,) in conn.execute(
                "SELECT version FROM rl_versions WHERE namespace=? AND state='standby' "
                "ORDER BY version DESC", (ns,))]
            if to is None:
                older = [v for v in standby if v < live[0]]
                if not older:
                    raise StoreError(f"{ns}: no kept version older than live {live[0]}")
                to = older[0]
            elif to not in standby:
                raise StoreError(f"{ns}: version {to} is not kept (kept: {standby}, live: {live[0]})")
            conn.execute("UPDATE rl_versions SET state='standby' WHERE namespace=? AND version=?",
                         (ns, live[0]))
            conn.execute("UPDATE rl_versions SET state='live' WHERE namespace=? AND version=?",
                         (ns, to))
            conn.execute("UPDATE rl_current SET version=?, switched_at=? WHERE namespace=?",
                         (to, _now(), ns))
            self._event(conn, ns, "rollback", live[0], to, why)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.warning("%s rolled back from version %d to %d", ns, live[0], to)
        return self.current(ns)  # type: ignore[return-value]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def open_store(settings: Any, path: Path | None = None) -> KVStore:
    """The store the settings select (``store_backend``); ``path`` overrides the SQLite file."""
    if settings.store_backend == "sqlite":
        return SQLiteStore(path or settings.serving_store_path)
    raise StoreError(f"unknown store backend {settings.store_backend!r}")
