"""Baselines every model must beat: recent popularity and random order."""

from __future__ import annotations

import numpy as np
import pandas as pd

from feature_store.definitions import W
from models.base import Ranker


class PopularityRanker(Ranker):
    """Ranks by the item's engagement over the feature window (purchase 3, cart 2, click 1)."""

    name = "popularity"

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        return (3 * rows[f"i_purchases_{W}"] + 2 * rows[f"i_carts_{W}"]
                + rows[f"i_clicks_{W}"]).to_numpy(dtype=float)


class RandomRanker(Ranker):
    """A seeded random order."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        return np.random.default_rng(self.seed).random(len(rows))
