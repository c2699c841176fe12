"""The production backend of :class:`serving.store.KVStore`: Redis.

Layout for namespace ``ns`` under prefix ``P`` (the ``{ns}`` hash tag keeps a namespace in one
cluster slot, so the scripts below may touch all its keys)::

    P:{ns}:cur          the live version number
    P:{ns}:seq          the last version number handed out
    P:{ns}:state        hash version -> writing | live | standby | removed | failed
    P:{ns}:info         hash version -> JSON {created_at, n_keys, meta}
    P:{ns}:d:<version>  hash key -> value: one version's data
    P:{ns}:lock         the publisher lock (token, expiring; renewed by a heartbeat thread)
    P:{ns}:events       list of JSON events, newest first (the last 1,000)

Each version's data is one hash, written with pipelined ``HSET`` of 1,000 fields. Every read is
one Lua script that reads the pointer and the values together: Redis runs a script atomically, so
a read never mixes versions and never meets a version half removed. Removing a version is an
``UNLINK`` of its hash, which Redis frees in a background thread: readers are not blocked.
The publisher lock expires ``lock_ttl`` seconds after its holder stops renewing it (a killed
publisher); a publisher that lost its lock cannot switch (the switch script checks the token).

Every call gives up after ``timeout_s`` (connect, each reply, and the wait for a free pooled
connection): a stalled or unreachable server is a :class:`StoreUnavailable`, never a hang. The URL
appears in messages and the repr only with its credentials hidden (:func:`redact_url`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import redis

from serving.store import (
    KVStore,
    StoreError,
    StoreUnavailable,
    VersionInfo,
    check_namespace,
    now,
    plan_cleanup,
    redact_url,
    rollback_target,
    who,
)

_FIELDS_PER_HSET = 1_000

# KEYS: cur, info; ARGV: data-key prefix, then the keys. Returns {version, info, v1, v2, ...}.
_READ = """
local v = redis.call('GET', KEYS[1])
if not v then return false end
local out = {v, redis.call('HGET', KEYS[2], v)}
local data = ARGV[1] .. v
local n = #ARGV
local i = 2
while i <= n do
  local j = math.min(i + 999, n)
  local vals = redis.call('HMGET', data, unpack(ARGV, i, j))
  for x = 1, j - i + 1 do out[#out + 1] = vals[x] end
  i = j + 1
end
return out
"""

# Both switches (publish and rollback): point ``cur`` at ``v``, the previous live version goes
# standby, and the event (JSON, completed with ``from``) is logged. Prepended to the scripts.
_MAKE_LIVE = """
local function make_live(cur, state, events, v, event)
  local prev = redis.call('GET', cur)
  if prev then redis.call('HSET', state, prev, 'standby') end
  redis.call('HSET', state, v, 'live')
  redis.call('SET', cur, v)
  local ev = cjson.decode(event)
  ev['from'] = prev and tonumber(prev) or cjson.null
  redis.call('LPUSH', events, cjson.encode(ev))
  redis.call('LTRIM', events, 0, 999)
  return prev
end
"""

# KEYS: lock, cur, state, info, events; ARGV: token, version, info json, event json.
_SWITCH = _MAKE_LIVE + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('publisher lock lost before the switch')
end
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
return make_live(KEYS[2], KEYS[3], KEYS[5], ARGV[2], ARGV[4])
"""

# KEYS: cur, state, events; ARGV: data-key prefix, target version, event json.
_ROLLBACK = _MAKE_LIVE + """
if redis.call('HGET', KEYS[2], ARGV[2]) ~= 'standby' then
  return redis.error_reply('version ' .. ARGV[2] .. ' is no longer kept')
end
return make_live(KEYS[1], KEYS[2], KEYS[3], ARGV[2], ARGV[3])
"""

# KEYS: cur, state; ARGV: data-key prefix, then pairs (version, new state) decided by the caller
# from a snapshot; a version whose state changed since (a rollback made it live) is skipped.
_CLEANUP = """
local live = redis.call('GET', KEYS[1])
local done = 0
for i = 1, #ARGV - 1, 3 do
  local v, old, new = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if v ~= live and redis.call('HGET', KEYS[2], v) == old then
    redis.call('UNLINK', ARGV[1] .. v)
    redis.call('HSET', KEYS[2], v, new)
    done = done + 1
  end
end
return done
"""

# KEYS: lock; ARGV: token, ttl ms. Renew or release only a lock we still hold.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStore(KVStore):
    """Versioned namespaces in Redis, read through one connection pool.

    ``timeout_s`` bounds every call (None: wait forever); ``url`` is kept only with its
    credentials hidden, for messages."""

    def __init__(
        self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "rankline",
        batch_size: int = 10_000, lock_ttl: float = 15.0, lock_wait: float = 600.0,
        max_connections: int = 64, timeout_s: float | None = 2.0,
    ) -> None:
        self.url, self.prefix, self.batch_size = redact_url(url), prefix, batch_size
        self.lock_ttl, self.lock_wait, self.timeout_s = lock_ttl, lock_wait, timeout_s
        self.r = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout_s, socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s))
        self._read = self.r.register_script(_READ)
        self._switch_script = self.r.register_script(_SWITCH)
        self._rollback_script = self.r.register_script(_ROLLBACK)
        self._cleanup_script = self.r.register_script(_CLEANUP)
        self._renew = self.r.register_script(_RENEW)
        self._release = self.r.register_script(_RELEASE)
        self._lost: set[str] = set()

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, prefix={self.prefix!r})"

    @contextlib.contextmanager
    def _reachable(self) -> Iterator[None]:
        """Turn a connection failure or a timeout into :class:`StoreUnavailable`."""
        try:
            yield
        except redis.TimeoutError as exc:
            raise StoreUnavailable(f"Redis at {self.url} did not answer within {self.timeout_s} s "
                                   f"(RANKLINE_STORE_TIMEOUT_S): {exc}") from exc
        except redis.ConnectionError as exc:
            raise StoreUnavailable(f"Redis at {self.url} is not reachable: {exc}") from exc
        except redis.ResponseError as exc:  # BUSY, NOPERM, LOADING...: the server refuses now
            raise StoreUnavailable(f"Redis at {self.url} refused the command: {exc}") from exc

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` if the server cannot be reached."""
        with self._reachable():
            self.r.ping()

    def publish(
        self, namespace: str, items: Iterable[tuple[str, bytes]], meta: dict[str, Any] | None = None,
        keep: int = 3, verify_sample: int = 100,
    ) -> VersionInfo:
        """:meth:`KVStore.publish`, with a lost server reported as :class:`StoreUnavailable`."""
        with self._reachable():
            return super().publish(namespace, items, meta, keep, verify_sample)

    def _k(self, ns: str, name: str) -> str:
        return f"{self.prefix}:{{{ns}}}:{name}"

    def _data(self, ns: str, version: int | str = "") -> str:
        return self._k(ns, f"d:{version}")

    @staticmethod
    def _decode_info(ns: str, version: int, state: str, raw: bytes | None) -> VersionInfo:
        d = json.loads(raw) if raw else {}
        return VersionInfo(ns, version, state, d.get("created_at", ""), int(d.get("n_keys", 0)),
                           d.get("meta", {}))

    # -- publish steps --------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self, ns: str) -> Iterator[str]:
        key = self._k(ns, "lock")
        token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        ttl_ms = max(1, int(self.lock_ttl * 1000))
        deadline = time.monotonic() + self.lock_wait
        while not self.r.set(key, token, nx=True, px=ttl_ms):
            if time.monotonic() > deadline:
                holder = self.r.get(key)
                raise StoreError(f"{ns}: another publisher holds the lock ({holder!r}) for more "
                                 f"than {self.lock_wait:.0f} s")
            time.sleep(0.05)
        stop = threading.Event()

        def heartbeat() -> None:
            while not stop.wait(self.lock_ttl / 3):
                try:
                    if not self._renew(keys=[key], args=[token, ttl_ms]):
                        self._lost.add(token)
                        return
                except redis.RedisError:
                    pass  # transient; the lock may still be ours at the next beat

        beat = threading.Thread(target=heartbeat, name=f"rankline-lock-{ns}", daemon=True)
        beat.start()
        try:
            yield token
        finally:
            stop.set()
            beat.join()
            with contextlib.suppress(redis.RedisError):
                self._release(keys=[key], args=[token])
            self._lost.discard(token)

    def _check_lock(self, ns: str, token: str) -> None:
        if token in self._lost or self.r.get(self._k(ns, "lock")) != token.encode():
            raise StoreError(f"{ns}: the publisher lock expired while publishing (stalled longer "
                             f"than lock_ttl={self.lock_ttl} s?); nothing was switched")

    def _begin(self, ns: str, meta: dict[str, Any]) -> int:
        version = int(self.r.incr(self._k(ns, "seq")))
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self._k(ns, "state"), str(version), "writing")
        pipe.hset(self._k(ns, "info"), str(version),
                  json.dumps({"created_at": now(), "n_keys": 0, "meta": meta}))
        pipe.execute()
        return version

    def _write(self, ns: str, version: int, batch: list[tuple[str, bytes]]) -> None:
        data = self._data(ns, version)
        pipe = self.r.pipeline(transaction=False)
        it = iter(batch)
        while chunk := list(itertools.islice(it, _FIELDS_PER_HSET)):
            pipe.execute_command("HSET", data, *itertools.chain.from_iterable(chunk))
        pipe.execute()

    def _count(self, ns: str, version: int) -> int:
        return int(self.r.hlen(self._data(ns, version)))

    def _read_version(self, ns: str, version: int, keys: Sequence[str]) -> list[bytes | None]:
        return self.r.hmget(self._data(ns, version), list(keys)) if keys else []

    def _switch(self, ns: str, version: int, n_keys: int, token: str) -> None:
        info = json.loads(self.r.hget(self._k(ns, "info"), str(version)))
        info["n_keys"] = n_keys
        event = {"at": now(), "action": "publish", "to": version, "who": who(), "why": ""}
        try:
            self._switch_script(
                keys=[self._k(ns, n) for n in ("lock", "cur", "state", "info", "events")],
                args=[token, str(version), json.dumps(info), json.dumps(event)])
        except redis.ResponseError as exc:
            raise StoreError(f"{ns}: {exc}; version {version} was not switched") from exc

    def _cleanup(self, ns: str, keep: int) -> None:
        states = {int(v): s.decode() for v, s in self.r.hgetall(self._k(ns, "state")).items()}
        cur = self.r.get(self._k(ns, "cur"))
        plan = plan_cleanup({v: s for v, s in states.items() if s in ("live", "standby", "writing")},
                            int(cur) if cur else None, keep)
        if plan:
            args: list[str] = [self._data(ns)]
            for version, new in plan.items():
                args += [str(version), states[version], new]
            self._cleanup_script(keys=[self._k(ns, "cur"), self._k(ns, "state")], args=args)

    # -- reads and administration ---------------------------------------------------------
    def get_many(self, namespace: str, keys: Sequence[str]) -> tuple[list[bytes | None], VersionInfo]:
        ns = check_namespace(namespace)
        with self._reachable():
            out = self._read(keys=[self._k(ns, "cur"), self._k(ns, "info")],
                             args=[self._data(ns), *keys])
        if not out:
            raise StoreError(f"namespace {ns!r} has no published version yet")
        version = int(out[0])
        return list(out[2:]), self._decode_info(ns, version, "live", out[1])

    def current(self, namespace: str) -> VersionInfo | None:
        ns = check_namespace(namespace)
        with self._reachable():
            out = self._read(keys=[self._k(ns, "cur"), self._k(ns, "info")], args=[self._data(ns)])
        return self._decode_info(ns, int(out[0]), "live", out[1]) if out else None

    def versions(self, namespace: str) -> list[VersionInfo]:
        ns = check_namespace(namespace)
        pipe = self.r.pipeline(transaction=True)
        pipe.hgetall(self._k(ns, "state"))
        pipe.hgetall(self._k(ns, "info"))
        with self._reachable():
            states, infos = pipe.execute()
        return [self._decode_info(ns, int(v), s.decode(), infos.get(v))
                for v, s in sorted(states.items(), key=lambda kv: -int(kv[0]))]

    def rollback(self, namespace: str, to: int | None = None, why: str = "",
                 by: str | None = None) -> VersionInfo:
        ns = check_namespace(namespace)
        with self._reachable():
            cur = self.r.get(self._k(ns, "cur"))
            if cur is None:
                raise StoreError(f"namespace {ns!r} has nothing published to roll back")
            states = {int(v): s.decode() for v, s in self.r.hgetall(self._k(ns, "state")).items()}
            target = rollback_target(int(cur), states, to, ns)
            event = {"at": now(), "action": "rollback", "to": target, "who": by or who(),
                     "why": why}
            try:
                self._rollback_script(
                    keys=[self._k(ns, "cur"), self._k(ns, "state"), self._k(ns, "events")],
                    args=[self._data(ns), str(target), json.dumps(event)])
            except redis.ResponseError as exc:
                raise StoreError(f"{ns}: {exc}") from exc
        return self.current(ns)  # type: ignore[return-value]

    def events(self, namespace: str, limit: int = 50) -> list[dict[str, Any]]:
        with self._reachable():
            raw = self.r.lrange(self._k(check_namespace(namespace), "events"), 0, limit - 1)
        return [json.loads(e) for e in raw]

    def drop(self, namespace: str) -> None:
        ns = check_namespace(namespace)
        with self._reachable(), self._lock(ns):
            keys = [k for k in self.r.scan_iter(match=f"{self.prefix}:{{{ns}}}:*", count=1000)
                    if not k.endswith(b":lock")]
            for i in range(0, len(keys), 500):
                self.r.unlink(*keys[i:i + 500])

    def close(self) -> None:
        self.r.close()
        self.r.connection_pool.disconnect()
