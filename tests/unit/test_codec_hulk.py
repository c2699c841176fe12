import numpy as np
import pandas as pd
import pytest

from pipeline.hulk import candidates, co_clicks, top_k
from serving.codec import (
    decode_recs,
    decode_vector,
    decode_vectors,
    encode_recs,
    encode_recs_matrix,
    encode_vector,
    encode_vectors,
)


def test_recs_roundtrip_and_size():
    ids = np.arange(50) * 7
    scores = np.linspace(1, 0, 50, dtype=np.float32)
    blob = encode_recs(ids, scores)
    assert len(blob) == 4 + 50 * 6  # ids below 65,536 take 2 bytes
    got_ids, got_scores = decode_recs(blob)
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got_scores, scores)
    mid = encode_recs(ids + 70_000, scores)
    assert len(mid) == 4 + 50 * 8 and (decode_recs(mid)[0] == ids + 70_000).all()
    assert (decode_recs(encode_recs(-ids, scores))[0] == -ids).all()
    wide = encode_recs(np.array([2**40]), np.array([1.0]))
    assert decode_recs(wide)[0][0] == 2**40


def test_pooled_lists_carry_each_items_pool():
    from serving.codec import decode_pooled_recs

    ids, scores = np.array([9, 3, 7]), np.array([0.5, 0.9, 0.1])
    blob = encode_recs(ids, scores, np.array([2, 0, 2]))
    assert len(blob) == 4 + 3 * 6 + 3
    got_ids, got_scores, pools = decode_pooled_recs(blob)
    assert got_ids.tolist() == [9, 3, 7] and pools.tolist() == [2, 0, 2]
    assert decode_recs(blob)[0].tolist() == [9, 3, 7]  # a reader of ids and scores reads it too
    assert decode_pooled_recs(encode_recs(ids, scores))[2] is None
    with pytest.raises(ValueError, match="pool index"):
        encode_recs(ids, scores, np.array([0, 300, 1]))


def test_matrix_encoding_matches_one_by_one():
    rng = np.random.default_rng(0)
    for hi in (5_000, 2**20, 2**40):
        ids = rng.integers(0, hi, size=(4, 7))
        scores = rng.random((4, 7), dtype=np.float32)
        one_by_one = [encode_recs(i, s) for i, s in zip(ids, scores, strict=True)]
        assert encode_recs_matrix(ids, scores) == one_by_one


def test_codec_rejects_other_payloads():
    with pytest.raises(ValueError):
        decode_recs(encode_vector(np.ones(3)))
    np.testing.assert_array_equal(decode_vector(encode_vector(np.arange(3))), [0, 1, 2])


def test_many_vectors_decode_at_once_with_gaps():
    m = np.arange(12, dtype=np.float32).reshape(4, 3)
    blobs = encode_vectors(m)
    got = decode_vectors([blobs[0], None, blobs[3]], 3)
    np.testing.assert_array_equal(got[[0, 2]], m[[0, 3]])
    assert np.isnan(got[1]).all()
    with pytest.raises(ValueError):
        decode_vectors([blobs[0]], 4)


def test_top_k_per_user_in_rank_order():
    out = top_k(np.array([1, 1, 1, 2]), np.array([10, 11, 12, 10]),
                np.array([0.1, 0.9, 0.5, 0.3]), k=2)
    assert out.groupby("user_id")["item_id"].apply(list).to_dict() == {1: [11, 12], 2: [10]}


def test_candidates_mix_sources_and_exclude_purchases():
    pop = pd.Series([9.0, 8.0, 1.0, 0.5], index=[1, 2, 3, 4])
    items = pd.DataFrame({"item_id": [1, 2, 3, 4], "category": [0, 0, 1, 1]})
    uc = pd.DataFrame({"user_id": [7], "category": [1], "clicks": [3.0]})
    clicks = pd.DataFrame({"user_id": [7, 8, 8], "item_id": [1, 1, 4]})
    bought = pd.DataFrame({"user_id": [7], "item_id": [2]})
    cand = candidates(np.array([7]), pop, items, uc, clicks, co_clicks(clicks), bought, 6)
    got = set(cand["item_id"])
    assert 2 not in got  # purchased
    assert {1, 3, 4} <= got  # popular, category, co-clicked (4 via user 8)


def test_bulk_vector_encoding_matches_single():
    from serving.codec import encode_vectors

    m = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert encode_vectors(m) == [encode_vector(r) for r in m]
