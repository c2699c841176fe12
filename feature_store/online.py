"""Online materialization: the latest feature views, published to the key-value store.

Each materialization is one new version of the ``features`` namespace, switched atomically like
any publish, so a reader never sees features of two dates mixed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import numpy as np

from pipeline.settings import Settings


def materialize_online(settings: Settings, as_of: dt.date) -> dict[str, Any]:
    """Publish the online views as of ``as_of`` as one new version of the ``features`` namespace.

    Keys are ``<view>:<key>[:<key>]``; values are float32 vectors in the view's feature order.
    """
    from feature_store.definitions import ONLINE_VIEWS
    from feature_store.offline import read_views
    from serving.codec import encode_vectors
    from serving.store import SQLiteStore

    views = read_views(settings.offline_dir, as_of)

    def items() -> Iterator[tuple[str, bytes]]:
        for view in ONLINE_VIEWS:
            df = views[view.name]
            keys = df[view.keys[0]].astype(str)
            for extra in view.keys[1:]:
                keys = keys + ":" + df[extra].astype(str)
            keys = (view.name + ":" + keys).to_numpy()
            order = np.argsort(keys, kind="stable")  # sorted keys load faster into a B-tree
            values = encode_vectors(df[view.names].to_numpy(dtype=np.float32)[order])
            yield from zip(keys[order].tolist(), values, strict=True)

    store = SQLiteStore(settings.home / "online_features.db")
    try:
        info = store.publish("features", items(), meta={"as_of": as_of.isoformat()},
                             keep=settings.keep_versions)
    finally:
        store.close()
    return {"version": info.version, "keys": info.n_keys}
