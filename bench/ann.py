"""Which nearest-neighbour index serves the encoder pool: recall and time against exact top-N.

    .venv/bin/python bench/ann.py [--sizes 20000,200000,1000000] [--queries 2000] [--n 300]

The encoder pool (:func:`pipeline.pools.embedding`) asks, for each user state, the ``n`` items
with the highest dot product (the encoder's next-item logit: maximum inner product search).
This bench builds each candidate index over one catalog of item vectors and answers the same
queries, against the exact answer of :class:`models.retrieval.ExactIndex`:

* ``exact``: blocked matrix product and ``argpartition`` (:mod:`models.retrieval`);
* ``rankline-ivf``: :class:`models.retrieval.IvfIndex`: ``faiss-cpu`` ``IndexIVFFlat`` over
  inner product, ``4 sqrt(items)`` k-means lists, 1/8 of them probed;
* ``faiss-hnsw``: ``faiss-cpu`` ``IndexHNSWFlat`` over inner product (M=32, efConstruction
  200, efSearch ``max(n, --ef)``);
* ``faiss-hnsw-l2``: the same graph over the items with one coordinate added that turns the
  inner product search into a Euclidean one (Bachrach et al. 2014);
* ``usearch``: ``usearch`` HNSW, metric ``ip`` (connectivity 32, expansion_add 200,
  expansion_search ``max(n, --ef)``);
* ``voyager``: Spotify's ``voyager`` HNSW, ``Space.InnerProduct`` (M=32, ef_construction 200,
  ef ``max(n, --ef)``);
* ``hnswlib``: ``hnswlib`` (its last release is from 2023), space ``ip``, same parameters.

Vectors are shaped like an encoder's: 64 dimensions, items drawn around 256 topic centres with
norms spread like popularity (log-normal), user states a mix of two or three topics plus noise
(random Gaussian vectors would be the hardest case for any graph index and unlike any encoder).
Every index runs on ``--threads`` threads. Reported per catalog size and index: build seconds,
queries per second, recall@n (share of the exact top-n found), and the ratio of its query time
to exact's. Last line: ``ann <largest size>: <best index> recall@<n> <r>, <x>x exact's queries/s``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.retrieval import ExactIndex  # noqa: E402

DIM = 64


def catalog(n_items: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors and user states shaped like a sequence encoder's (see the module doc)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(256, DIM)).astype(np.float32)
    topic = rng.integers(0, 256, n_items)
    items = centres[topic] + 0.8 * rng.normal(size=(n_items, DIM)).astype(np.float32)
    items *= rng.lognormal(0.0, 0.35, size=(n_items, 1)).astype(np.float32)
    mix = rng.dirichlet(np.full(3, 0.7), size=n_queries).astype(np.float32)
    picks = rng.integers(0, 256, size=(n_queries, 3))
    queries = np.einsum("qk,qkd->qd", mix, centres[picks])
    queries += 0.5 * rng.normal(size=queries.shape).astype(np.float32)
    return np.ascontiguousarray(items, np.float32), np.ascontiguousarray(queries, np.float32)


Builder = Callable[[np.ndarray, int, int], Callable[[np.ndarray, int], np.ndarray]]


def _faiss_l2(items: np.ndarray, threads: int, ef: int) -> Callable[[np.ndarray, int], np.ndarray]:
    import faiss

    faiss.omp_set_num_threads(threads)
    sq = np.einsum("ij,ij->i", items, items)
    extra = np.sqrt(sq.max() - sq)[:, None]
    index = faiss.IndexHNSWFlat(items.shape[1] + 1, 32)
    index.hnsw.efConstruction = 200
    index.add(np.ascontiguousarray(np.hstack([items, extra]), np.float32))

    def search(q: np.ndarray, n: int) -> np.ndarray:
        index.hnsw.efSearch = max(n, ef)
        return index.search(np.hstack([q, np.zeros((len(q), 1), np.float32)]), n)[1]
    return search


def _rankline(items: np.ndarray, threads: int, ef: int) -> Callable[[np.ndarray, int], np.ndarray]:
    from models.retrieval import IvfIndex

    index = IvfIndex(items, threads=threads)
    return lambda q, n: index.search(q, n)[0]


def _faiss_hnsw(items: np.ndarray, threads: int, ef: int) -> Callable[[np.ndarray, int], np.ndarray]:
    import faiss

    faiss.omp_set_num_threads(threads)
    index = faiss.IndexHNSWFlat(items.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 200
    index.add(items)

    def search(q: np.ndarray, n: int) -> np.ndarray:
        index.hnsw.efSearch = max(n, ef)
        return index.search(q, n)[1]
    return search


def _usearch(items: np.ndarray, threads: int, ef: int) -> Callable[[np.ndarray, int], np.ndarray]:
    from usearch.index import Index

    index = Index(ndim=items.shape[1], metric="ip", dtype="f32", connectivity=32,
                  expansion_add=200)
    index.add(np.arange(len(items)), items, threads=threads)

    def search(q: np.ndarray, n: int) -> np.ndarray:
        index.expansion_search = max(n, ef)
        return index.search(q, n, threads=threads).keys
    return search


def _voyager(items: np.ndarray, threads: int, ef: int) -> Callable[[np.ndarray, int], np.ndarray]:
    from voyager import Index, Space

    index = Index(Space.InnerProduct, num_dimensions=items.shape[1], M=32, ef_construction=200)
    index.add_items(items, num_threads=threads)

    def search(q: np.ndarray, n: int) -> np.ndarray:
        return index.query(q, k=n, num_threads=threads, query_ef=max(n, ef))[0]
    return search


def _hnswlib(items: np.ndarray, threads: int, ef: int) -> Callable[[np.ndarray, int], np.ndarray]:
    import hnswlib

    index = hnswlib.Index(space="ip", dim=items.shape[1])
    index.init_index(max_elements=len(items), ef_construction=200, M=32)
    index.set_num_threads(threads)
    index.add_items(items, np.arange(len(items)))

    def search(q: np.ndarray, n: int) -> np.ndarray:
        index.set_ef(max(n, ef))
        return index.knn_query(q, k=n)[0]
    return search


CANDIDATES: dict[str, Builder] = {"rankline-ivf": _rankline, "faiss-hnsw": _faiss_hnsw,
                                  "faiss-hnsw-l2": _faiss_l2, "usearch": _usearch,
                                  "voyager": _voyager, "hnswlib": _hnswlib}


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's exact top-n found."""
    hits = [len(np.intersect1d(f, t, assume_unique=False)) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits) / truth.shape[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="20000,200000,1000000")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--n", type=int, default=300, help="items asked per query (the pool depth)")
    ap.add_argument("--ef", type=int, default=1000, help="search breadth floor of the HNSW indexes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=",".join(CANDIDATES))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    last = ""
    print(f"{'items':>9s} {'index':12s} {'build s':>8s} {'queries/s':>10s} "
          f"{'recall@' + str(args.n):>10s} {'x exact qps':>11s}", flush=True)
    for size in sizes:
        items, queries = catalog(size, args.queries, args.seed)
        t = time.perf_counter()
        exact = ExactIndex(items)
        t_build = time.perf_counter() - t
        t = time.perf_counter()
        truth, _ = exact.search(queries, args.n)
        t_exact = time.perf_counter() - t
        print(f"{size:9d} {'exact':12s} {t_build:8.2f} {len(queries) / t_exact:10.0f} "
              f"{1.0:10.4f} {1.0:11.2f}", flush=True)
        best: tuple[float, str, float] | None = None
        for name in args.only.split(","):
            t = time.perf_counter()
            search = CANDIDATES[name](items, args.threads, args.ef)
            t_build = time.perf_counter() - t
            search(queries[:10], args.n)  # warm up
            t = time.perf_counter()
            found = search(queries, args.n)
            t_q = time.perf_counter() - t
            r = recall(np.asarray(found), truth)
            speed = t_exact / t_q
            print(f"{size:9d} {name:12s} {t_build:8.2f} {len(queries) / t_q:10.0f} {r:10.4f} "
                  f"{speed:11.2f}", flush=True)
            if r >= 0.95 and (best is None or speed > best[0]):
                best = (speed, name, r)
        if best:
            last = (f"ann {size}: {best[1]} recall@{args.n} {best[2]:.4f}, "
                    f"{best[0]:.2f}x exact's queries/s")
        else:
            last = f"ann {size}: no index reached recall@{args.n} 0.95"
    print(last)


if __name__ == "__main__":
    main()
