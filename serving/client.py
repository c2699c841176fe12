"""The reader client for downstream services: recommendations straight from the serving store.

No HTTP hop: a service that can reach the store reads it directly, through a connection pool::

    from serving.client import RecsClient

    with RecsClient.connect("redis://127.0.0.1:6379/0") as recs:    # or "sqlite:///var/serving.db"
        r = recs.get("1234", k=10)          # r.item_ids, r.scores, r.cold_start, r.store_version
        many = recs.get_many(["1", "2", "brand-new-user"], k=10)    # one store version for all

Unknown users get the cold-start list of the same version, flagged ``cold_start=True``. The
client is thread-safe; share one per process (the Redis pool holds up to ``max_connections``).
Every Redis call gives up after ``timeout_s`` (:class:`serving.store.StoreUnavailable`). The
client never creates a SQLite file: a wrong path is reported on the first read.
The HTTP API (:mod:`serving.api`) answers through this same client.

This module imports nothing from ``pipeline`` (nor Airflow, nor MLflow). Inside rankline,
``pipeline.serve.client_from_settings()`` builds a client over the store the ``RANKLINE_*``
settings select.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from serving.codec import decode_pooled_recs
from serving.store import KVStore, StoreCorrupt, StoreError, redact_url

NAMESPACE = "recs"
COLD_START = ":cold_start"  # ":" is not allowed in user ids, so no user can collide
USER_ID = r"^[A-Za-z0-9_\-]{1,64}$"  # the OpenAPI pattern; Python checks it with fullmatch
MAX_K = 200
_USER_ID = re.compile(USER_ID)


@dataclass(frozen=True)
class Recs:
    """One user's ranked items and where they came from."""

    user_id: str
    item_ids: list[int]
    scores: list[float]
    cold_start: bool  # True when the user is unknown: this is the cold-start list
    store_version: int
    model: str  # MLflow URI of the model that produced the lists
    as_of: str  # features date the lists were computed from
    pools: list[str] | None = None  # the pool of each item, where the refresh blended pools


class RecsClient:
    """Reads published top-k lists from a :class:`serving.store.KVStore`."""

    def __init__(self, store: KVStore, namespace: str = NAMESPACE) -> None:
        self.store, self.namespace = store, namespace

    @classmethod
    def connect(cls, url: str, prefix: str = "rankline", max_connections: int = 64,
                timeout_s: float = 2.0) -> RecsClient:
        """A client over ``redis://host:port/db`` (keys under ``prefix``; calls give up after
        ``timeout_s``) or ``sqlite:///path`` (an existing store file: it is never created)."""
        if url.startswith(("redis://", "rediss://", "unix://")):
            from serving.redis_store import RedisStore

            return cls(RedisStore(url, prefix=prefix, max_connections=max_connections,
                                  timeout_s=timeout_s))
        if url.startswith("sqlite:///"):
            from serving.sqlite_store import SQLiteStore

            return cls(SQLiteStore(Path(url.removeprefix("sqlite://")), create=False))
        raise ValueError(f"unsupported store URL {redact_url(url)!r}: use redis://... or "
                         "sqlite:///path")

    def get(self, user_id: str, k: int = 10) -> Recs:
        """The top ``k`` items of one user (the cold-start list for an unknown user)."""
        return self.get_many([user_id], k)[user_id]

    def get_many(self, user_ids: Sequence[str], k: int = 10) -> dict[str, Recs]:
        """The top ``k`` items of each user, all read from one store version in one round trip."""
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
        for u in user_ids:
            if not (isinstance(u, str) and _USER_ID.fullmatch(u)):
                raise ValueError(f"invalid user id {u!r}: 1-64 of A-Z a-z 0-9 _ -")
        values, info = self.store.get_many(self.namespace, [*user_ids, COLD_START])
        cold = values[-1]
        out = {}
        for u, blob in zip(user_ids, values[:-1], strict=True):
            if blob is None and cold is None:
                raise StoreError(f"store version {info.version} has no cold-start list")
            try:
                ids, scores, pools = decode_pooled_recs(
                    blob if blob is not None else cold)  # type: ignore[arg-type]
            except (ValueError, struct.error) as exc:
                raise StoreCorrupt(
                    f"store version {info.version} holds a damaged list for user {u!r} ({exc}): "
                    "roll back with `rankline store rollback` or republish with "
                    "`rankline run-dag hulk_refresh`") from exc
            names = info.meta.get("pool_names") or []
            out[u] = Recs(u, ids[:k].tolist(), scores[:k].tolist(), blob is None, info.version,
                          str(info.meta.get("model_uri", "")), str(info.meta.get("as_of", "")),
                          None if pools is None else [
                              names[i] if i < len(names) else f"pool {i}" for i in pools[:k]])
        return out

    def close(self) -> None:
        """Release the store's connections."""
        self.store.close()

    def __enter__(self) -> RecsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
