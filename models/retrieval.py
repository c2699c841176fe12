"""Top-N retrieval by inner product: for each query vector, the item rows that score highest.

The encoder's next-item score is a user state dotted with an item embedding
(:func:`models.sequence.item_scores`), so its candidate pool is a maximum-inner-product search
over the catalog. Two indexes answer it behind one interface, :class:`ItemIndex`:

- :class:`ExactIndex`: a blocked matrix product and ``argpartition``; exact; its cost grows with
  queries x items, and it holds one block of scores at a time (about ``block_cells`` floats).
- :class:`HnswIndex`: an HNSW graph from ``faiss-cpu`` searched by inner product; approximate,
  its query cost grows with the log of the catalog, and its recall falls as the catalog grows
  and as ``n`` deepens (``bench/ann.py``).

:func:`item_index` picks exact up to ``exact_up_to`` items and HNSW above; ``bench/ann.py``
measured the libraries and the crossing point (``bench/RESULTS.md``).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class ItemIndex(Protocol):
    """Maximum inner product search over a fixed matrix of item vectors."""

    size: int
    """Item rows held."""

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``min(n, size)`` best item rows for each query, best first, and their scores:
        ``(rows [q, m] int64, scores [q, m] float32)``. A row an approximate index could not
        fill holds -1 (score -inf)."""
        ...


def _matrix(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"item vectors must be a [n, d] matrix, got shape {vectors.shape}")
    return vectors


class ExactIndex:
    """Exact top-N by a blocked matrix product (see the module doc)."""

    def __init__(self, vectors: np.ndarray, block_cells: int = 1 << 25) -> None:
        self.vectors = _matrix(vectors)
        self.size = len(self.vectors)
        self.block_cells = block_cells

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        queries = _matrix(queries)
        m = min(int(n), self.size)
        rows = np.full((len(queries), m), -1, dtype=np.int64)
        scores = np.full((len(queries), m), -np.inf, dtype=np.float32)
        if m == 0:
            return rows, scores
        step = max(1, self.block_cells // max(self.size, 1))
        for start in range(0, len(queries), step):
            s = queries[start:start + step] @ self.vectors.T
            top = (np.argpartition(-s, m - 1, axis=1)[:, :m] if m < self.size
                   else np.broadcast_to(np.arange(self.size), s.shape))
            top_s = np.take_along_axis(s, top, axis=1)
            order = np.argsort(-top_s, axis=1, kind="stable")
            rows[start:start + step] = np.take_along_axis(top, order, axis=1)
            scores[start:start + step] = np.take_along_axis(top_s, order, axis=1)
        return rows, scores


class HnswIndex:
    """Approximate top-N from a ``faiss`` HNSW graph searched by inner product.

    ``m`` is the graph's degree, ``ef_construction`` the breadth of its build, ``ef_search`` the
    floor of the breadth of a search (a search for ``n`` items looks at least ``n`` wide).
    Turning the search into a Euclidean one first (one added coordinate, Bachrach et al. 2014)
    lost recall on encoder-shaped vectors (0.64 against 0.996 at 5k items, ``bench/ann.py``):
    with norms as spread as an encoder's, the added coordinate crowds the items together."""

    def __init__(self, vectors: np.ndarray, m: int = 32, ef_construction: int = 200,
                 ef_search: int = 1000, threads: int | None = None) -> None:
        import faiss

        if threads:
            faiss.omp_set_num_threads(threads)
        vectors = _matrix(vectors)
        self.size = len(vectors)
        self.ef_search = ef_search
        self.index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = ef_construction
        if self.size:
            self.index.add(vectors)

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        queries = _matrix(queries)
        m = min(int(n), self.size)
        if m == 0 or len(queries) == 0:
            return (np.full((len(queries), m), -1, dtype=np.int64),
                    np.full((len(queries), m), -np.inf, dtype=np.float32))
        self.index.hnsw.efSearch = max(m, self.ef_search)
        scores, rows = self.index.search(queries, m)
        scores = np.where(rows < 0, -np.inf, scores).astype(np.float32)
        return rows.astype(np.int64), scores


def item_index(vectors: np.ndarray, exact_up_to: int, threads: int | None = None) -> ItemIndex:
    """:class:`ExactIndex` for catalogs of at most ``exact_up_to`` items, else
    :class:`HnswIndex`."""
    if len(vectors) <= exact_up_to:
        return ExactIndex(vectors)
    return HnswIndex(vectors, threads=threads)
