"""Serving wired to rankline's settings: the uvicorn factory and a reader client from ``RANKLINE_*``.

:mod:`serving` imports nothing from ``pipeline`` (a service that installs the reader client must
not pull in the pipeline): it takes a store, a URL or a small config object. This module is the
wiring that reads the settings and hands their values over::

    uvicorn pipeline.serve:app_from_settings --factory     # what `rankline serve` runs

    from pipeline.serve import client_from_settings
    recs = client_from_settings()           # the store RANKLINE_STORE_BACKEND... select
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.settings import Settings, get_settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from serving.client import RecsClient


def client_from_settings(settings: Settings | None = None) -> RecsClient:
    """A :class:`serving.client.RecsClient` over the store rankline's settings select
    (``RANKLINE_*`` environment); a missing SQLite file is reported, never created."""
    from serving.backends import open_store
    from serving.client import RecsClient

    return RecsClient(open_store(settings or get_settings(), create=False))


def app_from_settings() -> FastAPI:
    """The serving API over the store the environment's settings select, with their API key and
    store timeout (the uvicorn factory of ``rankline serve``)."""
    from serving.api import create_app

    settings = get_settings()
    return create_app(client_from_settings(settings), api_key=settings.api_key,
                      timeout_s=settings.store_timeout_s)
