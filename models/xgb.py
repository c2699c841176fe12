"""The XGBoost learning-to-rank model (single process; CPU or CUDA)."""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import numpy as np
import pandas as pd

from feature_store.compute import feature_matrix
from feature_store.definitions import model_features
from models.base import Ranker

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when XGBoost was built with CUDA and a GPU is visible."""
    if device != "auto":
        return device
    import xgboost

    has_gpu = shutil.which("nvidia-smi") is not None or os.path.exists("/dev/nvidia0")
    return "cuda" if has_gpu and xgboost.build_info().get("USE_CUDA") else "cpu"


def query_ids(rows: pd.DataFrame) -> np.ndarray:
    """Dense query ids (XGBoost keeps them as uint32) from rows sorted by ``request_id``."""
    req = rows["request_id"].to_numpy()
    if not np.all(req[:-1] <= req[1:]):
        raise ValueError("rows must be sorted by request_id (the query id)")
    return pd.factorize(req)[0].astype(np.uint32)


class XGBoostRanker(Ranker):
    """``xgboost.XGBRanker`` on the feature set of :mod:`feature_store.definitions`."""

    name = "xgboost"

    def __init__(
        self,
        objective: str = "rank:pairwise",
        n_estimators: int = 300,
        max_depth: int = 6,
        learning_rate: float = 0.1,
        device: str = "auto",
        early_stopping_rounds: int = 30,
        seed: int = 0,
        n_jobs: int | None = None,
    ) -> None:
        """``n_jobs``: threads for training and scoring (None: XGBoost's default, every core)."""
        self.params: dict[str, Any] = {
            "objective": objective, "n_estimators": n_estimators, "max_depth": max_depth,
            "learning_rate": learning_rate, "device": resolve_device(device),
            "tree_method": "hist", "eval_metric": "ndcg@10",
            "early_stopping_rounds": early_stopping_rounds, "random_state": seed,
            "lambdarank_pair_method": "topk", "lambdarank_num_pair_per_sample": 10,
            "n_jobs": n_jobs,
        }
        self.model = None
        self.evals_result: dict[str, dict[str, list[float]]] = {}

    def fit(self, train: pd.DataFrame, valid: pd.DataFrame | None = None) -> XGBoostRanker:
        import xgboost

        params = dict(self.params)
        if valid is None:
            params.pop("early_stopping_rounds")
        self.model = xgboost.XGBRanker(**params)
        X, y, qid = feature_matrix(train), train["label"].to_numpy(), query_ids(train)
        evals = [(X, y)]
        qids = [qid]
        if valid is not None:
            evals.append((feature_matrix(valid), valid["label"].to_numpy()))
            qids.append(query_ids(valid))
        log.info("training XGBRanker on %d rows x %d features (%s, device=%s)", len(X),
                 X.shape[1], params["objective"], params["device"])
        self.model.fit(X, y, qid=qid, eval_set=evals, eval_qid=qids, verbose=25)
        res = self.model.evals_result()
        self.evals_result = {("train" if k == "validation_0" else "valid"): v for k, v in res.items()}
        return self

    def set_threads(self, n_jobs: int | None) -> XGBoostRanker:
        """Use ``n_jobs`` threads from now on, for fitting and for scoring a loaded model.

        A model loaded from MLflow forgets the threads it was trained with (its booster's
        ``nthread`` is 0, every core), and ``inplace_predict`` uses the booster's setting.
        """
        self.params["n_jobs"] = n_jobs
        if self.model is not None:
            self.model.n_jobs = n_jobs
            self.model.get_booster().set_param({"nthread": 0 if n_jobs is None else n_jobs})
        return self

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("fit the model before scoring")
        return self.model.get_booster().inplace_predict(feature_matrix(rows))

    @property
    def best_iteration(self) -> int | None:
        """The round early stopping kept (None without a validation set)."""
        return getattr(self.model, "best_iteration", None)

    def feature_importance(self) -> pd.Series:
        """Total gain per feature, largest first."""
        gain = self.model.get_booster().get_score(importance_type="total_gain")
        names = model_features()
        return pd.Series({n: gain.get(f"f{i}", 0.0) for i, n in enumerate(names)}).sort_values(
            ascending=False)
