"""Off-policy estimates of a policy's reward from logged data alone: IPS and self-normalised IPS.

A log holds, for every shown slot, the reward it earned (a click: 1/0), the probability
``pscore`` with which the logging policy put that item in that slot, and the probability
``target`` with which the evaluated policy would have put it there. Inverse propensity scoring
reweighs each logged reward by ``w = target / pscore``:

- IPS: ``mean(w * r)``, unbiased when every slot the evaluated policy can fill had ``pscore > 0``,
  its variance grows with the largest weights;
- SNIPS: ``sum(w * r) / sum(w)``, a little biased, far less variance (and bounded by the largest
  reward).

Both estimate the reward per logged slot. The interval is a bootstrap over groups (requests or
users), since slots of one request are not independent. Cross-checked against the ``obp``
package's estimators in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A policy value with a bootstrap interval over groups."""

    value: float
    low: float
    high: float
    groups: int
    max_weight: float

    def __str__(self) -> str:
        return (f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}] over {self.groups:,} groups"
                f" (largest weight {self.max_weight:.1f})")


def importance_weights(target: np.ndarray, pscore: np.ndarray) -> np.ndarray:
    """``target / pscore``; a logged slot needs ``pscore`` in (0, 1]."""
    target, pscore = np.asarray(target, dtype=float), np.asarray(pscore, dtype=float)
    if target.shape != pscore.shape:
        raise ValueError(f"target and pscore shapes differ: {target.shape} vs {pscore.shape}")
    if not (np.isfinite(target).all() and np.isfinite(pscore).all()):
        raise ValueError("target and logged propensities must be finite numbers (a NaN "
                         "propensity: check the logs' propensity column)")
    if len(pscore) and (pscore.min() <= 0 or pscore.max() > 1):
        raise ValueError("logged propensities must lie in (0, 1]: a slot logged with propensity "
                         "0 cannot be reweighed (check the logs' propensity column)")
    if len(target) and (target.min() < 0 or target.max() > 1):
        raise ValueError("the evaluated policy's probabilities must lie in [0, 1]")
    return target / pscore


def ips(reward: np.ndarray, target: np.ndarray, pscore: np.ndarray) -> float:
    """Inverse propensity scoring: the mean of ``reward * target / pscore``."""
    w = importance_weights(target, pscore)
    return float(np.mean(np.asarray(reward, dtype=float) * w)) if len(w) else float("nan")


def snips(reward: np.ndarray, target: np.ndarray, pscore: np.ndarray) -> float:
    """Self-normalised IPS: ``sum(w * reward) / sum(w)``."""
    w = importance_weights(target, pscore)
    total = w.sum()
    return float(np.sum(np.asarray(reward, dtype=float) * w) / total) if total > 0 else float(
        "nan")


def estimate(reward: np.ndarray, target: np.ndarray, pscore: np.ndarray, groups: np.ndarray,
             *, self_normalised: bool = False, resamples: int = 1000, level: float = 0.95,
             seed: int = 0) -> Estimate:
    """IPS (or SNIPS) with a percentile bootstrap interval that resamples whole ``groups``."""
    reward = np.asarray(reward, dtype=float)
    w = importance_weights(target, pscore)
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(g.max()) + 1 if len(g) else 0
    wr = np.bincount(g, weights=w * reward, minlength=n_groups)
    ww = np.bincount(g, weights=w, minlength=n_groups)
    nn = np.bincount(g, minlength=n_groups).astype(float)

    def value(counts: np.ndarray) -> np.ndarray:
        num = counts @ wr
        den = counts @ (ww if self_normalised else nn)
        return num / np.where(den > 0, den, np.nan)

    point = float(value(np.ones((1, n_groups)))[0]) if n_groups else float("nan")
    if n_groups == 0:
        return Estimate(point, float("nan"), float("nan"), 0, 0.0)
    rng = np.random.default_rng(seed)
    values = []
    for a in range(0, resamples, 100):  # counts of each group in 100 resamples at a time
        picks = rng.integers(0, n_groups, size=(min(100, resamples - a), n_groups))
        counts = np.stack([np.bincount(p, minlength=n_groups) for p in picks]).astype(float)
        values.append(value(counts))
    v = np.concatenate(values)
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(v, [tail, 100 - tail])
    return Estimate(point, float(low), float(high), n_groups, float(w.max(initial=0.0)))
