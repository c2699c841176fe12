"""XGBoost trained from a stream of Parquet partitions, in memory bounded by one partition.

Each training partition (a date's rows) is one batch of an ``xgboost.DataIter``: read, sorted by
request, query ids continued from the partitions before it (no query spans two partitions, so
none is split). ``ExtMemQuantileDMatrix`` quantizes each batch into a page on disk and boosts
from the pages, so what stays in memory is one batch while the matrix is built, and per row only
the label, query id, gradient and prediction cache while boosting (about 20 bytes a row, where a
pandas frame of the rows takes about 200). Validation and training-curve rows are built the same
way against the training matrix's bins. Imported only where XGBoost trains (it imports xgboost).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost

from feature_store.definitions import model_features

log = logging.getLogger(__name__)


class Partitions(xgboost.DataIter):
    """Batches of ``read(path, offset)`` over ``paths`` (a frame with the model features,
    ``label`` and ``_qid``; ``keep``: which of its rows to pass), one per path."""

    def __init__(self, paths: list[Path], offsets: list[int],
                 read: Callable[[Path, int], pd.DataFrame], cache: Path,
                 keep: Callable[[pd.DataFrame], Any] | None = None) -> None:
        self.paths, self.offsets, self.read, self.keep = paths, offsets, read, keep
        self.i, self.rows, self.loads, self.t0 = 0, 0, 0, time.perf_counter()
        super().__init__(cache_prefix=str(cache), release_data=True)

    def next(self, input_data: Callable[..., None]) -> bool:
        if self.i == len(self.paths):
            return False
        part = self.read(self.paths[self.i], self.offsets[self.i])
        if self.keep is not None:
            part = part[self.keep(part)]
        feats = model_features()
        input_data(data=part[feats].to_numpy(np.float32), label=part["label"].to_numpy(),
                   qid=part["_qid"].to_numpy())
        self.i += 1
        self.loads += 1
        self.rows = max(self.rows, len(part))
        if self.loads % 10 == 0:
            log.info("streamed %d partition reads (%.1f/s)", self.loads,
                     self.loads / (time.perf_counter() - self.t0))
        return True

    def reset(self) -> None:
        self.i = 0


def train_booster(params: dict[str, Any], parts: dict[str, list[Path]], offsets: dict[str, list],
                  read: Callable[[Path, int], pd.DataFrame], cache: Path,
                  resumed: Any = None) -> tuple[Any, dict, int]:
    """Boost from the partitions of ``parts["train"]`` (and ``parts["valid"]``): ``params`` are
    ``XGBRanker``'s (``n_estimators`` rounds, ``callbacks``, ``n_jobs``...). Evaluation sets,
    named as ``XGBRanker.fit`` names them: ``validation_0`` the training-curve sample (rows
    whose ``_sample`` is set), ``validation_1`` the validation rows. Returns the booster, the
    evaluation history and the largest batch's rows."""
    params = dict(params)
    rounds, callbacks = params.pop("n_estimators"), params.pop("callbacks", None)
    threads = params.pop("n_jobs", None)
    params["seed"] = params.pop("random_state", 0)
    params["nthread"] = threads or 0
    params["grow_policy"] = "depthwise"  # lossguide reads the pages once per node
    common = {"nthread": threads or 0, "max_bin": 256}
    train_it = Partitions(parts["train"], offsets["train"], read, cache / "train")
    dtrain = xgboost.ExtMemQuantileDMatrix(train_it, **common)
    sample = xgboost.ExtMemQuantileDMatrix(
        Partitions(parts["train"], offsets["train"], read, cache / "sample",
                   keep=lambda p: p["_sample"].to_numpy()), ref=dtrain, **common)
    evals = [(sample, "validation_0")]
    if parts.get("valid"):
        evals.append((xgboost.ExtMemQuantileDMatrix(
            Partitions(parts["valid"], offsets["valid"], read, cache / "valid"), ref=dtrain,
            **common), "validation_1"))
    res: dict = {}
    booster = xgboost.train(params, dtrain, num_boost_round=rounds, evals=evals,
                            evals_result=res, callbacks=callbacks, verbose_eval=25,
                            xgb_model=resumed)
    return booster, res, train_it.rows
