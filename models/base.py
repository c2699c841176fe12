"""The ranker interface every model and baseline implements."""

from __future__ import annotations

import abc

import numpy as np
import pandas as pd


class Ranker(abc.ABC):
    """Scores rows (user, item, features); higher means rank earlier."""

    name: str

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame | None = None) -> Ranker:
        """Learn from labelled rows grouped by ``request_id``; baselines learn nothing."""
        return self

    @abc.abstractmethod
    def score(self, rows: pd.DataFrame) -> np.ndarray:
        """One score per row."""
