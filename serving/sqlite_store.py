"""The embedded backend of :class:`serving.store.KVStore`: one SQLite file in WAL mode.

Each version is its own ``WITHOUT ROWID`` table; ``rl_current`` points at the live one. A read
runs inside one read transaction, so the pointer and the values come from one snapshot: WAL keeps
that snapshot readable even while a publisher switches the pointer and drops the old table.
Tuned for bulk loads: 16 KiB pages, batched ``executemany``, one transaction per batch.

Readers open the file with ``create=False``: a mistyped path is reported ("no serving store at
…"), never silently created empty. A damaged file is reported too: reads that meet SQLite's
"database disk image is malformed" raise :class:`StoreCorrupt` (saying how to recover), and
:meth:`SQLiteStore.health` runs ``PRAGMA quick_check`` on the live version's table and the
metadata tables once per live version.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from serving.store import (
    KVStore,
    StoreCorrupt,
    StoreError,
    StoreUnavailable,
    VersionInfo,
    check_namespace,
    now,
    plan_cleanup,
    rollback_target,
    who,
)

_LIVE = ("SELECT v.namespace, v.version, v.state, v.created_at, v.n_keys, v.meta "
         "FROM rl_current c JOIN rl_versions v USING(namespace, version) WHERE c.namespace=?")
_IN_CHUNK = 500  # keys per ``IN (...)`` lookup
_META = ("rl_versions", "rl_current", "rl_events")
_CORRUPT_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB (primary codes)
_UNREADABLE_CODES = (5, 6, 8, 10, 14)  # BUSY, LOCKED, READONLY, IOERR, CANTOPEN
_SCOPED_CHECK = sqlite3.sqlite_version_info >= (3, 33, 0)  # PRAGMA quick_check(<table>)
log = logging.getLogger(__name__)


class SQLiteStore(KVStore):
    """Versioned namespaces in one SQLite file (the default; no server).

    ``create=False`` (readers) never creates the file or its tables: until a publisher has made
    it, reads raise :class:`StoreUnavailable` saying so."""

    def __init__(self, path: Path, batch_size: int = 10_000, create: bool = True) -> None:
        self.path = Path(path)
        self.batch_size, self.create = batch_size, create
        self._local = threading.local()
        self._clean: set[tuple[str, int]] = set()  # live versions quick_check found sound
        self._bad: dict[tuple[str, int], str] = {}  # versions a read or a check found corrupt
        self._checking = threading.Lock()
        if not create:
            return  # opened on the first read
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn().executescript(
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

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open() if self.create else self._open_existing()
            self._wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA cache_size=-65536")
            self._local.conn = conn
        return conn

    def _open(self) -> sqlite3.Connection:
        fresh = not self.path.exists()
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=60, check_same_thread=False)
        if fresh:
            conn.execute("PRAGMA page_size=16384")
        return conn

    def _open_existing(self) -> sqlite3.Connection:
        """A connection to the file as it is (``mode=rw``: SQLite must not create it)."""
        missing = (f"no serving store at {self.path}: check RANKLINE_STORE_PATH or publish one "
                   "first with `rankline run-dag hulk_refresh`")
        if not self.path.is_file():
            raise StoreUnavailable(missing)
        try:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=rw", uri=True,
                                   isolation_level=None, timeout=60, check_same_thread=False)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"cannot open the serving store {self.path}: {exc}") from exc
        try:
            tables = {r[0] for r in conn.execute(
                f"SELECT name FROM sqlite_master WHERE type='table' AND name IN {_META}")}
        except BaseException:
            conn.close()
            raise
        if not set(_META) <= tables:
            conn.close()
            raise StoreUnavailable(f"{missing} (the file holds no rankline store)")
        return conn

    @staticmethod
    def _wal(conn: sqlite3.Connection, wait_s: float = 60.0) -> None:
        """Put the file in WAL mode (it stays so). Switching needs an exclusive lock, and SQLite
        answers "database is locked" at once, without its busy timeout, when another
        connection is opening the same new file: so retry until ``wait_s``."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    @contextlib.contextmanager
    def _txn(self, mode: str = "IMMEDIATE") -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute(f"BEGIN {mode}")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:  # SQLite ends some failed transactions itself
                with contextlib.suppress(sqlite3.Error):  # keep the original error
                    conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @staticmethod
    def _table(namespace: str, version: int) -> str:
        return f"rl_data_{namespace}_{version}"

    @staticmethod
    def _info(row: tuple) -> VersionInfo:
        ns, version, state, created, n, meta = row
        return VersionInfo(ns, version, state, created, n, json.loads(meta))

    @staticmethod
    def _event(conn: sqlite3.Connection, ns: str, action: str, frm: int | None, to: int | None,
               why: str = "", by: str | None = None) -> None:
        conn.execute("INSERT INTO rl_events VALUES (?,?,?,?,?,?,?)",
                     (now(), ns, action, frm, to, by or who(), why))

    # -- publish steps --------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self, ns: str) -> Iterator[str]:
        """One publisher per namespace and file at a time (flock: released on process death)."""
        with open(self.path.with_name(f"{self.path.name}.{ns}.lock"), "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield "flock"
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _begin(self, ns: str, meta: dict[str, Any]) -> int:
        with self._txn() as conn:
            (version,) = conn.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM rl_versions WHERE namespace=?", (ns,)
            ).fetchone()
            conn.execute("INSERT INTO rl_versions VALUES (?,?,?,?,?,?)",
                         (ns, version, "writing", now(), 0, json.dumps(meta)))
            conn.execute(f"CREATE TABLE {self._table(ns, version)}"
                         "(k TEXT PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
        return version

    def _write(self, ns: str, version: int, batch: list[tuple[str, bytes]]) -> None:
        batch.sort(key=lambda kv: kv[0])  # B-tree inserts in key order touch fewer pages
        with self._txn("") as conn:
            conn.executemany(f"INSERT OR REPLACE INTO {self._table(ns, version)} VALUES (?, ?)",
                             batch)

    def _count(self, ns: str, version: int) -> int:
        return self._conn().execute(f"SELECT COUNT(*) FROM {self._table(ns, version)}").fetchone()[0]

    def _read_version(self, ns: str, version: int, keys: Sequence[str]) -> list[bytes | None]:
        return self._lookup(self._conn(), self._table(ns, version), keys)

    @staticmethod
    def _lookup(conn: sqlite3.Connection, table: str, keys: Sequence[str]) -> list[bytes | None]:
        found: dict[str, bytes] = {}
        for i in range(0, len(keys), _IN_CHUNK):
            chunk = list(keys[i:i + _IN_CHUNK])
            marks = ",".join("?" * len(chunk))
            found.update(conn.execute(f"SELECT k, v FROM {table} WHERE k IN ({marks})", chunk))
        return [bytes(found[k]) if k in found else None for k in keys]

    def _switch(self, ns: str, version: int, n_keys: int, token: str) -> None:
        with self._txn() as conn:
            prev = conn.execute("SELECT version FROM rl_current WHERE namespace=?", (ns,)).fetchone()
            conn.execute("UPDATE rl_versions SET state='standby' WHERE namespace=? AND state='live'",
                         (ns,))
            conn.execute("UPDATE rl_versions SET state='live', n_keys=? "
                         "WHERE namespace=? AND version=?", (n_keys, ns, version))
            conn.execute("INSERT OR REPLACE INTO rl_current VALUES (?,?,?)", (ns, version, now()))
            self._event(conn, ns, "publish", prev[0] if prev else None, version)

    def _cleanup(self, ns: str, keep: int) -> None:
        with self._txn() as conn:  # one transaction: a rollback cannot pick a version being dropped
            states = dict(conn.execute(
                "SELECT version, state FROM rl_versions WHERE namespace=? AND state IN "
                "('live','standby','writing')", (ns,)).fetchall())
            live = conn.execute("SELECT version FROM rl_current WHERE namespace=?", (ns,)).fetchone()
            for version, state in plan_cleanup(states, live[0] if live else None, keep).items():
                conn.execute(f"DROP TABLE IF EXISTS {self._table(ns, version)}")
                conn.execute("UPDATE rl_versions SET state=? WHERE namespace=? AND version=?",
                             (state, ns, version))

    # -- reads and administration ---------------------------------------------------------
    @contextlib.contextmanager
    def _reading(self, ns: str) -> Iterator[list[int]]:
        """Report SQLite failures of a read as :class:`StoreCorrupt` or :class:`StoreUnavailable`.
        The body appends the live version it reads, so a corrupt version is remembered."""
        live: list[int] = []
        try:
            yield live
        except sqlite3.Error as exc:
            fault = self._fault(exc, ns, live[-1] if live else None)
            if fault is None:
                raise
            raise fault from exc

    def _fault(self, exc: sqlite3.Error, ns: str, version: int | None) -> StoreError | None:
        """What a failed read means for the caller; None for errors that are bugs, not faults."""
        code, text = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF, str(exc)
        if (code in _CORRUPT_CODES or "malformed" in text or "not a database" in text
                or text.startswith("no such table: rl_")):
            msg = self._corrupt(text)
            self._clean.clear()  # the next health check looks again
            if version is not None and self._bad.setdefault((ns, version), msg) is msg:
                log.error("%s (namespace %s, version %d)", msg, ns, version)
            return StoreCorrupt(msg)
        if code in _UNREADABLE_CODES:
            return StoreUnavailable(f"cannot read the serving store {self.path}: {text}")
        return None

    def _corrupt(self, what: str) -> str:
        return (f"the serving store {self.path} is corrupt ({what}): roll back to a kept version "
                "with `rankline store rollback`, republish with `rankline run-dag hulk_refresh`, "
                "or restore the file from a backup")

    def get_many(self, namespace: str, keys: Sequence[str]) -> tuple[list[bytes | None], VersionInfo]:
        ns = check_namespace(namespace)
        with self._reading(ns) as live, self._txn("DEFERRED") as conn:  # one snapshot: pointer, values
            row = conn.execute(_LIVE, (ns,)).fetchone()
            if row is None:
                raise StoreError(f"namespace {ns!r} has no published version yet")
            live.append(row[1])
            values = self._lookup(conn, self._table(ns, row[1]), keys)
        return values, self._info(row)

    def current(self, namespace: str) -> VersionInfo | None:
        ns = check_namespace(namespace)
        with self._reading(ns):
            row = self._conn().execute(_LIVE, (ns,)).fetchone()
        return self._info(row) if row else None

    def health(self, namespace: str) -> VersionInfo | None:
        """The live version after ``PRAGMA quick_check`` of its table and the metadata tables
        (once per live version: later calls cost one read); :class:`StoreCorrupt` if a check or
        any earlier read found the version damaged."""
        ns = check_namespace(namespace)
        cur = self.current(ns)
        if cur is None:
            return None
        key = (ns, cur.version)
        with self._checking:  # concurrent probes wait for one check instead of each running one
            if key not in self._clean and key not in self._bad:
                problems = self._quick_check(ns, cur.version)
                if problems:
                    what = " ".join(" ".join(problems).replace("*** in database main ***", "").split())
                    self._bad.setdefault(key, self._corrupt(what[:300]))
                    log.error("%s (namespace %s, version %d)", self._bad[key], ns, cur.version)
                else:
                    self._clean.add(key)
        if key in self._bad:
            raise StoreCorrupt(self._bad[key])
        return cur

    def _quick_check(self, ns: str, version: int) -> list[str]:
        """What ``PRAGMA quick_check`` finds wrong in the version's table and the metadata (the
        whole file on SQLite < 3.33, which cannot scope it to tables)."""
        tables = [self._table(ns, version), *_META] if _SCOPED_CHECK else [""]
        problems: list[str] = []
        with self._reading(ns) as live:
            live.append(version)
            conn = self._conn()
            for table in tables:
                rows = conn.execute(f"PRAGMA quick_check({table})" if table else "PRAGMA quick_check")
                problems += [r[0] for r in rows if r[0] != "ok"]
        return problems

    def versions(self, namespace: str) -> list[VersionInfo]:
        ns = check_namespace(namespace)
        with self._reading(ns):
            rows = self._conn().execute(
                "SELECT namespace, version, state, created_at, n_keys, meta FROM rl_versions "
                "WHERE namespace=? ORDER BY version DESC", (ns,)).fetchall()
        return [self._info(r) for r in rows]

    def rollback(self, namespace: str, to: int | None = None, why: str = "",
                 by: str | None = None) -> VersionInfo:
        ns = check_namespace(namespace)
        with self._txn() as conn:
            live = conn.execute("SELECT version FROM rl_current WHERE namespace=?", (ns,)).fetchone()
            if live is None:
                raise StoreError(f"namespace {ns!r} has nothing published to roll back")
            states = dict(conn.execute(
                "SELECT version, state FROM rl_versions WHERE namespace=?", (ns,)).fetchall())
            to = rollback_target(live[0], states, to, ns)
            conn.execute("UPDATE rl_versions SET state='standby' WHERE namespace=? AND version=?",
                         (ns, live[0]))
            conn.execute("UPDATE rl_versions SET state='live' WHERE namespace=? AND version=?",
                         (ns, to))
            conn.execute("UPDATE rl_current SET version=?, switched_at=? WHERE namespace=?",
                         (to, now(), ns))
            self._event(conn, ns, "rollback", live[0], to, why, by)
        return self.current(ns)  # type: ignore[return-value]

    def events(self, namespace: str, limit: int = 50) -> list[dict[str, Any]]:
        ns = check_namespace(namespace)
        with self._reading(ns):
            rows = self._conn().execute(
                "SELECT at, action, from_version, to_version, who, why FROM rl_events "
                "WHERE namespace=? ORDER BY rowid DESC LIMIT ?", (ns, limit)).fetchall()
        return [dict(zip(("at", "action", "from", "to", "who", "why"), r, strict=True)) for r in rows]

    def drop(self, namespace: str) -> None:
        ns = check_namespace(namespace)
        with self._lock(ns), self._txn() as conn:
            for (version,) in conn.execute("SELECT version FROM rl_versions WHERE namespace=?",
                                           (ns,)).fetchall():
                conn.execute(f"DROP TABLE IF EXISTS {self._table(ns, version)}")
            for table in ("rl_versions", "rl_current", "rl_events"):
                conn.execute(f"DELETE FROM {table} WHERE namespace=?", (ns,))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
