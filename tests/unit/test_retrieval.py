"""One contract for every item index (models/retrieval): exact and HNSW answer alike."""

from __future__ import annotations

import numpy as np
import pytest

from models.retrieval import ExactIndex, HnswIndex, item_index

rng = np.random.default_rng(3)
ITEMS = rng.normal(size=(500, 16)).astype(np.float32)
QUERIES = rng.normal(size=(40, 16)).astype(np.float32)
TRUTH = np.argsort(-(QUERIES @ ITEMS.T), axis=1, kind="stable")

INDEXES = {"exact": ExactIndex, "hnsw": HnswIndex,
           "exact, one query per block": lambda v: ExactIndex(v, block_cells=1)}


@pytest.fixture(params=list(INDEXES))
def index(request):
    return INDEXES[request.param](ITEMS)


def test_finds_the_highest_inner_products_best_first(index):
    rows, scores = index.search(QUERIES, 20)
    assert rows.shape == scores.shape == (40, 20)
    found = np.mean([len(np.intersect1d(r, t[:20])) / 20 for r, t in zip(rows, TRUTH, strict=True)])
    assert found >= 0.95
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    np.testing.assert_allclose(scores, np.take_along_axis(QUERIES @ ITEMS.T, rows, axis=1),
                               rtol=1e-4, atol=1e-4)


def test_asking_more_than_the_catalog_gives_it_all(index):
    rows, _ = index.search(QUERIES[:3], 10_000)
    assert rows.shape == (3, 500)
    assert all(sorted(r) == list(range(500)) for r in rows)


def test_no_query_or_no_item_asked_answers_empty(index):
    assert index.search(QUERIES[:0], 5)[0].shape == (0, 5)
    assert index.search(QUERIES[:2], 0)[0].shape == (2, 0)


def test_vectors_must_be_a_matrix():
    with pytest.raises(ValueError, match="matrix"):
        ExactIndex(np.zeros(5))


def test_exact_up_to_the_threshold_hnsw_above():
    assert isinstance(item_index(ITEMS, 500), ExactIndex)
    assert isinstance(item_index(ITEMS, 499), HnswIndex)
