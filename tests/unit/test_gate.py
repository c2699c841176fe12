"""The promotion gate: the paired bootstrap over held-out groups and the decision rules."""

import json

import numpy as np
import pandas as pd
import pytest

from models import metrics
from models.metrics import bootstrap_means, paired_bootstrap
from pipeline.training import ChampionInfo, champion_window, should_promote

GATE = {"challenger": "xgboost", "min_groups": 100, "confidence": 0.95, "n_resamples": 1000, "seed": 7}


def contenders(n: int, lift: float, noise: float = 0.25, seed: int = 0, **others: float
               ) -> pd.DataFrame:
    """Per-group NDCG@10 of popularity, random and the challenger, which beats popularity by
    exactly ``lift`` on average with per-group noise of standard deviation ``noise``; each of
    ``others`` (e.g. ``champion=0.01``) is the challenger minus that much, plus its own noise."""
    rng = np.random.default_rng(seed)
    pop = rng.uniform(0.2, 0.6, n)

    def centred() -> np.ndarray:
        e = rng.normal(0, noise, n)
        return e - e.mean()

    xgb = pop + lift + centred()
    cols = {"xgboost": xgb, "popularity": pop, "random": pop - 0.1 + centred(),
            **{name: xgb - gap + centred() for name, gap in others.items()}}
    return pd.DataFrame(cols)


# --- the paired bootstrap -------------------------------------------------------------------

def test_equal_differences_give_a_zero_width_interval():
    assert paired_bootstrap(np.full(50, 0.25), 500, 0.95, seed=1) == (0.25, 0.25, 0.25)
    assert paired_bootstrap(np.zeros(131), 500, 0.95, seed=1) == (0.0, 0.0, 0.0)


def test_a_noisy_zero_mean_difference_straddles_zero():
    diff = np.random.default_rng(3).normal(0, 0.3, 500)
    diff -= diff.mean()
    mean, low, high = paired_bootstrap(diff, 1000, 0.95, seed=0)
    assert mean == pytest.approx(0, abs=1e-12) and low < 0 < high


def test_a_known_difference_is_covered_with_the_normal_width():
    diff = 0.1 + np.random.default_rng(4).normal(0, 0.2, 2000)
    mean, low, high = paired_bootstrap(diff, 2000, 0.95, seed=0)
    assert low < 0.1 < high and low < mean < high
    expected = 2 * 1.96 * diff.std() / np.sqrt(len(diff))
    assert high - low == pytest.approx(expected, rel=0.15)
    # a lower confidence gives a narrower interval inside it
    _, low90, high90 = paired_bootstrap(diff, 2000, 0.90, seed=0)
    assert low < low90 < high90 < high


def test_bootstrap_is_deterministic_for_a_seed_and_chunking_does_not_matter(monkeypatch):
    diff = np.random.default_rng(5).normal(0.01, 0.3, 300)
    a = paired_bootstrap(diff, 500, 0.95, seed=11)
    assert paired_bootstrap(diff, 500, 0.95, seed=11) == a
    assert paired_bootstrap(diff, 500, 0.95, seed=12) != a
    monkeypatch.setattr(metrics, "_CHUNK", 7 * len(diff))  # 7 resamples per chunk
    assert paired_bootstrap(diff, 500, 0.95, seed=11) == pytest.approx(a, abs=1e-15)


def test_bootstrap_means_keep_columns_paired():
    rng = np.random.default_rng(6)
    a, b = rng.random(200), rng.random(200)
    both = bootstrap_means(np.c_[a, b], 300, seed=2)
    assert both.shape == (300, 2)
    np.testing.assert_allclose(both[:, 0] - both[:, 1], bootstrap_means(a - b, 300, seed=2),
                               atol=1e-12)


@pytest.mark.parametrize("bad", [np.array([]), np.array([0.1, np.nan]), np.zeros((2, 2, 2))])
def test_bootstrap_refuses_empty_or_non_finite_input(bad):
    with pytest.raises(ValueError):
        bootstrap_means(bad, 10, seed=0)


# --- the gate -------------------------------------------------------------------------------

def test_a_small_win_inside_the_noise_is_not_promoted():
    """The real-data case: +0.006 NDCG@10 over 131 groups (the old gate promoted it)."""
    table = contenders(131, lift=0.006)
    assert table["xgboost"].mean() > table["popularity"].mean()
    d = should_promote(table, **GATE)
    assert not d.promoted
    assert d.baseline == "popularity" and d.groups == 131
    assert d.vs_baseline.mean == pytest.approx(0.006)
    assert d.vs_baseline.low < 0 < d.vs_baseline.high
    assert "xgboost - popularity: +0.0060 NDCG@10 [" in d.reason
    assert "95% paired bootstrap over 131 groups" in d.reason
    assert d.reason.endswith("not promoted: no evidence it beats popularity (lower bound <= 0)")


def test_a_clear_win_is_promoted_and_the_reason_names_the_numbers():
    d = should_promote(contenders(16_739, lift=0.1352), **GATE)
    assert d.promoted and d.champion == "none"
    assert 0 < d.vs_baseline.low < 0.1352 < d.vs_baseline.high
    assert "over 16,739 groups; no champion before; promoted" in d.reason
    assert "\n" not in d.reason
    assert set(d.metrics()) == {"gate_groups", "gate_vs_baseline_mean", "gate_vs_baseline_low",
                                "gate_vs_baseline_high"}
    assert json.loads(json.dumps(d.as_dict()))["vs_baseline"]["low"] == d.vs_baseline.low


def test_too_few_groups_are_refused_naming_the_setting():
    table = contenders(60, lift=0.3, noise=0.05)
    d = should_promote(table, **GATE)
    assert not d.promoted and d.vs_baseline.low > 0  # a clear win, but on too few groups
    assert "60 held-out groups are fewer than RANKLINE_GATE_MIN_GROUPS=100" in d.reason
    assert should_promote(table, **{**GATE, "min_groups": 60}).promoted
    told = should_promote(table, **GATE, dates=2)  # 30 groups a date: 40 more need 2 dates
    assert "at 30.0 groups a held-out date, 2 more date(s) would give enough: " \
        "RANKLINE_TEST_DAYS=4" in told.reason
    empty = should_promote(table.iloc[:0], **GATE)
    assert not empty.promoted and empty.groups == 0 and "RANKLINE_GATE_MIN_GROUPS" in empty.reason


def test_the_best_baseline_is_the_one_with_the_higher_mean():
    table = contenders(500, lift=0.2)
    table["random"] = table["xgboost"] - 0.01 + np.random.default_rng(9).normal(0, 0.2, 500)
    d = should_promote(table, **GATE)
    assert d.baseline == "random" and not d.promoted
    assert "xgboost - random:" in d.reason


def test_a_challenger_must_beat_a_different_champion_with_evidence():
    champ = ChampionInfo("3", "2026-01-01..2026-01-10", overlap=False)
    close = should_promote(contenders(2000, lift=0.1, champion=0.006), **GATE, champion=champ)
    assert not close.promoted and close.champion == "compared"
    assert close.vs_baseline.low > 0 and close.vs_champion.low < 0 < close.vs_champion.high
    assert "xgboost - champion v3 (trained 2026-01-01..2026-01-10): +0.0060 NDCG@10 [" in close.reason
    assert close.reason.endswith("no evidence it beats the champion (lower bound <= 0)")
    assert {"gate_vs_champion_mean", "gate_vs_champion_low", "gate_vs_champion_high"} <= set(
        close.metrics())

    clear = should_promote(contenders(2000, lift=0.1, champion=0.05), **GATE, champion=champ)
    assert clear.promoted and clear.vs_champion.low > 0
    assert clear.reason.endswith("; promoted")


def test_an_identical_champion_is_not_replaced():
    table = contenders(1000, lift=0.1)
    table["champion"] = table["xgboost"]
    d = should_promote(table, **GATE, champion=ChampionInfo("3", "2026-01-01..2026-01-10"))
    assert not d.promoted
    assert (d.vs_champion.mean, d.vs_champion.low, d.vs_champion.high) == (0.0, 0.0, 0.0)


def test_a_champion_that_saw_the_held_out_dates_is_still_faced():
    """The overlap rule: the comparison favours the champion; a win despite that promotes, a
    loss keeps the champion (it was trained on later dates than the challenger)."""
    champ = ChampionInfo("4", "2026-01-03..2026-01-14", overlap=True)
    memorised = contenders(1000, lift=0.1, champion=-0.05)  # the champion looks better
    d = should_promote(memorised, **GATE, champion=champ)
    assert not d.promoted and d.champion == "overlap" and d.vs_champion.high < 0
    assert "(trained 2026-01-03..2026-01-14, overlapping the held-out dates, which favours it)" \
        in d.reason
    assert "keeps its place: it was trained on later dates than the challenger" in d.reason

    despite = should_promote(contenders(1000, lift=0.1, champion=0.05), **GATE, champion=champ)
    assert despite.promoted and despite.champion == "overlap"

    unknown = should_promote(memorised, **GATE, champion=ChampionInfo("4", None, overlap=None))
    assert not unknown.promoted and unknown.champion == "unknown"
    assert "training dates unknown" in unknown.reason


def test_a_champion_that_is_this_model_is_not_faced():
    d = should_promote(contenders(500, lift=0.1), **GATE, champion=ChampionInfo("5"))
    assert d.promoted and d.champion == "self" and d.vs_champion is None
    assert "champion v5 is this model" in d.reason


def test_a_champion_column_needs_the_champion():
    with pytest.raises(ValueError, match="ChampionInfo"):
        should_promote(contenders(500, lift=0.1, champion=0.0), **GATE)
    with pytest.raises(ValueError, match="xgboost"):
        should_promote(pd.DataFrame({"popularity": [0.1], "random": [0.2]}), **GATE)


@pytest.mark.parametrize(("test", "overlap"), [
    (["2026-01-13", "2026-01-14"], False),  # the usual case: test dates after the window
    (["2026-01-12", "2026-01-13"], True),   # the champion validated on 2026-01-12
    (["2025-12-30", "2025-12-31"], False),  # a backfill before the champion's window
    (["2026-01-05"], True),
])
def test_champion_window_and_overlap(test, overlap):
    params = {"train_dates": "2026-01-01..2026-01-10", "valid_dates": "2026-01-11..2026-01-12"}
    assert champion_window(params, test) == ("2026-01-01..2026-01-12", overlap)


@pytest.mark.parametrize("params", [{}, {"train_dates": "2026-01-01..2026-01-10"},
                                    {"train_dates": "x", "valid_dates": "2026-01-11..2026-01-12"}])
def test_champion_window_unknown(params):
    assert champion_window(params, ["2026-01-13"]) == (None, None)


def test_a_family_that_passes_but_loses_to_a_better_one_is_not_tagged_promoted():
    from pipeline.training import version_verdict

    d = should_promote(contenders(2_000, lift=0.1), **GATE)
    assert d.promoted and d.reason.endswith("promoted")
    assert version_verdict(d, "xgboost", "xgboost", 0.45, 0.45) == d.reason
    lost = version_verdict(d, "xgboost", "neural", 0.4557, 0.4584)
    assert lost.endswith("passed the gate, not promoted: neural passed too with a higher mean "
                         "NDCG@10 (0.4584 against 0.4557)")
    assert not lost.endswith("; promoted")
