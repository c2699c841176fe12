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
from models.base import ModelFamily, TrainingSet, TrainReport, requirements

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


TRAIN_CURVE_ROWS = 200_000
"""About this many training rows (whole groups) are scored for the training curve each round."""


class XGBoostRanker(ModelFamily):
    """``xgboost.XGBRanker`` on the feature set of :mod:`feature_store.definitions`."""

    family = "xgboost"

    def __init__(
        self,
        objective: str = "rank:pairwise",
        n_estimators: int = 300,
        max_depth: int = 6,
        learning_rate: float = 0.1,
        device: str = "auto",
        early_stopping_rounds: int = 30,
        early_stopping_min_delta: float = 5e-4,
        seed: int = 0,
        n_jobs: int | None = None,
    ) -> None:
        """``n_jobs``: threads for training and scoring (None: XGBoost's default, every core).
        Early stopping: training stops when validation NDCG@10 has not improved by
        ``early_stopping_min_delta`` in ``early_stopping_rounds`` rounds, and keeps the best round
        (gains of a few 1e-4 took hundreds of rounds on the demo data)."""
        super().__init__()
        self.params: dict[str, Any] = {
            "objective": objective, "n_estimators": n_estimators, "max_depth": max_depth,
            "learning_rate": learning_rate, "device": resolve_device(device),
            "tree_method": "hist", "eval_metric": "ndcg@10",
            "early_stopping_rounds": early_stopping_rounds,
            "early_stopping_min_delta": early_stopping_min_delta, "random_state": seed,
            "lambdarank_pair_method": "topk", "lambdarank_num_pair_per_sample": 10,
            "n_jobs": n_jobs,
        }
        self.model = None

    @classmethod
    def from_settings(cls, settings: Any) -> XGBoostRanker:
        return cls(objective=settings.objective, n_estimators=settings.n_estimators,
                   max_depth=settings.max_depth, learning_rate=settings.learning_rate,
                   device=settings.device, seed=settings.seed, n_jobs=settings.family_threads)

    def fit(self, data: TrainingSet) -> TrainReport:
        import time

        import xgboost

        from feature_store.definitions import feature_spec

        cols = ["label", *model_features()]  # not the users' sequences: big, and unused here
        train = data.read("train", cols)
        valid = data.read("valid", cols) if data.valid_paths else None
        params = dict(self.params)
        rounds, delta = params.pop("early_stopping_rounds"), params.pop("early_stopping_min_delta")
        if valid is not None:
            params["callbacks"] = [xgboost.callback.EarlyStopping(
                rounds=rounds, min_delta=delta, metric_name="ndcg@10", data_name="validation_1",
                maximize=True, save_best=True)]
        self.model = xgboost.XGBRanker(**params)
        X, y, qid = feature_matrix(train), train["label"].to_numpy(), query_ids(train)
        # the training curve on a sample of whole groups: NDCG over every training row each
        # round would cost about as much as building the trees
        seen = np.random.default_rng(self.params["random_state"]).random(int(qid[-1]) + 1 if len(
            qid) else 0) < min(1.0, TRAIN_CURVE_ROWS / max(len(X), 1))
        sample = seen[qid] if len(qid) else np.zeros(0, dtype=bool)
        evals = [(X[sample], y[sample])]
        qids = [pd.factorize(qid[sample])[0].astype(np.uint32)]
        if valid is not None:
            evals.append((feature_matrix(valid), valid["label"].to_numpy()))
            qids.append(query_ids(valid))
        log.info("training XGBRanker on %d rows x %d features (%s, device=%s)", len(X),
                 X.shape[1], params["objective"], params["device"])
        t0 = time.perf_counter()
        self.model.fit(X, y, qid=qid, eval_set=evals, eval_qid=qids, verbose=25)
        seconds = time.perf_counter() - t0
        self.features = feature_spec()
        res = self.model.evals_result()
        curves = {f"{'train' if k == 'validation_0' else 'valid'}_ndcg@10": v["ndcg@10"]
                  for k, v in res.items()}
        rounds = len(next(iter(curves.values()), []))
        return TrainReport(
            step="boosting round", curves=curves,
            best_step=getattr(self.model, "best_iteration", None),
            params={k: v for k, v in self.params.items() if v is not None},
            metrics={"fit_seconds": seconds, "rows": len(X),
                     "rows_per_s": len(X) * max(rounds, 1) / max(seconds, 1e-9)},
            importance=self.feature_importance())

    def set_threads(self, n: int | None) -> XGBoostRanker:
        """Use ``n`` threads from now on, for fitting and for scoring a loaded model.

        A model loaded from MLflow forgets the threads it was trained with (its booster's
        ``nthread`` is 0, every core), and ``inplace_predict`` uses the booster's setting.
        """
        self.params["n_jobs"] = n
        if self.model is not None:
            self.model.n_jobs = n
            self.model.get_booster().set_param({"nthread": 0 if n is None else n})
        return self

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("fit the model before scoring")
        return self.model.get_booster().inplace_predict(feature_matrix(rows))

    def _log_flavor(self, name: str, signature: Any, metadata: dict[str, Any],
                    registered_model_name: str | None) -> Any:
        import mlflow

        return mlflow.xgboost.log_model(self.model, name=name, signature=signature,
                                        metadata=metadata, model_format="ubj",
                                        registered_model_name=registered_model_name,
                                        pip_requirements=requirements("xgboost"))

    @classmethod
    def _load_flavor(cls, model_uri: str, metadata: Any) -> XGBoostRanker:
        import mlflow

        ranker = cls(device="cpu")
        ranker.model = mlflow.xgboost.load_model(model_uri)
        return ranker

    def feature_importance(self) -> pd.Series:
        """Total gain per feature, largest first."""
        gain = self.model.get_booster().get_score(importance_type="total_gain")
        names = model_features()
        return pd.Series({n: gain.get(f"f{i}", 0.0) for i, n in enumerate(names)}).sort_values(
            ascending=False)
