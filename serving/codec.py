"""Compact binary values for the key-value stores.

A recommendation list is ``<B version=1><B id width 2|4|8><H k>`` followed by k item ids (little
endian uint16, int32 or int64: the narrowest that holds them) and k float32 scores: 304 bytes for
50 items with ids below 65,536, 404 with 32-bit ids, against ~1.9 KB as JSON text.
A blended list (version 3) adds, after the scores, k uint8 indexes of the pool each item came
from (the names are in the published version's metadata, ``pool_names``).
A feature vector is ``<B version=2><H n>`` and n float32 values.
"""

from __future__ import annotations

import struct

import numpy as np

_RECS, _VEC, _POOLED = 1, 2, 3
_HEAD = struct.Struct("<BBH")
_VHEAD = struct.Struct("<BH")
_ID_TYPES = {2: "<u2", 4: "<i4", 8: "<i8"}


def _id_dtype(ids: np.ndarray) -> str:
    """The narrowest id type that holds every id: uint16, int32 or int64 (little endian)."""
    lo, hi = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
    return "<u2" if 0 <= lo and hi < 65_536 else "<i4" if -(2**31) <= lo and hi < 2**31 else "<i8"


def encode_recs(item_ids: np.ndarray, scores: np.ndarray,
                pools: np.ndarray | None = None) -> bytes:
    """Pack one ranked list (ids in rank order, their scores, and optionally the index of the
    pool each item came from: 0..255)."""
    ids = np.asarray(item_ids)
    if len(ids) != len(scores) or len(ids) > 65_535:
        raise ValueError("need as many scores as ids, and at most 65535 of them")
    ids = ids.astype(_id_dtype(ids))
    body = ids.tobytes() + np.asarray(scores, dtype="<f4").tobytes()
    if pools is None:
        return _HEAD.pack(_RECS, ids.itemsize, len(ids)) + body
    p = np.asarray(pools)
    if len(p) != len(ids) or (len(p) and (p.min() < 0 or p.max() > 255)):
        raise ValueError("need one pool index (0..255) per id")
    return _HEAD.pack(_POOLED, ids.itemsize, len(ids)) + body + p.astype("u1").tobytes()


def encode_recs_matrix(item_ids: np.ndarray, scores: np.ndarray) -> list[bytes]:
    """Pack many lists of the same length at once, byte for byte as :func:`encode_recs` would
    pack each row (ids of shape ``(n, k)``, scores of the same shape), without a Python loop."""
    ids = np.asarray(item_ids)
    n, k = ids.shape
    dtype = _id_dtype(ids)
    rec = np.empty(n, dtype=[("version", "u1"), ("width", "u1"), ("k", "<u2"),
                             ("ids", dtype, (k,)), ("scores", "<f4", (k,))])
    rec["version"], rec["width"], rec["k"] = _RECS, np.dtype(dtype).itemsize, k
    rec["ids"], rec["scores"] = ids, scores
    buf, size = rec.tobytes(), rec.dtype.itemsize
    return [buf[i:i + size] for i in range(0, n * size, size)]


def decode_recs(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Unpack a list packed by :func:`encode_recs`: ``(item_ids int64, scores float32)``."""
    ids, scores, _ = decode_pooled_recs(blob)
    return ids, scores


def decode_pooled_recs(blob: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Unpack a list packed by :func:`encode_recs`: ``(item_ids int64, scores float32, pool
    indexes uint8 or None)``."""
    version, width, k = _HEAD.unpack_from(blob)
    if version not in (_RECS, _POOLED) or width not in _ID_TYPES:
        raise ValueError(f"not a recommendation list (version {version}, id width {width})")
    off = _HEAD.size
    ids = np.frombuffer(blob, dtype=_ID_TYPES[width], count=k, offset=off).astype(np.int64)
    scores = np.frombuffer(blob, dtype="<f4", count=k, offset=off + k * width)
    pools = (np.frombuffer(blob, dtype="u1", count=k, offset=off + k * (width + 4))
             if version == _POOLED else None)
    return ids, scores, pools


def encode_vector(values: np.ndarray) -> bytes:
    """Pack a float32 feature vector."""
    v = np.asarray(values, dtype="<f4")
    return _VHEAD.pack(_VEC, len(v)) + v.tobytes()


def encode_vectors(matrix: np.ndarray) -> list[bytes]:
    """Pack each row of a 2-D array as :func:`encode_vector` would, without a Python loop of
    struct and numpy calls: one fixed-size record array, sliced."""
    m = np.asarray(matrix, dtype="<f4")
    n, width = m.shape
    rec = np.empty(n, dtype=[("version", "u1"), ("n", "<u2"), ("v", "<f4", (width,))])
    rec["version"], rec["n"], rec["v"] = _VEC, width, m
    buf, size = rec.tobytes(), rec.dtype.itemsize
    return [buf[i:i + size] for i in range(0, n * size, size)]


def decode_vectors(blobs: list[bytes | None], width: int) -> np.ndarray:
    """Unpack many vectors of ``width`` values into one ``(n, width)`` array; None gives a NaN row."""
    out = np.full((len(blobs), width), np.nan, dtype=np.float32)
    size = _VHEAD.size + 4 * width
    present = [i for i, b in enumerate(blobs) if b is not None]
    if present:
        rows = [blobs[i] for i in present]
        if any(len(b) != size or b[0] != _VEC for b in rows):  # type: ignore[arg-type,index]
            raise ValueError(f"not {width}-wide feature vectors")
        buf = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), size)  # type: ignore[arg-type]
        out[present] = buf[:, _VHEAD.size:].copy().view("<f4")
    return out


def decode_vector(blob: bytes) -> np.ndarray:
    """Unpack a vector packed by :func:`encode_vector`."""
    version, n = _VHEAD.unpack_from(blob)
    if version != _VEC:
        raise ValueError(f"not a feature vector (version {version})")
    return np.frombuffer(blob, dtype="<f4", count=n, offset=_VHEAD.size)
