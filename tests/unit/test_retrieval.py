"""One contract for every item index (models/retrieval): exact and inverted file answer alike."""

from __future__ import annotations

import numpy as np
import pytest

from models.retrieval import ExactIndex, IvfIndex, item_index

rng = np.random.default_rng(3)
# shaped like an encoder's space: items around topics, norms spread, users near a topic
CENTRES = rng.normal(size=(20, 16))
ITEMS = ((CENTRES[rng.integers(0, 20, 500)] + 0.7 * rng.normal(size=(500, 16)))
         * rng.lognormal(0, 0.3, (500, 1))).astype(np.float32)
QUERIES = (CENTRES[rng.integers(0, 20, 40)] + 0.5 * rng.normal(size=(40, 16))).astype(np.float32)
TRUTH = np.argsort(-(QUERIES @ ITEMS.T), axis=1, kind="stable")

INDEXES = {"exact": ExactIndex, "ivf, every list probed": lambda v: IvfIndex(v, probe_share=1.0),
           "ivf": IvfIndex,
           "exact, one query per block": lambda v: ExactIndex(v, block_cells=1)}


@pytest.fixture(params=list(INDEXES))
def index(request):
    return INDEXES[request.param](ITEMS)


def test_finds_the_highest_inner_products_best_first(index):
    rows, scores = index.search(QUERIES, 20)
    assert rows.shape == scores.shape == (40, 20)
    found = np.mean([len(np.intersect1d(r, t[:20])) / 20 for r, t in zip(rows, TRUTH, strict=True)])
    assert found >= 0.9  # approximate indexes: bench/ann.py measures their recall properly
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    np.testing.assert_allclose(scores, np.take_along_axis(QUERIES @ ITEMS.T, rows, axis=1),
                               rtol=1e-4, atol=1e-4)


def test_asking_more_than_the_catalog_gives_at_most_all_of_it(index):
    rows, scores = index.search(QUERIES[:3], 10_000)
    assert rows.shape == (3, 500)
    for r, sc in zip(rows, scores, strict=True):
        found = r[r >= 0]
        assert len(np.unique(found)) == len(found) >= 20  # distinct rows, then -1 padding
        assert np.all(r[len(found):] == -1) and np.all(np.isinf(sc[len(found):]))
    exact_rows, _ = ExactIndex(ITEMS).search(QUERIES[:3], 10_000)
    assert all(sorted(r) == list(range(500)) for r in exact_rows)  # exact: the whole catalog


def test_no_query_or_no_item_asked_answers_empty(index):
    assert index.search(QUERIES[:0], 5)[0].shape == (0, 5)
    assert index.search(QUERIES[:2], 0)[0].shape == (2, 0)


def test_vectors_must_be_a_matrix():
    with pytest.raises(ValueError, match="matrix"):
        ExactIndex(np.zeros(5))


def test_exact_up_to_the_threshold_hnsw_above():
    assert isinstance(item_index(ITEMS, 500), ExactIndex)
    assert isinstance(item_index(ITEMS, 499), IvfIndex)
