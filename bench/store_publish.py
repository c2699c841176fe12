"""Publish throughput of the serving store against raw clients measured in the same run.

    .venv/bin/python bench/store_publish.py [--users 1000000] [--k 50] [--backends redis,sqlite]

Every user's top-k list (random item ids below ``--items``, descending float32 scores) is
generated chunk by chunk and encoded with :func:`serving.codec.encode_recs_matrix`; memory stays
bounded by one chunk, never the whole table. For each backend it times, on the same stream:

* Redis: rankline's versioned publish (write beside, verify count + sample, atomic switch)
  against the peer the issue names, a raw redis-py loop of ``MSET`` in batches of 1,000 (one
  round trip each), and, as the practical limit of one Python client, the same ``MSET`` batches
  pipelined 16 to a round trip;
* SQLite: rankline's publish against a raw, tuned ``executemany`` (16 KiB pages, WAL,
  synchronous=NORMAL, sorted keys, ``WITHOUT ROWID``, one transaction);

and the generator alone (the encoding cost both sides pay). It prints keys/s, MB/s of payload,
the ratios, bytes per user of the encoding against JSON text, and the memory the run added.
Uses the Redis at ``RANKLINE_REDIS_URL`` (default 127.0.0.1:6379) under its own prefix and
removes everything it wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from serving.codec import encode_recs_matrix

CHUNK = 10_000


def stream(n_users: int, k: int, n_items: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """``(user key, encoded top-k)`` for every user, in key order, a chunk at a time.

    One chunk of distinct random lists is encoded once and reused for every chunk (with new
    keys), so the stream costs little beside the store: the bench measures the store."""
    rng = np.random.default_rng(seed)
    width = len(str(n_users))
    ids = rng.integers(0, n_items, size=(CHUNK, k))
    scores = -np.sort(-rng.random((CHUNK, k), dtype=np.float32), axis=1)
    values = encode_recs_matrix(ids, scores)
    for start in range(0, n_users, CHUNK):
        n = min(CHUNK, n_users - start)
        keys = [f"{u:0{width}d}" for u in range(start, start + n)]  # sorted as text too
        yield from zip(keys, values[:n], strict=True)


def batches(it: Iterator[tuple[str, bytes]], size: int) -> Iterator[list[tuple[str, bytes]]]:
    batch: list[tuple[str, bytes]] = []
    for kv in it:
        batch.append(kv)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(label: str, fn, n: int, payload: int, results: dict) -> float:  # noqa: ANN001
    t = time.perf_counter()
    fn()
    dt = time.perf_counter() - t
    results[label] = n / dt
    print(f"  {label:<44}{dt:>8.2f} s{n / dt:>12,.0f} keys/s{payload / dt / 2**20:>9.1f} MB/s",
          flush=True)
    return dt


def best_of(results: dict[str, float]) -> dict[str, float]:
    """The best rate of each measurement over its repetitions (labels end in `` [rep]``)."""
    best: dict[str, float] = {}
    for label, rate in results.items():
        name = label.rsplit(" [", 1)[0]
        best[name] = max(best.get(name, 0.0), rate)
    return best


def time_rollback(store) -> None:  # noqa: ANN001
    """How long the switch back to the previous version takes (and forward again)."""
    times = []
    for _ in range(5):
        other = next(v.version for v in store.versions("recs") if v.state == "standby")
        t = time.perf_counter()
        store.rollback("recs", to=other, why="bench")
        times.append(time.perf_counter() - t)
    print(f"  rollback (switch between two kept 1M-key versions): median "
          f"{sorted(times)[2] * 1000:.2f} ms, max {max(times) * 1000:.2f} ms", flush=True)


def bench_redis(args: argparse.Namespace, n: int, payload: int) -> dict:
    import redis

    from serving.redis_store import RedisStore

    url = os.environ.get("RANKLINE_REDIS_URL", "redis://127.0.0.1:6379/0")
    r = redis.Redis.from_url(url)
    raw_prefix, prefix = f"rlbench_raw{os.getpid()}", f"rlbench{os.getpid()}"
    results: dict[str, float] = {}
    print(f"Redis {url} ({r.info('server')['redis_version']})")

    def purge(match: str) -> None:
        keys = []
        for key in r.scan_iter(match=match, count=10_000):
            keys.append(key)
            if len(keys) == 10_000:
                r.unlink(*keys)
                keys = []
        if keys:
            r.unlink(*keys)

    def settle() -> None:
        """Wait for Redis's background thread to free what UNLINK released: otherwise that
        work competes with whichever measurement comes next on these 2 cores."""
        while r.info("memory").get("lazyfree_pending_objects", 0):
            time.sleep(0.05)
        time.sleep(0.5)

    def raw_mset() -> None:
        for b in batches(stream(n, args.k, args.items), 1000):
            r.mset({f"{raw_prefix}:{k}": v for k, v in b})

    def raw_pipelined() -> None:
        pipe = r.pipeline(transaction=False)
        for i, b in enumerate(batches(stream(n, args.k, args.items), 1000), 1):
            pipe.mset({f"{raw_prefix}:{k}": v for k, v in b})
            if i % 16 == 0:
                pipe.execute()
        pipe.execute()

    store = RedisStore(url, prefix=prefix)
    mem0 = r.info("memory")["used_memory"]
    try:
        for rep in range(args.repeat):
            settle()
            timed(f"raw MSET x1000, one round trip each [{rep}]", raw_mset, n, payload, results)
            purge(f"{raw_prefix}:*")
            settle()
            timed(f"rankline RedisStore.publish [{rep}]",
                  lambda: store.publish("recs", stream(n, args.k, args.items), keep=2), n, payload,
                  results)
            if rep == 0:
                used = r.info("memory")["used_memory"] - mem0
                print(f"  Redis memory for one version: {used / n:.0f} B/user "
                      f"({used / 2**20:.0f} MiB)")
            settle()
            timed(f"raw MSET x1000, 16 per round trip [{rep}]", raw_pipelined, n, payload, results)
            purge(f"{raw_prefix}:*")
        time_rollback(store)
    finally:
        store.drop("recs")
        store.close()
        purge(f"{raw_prefix}:*")
    return best_of(results)


def bench_sqlite(args: argparse.Namespace, n: int, payload: int) -> dict:
    from serving.sqlite_store import SQLiteStore

    results: dict[str, float] = {}
    print("SQLite", sqlite3.sqlite_version)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for rep in range(args.repeat):
            raw_path = Path(tmp) / f"raw{rep}.db"

            def raw(raw_path: Path = raw_path) -> None:
                conn = sqlite3.connect(raw_path, isolation_level=None)
                conn.execute("PRAGMA page_size=16384")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("CREATE TABLE t(k TEXT PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
                conn.execute("BEGIN")
                for b in batches(stream(n, args.k, args.items), CHUNK):
                    conn.executemany("INSERT INTO t VALUES (?, ?)", b)
                conn.execute("COMMIT")
                conn.close()

            timed(f"raw tuned executemany [{rep}]", raw, n, payload, results)
            raw_path.unlink()
            store = SQLiteStore(Path(tmp) / "store.db")  # the same file: versions side by side
            timed(f"rankline SQLiteStore.publish [{rep}]",
                  lambda s=store: s.publish("recs", stream(n, args.k, args.items), keep=2), n,
                  payload, results)
        time_rollback(store)
        store.close()
    return best_of(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--items", type=int, default=50_000, help="catalogue size (ids below it)")
    parser.add_argument("--backends", default="redis,sqlite")
    parser.add_argument("--repeat", type=int, default=3, help="best of N")
    parser.add_argument("--tmp", default=None, help="folder for the SQLite files")
    args = parser.parse_args()
    n = args.users

    one = next(stream(1, args.k, args.items))[1]
    ids, scores = np.arange(args.k) + args.items - args.k, np.linspace(1, 0, args.k)
    as_json = json.dumps({"items": [{"item_id": int(i), "score": round(float(s), 6)}
                                    for i, s in zip(ids, scores, strict=True)]})
    payload = n * (len(one) + len(str(n)))
    print(f"{n:,} users x top-{args.k}: value {len(one)} B/user binary "
          f"(JSON text: {len(as_json)} B, {len(as_json) / len(one):.1f}x), "
          f"{payload / 2**20:.0f} MiB of keys+values")
    rss0 = rss_mib()
    gen: dict[str, float] = {}
    timed("the stream alone (no store)", lambda: sum(1 for _ in stream(n, args.k, args.items)),
          n, payload, gen)

    for backend in args.backends.split(","):
        best = bench_redis(args, n, payload) if backend == "redis" else bench_sqlite(args, n, payload)
        ours = next(v for k, v in best.items() if k.startswith("rankline"))
        for k, v in best.items():
            if not k.startswith("rankline"):
                print(f"  => rankline / {k}: {ours / v:.2f}x")
    print(f"peak RSS {rss_mib():.0f} MiB (started at {rss0:.0f} MiB): bounded by one chunk of "
          f"{CHUNK:,} users, not the {payload / 2**20:.0f} MiB table")


if __name__ == "__main__":
    main()
