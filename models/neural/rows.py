"""Rows into the neural ranker's inputs: the items seen (:func:`seen_items`), the dense
features' squashing and standardization (:func:`squash`, :func:`standardization`,
:class:`RowStats` one partition at a time, :func:`dense`), the padded request groups
(:func:`groups`) and the training tensors of a set of rows (:func:`prepare`, a
:class:`Prepared`). torch is imported inside :func:`prepare`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from feature_store.definitions import SEQ
from models.propensity import Examination
from models.sequence import ItemVocab


@dataclass
class Prepared:
    """A set of training rows as tensors: ``index`` ``[groups, width]`` row of each slot (-1:
    none), ``seq`` each group's padded history, per row ``items``, ``dense``, ``gains`` and
    (debiased training) inverse-propensity ``weights``; the groups trained on (``group_ids``,
    with a relevant row) and their ``seq_lengths``."""

    index: np.ndarray
    seq: np.ndarray
    items: Any
    dense: Any
    gains: Any
    group_ids: np.ndarray
    seq_lengths: np.ndarray
    weights: Any = None


def seen_items(rows: pd.DataFrame) -> np.ndarray:
    """Every item id in ``rows``: the rows' items and their users' histories."""
    seen = [np.asarray(s, dtype=np.int64) for s in rows[SEQ] if s is not None and len(s)]
    return np.unique(np.concatenate([rows["item_id"].to_numpy(np.int64), *seen]))


def standardization(squashed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std of ``squashed`` features, missing values ignored (an
    all-missing column, a blind one: mean 0, std 1)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nan_to_num(np.nanmean(squashed, 0)).astype(np.float32)
        std = np.nan_to_num(np.nanstd(squashed, 0), nan=1.0).astype(np.float32) + 1e-3
    return mean, std


class RowStats:
    """:func:`standardization` and :func:`seen_items` accumulated one partition at a time."""

    def __init__(self) -> None:
        self.sum = self.sumsq = self.count = 0.0
        self.rows = 0
        self.seen: list[np.ndarray] = []

    def add(self, squashed: np.ndarray, items: np.ndarray | None) -> None:
        x = squashed.astype(np.float64)
        self.sum = self.sum + np.nansum(x, 0)
        self.sumsq = self.sumsq + np.nansum(x * x, 0)
        self.count = self.count + (~np.isnan(x)).sum(0)
        self.rows += len(x)
        if items is not None:
            self.seen = [np.unique(np.concatenate([*self.seen, items]))]

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        count = np.maximum(self.count, 1)
        mean = np.where(self.count > 0, self.sum / count, 0.0)
        var = np.maximum(self.sumsq / count - mean ** 2, 0.0)
        std = np.where(self.count > 0, np.sqrt(var), 1.0)
        return mean.astype(np.float32), std.astype(np.float32) + 1e-3

    def items(self) -> np.ndarray:
        return self.seen[0] if self.seen else np.zeros(0, dtype=np.int64)


def squash(x: np.ndarray) -> np.ndarray:
    """``sign(x) * log1p(|x|)``: counts span orders of magnitude, which a tree ignores and an
    MLP does not (standardized raw counts leave most rows near one value)."""
    return np.sign(x) * np.log1p(np.abs(x))


def dense(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Squashed dense features of the feature matrix ``x``, standardized by ``mean`` and
    ``std``; missing values become the mean (0), plus one 0/1 column per feature that says it
    was missing (so the network sees 2 x the features)."""
    x = squash(x)
    missing = np.isnan(x)
    z = np.nan_to_num(np.clip((x - mean) / std, -8, 8), nan=0.0)
    return np.concatenate([z, missing], 1).astype(np.float32)


def groups(rows: pd.DataFrame, vocab: ItemVocab, max_len: int) -> dict[str, np.ndarray]:
    """Padded per-request arrays: row index, item rows, labels, and each request's seq."""
    req = rows["request_id"].to_numpy()
    codes, first = pd.factorize(req)[0], ~pd.Series(req).duplicated().to_numpy()
    size = np.bincount(codes)
    width = int(size.max())
    order = np.argsort(codes, kind="stable")
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(size) - size, size)
    index = np.full((len(size), width), -1, dtype=np.int64)
    index[codes[order], slot] = order
    seqs = rows[SEQ].to_numpy()[np.flatnonzero(first)]
    return {"index": index, "seq": vocab.pad(list(seqs), max_len),
            "item": vocab.index(rows["item_id"].to_numpy())}


def prepare(rows: pd.DataFrame, x: np.ndarray, mean: np.ndarray, std: np.ndarray,
            vocab: ItemVocab, max_len: int, examination: Examination | None) -> Prepared:
    """Training tensors of ``rows`` (``x``: their feature matrix): the padded groups, and the
    groups with a relevant row, with their history lengths; with an ``examination``, each
    row's inverse propensity."""
    import torch

    tr = groups(rows, vocab, max_len)
    gains = torch.from_numpy(2.0 ** rows["label"].to_numpy(np.float32) - 1)
    weights = None if examination is None else torch.from_numpy(
        examination.inverse_propensity(rows["position"].to_numpy()).astype(np.float32))
    keep = (gains[torch.from_numpy(np.where(tr["index"] < 0, 0, tr["index"]))]
            * torch.from_numpy(tr["index"] >= 0)).sum(1) > 0
    group_ids = np.flatnonzero(keep.numpy())
    return Prepared(index=tr["index"], seq=tr["seq"], items=torch.from_numpy(tr["item"]),
                    dense=torch.from_numpy(dense(x, mean, std)), gains=gains,
                    group_ids=group_ids, seq_lengths=(tr["seq"][group_ids] != 0).sum(1),
                    weights=weights)
