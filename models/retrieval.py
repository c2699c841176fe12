"""Top-N retrieval by inner product: for each query vector, the item rows that score highest.

The encoder's next-item score is a user state dotted with an item embedding
(:func:`models.sequence.item_scores`), so its candidate pool is a maximum-inner-product search
over the catalog. Two indexes answer it behind one interface, :class:`ItemIndex`:

- :class:`ExactIndex`: a blocked matrix product and ``argpartition``; exact; its cost grows with
  queries x items, and it holds one block of scores at a time (about ``block_cells`` floats).
- :class:`IvfIndex`: a ``faiss-cpu`` inverted file over inner product; approximate, it scans an
  eighth of the catalog's clusters per query.

:func:`item_index` picks exact up to ``exact_up_to`` items and the inverted file above;
``bench/ann.py`` measured the libraries (faiss, hnswlib, usearch, voyager) and the crossing
point (``bench/RESULTS.md``).
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


def _unfilled(queries: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, scores)`` of ``queries`` x ``m`` with nothing found: -1 rows, -inf scores."""
    return (np.full((queries, m), -1, dtype=np.int64),
            np.full((queries, m), -np.inf, dtype=np.float32))


class ExactIndex:
    """Exact top-N by a blocked matrix product (see the module doc)."""

    def __init__(self, vectors: np.ndarray, block_cells: int = 1 << 25) -> None:
        self.vectors = _matrix(vectors)
        self.size = len(self.vectors)
        self.block_cells = block_cells

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        queries = _matrix(queries)
        m = min(int(n), self.size)
        rows, scores = _unfilled(len(queries), m)
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


class IvfIndex:
    """Approximate top-N from a ``faiss`` inverted-file index over inner product.

    The items are split into ``4 sqrt(n)`` lists by k-means (trained on at most 40 items a list,
    drawn with ``seed``); a search scans every item of the ``probe_share`` of lists whose centres
    score highest against the query, exactly. It won ``bench/ann.py``: the deep searches the
    pools ask (hundreds of items per user) suit it, where the HNSW graphs of faiss, hnswlib and
    usearch lost recall as the catalog grew (0.76-0.80 against 0.98 at 200k items, recall@300)."""

    def __init__(self, vectors: np.ndarray, probe_share: float = 0.125, seed: int = 0,
                 threads: int | None = None) -> None:
        import faiss

        if threads:
            faiss.omp_set_num_threads(threads)
        vectors = _matrix(vectors)
        self.size = len(vectors)
        nlist = max(1, min(self.size, int(4 * np.sqrt(self.size))))
        self.index = faiss.IndexIVFFlat(faiss.IndexFlatIP(vectors.shape[1]), vectors.shape[1],
                                        nlist, faiss.METRIC_INNER_PRODUCT)
        self.index.cp.min_points_per_centroid = 1  # small catalogs (tests) train without a fuss
        if self.size:
            rng = np.random.default_rng(seed)
            sample = rng.choice(self.size, min(self.size, 40 * nlist), replace=False)
            self.index.train(vectors[np.sort(sample)])
            self.index.add(vectors)
        self.index.nprobe = max(1, int(np.ceil(probe_share * nlist)))

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        queries = _matrix(queries)
        m = min(int(n), self.size)
        if m == 0 or len(queries) == 0:
            return _unfilled(len(queries), m)
        scores, rows = self.index.search(queries, m)
        scores = np.where(rows < 0, -np.inf, scores).astype(np.float32)
        return rows.astype(np.int64), scores


def item_index(vectors: np.ndarray, exact_up_to: int, threads: int | None = None) -> ItemIndex:
    """:class:`ExactIndex` for catalogs of at most ``exact_up_to`` items, else
    :class:`IvfIndex`."""
    if len(vectors) <= exact_up_to:
        return ExactIndex(vectors)
    return IvfIndex(vectors, threads=threads)
