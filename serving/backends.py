"""Choosing a store backend: :func:`open_store` and :func:`opened`.

The one place that knows every backend. :mod:`serving.store` (the interface, errors, redaction)
imports no backend; the backends (:mod:`serving.sqlite_store`, :mod:`serving.redis_store`)
import the interface; this module imports both, lazily, so opening a SQLite store never
imports ``redis``.

The configuration is any object with the attributes of :class:`StoreConfig`: rankline's
``pipeline.settings.Settings`` is one, but serving imports nothing from ``pipeline``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from serving.store import KVStore, StoreError


class StoreConfig(Protocol):
    """What :func:`open_store` reads from its configuration (``pipeline.settings.Settings`` has
    all of it, from the ``RANKLINE_*`` environment)."""

    @property
    def store_backend(self) -> str: ...  # "sqlite" or "redis"

    @property
    def serving_store_path(self) -> Path: ...

    @property
    def redis_url(self) -> str: ...

    @property
    def redis_prefix(self) -> str: ...

    @property
    def publish_lock_ttl_s(self) -> float: ...

    @property
    def store_timeout_s(self) -> float: ...


def open_store(settings: StoreConfig, path: Any = None, create: bool = True) -> KVStore:
    """The store the settings select (``store_backend``). ``path`` names another SQLite file
    (online features live apart from predictions); Redis keeps both in its namespaces.
    ``create=False`` is for readers: a missing SQLite file is then reported, never created.
    Redis calls give up after ``store_timeout_s``."""
    if settings.store_backend == "sqlite":
        from serving.sqlite_store import SQLiteStore

        return SQLiteStore(path or settings.serving_store_path, create=create)
    if settings.store_backend == "redis":
        from serving.redis_store import RedisStore

        return RedisStore(settings.redis_url, prefix=settings.redis_prefix,
                          lock_ttl=settings.publish_lock_ttl_s, timeout_s=settings.store_timeout_s)
    raise StoreError(f"unknown store backend {settings.store_backend!r}")


@contextlib.contextmanager
def opened(settings: StoreConfig, path: Any = None, create: bool = True) -> Iterator[KVStore]:
    """:func:`open_store`, closed on exit."""
    store = open_store(settings, path, create)
    try:
        yield store
    finally:
        store.close()
