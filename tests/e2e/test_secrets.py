"""No secret leaks: a Redis password, an API key and a tracking-database password are planted,
the pipeline runs through Airflow with them (ingest, refresh, serving, a store outage), and every
place a secret could surface is searched for them.

Searched: every HTTP response body and header (healthz and recommendations, with the store up
and down, with and without the key), the API server's log, every CLI run's stdout and stderr
(Airflow's task logs of ``dag.test()`` runs included), every file under ``RANKLINE_HOME``
(Airflow's database with its XComs, confs and task records, MLflow's SQLite database and
artifacts, validation reports, the stores, the Parquet data), the MLflow tables in Postgres
(params, tags, metrics, run names), every key and value in the Redis server, and the reprs and
error messages of the settings, the store and the client.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import free_port, rankline, run_cli, serve

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

MARK = "pl4nted"
REDIS_PW = f"{MARK}-redis-pw"
API_KEY = f"{MARK}-api-key"
PG_PW = f"{MARK}-pg-pw"
SECRETS = (REDIS_PW, API_KEY, PG_PW)
PG = "127.0.0.1:5432"


def _leaks(text: str | bytes) -> list[str]:
    raw = text.encode() if isinstance(text, str) else text
    return [s for s in SECRETS if s.encode() in raw]


@pytest.fixture
def redis_with_password(tmp_path):
    """A Redis server of our own on a free port that requires ``REDIS_PW``."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", REDIS_PW],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port, password=REDIS_PW)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        pytest.fail("redis-server did not start (is it installed? `apt-get install redis-server`)")
    yield port, proc, client
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def postgres_db():
    """A fresh database on the local Postgres (trust auth: any password is accepted, so a
    planted one travels in the URL without being needed)."""
    import psycopg

    name = f"rltest_secrets_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres",
                                autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"Postgres at {PG} is needed: {exc}. Start it with "
                    "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`")
    admin.execute(f"CREATE DATABASE {name}")
    yield name
    admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


def _postgres_text(db: str) -> str:
    """Every row of every table of ``db`` as text."""
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname=db) as conn:
        cur = conn.cursor()
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        tables = [t for (t,) in cur.fetchall()]
        out = []
        for t in tables:
            cur.execute(f'SELECT t::text FROM "{t}" t')
            out += [r for (r,) in cur.fetchall()]
    assert "runs" in tables and "params" in tables, tables
    return "\n".join(out)


def test_planted_secrets_appear_nowhere(demo, redis_with_password, postgres_db, tmp_path):
    home, env, _ = demo
    port, redis_proc, redis_client = redis_with_password
    prefix = f"rltest_secrets_{os.getpid()}"
    secret_env = {**env, "RANKLINE_STORE_BACKEND": "redis", "RANKLINE_REDIS_PREFIX": prefix,
                  "RANKLINE_REDIS_URL": f"redis://default:{REDIS_PW}@127.0.0.1:{port}/0",
                  "RANKLINE_API_KEY": API_KEY, "RANKLINE_STORE_TIMEOUT_S": "1"}
    pg_env = {**secret_env,
              "RANKLINE_MLFLOW_TRACKING_URI": f"postgresql://postgres:{PG_PW}@{PG}/{postgres_db}"}
    seen: dict[str, str] = {}

    # one ingest day tracked in Postgres (features materialized into the Redis), one refresh
    # published to the Redis, the store listed, a bad setting reported
    res = run_cli(pg_env, "run-dag", "ingest", "--date", "2026-01-15")
    seen["ingest output"] = res.stdout + res.stderr
    res = run_cli(secret_env, "run-dag", "hulk_refresh")
    seen["refresh output"] = res.stdout + res.stderr
    seen["store versions"] = rankline(secret_env, "store", "versions")
    res = run_cli({**pg_env, "RANKLINE_TOP_K": "-1"}, "store", "versions", check=False)
    assert res.returncode == 2 and "RANKLINE_TOP_K" in res.stderr
    seen["bad setting"] = res.stdout + res.stderr

    keys = list(redis_client.scan_iter(match=f"{prefix}:*", count=1000))
    assert keys, "the refresh published nothing to the planted-password Redis"
    for key in keys:
        kind = redis_client.type(key)
        value = {b"string": redis_client.get, b"hash": redis_client.hgetall,
                 b"list": lambda k: redis_client.lrange(k, 0, -1)}[kind](key)
        seen[f"redis {key!r}"] = repr(key) + repr(value)

    log = tmp_path / "api.log"
    with serve(secret_env, log) as (base, health):
        assert health["status"] == "ok"
        answers = [httpx.get(f"{base}/healthz"),
                   httpx.get(f"{base}/v1/recommendations/5", headers={"X-API-Key": API_KEY}),
                   httpx.get(f"{base}/v1/recommendations/5"),
                   httpx.get(f"{base}/v1/recommendations/5", headers={"X-API-Key": "wrong"}),
                   httpx.get(f"{base}/openapi.json")]
        assert [a.status_code for a in answers] == [200, 200, 401, 401, 200]
        os.kill(redis_proc.pid, signal.SIGSTOP)  # a stalled store
        stalled = [httpx.get(f"{base}/healthz", timeout=30),
                   httpx.get(f"{base}/v1/recommendations/5", headers={"X-API-Key": API_KEY},
                             timeout=30)]
        os.kill(redis_proc.pid, signal.SIGCONT)
        redis_proc.terminate()
        redis_proc.wait(timeout=10)  # a store that is gone
        gone = [httpx.get(f"{base}/healthz", timeout=30),
                httpx.get(f"{base}/v1/recommendations/5", headers={"X-API-Key": API_KEY},
                          timeout=30)]
        assert [a.status_code for a in stalled + gone] == [503] * 4
        assert "RANKLINE_STORE_TIMEOUT_S" in stalled[0].text
        for i, a in enumerate(answers + stalled + gone):
            seen[f"HTTP {a.request.url} #{i}"] = a.text + repr(dict(a.headers))
    seen["API server log"] = log.read_text(errors="replace")

    # reprs and messages, in this process
    from pipeline.settings import Settings
    from serving.redis_store import RedisStore
    from serving.store import StoreError

    s = Settings(_env_file=None, redis_url=secret_env["RANKLINE_REDIS_URL"], api_key=API_KEY,
                 mlflow_tracking_uri=pg_env["RANKLINE_MLFLOW_TRACKING_URI"])
    seen["repr(Settings)"] = repr(s) + str(s)
    store = RedisStore(secret_env["RANKLINE_REDIS_URL"], prefix=prefix, timeout_s=0.5)
    seen["repr(RedisStore)"] = repr(store)
    with pytest.raises(StoreError) as err:
        store.current("recs")
    seen["store error"] = str(err.value) + repr(err.value)
    store.close()

    mlflow_text = _postgres_text(postgres_db)
    assert "rankline_features" in mlflow_text or "ingest" in mlflow_text  # the run is there
    seen["MLflow tables in Postgres"] = mlflow_text

    files = [p for p in Path(home).rglob("*") if p.is_file()]
    assert any(p.name == "airflow.db" for p in files) and any(p.name == "mlflow.db" for p in files)
    for path in files:
        seen[f"file {path.relative_to(home)}"] = path.read_bytes()  # type: ignore[assignment]

    leaks = {where: _leaks(text) for where, text in seen.items() if _leaks(text)}
    assert not leaks, f"secrets leaked: {leaks}"
    assert len(seen) > 40
