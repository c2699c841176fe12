"""Model-selection pieces without MLflow or Airflow: the sampler comparison's tests and sweeps,
training-group subsamples, rolling origins, the cross-validation summary."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu

from models.base import TrainingSet
from pipeline.selection import (
    best_seen,
    compare_traces,
    cv_summary,
    fold_origins,
    mann_whitney,
    run_sweep,
    subsample_groups,
)
from pipeline.settings import Settings
from pipeline.sweep import make_sampler
from pipeline.training import split_dates


def test_mann_whitney_is_scipys_two_sided_test():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.5, 0.01, 12), rng.normal(0.49, 0.01, 12)
    u, p = mann_whitney(a, b)
    ref = mannwhitneyu(a, b, alternative="two-sided")
    assert (u, p) == pytest.approx((ref.statistic, ref.pvalue))


def test_compare_traces_names_the_winner_only_when_significant():
    rng = np.random.default_rng(1)
    good = np.sort(rng.normal(0.50, 0.005, (10, 8)), 1)  # sorted rows: best-seen traces
    bad = np.sort(rng.normal(0.48, 0.005, (10, 8)), 1)
    res = compare_traces({"tpe": bad, "random": good})
    assert res["best"]["conclusion"] == res["auc"]["conclusion"] == "random beat tpe"
    assert res["best"]["p"] < 0.01 and res["repeats"] == 10 and res["trials"] == 8
    same = compare_traces({"tpe": good, "random": good[::-1].copy()})
    assert same["best"]["conclusion"] == "no significant difference"
    assert same["best"]["p"] == pytest.approx(1.0)


def test_tpe_beats_random_on_a_narrow_optimum():
    """The comparison's own loop on a cheap objective where model-based search must help: a
    narrow peak in four dimensions. Seeds are fixed: the outcome is deterministic."""

    def space(trial):
        return {f"x{i}": trial.suggest_float(f"x{i}", -5, 5) for i in range(4)}

    def objective(p):
        return -sum((v - 1.3) ** 2 for v in p.values())

    traces = {name: np.array([best_seen(run_sweep(objective, space,
                                                  make_sampler(name, 1000 * i + r), 30))
                              for r in range(10)])
              for i, name in enumerate(("tpe", "random"))}
    assert all(np.all(np.diff(t, axis=1) >= 0) for t in traces.values())  # best-seen: monotone
    res = compare_traces(traces)
    assert res["best"]["conclusion"] == "tpe beat random", res


def _rows(groups: int, per_group: int = 4) -> pd.DataFrame:
    rid = np.repeat(np.arange(groups), per_group)
    return pd.DataFrame({"request_id": rid, "label": rid % 2, "x": np.arange(len(rid), dtype=float)})


def test_subsample_keeps_whole_groups_about_the_fraction(tmp_path: Path):
    (tmp_path / "t").mkdir()
    _rows(2000).to_parquet(tmp_path / "t" / "p.parquet")
    data = TrainingSet((tmp_path / "t",), (tmp_path / "t",))
    assert subsample_groups(data, 1.0, 0, tmp_path / "s") is data
    part = subsample_groups(data, 0.1, 3, tmp_path / "s")
    assert part.valid_paths == data.valid_paths
    rows = part.read("train")
    sizes = rows.groupby("request_id").size()
    assert (sizes == 4).all()  # whole groups only
    assert 150 < len(sizes) < 250
    again = subsample_groups(data, 0.1, 3, tmp_path / "s2").read("train")
    assert again.equals(rows)  # the seed decides
    tiny = subsample_groups(data, 1e-6, 0, tmp_path / "s3").read("train")
    assert tiny["request_id"].nunique() == 1  # never empty
    with pytest.raises(ValueError, match="fraction"):
        subsample_groups(data, 0, 0, tmp_path / "s4")


def test_rolling_origins_hold_out_consecutive_windows_that_do_not_overlap():
    s = Settings(train_days=5, valid_days=2, test_days=3)
    origins = fold_origins(s, dt.date(2026, 3, 1), 3)
    assert origins == sorted(origins) and origins[-1] == dt.date(2026, 3, 1)
    tests = [split_dates(s, o)["test"] for o in origins]
    held = [d for t in tests for d in t]
    assert len(held) == len(set(held)) == 9
    assert held == sorted(held) and (held[-1] - held[0]).days == 8  # consecutive
    with pytest.raises(ValueError, match="fold"):
        fold_origins(s, dt.date(2026, 3, 1), 0)


def test_cv_summary_mean_and_spread_per_contender():
    table = pd.DataFrame({
        "fold": [0, 0, 1, 1], "model": ["xgboost", "popularity"] * 2,
        "ndcg@10": [0.5, 0.4, 0.7, 0.4], "minus_popularity": [0.1, 0.0, 0.3, 0.0]})
    stats = cv_summary(table)
    assert list(stats.index) == ["xgboost", "popularity"]
    assert stats.loc["xgboost", "mean"] == pytest.approx(0.6)
    assert stats.loc["xgboost", "std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert stats.loc["xgboost", "minus_popularity"] == pytest.approx(0.2)
    assert stats.loc["popularity", "folds"] == 2
