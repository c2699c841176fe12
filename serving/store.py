"""The versioned key-value store that served predictions and online features live in.

A *namespace* (``recs``, ``features``) holds numbered versions. :meth:`KVStore.publish` writes a
new version beside the live one, verifies it (the key count and a sample of reads), then
switches the namespace's pointer atomically: a reader sees the old version or the new one, never
a mix. The last ``keep`` versions stay for :meth:`KVStore.rollback`; older ones are removed
without blocking readers. Publishers of one namespace take turns under a lock that is released
when the publisher dies (an ``flock`` for SQLite, an expiring key with a heartbeat for Redis), so
a version a publish finds unfinished was left by a publisher that crashed, and is removed.

The publish protocol lives here once; a backend supplies the steps (:class:`SQLiteStore` in
:mod:`serving.sqlite_store`, the embedded default; :class:`RedisStore` in
:mod:`serving.redis_store`, for production). One contract suite (``tests/unit/test_store.py``)
runs against both. The backends import this module, never the other way:
:func:`serving.backends.open_store` opens the one a configuration selects.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import getpass
import itertools
import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)
_NAMESPACE = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
_PROGRESS_EVERY_S = 10.0
# scheme://userinfo@: up to the last "@", since a password may hold an unencoded / ? or # (a URL
# with "@" in its path loses a little more than its credentials)
_URL_IN_TEXT = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)[^\s@'\"]*@")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://).*@", re.DOTALL)
# any query parameter whose name speaks of a secret: password=, secret_key=, access_token=, sig=
_SECRET_PARAM = re.compile(
    r"([?&;][^=&;#]*(?:pass|pwd|secret|token|key|sig|credential)[^=&;#]*=)[^&;#]*", re.IGNORECASE)


class StoreError(RuntimeError):
    """A publish, read or rollback that cannot be done; the message says why."""


class NoRollbackTarget(StoreError):
    """A rollback has no version to switch to: none older is kept, or the one asked for is not
    (a retry cannot change that)."""


class StoreUnavailable(StoreError):
    """The store cannot serve now: its server is unreachable or stalled, or its file is missing
    (the API answers 503)."""


class StoreCorrupt(StoreUnavailable):
    """The store's data is damaged (a malformed SQLite file); the message says how to recover."""


@dataclass(frozen=True)
class VersionInfo:
    """One version of a namespace."""

    namespace: str
    version: int
    state: str  # writing | live | standby | removed | failed
    created_at: str
    n_keys: int
    meta: dict[str, Any] = field(default_factory=dict)


def redact_url(url: object) -> str:
    """``url`` with its credentials replaced by ``***``: the user info (``user:password@``, a
    bare ``:password@`` or a token as user name, also without a scheme) and ``password=``-like
    query parameters. For messages, logs and reprs; only the real URL may be used to connect."""
    text = str(url)
    if _USERINFO.match(text):
        text = _USERINFO.sub(r"\1***@", text, count=1)
    elif "@" in text and "://" not in text:  # user:password@host without a scheme
        text = "***@" + text.rsplit("@", 1)[1]
    return _SECRET_PARAM.sub(r"\1***", text)


def redact_text(text: object) -> str:
    """``text`` (an error message, say) with the credentials of every URL in it replaced by
    ``***``."""
    return _SECRET_PARAM.sub(r"\1***", _URL_IN_TEXT.sub(r"\1***@", str(text)))


def check_namespace(ns: str) -> str:
    """``ns`` if it is a valid namespace name, else a :class:`StoreError`."""
    if not _NAMESPACE.match(ns):
        raise StoreError(f"invalid namespace {ns!r}: lowercase letters, digits and _ only")
    return ns


def now() -> str:
    """The current UTC time as recorded in versions and events."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def who() -> str:
    """Who is acting, for the event log."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"


def plan_cleanup(states: dict[int, str], live: int | None, keep: int) -> dict[int, str]:
    """Which versions to remove and their final state: unfinished ``writing`` versions (their
    publisher is gone: the caller holds the publisher lock) become ``failed``; ``live`` and the
    newest ``standby`` versions up to ``keep`` in all stay; other standby versions are ``removed``."""
    out: dict[int, str] = {}
    kept = 1 if live is not None else 0
    for version in sorted(states, reverse=True):
        state = states[version]
        if state == "writing":
            out[version] = "failed"
        elif state == "standby" and version != live:
            if kept < keep:
                kept += 1
            else:
                out[version] = "removed"
    return out


class KVStore(abc.ABC):
    """Versioned namespaces of ``str -> bytes`` with atomic switch and rollback.

    A backend implements the steps (``_lock`` … ``_cleanup``) and the reads; the protocol that
    orders them is :meth:`publish`, written once here.
    """

    batch_size: int = 10_000

    def publish(
        self, namespace: str, items: Iterable[tuple[str, bytes]], meta: dict[str, Any] | None = None,
        keep: int = 3, verify_sample: int = 100,
    ) -> VersionInfo:
        """Write a new version from ``items`` (streamed in batches), verify it, make it live, and
        keep ``keep`` versions in all (the live one included). Keys must be unique.

        If anything fails before the switch, the live version stays as it was; the unfinished
        version is removed now or, if this process dies, by the next publish."""
        ns = check_namespace(namespace)
        if keep < 1:
            raise StoreError("keep must be at least 1 (the live version)")
        with self._lock(ns) as token:
            self._cleanup(ns, keep)  # what a crashed publisher left, before writing more
            version = self._begin(ns, meta or {})
            try:
                n, sample = self._write_all(ns, version, items, verify_sample)
                self._verify(ns, version, n, sample)
                self._check_lock(ns, token)
                self._switch(ns, version, n, token)
            except BaseException:
                with contextlib.suppress(Exception):
                    self._check_lock(ns, token)  # a lost lock: the new holder's work is not ours
                    self._cleanup(ns, keep)
                raise
            self._cleanup(ns, keep)
        info = self.current(ns)
        log.info("published %s version %d (%d keys)", ns, version, n)
        return info  # type: ignore[return-value]

    def _write_all(self, ns: str, version: int, items: Iterable[tuple[str, bytes]],
                   verify_sample: int) -> tuple[int, list[tuple[str, bytes]]]:
        n, sample, it = 0, [], iter(items)
        started = last = time.monotonic()
        while batch := list(itertools.islice(it, self.batch_size)):
            self._write(ns, version, batch)
            n += len(batch)
            # a spread sample: the start of the first batch, then the first key of each batch
            take = batch[: max(1, verify_sample // 2)] if not sample else batch[:1]
            sample += take[: verify_sample - len(sample)]
            if (t := time.monotonic()) - last > _PROGRESS_EVERY_S:
                last = t
                log.info("publishing %s version %d: %d keys, %.0f keys/s", ns, version, n,
                         n / (t - started))
        return n, sample

    def _verify(self, ns: str, version: int, n: int, sample: list[tuple[str, bytes]]) -> None:
        count = self._count(ns, version)
        if count != n:
            raise StoreError(f"verification failed: {ns} version {version} holds {count} keys, "
                             f"wrote {n} (duplicate keys in the input?)")
        got = self._read_version(ns, version, [k for k, _ in sample])
        for (key, value), back in zip(sample, got, strict=True):
            if back is None or bytes(back) != bytes(value):
                raise StoreError(f"verification failed: key {key!r} reads back differently")

    # -- the steps a backend implements ---------------------------------------------------
    @abc.abstractmethod
    def _lock(self, ns: str) -> contextlib.AbstractContextManager[str]:
        """Hold the namespace's publisher lock; yields a token that proves it."""

    def _check_lock(self, ns: str, token: str) -> None:  # noqa: B027 - locks that cannot be lost
        """Raise if the publisher lock was lost meanwhile (an expired lease)."""

    @abc.abstractmethod
    def _begin(self, ns: str, meta: dict[str, Any]) -> int:
        """Record a new version in state ``writing`` with an empty data set; its number."""

    @abc.abstractmethod
    def _write(self, ns: str, version: int, batch: list[tuple[str, bytes]]) -> None:
        """Store one batch of a version being written."""

    @abc.abstractmethod
    def _count(self, ns: str, version: int) -> int:
        """Keys a version holds."""

    @abc.abstractmethod
    def _read_version(self, ns: str, version: int, keys: Sequence[str]) -> list[bytes | None]:
        """Values of ``keys`` in a given version."""

    @abc.abstractmethod
    def _switch(self, ns: str, version: int, n_keys: int, token: str) -> None:
        """Atomically: make ``version`` live, the previous live one standby, log the event."""

    @abc.abstractmethod
    def _cleanup(self, ns: str, keep: int) -> None:
        """Atomically apply :func:`plan_cleanup` and remove the data of the versions it names."""

    # -- reads and administration ---------------------------------------------------------
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

    def health(self, namespace: str) -> VersionInfo | None:
        """The live version (None before the first publish) once the store has shown it can serve
        it; :class:`StoreUnavailable` (or :class:`StoreCorrupt`) saying why not. Cheap enough for
        every load-balancer probe. By default, reading the live version is the check."""
        return self.current(namespace)

    @abc.abstractmethod
    def versions(self, namespace: str) -> list[VersionInfo]:
        """Every version still recorded, newest first."""

    @abc.abstractmethod
    def rollback(self, namespace: str, to: int | None = None, why: str = "",
                 by: str | None = None) -> VersionInfo:
        """Make a kept version live (default: the newest one older than the live one); the event
        log records ``by`` (default: the OS user) and ``why``."""

    @abc.abstractmethod
    def events(self, namespace: str, limit: int = 50) -> list[dict[str, Any]]:
        """The namespace's publishes and rollbacks, newest first: at, action, from, to, who, why."""

    @abc.abstractmethod
    def drop(self, namespace: str) -> None:
        """Remove a namespace entirely: every version, the pointer, the events."""

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release connections."""


def rollback_target(live: int, states: dict[int, str], to: int | None, ns: str) -> int:
    """The version a rollback switches to, or a :class:`StoreError` saying why there is none."""
    standby = sorted((v for v, s in states.items() if s == "standby"), reverse=True)
    if to is None:
        older = [v for v in standby if v < live]
        if not older:
            raise NoRollbackTarget(f"{ns}: no kept version older than live {live}, so there is "
                                   "nothing to roll back to (the kept versions: rankline store "
                                   "versions; a second one comes with the next publish: "
                                   "rankline run-dag hulk_refresh)")
        return older[0]
    if to not in standby:
        raise NoRollbackTarget(f"{ns}: version {to} is not kept (kept: {standby}, live: {live})")
    return to
