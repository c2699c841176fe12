"""The serving API: ``GET /v1/recommendations/{user_id}`` and ``GET /healthz``.

Run it with ``rankline serve`` (uvicorn on 127.0.0.1:8000). Every answer names the store
version and the model it came from; unknown users get the cold-start list, flagged as such.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, HTTPException, Path, Query
from pydantic import BaseModel, Field

from pipeline.hulk import COLD_START, NAMESPACE
from serving.codec import decode_recs
from serving.store import KVStore, StoreError

USER_ID = r"^[A-Za-z0-9_\-]{1,64}$"
MAX_K = 200


class Item(BaseModel):
    """One recommended item."""

    item_id: int
    score: float


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


def create_app(store: KVStore) -> FastAPI:
    """The FastAPI app over a store (the store is shared by all requests)."""
    app = FastAPI(title="rankline serving", version="1",
                  description="Top-k recommendations published by the nightly hulk refresh.")

    @app.get("/healthz", response_model=Health)
    def healthz() -> Health:
        cur = store.current(NAMESPACE)
        if cur is None:
            return Health(status="empty", store_version=None, model=None, keys=None)
        return Health(status="ok", store_version=cur.version, model=cur.meta.get("model_uri"),
                      keys=cur.n_keys)

    @app.get("/v1/recommendations/{user_id}", response_model=Recommendations,
             responses={404: {"description": "nothing published yet"}})
    def recommendations(
        user_id: Annotated[str, Path(pattern=USER_ID, description="The user's id")],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="How many items")] = 10,
    ) -> Recommendations:
        if user_id == COLD_START:
            raise HTTPException(422, detail="reserved user id")
        try:
            values, info = store.get_many(NAMESPACE, [user_id, COLD_START])
        except StoreError as exc:
            raise HTTPException(404, detail=str(exc)) from exc
        blob, cold = (values[0], False) if values[0] is not None else (values[1], True)
        if blob is None:
            raise HTTPException(404, detail=f"store version {info.version} has no cold-start list")
        ids, scores = decode_recs(blob)
        return Recommendations(
            user_id=user_id, cold_start=cold, store_version=info.version,
            model=str(info.meta.get("model_uri", "")), as_of=str(info.meta.get("as_of", "")),
            items=[Item(item_id=int(i), score=float(v)) for i, v in zip(ids[:k], scores[:k],
                                                                          strict=True)],
        )

    return app


def app_from_settings() -> FastAPI:
    """The app over the store the environment's settings select (uvicorn factory)."""
    from pipeline.settings import get_settings
    from serving.store import open_store

    return create_app(open_store(get_settings()))
