"""Stores for the contract suite: each backend, on data no other test touches.

A *spec* names a backend and its data so another process can open the same store:
``sqlite:/path/kv.db`` or ``redis:<prefix>`` (on ``RANKLINE_TEST_REDIS_URL``, default the local
server). Redis tests fail, never skip, when the server is missing: the message says how to start it.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from serving.store import KVStore, StoreError

REDIS_URL = os.environ.get("RANKLINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BACKENDS = ["sqlite", "redis"]
START_REDIS = ("redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' "
               "--appendonly no")


def new_spec(kind: str, tmp_path: Path) -> str:
    """A spec for fresh, empty data of backend ``kind``."""
    if kind == "sqlite":
        return f"sqlite:{tmp_path / 'kv.db'}"
    return f"redis:rltest_{uuid.uuid4().hex[:12]}"


def open_spec(spec: str, **kw: object) -> KVStore:
    """Open the store a spec names (``kw`` goes to the backend: batch_size, lock_ttl, ...)."""
    kind, _, where = spec.partition(":")
    if kind == "sqlite":
        from serving.sqlite_store import SQLiteStore

        return SQLiteStore(Path(where), **kw)  # type: ignore[arg-type]
    from serving.redis_store import RedisStore

    return RedisStore(REDIS_URL, prefix=where, **kw)  # type: ignore[arg-type]


def require_redis() -> None:
    """Fail the test (not skip) when the Redis server is not reachable."""
    from serving.redis_store import RedisStore

    store = RedisStore(REDIS_URL, prefix="rltest_ping")
    try:
        store.ping()
    except StoreError as exc:
        pytest.fail(f"{exc}. These tests need a real Redis server; start one with `{START_REDIS}` "
                    "or set RANKLINE_TEST_REDIS_URL.", pytrace=False)
    finally:
        store.close()


def purge(spec: str) -> None:
    """Remove what a test wrote: for Redis only the keys under the test's own prefix."""
    kind, _, where = spec.partition(":")
    if kind != "redis":
        return
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(match=f"{where}:*", count=1000))
    for i in range(0, len(keys), 500):
        r.unlink(*keys[i:i + 500])
    r.close()


def data_versions(spec: str, ns: str) -> set[int]:
    """The versions whose data physically exists (tables in SQLite, hashes in Redis)."""
    kind, _, where = spec.partition(":")
    if kind == "sqlite":
        import sqlite3

        conn = sqlite3.connect(where)
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE ?", (f"rl_data_{ns}_%",))]
        conn.close()
        return {int(n.rsplit("_", 1)[1]) for n in names}
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(match=f"{where}:{{{ns}}}:d:*", count=1000))
    r.close()
    return {int(k.rsplit(b":", 1)[1]) for k in keys}


def corrupt_table(path: Path, table: str) -> int:
    """Overwrite the root page of ``table`` in a closed SQLite file with garbage, as a disk or a
    stray writer would; every read of the table then fails. Returns the page number."""
    import sqlite3

    conn = sqlite3.connect(path)
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name=?", (table,)).fetchone()
    conn.close()
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0, \
        "close every connection first: the WAL must be checkpointed into the file"
    with open(path, "r+b") as fh:
        fh.seek((root - 1) * page_size)
        fh.write(b"\xde\xad\xbe\xef" * (page_size // 4))
    return root
