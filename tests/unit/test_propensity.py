"""Position bias: the examination curve recovered from logged clicks, inverse-propensity
weights, and position-debiased training beating the biased default on true relevance when
the logging policy's own score is a feature (what a biased ranker learns to copy)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from feature_store.definitions import model_features
from models.base import TrainingSet
from models.metrics import ranking_metrics
from models.propensity import Examination, NoPositions, examination


def _logged(n_items: int, n: int, first: int, seed: int) -> tuple[np.ndarray, ...]:
    """Impressions at uniformly random positions (no confounding), clicks by a PBM with
    examination ``(k + 1) ** -0.6`` at the ``k``-th position."""
    rng = np.random.default_rng(seed)
    item = rng.integers(0, n_items, n)
    attract = rng.uniform(0.1, 0.8, n_items)
    k = rng.integers(0, 10, n)
    clicked = rng.random(n) < (k + 1.0) ** -0.6 * attract[item]
    return (k + first).astype(float), item, clicked


@pytest.mark.parametrize("first", [0, 1])
def test_examination_recovers_the_planted_curve(first):
    position, item, clicked = _logged(300, 300_000, first, 0)
    position = np.r_[position, [np.nan] * 1000]  # sampled negatives: never shown, ignored
    item, clicked = np.r_[item, np.zeros(1000, int)], np.r_[clicked, np.zeros(1000, bool)]
    e = examination(position, item, clicked)
    assert e.first == first and len(e.theta) == 10
    np.testing.assert_allclose(e.theta, np.arange(1, 11) ** -0.6, rtol=0.05)


def test_inverse_propensity_clips_and_leaves_unshown_rows_alone():
    e = Examination(first=1, theta=np.array([1.0, 0.5, 0.01]))
    w = e.inverse_propensity(np.array([1, 2, 3, 7, np.nan]), floor=0.05)
    np.testing.assert_allclose(w, [1.0, 2.0, 20.0, 20.0, 1.0])
    with pytest.raises(NoPositions, match="RANKLINE_UNBIASED"):
        examination(np.full(5, np.nan), np.arange(5), np.ones(5, bool))


def _policy_logged(n_req: int, seed: int) -> pd.DataFrame:
    """Requests of 10 items: true relevance ``rel`` (seen through ``i_ctr_7d``, with noise);
    the logging policy orders by its own score (``i_mean_position_7d``, unrelated to
    relevance); clicks = examination(position) x attractiveness(rel)."""
    rng = np.random.default_rng(seed)
    n = n_req * 10
    rel, policy = rng.normal(0, 1, n), rng.normal(0, 1, n)
    feats = {k: np.zeros(n, np.float32) for k in model_features()}
    feats["i_ctr_7d"] = (rel + rng.normal(0, 0.5, n)).astype(np.float32)
    feats["i_mean_position_7d"] = policy.astype(np.float32)
    req = np.repeat(np.arange(n_req), 10)
    order = np.lexsort((-(policy + rng.normal(0, 0.5, n)), req))
    position = np.empty(n)
    position[order] = np.tile(np.arange(1, 11), n_req)
    click = rng.random(n) < position ** -1.0 / (1 + np.exp(-(rel - 0.5)))
    rows = pd.DataFrame({"request_id": req, "user_id": req, "item_id": rng.integers(0, 500, n),
                         "label": click.astype(np.int8), "position": position.astype(np.float32),
                         "rel": rel, "seq": [[] for _ in range(n)], **feats})
    return rows.iloc[rng.permutation(n)].sort_values("request_id", kind="stable")


@pytest.fixture(scope="module")
def biased_logs(tmp_path_factory) -> tuple[TrainingSet, pd.DataFrame]:
    """Training rows only: a validation set of logged clicks would pick the round (or epoch)
    that best predicts biased clicks, which is not what debiasing aims at."""
    path = tmp_path_factory.mktemp("biased") / "train.parquet"
    _policy_logged(8000, 1).to_parquet(path)
    return TrainingSet((path,)), _policy_logged(2000, 3)


@pytest.mark.parametrize("family", ["xgboost", "neural_scratch"])
def test_debiased_training_ranks_true_relevance_better(family, biased_logs):
    from models.neural import NeuralScratchRanker
    from models.xgb import XGBoostRanker

    data, test = biased_logs
    grade = np.digitize(test["rel"], [0, 1, 2])  # true relevance, graded

    def ndcg(unbiased: bool) -> float:
        if family == "xgboost":
            model = XGBoostRanker(n_estimators=100, device="cpu", n_jobs=2, unbiased=unbiased)
        else:
            model = NeuralScratchRanker(epochs=3, device="cpu", threads=2, seed=0,
                                        unbiased=unbiased)
        model.fit(data)
        if unbiased and family != "xgboost":
            assert model.examination.theta[-1] < 0.3  # it saw the bias
        return ranking_metrics(test["request_id"].to_numpy(), grade,
                               model.score(test))["ndcg@10"]

    biased, unbiased = ndcg(False), ndcg(True)
    assert unbiased > biased + 0.01, (biased, unbiased)
