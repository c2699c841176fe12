"""The XGBoost learning-to-rank model: in the task's process, or data-parallel on Dask; CPU or
CUDA.

On Dask (``dask_workers`` > 0: a ``LocalCluster`` of that many worker processes, started and
closed by the fit; or ``dask_scheduler``: a running cluster's address) every training partition
(a date's rows) is one Dask partition, read on a worker, sorted by query, with query ids made
unique across partitions; ``allow_group_split=True`` then keeps XGBoost on its fast path (its
default regrouping took 532 s where sorted partitions took 14 s: the team's design notes,
measured facts) and no query is ever split, since a query lives in one date. The fitted booster
becomes an ordinary ``XGBRanker``: logged, loaded and scored like a single-process one."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from feature_store.definitions import model_features
from models.base import ModelFamily, TrainingSet, TrainReport, files_of, read_part, requirements

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
    prune_warmup: ClassVar[int] = 40  # rounds: measured, 3 pruned 15 of 20 trials too early

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
        dask_workers: int = 0,
        dask_scheduler: str = "",
        checkpoint_rounds: int = 25,
        stream: bool = False,
        min_child_weight: float = 1.0,
        reg_lambda: float = 1.0,
        lambdarank_num_pair_per_sample: int = 10,
        drop_features: Sequence[str] = (),
        unbiased: bool = False,
    ) -> None:
        """``n_jobs``: threads for training and scoring (None: XGBoost's default, every core).
        Early stopping: training stops when validation NDCG@10 has not improved by
        ``early_stopping_min_delta`` in ``early_stopping_rounds`` rounds, and keeps the best round
        (gains of a few 1e-4 took hundreds of rounds on the demo data). ``dask_workers`` /
        ``dask_scheduler``: train on Dask (the module's docstring). With a checkpoint folder in
        the training set, a checkpoint every ``checkpoint_rounds`` rounds, which the next fit
        of the same parameters and data resumes (:mod:`models.xgb_checkpoint`). ``stream``: in
        one process, boost from the partitions streamed into XGBoost's external-memory matrix
        (:mod:`models.xgb_stream`) instead of one frame of every row. ``drop_features``: model
        features left out (set to missing: no tree splits on them), a feature selection's.
        ``unbiased``: position-debiased LambdaMART (XGBoost's ``lambdarank_unbiased``: it
        estimates the examination of each position from the clicks while it boosts, and
        weighs pairs by it) with the ``mean`` pair method (``topk`` debiases only pairs within
        its top k); each request's training rows are then its impressions in the order they
        were shown, without the sampled negatives (never shown: no position to correct)."""
        super().__init__(drop_features)
        self.checkpoint_rounds = checkpoint_rounds
        self.stream = stream
        """Boost from the partitions streamed to disk pages (:mod:`models.xgb_stream`), in
        memory bounded by one partition, not the training window."""
        self.dask = {"workers": dask_workers, "scheduler": dask_scheduler}
        self.device = device  # as asked: on Dask, ``auto`` is resolved on the workers
        self.params: dict[str, Any] = {
            "objective": objective, "n_estimators": n_estimators, "max_depth": max_depth,
            "learning_rate": learning_rate, "device": resolve_device(device),
            "tree_method": "hist", "eval_metric": "ndcg@10",
            "early_stopping_rounds": early_stopping_rounds,
            "early_stopping_min_delta": early_stopping_min_delta, "random_state": seed,
            # debiased: XGBoost corrects pairs within the top k only under topk (k: pairs per
            # sample, 10 by default, fewer than the logs' positions), all of them under mean
            "lambdarank_pair_method": "mean" if unbiased else "topk",
            "lambdarank_num_pair_per_sample": lambdarank_num_pair_per_sample,
            "min_child_weight": min_child_weight, "reg_lambda": reg_lambda,
            "lambdarank_unbiased": unbiased, "n_jobs": n_jobs,
        }
        self.model = None

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> XGBoostRanker:
        return cls(**{
            "objective": settings.objective, "n_estimators": settings.n_estimators,
            "max_depth": settings.max_depth, "learning_rate": settings.learning_rate,
            "device": settings.device, "seed": settings.seed, "n_jobs": settings.family_threads,
            "dask_workers": settings.dask_workers, "dask_scheduler": settings.dask_scheduler,
            "checkpoint_rounds": settings.checkpoint_rounds, "stream": settings.stream_rows,
            "drop_features": settings.dropped_features, "unbiased": bool(settings.unbiased),
            **overrides})

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """The ranking objective (pairwise or NDCG-weighted LambdaMART; not ``rank:map``, which
        needs binary labels), tree shape, step size, regularization and pairs per row; no row or
        column sampling (a resumed checkpoint would not replay it)."""
        return {
            "objective": trial.suggest_categorical(
                "objective", ["rank:pairwise", "rank:ndcg"]),
            "max_depth": trial.suggest_int("max_depth", 3, 10),
            "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
            "min_child_weight": trial.suggest_float("min_child_weight", 0.1, 50.0, log=True),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 30.0, log=True),
            "lambdarank_num_pair_per_sample": trial.suggest_int(
                "lambdarank_num_pair_per_sample", 1, 20),
        }

    @classmethod
    def search_grid(cls) -> dict[str, list[Any]]:
        """18 points: depth by step size by leaf weight, the rest at the defaults."""
        return {"objective": ["rank:pairwise"],
                "max_depth": [4, 6, 8], "learning_rate": [0.05, 0.1, 0.2],
                "min_child_weight": [1.0, 10.0], "reg_lambda": [1.0],
                "lambdarank_num_pair_per_sample": [10]}

    @property
    def on_dask(self) -> bool:
        return bool(self.dask["workers"] or self.dask["scheduler"])

    def fit(self, data: TrainingSet) -> TrainReport:
        if self.on_dask:
            return self._fit_dask(data)
        if self.stream:
            return self._fit_stream(data)
        import time

        import xgboost


        cols = ["label", *model_features()]  # not the users' sequences: big, and unused here
        unbiased = self.params["lambdarank_unbiased"]
        train = self._ordered(data.read("train", [*cols, "position"] if unbiased else cols))
        valid = data.read("valid", cols) if data.valid_paths else None
        params = self.fit_params(early_stopping=valid is not None)
        resumed, done, before = self._resumable(params, data)
        self.model = xgboost.XGBRanker(**params)
        X, y, qid = self.matrix(train), train["label"].to_numpy(), query_ids(train)
        # the training curve on a sample of whole groups: NDCG over every training row each
        # round would cost about as much as building the trees
        seen = np.random.default_rng(self.params["random_state"]).random(int(qid[-1]) + 1 if len(
            qid) else 0) < min(1.0, TRAIN_CURVE_ROWS / max(len(X), 1))
        sample = seen[qid] if len(qid) else np.zeros(0, dtype=bool)
        evals = [(X[sample], y[sample])]
        qids = [pd.factorize(qid[sample])[0].astype(np.uint32)]
        if valid is not None:
            evals.append((self.matrix(valid), valid["label"].to_numpy()))
            qids.append(query_ids(valid))
        log.info("training XGBRanker on %d rows x %d features (%s, device=%s)", len(X),
                 X.shape[1], params["objective"], params["device"])
        t0 = time.perf_counter()
        self.model.fit(X, y, qid=qid, eval_set=evals, eval_qid=qids, verbose=25,
                       xgb_model=resumed)
        seconds = time.perf_counter() - t0
        self._trained(data)
        return self._report(_joined(before, self.model.evals_result()),
                            getattr(self.model, "best_iteration", None), seconds, len(X),
                            resumed_at_round=done)

    def _ordered(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Training rows as the objective reads them: by request; when position-debiased, the
        impressions by the position shown inside each request (XGBoost takes a row's place
        in its query for its position), without the sampled negatives."""
        if not self.params["lambdarank_unbiased"]:
            return rows
        return by_position(rows)

    def fit_params(self, early_stopping: bool, valid_set: str = "validation_1") -> dict[str, Any]:
        """``XGBRanker``'s arguments: ``self.params`` with early stopping on the validation set
        (``valid_set``; ``validation_1``: the second of the evaluation sets, after the
        training curve's sample) as a callback, or none."""
        import xgboost

        params = dict(self.params)
        rounds, delta = params.pop("early_stopping_rounds"), params.pop("early_stopping_min_delta")
        if early_stopping:
            params["callbacks"] = [xgboost.callback.EarlyStopping(
                rounds=rounds, min_delta=delta, metric_name="ndcg@10", data_name=valid_set,
                maximize=True, save_best=True)]
            if self.on_step is not None and not self.on_dask:
                from models.xgb_checkpoint import StepHook

                params["callbacks"].append(StepHook(self.on_step))
        return params

    def _checkpoint_path(self, data: TrainingSet) -> Any:
        return None if data.checkpoint_dir is None else (
            Path(data.checkpoint_dir) / self.family / "resume.pkl")

    def _resumable(self, params: dict[str, Any], data: TrainingSet) -> tuple[Any, int, dict]:
        """With a checkpoint folder: add the checkpoint callback to ``params`` (after early
        stopping), and return ``(booster to continue, rounds done, evaluation history)`` of
        the checkpoint there, fewer rounds left in ``params``; without: ``(None, 0, {})``."""
        path = self._checkpoint_path(data)
        if path is None:
            return None, 0, {}
        from xgboost.callback import EarlyStopping

        from models.xgb_checkpoint import RoundCheckpoints, resume

        callbacks = params.get("callbacks", [])
        early = next((c for c in callbacks if isinstance(c, EarlyStopping)), None)
        fingerprint = {"params": {k: v for k, v in self.params.items() if k != "n_jobs"},
                       "every": self.checkpoint_rounds, "dask": self.dask,
                       "stream": self.stream, "dropped": list(self.dropped),
                       "train": files_of(data.train_paths),
                       "valid": files_of(data.valid_paths), "negatives": data.negatives,
                       "negative_source": data.negative_source}
        booster, done, before = resume(path, fingerprint, early)
        total = self.params["n_estimators"]
        params["n_estimators"] = total - done
        params["callbacks"] = [*callbacks, RoundCheckpoints(
            path, self.checkpoint_rounds, total, fingerprint, early, before)]
        return booster, done, before

    def _trained(self, data: TrainingSet) -> None:
        """The fit is done: its checkpoint has nothing left to resume."""
        path = self._checkpoint_path(data)
        if path is not None:
            path.unlink(missing_ok=True)

    def _report(self, res: dict, best: int | None, seconds: float, rows: int,
                trained: dict[str, Any] | None = None, **metrics: float) -> TrainReport:
        """The report of a fit; ``trained``: parameters that differ from ``self.params`` in
        how the fit ran (the Dask workers' device and threads)."""
        from feature_store.definitions import feature_spec

        self.features = feature_spec()
        curves = {f"{'train' if k == 'validation_0' else 'valid'}_ndcg@10": v["ndcg@10"]
                  for k, v in res.items()}
        rounds = len(next(iter(curves.values()), []))
        return TrainReport(
            step="boosting round", curves=curves, best_step=best,
            params={k: v for k, v in {**self.params, **(trained or {}),
                                      "drop_features": ",".join(self.dropped)}.items()
                    if v is not None and v != ""},
            metrics={"fit_seconds": seconds, "rows": rows,
                     "rows_per_s": rows * max(rounds, 1) / max(seconds, 1e-9), **metrics},
            importance=self.feature_importance())

    def _fit_dask(self, data: TrainingSet) -> TrainReport:
        """The fit on Dask: one partition per training path, the same early stopping and the
        same share of training queries for the training curve as in one process."""
        import time

        import dask.dataframe as dd
        import xgboost
        from xgboost import dask as dxgb

        parts = {"train": list(data.train_paths), "valid": list(data.valid_paths)}
        seed = self.params["random_state"]
        with dask_client(self.dask["workers"], self.dask["scheduler"],
                         self.params["n_jobs"]) as client:
            frames, n_rows = {}, 0
            for name, paths in parts.items():
                if not paths:
                    continue
                # query ids unique across partitions: each partition's offset is the number of
                # queries before it (one cheap pass over the request_id column)
                counts = np.array(client.gather(client.map(
                    _count, paths, valid=name == "valid", negatives=data.negatives,
                    source=data.negative_source, pure=False)))
                offsets = query_offsets(counts[:, 0])
                # the training curve's sample: about TRAIN_CURVE_ROWS rows of whole queries
                share = min(1.0, TRAIN_CURVE_ROWS / max(int(counts[:, 1].sum()), 1))
                frames[name] = dd.from_map(_partition, paths, offsets.tolist(),
                                           sample=share if name == "train" else 0.0,
                                           seed=seed, dropped=self.dropped,
                                           ordered=self.params["lambdarank_unbiased"],
                                           valid=name == "valid", negatives=data.negatives,
                                           source=data.negative_source,
                                           meta=_partition_meta(),
                                           enforce_metadata=False)
                n_rows = n_rows or int(counts[:, 1].sum())  # the training rows
            params = self.fit_params(early_stopping="valid" in frames)
            resumed, done, before = self._resumable(params, data)
            params.pop("n_jobs")  # the workers' threads
            params["device"] = _cluster_device(client, self.device)
            feats = model_features()
            train = frames["train"].persist()
            sample = train[train["_sample"]]
            evals = [(sample[feats], sample["label"])]
            qids = [sample["_qid"]]
            if "valid" in frames:
                valid = frames["valid"].persist()
                evals.append((valid[feats], valid["label"]))
                qids.append(valid["_qid"])
            ranker = dxgb.DaskXGBRanker(**params, allow_group_split=True)
            ranker.client = client
            info = client.scheduler_info()["workers"]
            log.info("training XGBRanker on Dask (%d workers) on %d rows x %d features in %d "
                     "partitions (%s, device=%s)", len(info), n_rows, len(feats),
                     train.npartitions, params["objective"], params["device"])
            t0 = time.perf_counter()
            ranker.fit(train[feats], train["label"], qid=train["_qid"], eval_set=evals,
                       eval_qid=qids, verbose=25, xgb_model=resumed)
            seconds = time.perf_counter() - t0
            trained = {"device": params["device"], "n_jobs": None,
                       "dask_scheduler": self.dask["scheduler"] or "LocalCluster",
                       "dask_workers": len(info),
                       "dask_threads": sum(w.get("nthreads", 0) for w in info.values())}
            booster = ranker.get_booster()
            res, best = ranker.evals_result(), getattr(ranker, "best_iteration", None)
        self._trained(data)
        self.model = xgboost.XGBRanker(**self.fit_params(early_stopping=False))
        self.model.load_model(bytearray(booster.save_raw("ubj")))
        self.set_threads(self.params["n_jobs"])  # scoring here: this task's threads
        return self._report(_joined(before, res), best, seconds, n_rows, trained,
                            dask_workers=len(info), resumed_at_round=done)

    def _fit_stream(self, data: TrainingSet) -> TrainReport:
        """The fit from streamed partitions: the same rows, query ids, training-curve sample
        and early stopping as the Dask path's, boosted in this process."""
        import tempfile
        import time

        import xgboost

        from models.xgb_stream import train_booster

        parts = {"train": list(data.train_paths), "valid": list(data.valid_paths)}
        counts = {k: np.array([_count(p, k == "valid", data.negatives, data.negative_source)
                               for p in v]
                              ).reshape(-1, 2) for k, v in parts.items()}
        valid = set(parts["valid"])
        offsets = {k: query_offsets(c[:, 0]).tolist() for k, c in counts.items()}
        rows = int(counts["train"][:, 1].sum())
        share, seed = min(1.0, TRAIN_CURVE_ROWS / max(rows, 1)), self.params["random_state"]
        params = self.fit_params(early_stopping=bool(parts["valid"]))
        resumed, done, before = self._resumable(params, data)
        log.info("training XGBRanker on %d rows streamed from %d partitions (%s, device=%s)",
                 rows, len(parts["train"]), params["objective"], params["device"])
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="rankline-xgb-") as cache:
            booster, res, batch = train_booster(
                params, parts, offsets, lambda p, o: _partition(
                    p, o, share, seed, self.dropped, self.params["lambdarank_unbiased"],
                    valid=p in valid, negatives=data.negatives, source=data.negative_source),
                Path(cache), resumed)
        seconds = time.perf_counter() - t0
        self._trained(data)
        best = booster.attr("best_iteration")
        self.model = xgboost.XGBRanker(**self.fit_params(early_stopping=False))
        self.model.load_model(bytearray(booster.save_raw("ubj")))
        self.set_threads(self.params["n_jobs"])
        return self._report(_joined(before, res), None if best is None else int(best), seconds,
                            rows, {"stream": True}, resumed_at_round=done, largest_batch=batch)

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
        return self.model.get_booster().inplace_predict(self.matrix(rows))

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
        # keyed fN, or by name when trained on named columns (the Dask path's DataFrames)
        return pd.Series({n: gain.get(n, gain.get(f"f{i}", 0.0)) for i, n in enumerate(names)}
                         ).sort_values(ascending=False)


def _joined(before: dict, res: dict) -> dict:
    """Evaluation history: the resumed checkpoint's rounds, then this fit's."""
    return {data: {m: [*before.get(data, {}).get(m, []), *v] for m, v in metrics.items()}
            for data, metrics in res.items()}


def query_offsets(queries: np.ndarray) -> np.ndarray:
    """Each partition's first query id: the number of queries in the partitions before it."""
    return np.concatenate([[0], np.cumsum(queries)[:-1]]).astype(np.int64)


def _count(path: Any, valid: bool = False, negatives: int | None = None,
           source: str = "popularity") -> tuple[int, int]:
    """The queries and rows of one partition as :func:`_partition` reads it."""
    req = read_part(path, ["request_id"], valid, negatives, source)["request_id"]
    return int(req.nunique()), len(req)


def _partition_meta() -> pd.DataFrame:
    """The columns and dtypes of :func:`_partition`'s frames, empty."""
    cols = {f: np.float32 for f in model_features()} | {
        "label": np.float32, "_qid": np.int64, "_sample": bool}
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in cols.items()})


def by_position(rows: pd.DataFrame) -> pd.DataFrame:
    """The shown rows (impressions) of ``rows``, each request's in the order shown."""
    shown = rows[rows["position"].notna()]
    if shown.empty:
        raise ValueError("position-debiased training (RANKLINE_UNBIASED) needs the logs' "
                         "impression positions, and these rows have none")
    return shown.sort_values(["request_id", "position"], kind="stable").reset_index(drop=True)


def _partition(path: Any, offset: int, sample: float, seed: int,
               dropped: Sequence[str] = (), ordered: bool = False, valid: bool = False,
               negatives: int | None = None, source: str = "popularity") -> pd.DataFrame:
    """One training partition as a Dask partition: the features as float32 (``dropped`` ones
    missing), the label, a query id unique across partitions (``offset`` + this partition's
    dense ids, sorted; ``ordered``: the impressions only, in the order shown, :func:`by_position`)
    and whether the query is in the training-curve sample. ``valid``: a validation partition,
    judged as the evaluation judges (:func:`models.base.judged`, never ``ordered``);
    ``negatives``: sampled negatives kept per training request from ``source`` (None: all)."""
    ordered = ordered and not valid
    rows = read_part(path, ["request_id", "label", *model_features(),
                             *(["position"] if ordered else [])], valid, negatives, source)
    rows = (by_position(rows) if ordered else
            rows.sort_values("request_id", kind="stable").reset_index(drop=True))
    local = query_ids(rows).astype(np.int64)
    out = rows[model_features()].astype(np.float32)
    out[list(dropped)] = np.nan
    out["label"] = rows["label"].to_numpy(np.float32)  # as XGBoost keeps it
    out["_qid"] = local + offset
    n = int(local[-1]) + 1 if len(local) else 0
    # the same sample whichever worker reads the partition: seeded by (seed, partition offset)
    keep = np.random.default_rng([seed, offset]).random(n) < sample
    out["_sample"] = keep[local] if n else np.zeros(0, dtype=bool)
    return out


def _cluster_device(client: Any, device: str) -> str:
    """``auto`` on a cluster: ``cuda`` when every worker has CUDA (``resolve_device`` run on
    each), else ``cpu``; anything else as given."""
    if device != "auto":
        return device
    found = set(client.run(resolve_device, "auto").values())
    return "cuda" if found == {"cuda"} else "cpu"


@contextlib.contextmanager
def dask_client(workers: int, scheduler: str, threads: int | None) -> Iterator[Any]:
    """A Dask client: of the cluster at ``scheduler``, or of a ``LocalCluster`` of ``workers``
    worker processes (``threads`` threads shared among them, at least one each) started here and
    closed on exit, also when the client cannot connect. Worker processes are not daemonic, for
    the cluster's whole life (a nanny reads the setting again when it restarts a worker): an
    Airflow task's process may not have daemonic children that have children."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler, timeout=30) as client:
            yield client
        return
    per = max(1, (threads or len(os.sched_getaffinity(0))) // max(workers, 1))
    with dask.config.set({"distributed.worker.daemon": False}), LocalCluster(
            n_workers=workers, threads_per_worker=per, processes=True, host="127.0.0.1",
            dashboard_address=None, silence_logs=logging.WARNING) as cluster, \
            Client(cluster) as client:
        yield client
