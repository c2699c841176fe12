"""Two-stage feature selection without MLflow: the shadow screen keeps what carries signal and
screens out noise (continuous noise included, which offers many split points), and backward
elimination leaves out what validation NDCG@10 does not miss."""

from __future__ import annotations

import numpy as np
import pytest

from models.xgb import XGBoostRanker
from pipeline.feature_selection import backward_eliminate, shadow_screen, with_shadows
from pipeline.settings import Settings


def _ranking_data(n_requests: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Requests of 10 rows: labels from three features (strong, medium, weak), then three
    continuous noise columns and a binary noise column."""
    rng = np.random.default_rng(seed)
    n = n_requests * 10
    x = rng.random((n, 7)).astype(np.float32)
    x[:, 6] = rng.random(n) < 0.5
    signal = 2 * x[:, 0] + x[:, 1] + 0.6 * x[:, 2] + rng.normal(0, 0.3, n)
    y = np.digitize(signal, [1.6, 2.2, 2.8])
    return x, y, np.repeat(np.arange(n_requests), 10)


NAMES = ["strong", "medium", "weak", "noise_a", "noise_b", "noise_c", "noise_flag"]


def test_shadows_are_the_columns_shuffled():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = with_shadows(x, np.random.default_rng(0))
    assert out.shape == (4, 6) and np.array_equal(out[:, :3], x)
    for j in range(3):
        assert sorted(out[:, 3 + j]) == sorted(x[:, j])


def test_the_shadow_screen_keeps_signal_and_screens_out_noise():
    model = XGBoostRanker(n_estimators=60, max_depth=4, device="cpu", n_jobs=2,
                          early_stopping_rounds=20)
    screen = shadow_screen(_ranking_data(600, 1), _ranking_data(200, 2), NAMES, model,
                           repeats=3, seed=0)
    assert list(screen.index) == NAMES
    kept = set(screen.index[screen["keep"]])
    assert {"strong", "medium", "weak"} <= kept
    assert not kept & {"noise_a", "noise_b", "noise_c", "noise_flag"}, screen
    # the continuous noise did gain something from its split points: the screen is needed
    assert (screen.loc[["noise_a", "noise_b", "noise_c"], "gain"] > 0).all()


def test_backward_elimination_leaves_out_what_the_score_does_not_miss():
    useful = {"a": 0.05, "b": 0.02, "c": 0.0, "d": -0.001}  # d even hurts a little

    def score(dropped):
        return 0.5 - sum(useful[f] for f in dropped if f in useful)

    kept, steps = backward_eliminate(["d", "c", "b", "a"], ["z"], score)
    assert kept == ["b", "a"]
    assert [s["feature"] for s in steps] == [None, "d", "c", "b", "a"]
    assert [s["dropped"] for s in steps[1:]] == [True, True, False, False]
    kept, _ = backward_eliminate(["d", "c", "b", "a"], [], score, tolerance=0.03)
    assert kept == ["a"]  # b costs 0.02: inside the tolerance
    kept, _ = backward_eliminate(["c"], [], score)
    assert kept == ["c"]  # never the last feature


@pytest.mark.parametrize("family", ["xgboost", "neural", "neural_scratch"])
def test_the_setting_is_every_familys_dropped_features(family):
    from models.registry import build

    s = Settings(drop_features=" i_ctr_7d, u_age_band ")
    assert s.dropped_features == ("i_ctr_7d", "u_age_band")
    assert set(build(family, s).dropped) >= {"i_ctr_7d", "u_age_band"}
    assert Settings().dropped_features == ()
    assert build("xgboost", Settings()).dropped == ()


def test_the_setting_names_model_features_only():
    with pytest.raises(ValueError, match="unknown features"):
        Settings(drop_features="i_ctr_7d,nope")
