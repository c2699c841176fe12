"""The ``encoder_user`` and ``encoder_item`` views: a pre-trained sequence encoder's embeddings.

The partition for date D holds, per user with a click sequence as of the end of D, the encoder's
state of that sequence (its hidden state at the last position), and per item of the encoder's
vocabulary, the item's embedding: ``user_id`` / ``item_id``, ``encoder`` (the id of the encoder
that computed them) and ``e0 .. e{d-1}`` (float32). Whoever writes D's partition must use an
encoder trained on events up to D at most (``pipeline.pretraining`` picks the newest such one):
with the sequences as of D, nothing after D is in them, and rows of D+1 join them like every
other view (:func:`feature_store.compute.join_features`), so nothing of a row's own date reaches
it.

Every family reads them through the on-demand feature ``od_encoder_score``: the encoder's
next-item score of the row's item for the row's user (the dot product of the two vectors, which
is what the encoder was trained to rank by); NaN when a date has no partition (before the first
encoder) or the user or item is not in it. The vectors themselves go to the online store
(:func:`feature_store.online.materialize_online`) for services that want them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from feature_store import io
from feature_store.definitions import ENCODER_ITEM, ENCODER_USER, ENCODER_VERSION

ENCODER_COLUMN = "encoder"


def embedding_root(offline_dir: Path, view: str) -> Path:
    """Folder of one embedding view's partitions."""
    return Path(offline_dir) / view / ENCODER_VERSION


def vector_columns(df: pd.DataFrame) -> list[str]:
    """The vector's columns ``e0 .. e{d-1}`` of an embedding frame, in order."""
    cols = [c for c in df.columns if c[:1] == "e" and c[1:].isdigit()]
    return sorted(cols, key=lambda c: int(c[1:]))


def embedding_frame(key: str, ids: np.ndarray, vectors: np.ndarray, encoder: str) -> pd.DataFrame:
    """``key``, ``encoder`` and ``e0 .. e{d-1}`` columns from ids and a ``[n, d]`` matrix."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise ValueError(f"need one vector per id: {len(ids)} ids, vectors {vectors.shape}")
    out = pd.DataFrame(vectors, columns=[f"e{i}" for i in range(vectors.shape[1])])
    out.insert(0, ENCODER_COLUMN, encoder)
    out.insert(0, key, np.asarray(ids, dtype=np.int64))
    return out.sort_values(key, ignore_index=True)


def write_embeddings(offline_dir: Path, date: dt.date, users: pd.DataFrame,
                     items: pd.DataFrame) -> dict[str, str]:
    """Write both views' partitions as of the end of ``date`` (an overwrite on rerun)."""
    if set(users[ENCODER_COLUMN]) != set(items[ENCODER_COLUMN]):
        raise ValueError("user and item embeddings come from different encoders")
    if len(vector_columns(users)) != len(vector_columns(items)):
        raise ValueError("user and item embeddings differ in size")
    return {view: str(io.write_partition(df, embedding_root(offline_dir, view), "", date))
            for view, df in ((ENCODER_USER, users), (ENCODER_ITEM, items))}


def read_embeddings(offline_dir: Path, as_of: dt.date) -> dict[str, pd.DataFrame] | None:
    """Both views as of the end of ``as_of``; None if that date has no partition."""
    paths = {v: io.partition_path(embedding_root(offline_dir, v), "", as_of)
             for v in (ENCODER_USER, ENCODER_ITEM)}
    if not all(p.exists() for p in paths.values()):
        return None
    return {v: io.read_parquet(p) for v, p in paths.items()}


def encoder_score(user_ids: np.ndarray, item_ids: np.ndarray, users: pd.DataFrame,
                  items: pd.DataFrame) -> np.ndarray:
    """The encoder's score of each (user, item) row: the dot product of their vectors; NaN
    where the user or the item has none (pure)."""
    cols = vector_columns(users)
    u_pos = _positions(users["user_id"].to_numpy(np.int64), np.asarray(user_ids, dtype=np.int64))
    i_pos = _positions(items["item_id"].to_numpy(np.int64), np.asarray(item_ids, dtype=np.int64))
    u_mat = users[cols].to_numpy(np.float32)
    i_mat = items[cols].to_numpy(np.float32)
    out = np.full(len(u_pos), np.nan, dtype=np.float32)
    ok = (u_pos >= 0) & (i_pos >= 0)
    out[ok] = np.einsum("ij,ij->i", u_mat[u_pos[ok]], i_mat[i_pos[ok]])
    return out


def _positions(sorted_keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Row of each wanted key in ``sorted_keys`` (-1 where absent)."""
    if len(sorted_keys) == 0:
        return np.full(len(wanted), -1, dtype=np.int64)
    pos = np.clip(np.searchsorted(sorted_keys, wanted), 0, len(sorted_keys) - 1)
    return np.where(sorted_keys[pos] == wanted, pos, -1)
