"""The serving API: ``GET /v1/recommendations/{user_id}`` and ``GET /healthz``.

Run it with ``rankline serve`` (uvicorn on 127.0.0.1:8000; OpenAPI docs at ``/docs``, the spec
at ``/openapi.json``): its app factory, ``pipeline.serve:app_from_settings``, reads the
``RANKLINE_*`` settings and calls :func:`create_app` with a client, the API key and the timeout;
this module imports nothing from ``pipeline``. Every answer names the store version and the
model it came from; unknown users get the cold-start list, flagged as such. When
``RANKLINE_API_KEY`` is set, recommendation requests must carry it in the ``X-API-Key`` header
(401 otherwise); ``/healthz`` stays open for load balancers. Answers come through
:class:`serving.client.RecsClient`, the same code downstream services use to read the store
directly.

The store client is synchronous, so every store call runs in a worker thread and the event loop
stays free for other requests; a call that takes longer than ``timeout_s``
(``RANKLINE_STORE_TIMEOUT_S``) is answered 503. So are an unreachable, missing or corrupt store,
on the recommendations and on ``/healthz`` alike, with a message that names no credentials.

``/docs`` works without internet: FastAPI's stock page loads Swagger UI from a CDN, so the app is
built by ``fastapi_offline``, whose wheel ships Swagger UI 5 (needed for FastAPI's OpenAPI 3.1
spec) and serves it from ``/static-offline-docs``. ``/redoc`` is off: ReDoc's bundle always loads
its sidebar logo from cdn.redoc.ly, and ``/docs`` covers the same spec. The online validator badge
is off too (``validatorUrl: None``), so the docs page asks no outside host for anything.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Annotated, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Security
from fastapi.security import APIKeyHeader
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field

from serving.client import MAX_K, USER_ID, RecsClient
from serving.store import StoreError, StoreUnavailable

T = TypeVar("T")
# Worker threads for store calls, per event loop: bounds the threads a stalled store can hold and
# the SQLite connections (one per thread, each with its own page cache) a busy API keeps open.
STORE_THREADS = 16
_store_threads: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar("store_threads")


def _store_limiter() -> anyio.CapacityLimiter:
    try:
        return _store_threads.get()
    except LookupError:
        _store_threads.set(limiter := anyio.CapacityLimiter(STORE_THREADS))
        return limiter


class Item(BaseModel):
    """One recommended item."""

    item_id: int
    score: float
    pool: str | None = Field(default=None, description="The candidate pool the item came from, "
                             "where the refresh blended pools (RANKLINE_BLEND)")


class Recommendations(BaseModel):
    """A user's ranked items and where they came from."""

    user_id: str
    items: list[Item]
    cold_start: bool = Field(description="True when the user is unknown: the cold-start list")
    store_version: int = Field(description="Serving-store version the answer was read from")
    model: str = Field(description="MLflow URI of the model that produced the list")
    as_of: str = Field(description="Features date the list was computed from")


class Health(BaseModel):
    """Service health and the version being served."""

    status: str
    store_version: int | None
    model: str | None
    keys: int | None


_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False,
                           description="Required when the server sets RANKLINE_API_KEY")


def create_app(client: RecsClient, api_key: str = "", timeout_s: float = 2.0) -> FastAPI:
    """The FastAPI app over a client (shared by all requests); ``api_key`` turns on the check;
    a store call that takes longer than ``timeout_s`` seconds is answered 503."""
    # /docs from the installed package, not a CDN; no /redoc (see the module docstring)
    app = FastAPIOffline(title="rankline serving", version="1", redoc_url=None,
                         swagger_ui_parameters={"validatorUrl": None},
                         description="Top-k recommendations published by the nightly hulk refresh.")

    async def off_loop(fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in a worker thread, given up (503) after ``timeout_s`` (waiting for a
        thread included); a store that cannot serve is a 503 too. The thread of a call given up
        finishes on its own (the Redis socket timeouts end it)."""
        with anyio.move_on_after(timeout_s):
            try:
                return await anyio.to_thread.run_sync(functools.partial(fn, *args),
                                                      abandon_on_cancel=True, limiter=_store_limiter())
            except StoreUnavailable as exc:
                raise HTTPException(503, detail=str(exc)) from exc
        raise HTTPException(503, detail=f"the serving store did not answer within {timeout_s} s "
                                        "(RANKLINE_STORE_TIMEOUT_S)")

    async def check_key(given: Annotated[str | None, Security(_KEY_HEADER)] = None) -> None:
        if not (given and hmac.compare_digest(given.encode(), api_key.encode())):
            raise HTTPException(401, detail="missing or wrong X-API-Key",
                                headers={"WWW-Authenticate": "X-API-Key"})

    # the spec declares the key (and 401) only when the server requires one
    guarded = {"dependencies": [Depends(check_key)],
               "responses": {401: {"description": "missing or wrong X-API-Key"}}} if api_key else {}

    @app.get("/healthz", response_model=Health,
             responses={503: {"description": "the store is unreachable, stalled, missing or corrupt"}})
    async def healthz() -> Health:
        cur = await off_loop(client.store.health, client.namespace)
        if cur is None:
            return Health(status="empty", store_version=None, model=None, keys=None)
        return Health(status="ok", store_version=cur.version, model=cur.meta.get("model_uri"),
                      keys=cur.n_keys)

    @app.get("/v1/recommendations/{user_id}", response_model=Recommendations,
             responses={404: {"description": "nothing published yet"},
                        503: {"description": "the store is unreachable, stalled, missing or corrupt"},
                        **guarded.get("responses", {})},
             dependencies=guarded.get("dependencies", []))
    async def recommendations(
        user_id: Annotated[str, Path(pattern=USER_ID, description="The user's id")],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="How many items")] = 10,
    ) -> Recommendations:
        try:
            r = await off_loop(client.get, user_id, k)
        except StoreError as exc:
            raise HTTPException(404, detail=str(exc)) from exc
        return Recommendations(
            user_id=user_id, cold_start=r.cold_start, store_version=r.store_version,
            model=r.model, as_of=r.as_of,
            items=[Item(item_id=i, score=s, pool=None if r.pools is None else r.pools[n])
                   for n, (i, s) in enumerate(zip(r.item_ids, r.scores, strict=True))],
        )

    return app

