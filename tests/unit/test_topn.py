"""The top-N evaluator on hand-computed fixtures (masking, ties, misses) and the encoder's
full-ranking scores (:func:`models.sequence.item_scores`)."""

import math

import numpy as np
import pytest

from models.topn import list_metrics, mask_seen, score_metrics

SCORES = np.array([
    [0.9, 0.8, 0.7, 0.1, 0.5],   # target 2; item 0 seen -> rank 2
    [0.5, 0.5, 0.5, 0.0, 0.2],   # target 1 tied with 0 and 2 -> ranks 1..3 equally likely
    [0.1, 0.2, 0.3, 0.9, 0.0],   # target 3, but seen -> a miss
])
TARGETS = np.array([2, 1, 3])
SEEN = [np.array([0]), np.array([], dtype=np.int64), np.array([3])]


def test_masking_ties_and_misses_by_hand():
    m = score_metrics(SCORES, TARGETS, SEEN, k=10)
    tied = (1 + 1 / math.log2(3) + 1 / math.log2(4)) / 3
    np.testing.assert_allclose(m["ndcg@10"], [1 / math.log2(3), tied, 0.0])
    np.testing.assert_allclose(m["recall@10"], [1.0, 1.0, 0.0])


def test_cutoff_counts_only_positions_within_k():
    m = score_metrics(SCORES, TARGETS, SEEN, k=2)
    np.testing.assert_allclose(m["ndcg@2"], [1 / math.log2(3), (1 + 1 / math.log2(3)) / 3, 0.0])
    np.testing.assert_allclose(m["recall@2"], [1.0, 2 / 3, 0.0])
    assert score_metrics(SCORES, TARGETS, SEEN, k=1)["ndcg@1"].iloc[0] == 0.0


def test_without_masking_the_seen_item_ranks_above():
    m = score_metrics(SCORES[:1], TARGETS[:1], None, k=10)
    assert m["ndcg@10"].iloc[0] == pytest.approx(1 / math.log2(4))  # rank 3


def test_unknown_target_and_minus_inf_are_misses():
    scores = np.array([[1.0, -np.inf, 0.5], [1.0, 0.0, 0.5]])
    m = score_metrics(scores, np.array([1, -1]), k=10)
    assert m["ndcg@10"].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="NaN"):
        score_metrics(np.array([[np.nan, 1.0]]), np.array([0]))


def test_mask_seen_copies():
    out = mask_seen(SCORES, SEEN)
    assert np.isneginf(out[0, 0]) and np.isneginf(out[2, 3]) and np.isfinite(SCORES).all()


def test_lists_agree_with_scores():
    lists = [np.array([1, 2]), np.array([4]), np.array([], dtype=np.int64)]
    m = list_metrics(lists, np.array([2, 1, 0]), k=10)
    np.testing.assert_allclose(m["ndcg@10"], [1 / math.log2(3), 0.0, 0.0])
    np.testing.assert_allclose(m["recall@10"], [1.0, 0.0, 0.0])
    # the top list of a tie-free score row gives the score row's metrics
    row = np.array([[0.3, 0.9, 0.1, 0.5]])
    order = [np.argsort(-row[0])[:2]]
    for target in range(4):
        a = list_metrics(order, np.array([target]), k=2)
        b = score_metrics(row, np.array([target]), k=2)
        np.testing.assert_allclose(a.to_numpy(), b.to_numpy())


def test_item_scores_are_states_times_item_embeddings():
    import torch

    from models.sequence import (
        EncoderCheckpoint,
        EncoderConfig,
        ItemVocab,
        build_encoder,
        item_scores,
    )

    torch.manual_seed(0)
    cfg = EncoderConfig(dim=8, layers=1, heads=2, max_len=5, dropout=0.0)
    vocab = ItemVocab(np.array([10, 20, 30, 40]))
    enc = build_encoder(len(vocab), cfg)
    ckpt = EncoderCheckpoint({k: v.clone() for k, v in enc.state_dict().items()}, vocab.ids, cfg,
                             {})
    seqs = [np.array([10, 20]), np.array([30, 40, 10, 20, 30, 40]), None]
    scores = item_scores(ckpt, seqs)
    assert scores.shape == (3, len(vocab)) and np.isneginf(scores[:, 0]).all()
    ids, emb = ckpt.item_embeddings()
    np.testing.assert_allclose(scores[:, 1:], ckpt.user_states(seqs) @ emb.T, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(item_scores(enc, seqs, vocab), scores, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="vocab"):
        item_scores(enc, seqs)
