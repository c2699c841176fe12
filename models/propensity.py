"""Position bias estimated from the logs: how likely a user is to examine each position.

A click on an impression needs the user to look at its slot and to like the item. The
position-based model (PBM) writes ``P(click | item i at position p) = theta_p * gamma_i``:
``theta_p`` the examination probability of position ``p``, ``gamma_i`` the item's
attractiveness. Because the logging policy shows the same item at many positions (its scores
are noisy), both can be estimated from the logged impressions alone, as far as an item's
attractiveness is the same for every user: a personalized policy shows an item higher to the
users who like it more, and ``theta`` then absorbs some of that (on the synthetic marketplace
the estimate falls below the planted curve by position 20: ``bench/unbiased.py`` prints both).
:func:`examination` fits them by the fixed point of the Poisson likelihood (each factor in
turn: clicks over expected clicks), ``theta`` normalized to 1 at the first position.

Inverse-propensity weights (:meth:`Examination.inverse_propensity`) then count a click at a rarely
examined position for more: in expectation, the weighted clicks follow the attractiveness
alone, not where the logging policy put the item. Weights are clipped (``theta`` at least
``floor``) to bound their variance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


class NoPositions(ValueError):
    """The logs carry no positions: position bias cannot be estimated."""


@dataclass(frozen=True)
class Examination:
    """Examination probability by position: ``theta[k]`` that of position ``first + k``,
    relative to the first position's."""

    first: int
    theta: np.ndarray

    def inverse_propensity(self, position: np.ndarray, floor: float = 0.05) -> np.ndarray:
        """Per row, ``1 / theta`` of its position, clipped at ``1 / floor`` (positions past
        the last estimated one take the last's); rows without a position weigh 1."""
        position = np.asarray(position, dtype=float)
        shown = ~np.isnan(position)
        out = np.ones(len(position))
        k = np.clip(position[shown] - self.first, 0, len(self.theta) - 1).astype(np.int64)
        out[shown] = 1.0 / np.maximum(self.theta[k], floor)
        return out


def examination(position: np.ndarray, item: np.ndarray, clicked: np.ndarray,
                iters: int = 200, tol: float = 1e-7) -> Examination:
    """The examination probabilities of the logged positions (they may start at 0 or 1),
    relative to the first. Rows without a position (sampled negatives, never shown) are
    ignored.

    Raises:
        NoPositions: no row has a position.
    """
    position = np.asarray(position, dtype=float)
    shown = ~np.isnan(position)
    if not shown.any():
        raise NoPositions("no impression has a position: position-debiased training "
                          "(RANKLINE_UNBIASED) needs the logs' impression positions")
    first = int(position[shown].min())
    pos = (position[shown] - first).astype(np.int64)
    items, item_idx = np.unique(np.asarray(item)[shown], return_inverse=True)
    c = np.asarray(clicked, dtype=float)[shown]
    n_pos, n_items = int(pos.max()) + 1, len(items)
    clicks_at, clicks_of = np.bincount(pos, c, n_pos), np.bincount(item_idx, c, n_items)
    theta, gamma = np.ones(n_pos), np.full(n_items, max(c.mean(), 1e-6))
    for done in range(1, iters + 1):  # noqa: B007 - logged after the loop
        before = theta  # per-row sums: memory of the rows, not items x positions
        theta = clicks_at / np.maximum(np.bincount(pos, gamma[item_idx], n_pos), 1e-12)
        theta = theta / theta[0] if theta[0] > 0 else theta / max(theta.max(), 1e-12)
        gamma = clicks_of / np.maximum(np.bincount(item_idx, theta[pos], n_items), 1e-12)
        if np.max(np.abs(theta - before)) < tol:
            break
    log.info("position bias from %d impressions, %d positions: examination %s (%d iterations)",
             int(shown.sum()), n_pos, np.round(theta[:10], 3).tolist(), done)
    return Examination(first, theta)
