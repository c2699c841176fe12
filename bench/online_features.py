"""Online features on Redis: rankline's materialize and reads against Feast, same data, same Redis.

    .venv/bin/python bench/online_features.py [--entities 200000] [--features 10]

Builds Feast 0.67 in its own virtual environment (``var/bench/feast-venv``, once; it pins
dependencies rankline's environment does not share), writes one Parquet file of ``--entities``
rows x ``--features`` float32 features, then in the same run:

* Feast: ``feast apply`` of a FileSource feature view with a Redis online store, timed
  ``FeatureStore.materialize`` of the whole file, and ``get_online_features(...).to_dict()``
  latency for 1 and for 100 entities;
* rankline: read the same file and publish it as one new version of the ``features`` namespace
  (:func:`feature_store.online.materialize_frames`: write beside, verify, atomic switch), and
  :func:`feature_store.online.get_online_features` latency for 1 and 100 entities.

Prints rows/s, the ratio (the goal is at least 7x), p50/p99 read latencies, and Redis memory
per entity for both. Both use the Redis at ``RANKLINE_REDIS_URL`` (default 127.0.0.1:6379),
under their own prefix/project, and remove what they wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
FEAST_VERSION = "0.67.0"

FEAST_SCRIPT = r'''
import datetime as dt, json, sys, time
import numpy as np
import redis
from feast import Entity, FeatureStore, FeatureView, Field, FileSource
from feast.types import Float32, Int64

repo, data, n_features, host, port, db, reps = sys.argv[1:8]
n_features, reps = int(n_features), int(reps)
with open(f"{repo}/feature_store.yaml", "w") as fh:
    fh.write(f"""project: rlbench_feast
registry: {repo}/registry.db
provider: local
online_store:
  type: redis
  connection_string: "{host}:{port},db={db}"
offline_store:
  type: file
entity_key_serialization_version: 3
""")
r = redis.Redis(host=host, port=int(port), db=int(db))
store = FeatureStore(repo_path=repo)
entity = Entity(name="entity", join_keys=["entity_id"])
source = FileSource(path=data, timestamp_field="event_timestamp")
fv = FeatureView(name="bench", entities=[entity], ttl=dt.timedelta(days=30),
                 schema=[Field(name="entity_id", dtype=Int64)]
                        + [Field(name=f"f{i}", dtype=Float32) for i in range(n_features)],
                 source=source, online=True)
store.apply([entity, fv])
mem0 = r.info("memory")["used_memory"]
t = time.perf_counter()
store.materialize(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
                  dt.datetime(2026, 1, 3, tzinfo=dt.timezone.utc))
materialize_s = time.perf_counter() - t
mem = r.info("memory")["used_memory"] - mem0
refs = [f"bench:f{i}" for i in range(n_features)]
n = int(sys.argv[8])
rng = np.random.default_rng(1)
lat = {}
check = None
for size in (1, 100):
    times = []
    for rep in range(reps + 20):
        ids = [int(x) for x in rng.integers(0, n, size)]
        t = time.perf_counter()
        out = store.get_online_features(features=refs, entity_rows=[{"entity_id": i} for i in ids]).to_dict()
        if rep >= 20:
            times.append(time.perf_counter() - t)
        if check is None:
            check = (ids[0], out["f0"][0], out["f9"][0] if n_features > 9 else None)
    lat[size] = times
store.teardown()
print(json.dumps({"materialize_s": materialize_s, "redis_bytes": mem, "lat": lat, "check": check}))
'''


def feast_python(venv: Path) -> Path:
    """The Python of a virtual environment with Feast, built on first use."""
    py = venv / "bin" / "python"
    if not py.exists() or subprocess.run([py, "-c", f"import feast; assert feast.__version__ == "
                                          f"'{FEAST_VERSION}'"], capture_output=True).returncode:
        print(f"building Feast {FEAST_VERSION} in {venv} (once) ...", flush=True)
        subprocess.run(["python3.11", "-m", "venv", str(venv)], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", f"feast[redis]=={FEAST_VERSION}"],
                       check=True)
    return py


def percentiles(times: list[float]) -> str:
    ms = np.asarray(times) * 1000
    return f"p50 {np.percentile(ms, 50):7.3f} ms   p99 {np.percentile(ms, 99):7.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--reads", type=int, default=1000, help="timed reads per batch size")
    parser.add_argument("--feast-venv", type=Path, default=ROOT / "var" / "bench" / "feast-venv")
    args = parser.parse_args()

    import redis

    from feature_store.online import get_online_features, materialize_frames
    from serving.redis_store import RedisStore

    url = os.environ.get("RANKLINE_REDIS_URL", "redis://127.0.0.1:6379/0")
    conn = redis.Redis.from_url(url)
    kw = conn.connection_pool.connection_kwargs
    host, port, db = kw.get("host", "127.0.0.1"), kw.get("port", 6379), kw.get("db", 0)
    py = feast_python(args.feast_venv)

    n, width = args.entities, args.features
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(width)]
    df = pd.DataFrame(rng.random((n, width), dtype=np.float32), columns=names)
    df.insert(0, "entity_id", np.arange(n, dtype=np.int64))
    df["event_timestamp"] = pd.Timestamp("2026-01-02", tz="UTC")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "features.parquet"
        df.to_parquet(data, index=False)
        del df
        print(f"{n:,} entities x {width} float32 features; Redis {url}", flush=True)

        # rankline: read the file, publish one version, read back.
        store = RedisStore(url, prefix=f"rlbench_online{os.getpid()}")
        mem0 = conn.info("memory")["used_memory"]
        t = time.perf_counter()
        frame = pd.read_parquet(data)
        store_info = materialize_frames(store, [("bench", frame, ["entity_id"], names)], meta={})
        ours_s = time.perf_counter() - t
        ours_mem = conn.info("memory")["used_memory"] - mem0
        assert store_info.n_keys == n
        got, _ = get_online_features(store, "bench", [7], width)
        np.testing.assert_allclose(got[0], frame.loc[7, names].to_numpy(np.float32))
        ours_lat = {}
        for size in (1, 100):
            times = []
            for rep in range(args.reads + 20):
                ids = rng.integers(0, n, size).tolist()
                t = time.perf_counter()
                get_online_features(store, "bench", ids, width)
                if rep >= 20:
                    times.append(time.perf_counter() - t)
            ours_lat[size] = times
        store.drop("features")
        store.close()

        # Feast, in its own environment, on the same file and the same Redis.
        repo = Path(tmp) / "feast_repo"
        repo.mkdir()
        res = subprocess.run([py, "-c", FEAST_SCRIPT, str(repo), str(data), str(width), str(host),
                              str(port), str(db), str(args.reads), str(n)],
                             capture_output=True, text=True)
        if res.returncode:
            sys.exit(f"Feast run failed:\n{res.stderr[-4000:]}")
        feast = json.loads(res.stdout.strip().splitlines()[-1])
        fid, f0, _ = feast["check"]
        assert abs(f0 - float(frame.loc[fid, "f0"])) < 1e-6, "Feast read back another value"

    feast_rate, ours_rate = n / feast["materialize_s"], n / ours_s
    print(f"materialize  Feast {FEAST_VERSION}: {feast['materialize_s']:7.2f} s {feast_rate:>10,.0f} rows/s"
          f"   Redis memory {feast['redis_bytes'] / n:5.0f} B/entity")
    print(f"materialize  rankline    : {ours_s:7.2f} s {ours_rate:>10,.0f} rows/s"
          f"   Redis memory {ours_mem / n:5.0f} B/entity")
    print(f"  => rankline / Feast materialize: {ours_rate / feast_rate:.1f}x (goal: at least 7x)")
    for size in (1, 100):
        print(f"read {size:>3} entities  Feast    : {percentiles(feast['lat'][str(size)])}")
        print(f"read {size:>3} entities  rankline : {percentiles(ours_lat[size])}")
        print(f"  => p50 ratio Feast / rankline: "
              f"{np.median(feast['lat'][str(size)]) / np.median(ours_lat[size]):.1f}x")


if __name__ == "__main__":
    main()
