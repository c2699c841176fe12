"""The store under real processes, on every backend: publishers killed with SIGKILL at random
moments while reader processes read, and readers reading through publishes and a rollback."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.store_support import data_versions, open_spec
from tests.store_worker import check, items

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
N_KEYS = 30_000
LOCK_TTL = 1.0  # Redis publisher lease in these tests: a killed publisher's lock frees in 1 s


def _worker(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.store_worker", *args], cwd=ROOT,
                            text=True, **kw)


class Readers:
    """Reader processes that read random keys continuously until stopped."""

    def __init__(self, spec: str, tmp_path: Path, n: int = 2) -> None:
        self.stop = tmp_path / "stop"
        self.outs = [tmp_path / f"reader{i}.json" for i in range(n)]
        self.procs = [_worker("read", spec, str(N_KEYS), str(self.stop), str(o),
                              stdout=subprocess.PIPE) for o in self.outs]

    def ready(self) -> None:
        """Wait until every reader has done its first read (start-up is slow on a busy host)."""
        for p in self.procs:
            assert p.stdout.readline().strip() == "ready"

    def finish(self) -> list[dict]:
        self.stop.touch()
        for p in self.procs:
            assert p.wait(timeout=60) == 0
            p.stdout.close()
        return [json.loads(o.read_text()) for o in self.outs]

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def readers(store_spec, tmp_path):
    """Start reader processes with ``readers(n)``; they are killed at teardown if still running."""
    started: list[Readers] = []

    def start(n: int = 2) -> Readers:
        started.append(Readers(store_spec, tmp_path, n))
        return started[-1]

    yield start
    for r in started:
        r.kill()


def _assert_consistent(store, spec: str, keep: int = 3) -> None:
    """One live version, holding every key with its own values; nothing unfinished; only kept
    versions have data."""
    live = store.current("recs")
    keys = [f"k{i}" for i in random.sample(range(N_KEYS), 500)]
    values, info = store.get_many("recs", keys)
    assert info.version == live.version and check(values, keys, info.meta["tag"])
    assert live.n_keys == N_KEYS
    states = {v.version: v.state for v in store.versions("recs")}
    assert list(states.values()).count("live") == 1 and "writing" not in states.values()
    kept = {v for v, s in states.items() if s in ("live", "standby")}
    assert len(kept) <= keep and data_versions(spec, "recs") == kept, (states, data_versions(spec, "recs"))


def test_publisher_killed_at_random_moments(store_spec, readers):
    store = open_spec(store_spec, batch_size=5000, **({"lock_ttl": LOCK_TTL}
                                                      if store_spec.startswith("redis") else {}))
    store.publish("recs", items("t0", N_KEYS), meta={"tag": "t0"})
    reading = readers(2)
    reading.ready()
    pub_args = ["--throttle-ms", "5", "--lock-ttl", str(LOCK_TTL)]

    # One publisher run to the end: how long a publish takes once the process has started.
    p = _worker("publish", store_spec, "cal", str(N_KEYS), *pub_args, stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == "start"
    t0 = time.monotonic()
    assert p.wait(timeout=120) == 0
    span = time.monotonic() - t0

    rng, outcomes = random.Random(20261121), Counter()
    for trial in range(20):
        before = store.current("recs")
        p = _worker("publish", store_spec, f"kill{trial}", str(N_KEYS), *pub_args,
                    stdout=subprocess.PIPE)
        assert p.stdout.readline().strip() == "start"
        time.sleep(rng.uniform(0, span * 1.1))
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        after = store.current("recs")
        outcomes["served the previous version" if after.version == before.version
                 else "served the killed publisher's finished version"] += 1
        # What was served stays whole; the next publish succeeds and removes the leftovers.
        assert after.meta["tag"] in (before.meta["tag"], f"kill{trial}")
        info = store.publish("recs", items(f"next{trial}", N_KEYS), meta={"tag": f"next{trial}"})
        assert info.meta["tag"] == f"next{trial}"
        _assert_consistent(store, store_spec)

    results = reading.finish()
    print(f"\n{store_spec.split(':')[0]}: 20 SIGKILLs, {dict(outcomes)}; readers: "
          f"{[(r['reads'], r['mixed'], r['n_errors']) for r in results]} (reads, mixed, errors)")
    assert all(r["mixed"] == 0 and r["n_errors"] == 0 for r in results), results
    assert all(r["reads"] > 0 for r in results)
    store.close()


def test_readers_read_through_publishes_and_a_rollback(store_spec, readers):
    store = open_spec(store_spec, batch_size=5000)
    store.publish("recs", items("p0", N_KEYS), meta={"tag": "p0"})
    reading = readers(3)
    reading.ready()
    for i in range(1, 6):
        store.publish("recs", items(f"p{i}", N_KEYS), meta={"tag": f"p{i}"})
        time.sleep(0.1)  # the readers get a turn with each version
    store.rollback("recs", why="test")
    assert store.current("recs").meta["tag"] == "p4"
    time.sleep(0.3)
    results = reading.finish()
    print(f"\n{store_spec.split(':')[0]}: 5 publishes + 1 rollback; readers: "
          f"{[(r['reads'], r['mixed'], r['n_errors'], sorted(r['versions'])) for r in results]}")
    assert all(r["mixed"] == 0 and r["n_errors"] == 0 for r in results), results
    seen = set().union(*(map(int, r["versions"]) for r in results))
    assert len(seen) >= 3, seen  # the readers really read across switches
    _assert_consistent(store, store_spec)
    store.close()
