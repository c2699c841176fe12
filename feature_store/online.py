"""Online features: the latest feature views, published to the key-value store, and read back.

Each materialization is one new version of the ``features`` namespace, switched atomically like
any publish, so a reader never sees features of two dates mixed (Feast overwrites rows in place).
Keys are ``<view>:<key>[:<key>]``; values are float32 vectors in the view's feature order
(:func:`serving.codec.encode_vectors`). The caller hands over the store: ``pipeline.steps.features``
opens the configured backend (the SQLite file ``<home>/online_features.db`` by default, Redis with
``RANKLINE_STORE_BACKEND=redis``). This module imports nothing from ``pipeline``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from serving.store import KVStore, VersionInfo

NAMESPACE = "features"
_CHUNK = 50_000


def view_keys(view: str, df: pd.DataFrame, key_cols: Sequence[str]) -> np.ndarray:
    """The store keys of a view's rows: ``<view>:<key>[:<key>]``."""
    keys = df[key_cols[0]].astype(str)
    for extra in key_cols[1:]:
        keys = keys + ":" + df[extra].astype(str)
    return (view + ":" + keys).to_numpy()


def frame_items(view: str, df: pd.DataFrame, key_cols: Sequence[str],
                feature_cols: Sequence[str]) -> Iterator[tuple[str, bytes]]:
    """``(key, encoded vector)`` for every row, in key order (a B-tree loads sorted keys
    fastest), encoded a chunk at a time so memory stays bounded by the frame itself."""
    from serving.codec import encode_vectors

    keys = view_keys(view, df, key_cols)
    order = np.argsort(keys, kind="stable")
    matrix = df[list(feature_cols)].to_numpy(dtype=np.float32)
    for i in range(0, len(order), _CHUNK):
        idx = order[i:i + _CHUNK]
        yield from zip(keys[idx].tolist(), encode_vectors(matrix[idx]), strict=True)


def materialize_frames(store: KVStore, frames: Sequence[tuple[str, pd.DataFrame, Sequence[str],
                                                                Sequence[str]]],
                       meta: dict[str, Any], keep: int = 3) -> VersionInfo:
    """Publish ``(view, frame, key columns, feature columns)`` tuples as one new version."""

    def items() -> Iterator[tuple[str, bytes]]:
        for view, df, key_cols, feature_cols in frames:
            yield from frame_items(view, df, key_cols, feature_cols)

    return store.publish(NAMESPACE, items(), meta=meta, keep=keep)


def materialize_online(store: KVStore, offline_dir: Path, as_of: dt.date, keep: int = 3) -> dict[str, Any]:
    """Publish the online views of the offline store ``offline_dir`` as of ``as_of`` into
    ``store`` as one new version of the ``features`` namespace, keeping ``keep`` versions."""
    from feature_store.definitions import ENCODER_ITEM, ENCODER_USER, ONLINE_VIEWS
    from feature_store.embeddings import vector_columns
    from feature_store.offline import read_views

    views = read_views(offline_dir, as_of)
    frames = [(v.name, views[v.name], v.keys, v.names) for v in ONLINE_VIEWS]
    for name, key in ((ENCODER_USER, "user_id"), (ENCODER_ITEM, "item_id")):
        if name in views:  # the encoder's vectors, once there is an encoder
            frames.append((name, views[name], (key,), vector_columns(views[name])))
    info = materialize_frames(store, frames, {"as_of": as_of.isoformat()}, keep=keep)
    return {"version": info.version, "keys": info.n_keys}


def get_online_features(store: KVStore, view: str, entity_keys: Sequence[Any],
                        n_features: int) -> tuple[np.ndarray, VersionInfo]:
    """Feature vectors of ``entity_keys`` (a key, or a tuple for composite keys) from one
    version: a ``(len(entity_keys), n_features)`` float32 array, NaN rows for unknown entities."""
    from serving.codec import decode_vectors

    keys = [f"{view}:" + (":".join(map(str, k)) if isinstance(k, tuple) else str(k))
            for k in entity_keys]
    values, info = store.get_many(NAMESPACE, keys)
    return decode_vectors(values, n_features), info
