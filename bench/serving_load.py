"""Load test of the serving API on the Redis backend: wrk against uvicorn on 127.0.0.1.

    .venv/bin/python bench/serving_load.py [--users 1000000] [--duration 60] [--connections 64]

Publishes ``--users`` top-50 lists (and the cold-start list) to Redis under a prefix of its own,
starts ``uvicorn pipeline.serve:app_from_settings`` (``--workers`` processes, the Redis backend, an
API key), waits for ``/healthz``, then runs wrk (Debian's ``wrk`` package) for ``--duration``
seconds. Each request asks for a random user, one in eleven unknown (the cold-start path), with a
random ``k`` from 1 to 50 and the API key header. Prints requests/s, latency p50/p90/p99,
and errors (socket errors and non-2xx answers; the goal is zero; exits 1 otherwise). Removes
what it wrote.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

WRK_SCRIPT = """
math.randomseed(os.time())
wrk.headers["X-API-Key"] = "%(key)s"
request = function()
  local u = math.random(0, %(span)d)
  return wrk.format("GET", string.format("/v1/recommendations/%%0%(width)dd?k=%%d", u, math.random(1, 50)))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk from Debian (apt-get install wrk) ...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False,
                       stdout=subprocess.DEVNULL)
        if shutil.which("wrk"):
            return shutil.which("wrk")  # type: ignore[return-value]
    sys.exit("wrk is not installed: apt-get install wrk")


def to_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--duration", type=int, default=60, help="seconds of load")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    args = parser.parse_args()

    import numpy as np
    from store_publish import stream

    from serving.client import COLD_START
    from serving.codec import encode_recs
    from serving.redis_store import RedisStore

    wrk = wrk_binary()
    url = os.environ.get("RANKLINE_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix, key = f"rlbench_serve{os.getpid()}", "bench-key"
    store = RedisStore(url, prefix=prefix)
    width = len(str(args.users))
    cold = (COLD_START, encode_recs(np.arange(50), np.linspace(1, 0, 50)))
    t = time.perf_counter()
    store.publish("recs", _with(cold, stream(args.users, 50, 50_000)),
                  meta={"model_uri": "models:/bench/1", "as_of": "2026-01-14"})
    print(f"published {args.users:,} users to {url} prefix {prefix} in "
          f"{time.perf_counter() - t:.1f} s", flush=True)

    port = free_port()
    env = {**os.environ, "RANKLINE_STORE_BACKEND": "redis", "RANKLINE_REDIS_URL": url,
           "RANKLINE_REDIS_PREFIX": prefix, "RANKLINE_API_KEY": key}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "pipeline.serve:app_from_settings", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers),
         "--log-level", "warning", "--no-access-log"], cwd=ROOT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).json()["status"] == "ok":
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            sys.exit("uvicorn did not come up")
        probe = httpx.get(f"{base}/v1/recommendations/{0:0{width}d}", params={"k": 3},
                          headers={"X-API-Key": key}).json()
        assert len(probe["items"]) == 3 and not probe["cold_start"], probe
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
            fh.write(WRK_SCRIPT % {"key": key, "span": args.users * 11 // 10, "width": width})
        cmd = [wrk, "-t", str(args.threads), "-c", str(args.connections), "-d",
               f"{args.duration}s", "--latency", "-s", fh.name, base]
        print("$", " ".join(cmd), flush=True)
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        os.unlink(fh.name)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        store.drop("recs")
        store.close()
    print(out)

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {p: to_ms(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M)}
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    sock_errors = sum(map(int, sock.groups())) if sock else 0
    print(f"summary: {args.duration} s, {args.connections} connections, {args.workers} uvicorn "
          f"workers, Redis backend: {rps:,.0f} req/s, p50 {lat['50']:.2f} ms, p90 {lat['90']:.2f} ms, "
          f"p99 {lat['99']:.2f} ms; {total:,} requests, {non2xx} non-2xx, {sock_errors} socket errors")
    if non2xx or sock_errors:
        sys.exit(1)


def _with(first, rest):  # noqa: ANN001, ANN202 - the cold-start list, then the users (key order)
    yield first
    yield from rest


if __name__ == "__main__":
    main()
