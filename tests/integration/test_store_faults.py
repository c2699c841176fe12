"""The serving API under a stalled Redis, for real: its own ``redis-server`` (with a password) is
stopped with SIGSTOP while a real uvicorn serves the API from ``RANKLINE_*`` settings. The API
must answer 503 within the store timeout, keep serving requests that do not need the store,
recover once Redis runs again, and never show the password."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from serving.api import STORE_THREADS
from serving.client import COLD_START
from serving.codec import encode_recs
from serving.redis_store import RedisStore

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 1.5  # RANKLINE_STORE_TIMEOUT_S of the served API
MARGIN_S = 3.0  # generous: the machine may be loaded
PASSWORD = f"s3cret-{uuid.uuid4().hex[:8]}"
PREFIX = "rltest_faults"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(what: str, ready: Callable[[], bool], proc: subprocess.Popen, log: Path,
              deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}", pytrace=False)
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.1)
    pytest.fail(f"{what} not ready after {deadline_s} s:\n{log.read_text()[-3000:]}", pytrace=False)


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A redis-server of this test alone (it is stopped and resumed), with a password; its URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("these tests start their own Redis: put `redis-server` on PATH "
                    "(apt-get install redis-server)", pytrace=False)
    port, log = _free_port(), tmp_path / "redis.log"
    proc = subprocess.Popen(
        [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path), "--requirepass", PASSWORD, "--logfile", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    try:
        log.touch()
        _wait_for("redis-server", lambda: redis.Redis.from_url(url).ping(), proc, log, 20)
        yield url, proc
    finally:
        _stop(proc)


@pytest.fixture
def served(own_redis, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """A small published version, served by uvicorn (``app_from_settings``) in its own process."""
    url, redis_proc = own_redis
    store = RedisStore(url, prefix=PREFIX, timeout_s=TIMEOUT_S)
    lists = [(COLD_START, encode_recs(np.array([5, 6, 7]), np.array([3, 2, 1])))]
    lists += [(str(u), encode_recs(np.arange(20) + u, np.linspace(1, 0, 20))) for u in range(50)]
    store.publish("recs", lists, meta={"model_uri": "models:/m/1", "as_of": "2026-01-14"})
    store.close()

    port, log = _free_port(), tmp_path / "api.log"
    env = {**os.environ, "RANKLINE_HOME": str(tmp_path / "var"), "RANKLINE_STORE_BACKEND": "redis",
           "RANKLINE_REDIS_URL": url, "RANKLINE_REDIS_PREFIX": PREFIX, "RANKLINE_API_KEY": "",
           "RANKLINE_STORE_TIMEOUT_S": str(TIMEOUT_S)}
    with open(log, "w") as out:
        api = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "pipeline.serve:app_from_settings",
             "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for("the API", lambda: httpx.get(f"{base}/healthz").status_code == 200, api, log)
        yield base, redis_proc, log
    finally:
        _stop(api)


def test_a_stalled_redis_is_503_in_time_blocks_nothing_else_and_recovers(served, reliability):
    base, redis_proc, log = served
    with httpx.Client(base_url=base, timeout=60) as http:
        assert http.get("/v1/recommendations/7").json()["items"][0]["item_id"] == 7
        assert http.get("/openapi.json").status_code == 200  # the spec is built once, before
    os.kill(redis_proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        health = httpx.get(f"{base}/healthz", timeout=60)
        took = time.monotonic() - t0
        assert health.status_code == 503, health.text
        assert took < TIMEOUT_S + MARGIN_S, f"/healthz took {took:.1f} s with Redis stopped"
        assert f"did not answer within {TIMEOUT_S} s" in health.json()["detail"]

        # requests that need the store wait for it together; one that does not is not held up
        done: dict[int, tuple[float, httpx.Response]] = {}

        def stalled(user: int) -> None:
            r = httpx.get(f"{base}/v1/recommendations/{user}", timeout=60)
            done[user] = (time.monotonic(), r)

        n = STORE_THREADS + 8  # more than the API's store threads: some wait for a thread
        threads = [threading.Thread(target=stalled, args=(u,)) for u in range(n)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(TIMEOUT_S / 3)  # let them reach the server
        spec = httpx.get(f"{base}/openapi.json", timeout=60)
        spec_at = time.monotonic()
        for t in threads:
            t.join(60)
        assert spec.status_code == 200 and len(done) == n
        assert spec_at < min(at for at, _ in done.values()), "/openapi.json waited for the stalled store"
        assert [r.status_code for _, r in done.values()] == [503] * n
        assert all(PASSWORD not in r.text for _, r in done.values()) and PASSWORD not in health.text
        slowest = max(at for at, _ in done.values()) - t0
        assert slowest < TIMEOUT_S + MARGIN_S, f"{n} stalled requests took {slowest:.1f} s: serialized?"
        reliability("store fault", "Redis frozen by SIGSTOP (real uvicorn)",
                    f"/healthz 503 in {took:.1f} s; {n} reads 503 within {slowest:.1f} s; "
                    "/openapi.json answered first; 200 again after SIGCONT",
                    health.json()["detail"])
    finally:
        os.kill(redis_proc.pid, signal.SIGCONT)

    deadline = time.monotonic() + 30
    while (health := httpx.get(f"{base}/healthz", timeout=60)).status_code != 200:
        assert time.monotonic() < deadline, f"no recovery after SIGCONT: {health.text}"
        time.sleep(0.1)
    assert health.json()["store_version"] == 1
    r = httpx.get(f"{base}/v1/recommendations/7", params={"k": 3}, timeout=60)
    assert r.status_code == 200 and [i["item_id"] for i in r.json()["items"]] == [7, 8, 9]
    text = log.read_text()
    assert PASSWORD not in text and "Traceback" not in text, text[-3000:]
