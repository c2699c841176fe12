"""Training-set assembly, training, evaluation and promotion (called by the train DAG and CLI).

Split for an ``as_of`` date D (all dates inclusive): test = the last ``test_days`` dates up to
D, validation = the ``valid_days`` before them, training = the ``train_days`` before those.
Training and validation rows are grouped by request; evaluation groups are (user, date) over
the impressions of the test dates, each item labelled with its best funnel stage of the day.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import io
from pipeline.settings import Settings

log = logging.getLogger(__name__)

K_NDCG, K_MAP, K_RECALL = 10, 10, 20
METRICS = (f"ndcg@{K_NDCG}", f"map@{K_MAP}", f"recall@{K_RECALL}")


def split_dates(settings: Settings, as_of: dt.date) -> dict[str, list[dt.date]]:
    """Train / valid / test dates ending with ``as_of``, oldest first."""
    n = settings.train_days + settings.valid_days + settings.test_days
    days = io.window(as_of, n)
    a, b = settings.train_days, settings.train_days + settings.valid_days
    return {"train": days[:a], "valid": days[a:b], "test": days[b:]}


def rows_dir(settings: Settings) -> Path:
    """Where labelled rows live: ``work/rows/date=D``."""
    return settings.work_dir


def build_training_set(settings: Settings, as_of: dt.date) -> dict[str, list[str]]:
    """Write labelled rows for every date of the split; return the split as ISO dates."""
    from pipeline.labels import write_rows
    from pipeline.landing import require_valid

    split = split_dates(settings, as_of)
    need = [d for dates in split.values() for d in dates]
    require_valid(settings, need, f"training as of {as_of} ({need[0]}..{need[-1]}: "
                  f"RANKLINE_TRAIN_DAYS={settings.train_days}, RANKLINE_VALID_DAYS="
                  f"{settings.valid_days}, RANKLINE_TEST_DAYS={settings.test_days})")
    for d in need:
        write_rows(settings.raw_dir, settings.offline_dir, rows_dir(settings), d,
                   settings.negatives_per_request, settings.seed)
    return {k: [d.isoformat() for d in v] for k, v in split.items()}


def _read(settings: Settings, dates: list[str]) -> pd.DataFrame:
    return io.read_dates(rows_dir(settings), "rows", [dt.date.fromisoformat(d) for d in dates])


def eval_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Evaluation rows: impressions only, one row per (user, date, item), best label kept."""
    imp = rows[~rows["is_negative"]]
    best = imp.groupby(["user_id", "date", "item_id"], sort=False)["label"].transform("max")
    out = imp.assign(label=best).drop_duplicates(["user_id", "date", "item_id"])
    group = out["user_id"].astype(str) + "|" + out["date"].astype(str)
    return out.assign(group=pd.factorize(group)[0]).reset_index(drop=True)


def train_model(settings: Settings, split: dict[str, list[str]], run_id: str) -> dict[str, Any]:
    """Fit the XGBoost ranker, log it (with signature, plots, params) and register it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    from mlflow.models import infer_signature

    from feature_store.compute import feature_matrix
    from feature_store.definitions import feature_versions, model_features
    from models.xgb import XGBoostRanker
    from pipeline.tracking import MODEL_NAME, configure, log_figure

    configure(settings)
    train, valid = _read(settings, split["train"]), _read(settings, split["valid"])
    model = XGBoostRanker(
        objective=settings.objective, n_estimators=settings.n_estimators,
        max_depth=settings.max_depth, learning_rate=settings.learning_rate,
        device=settings.device, seed=settings.seed,
    ).fit(train, valid)

    with mlflow.start_run(run_id=run_id):
        mlflow.log_params({k: v for k, v in model.params.items() if v is not None})
        mlflow.log_params({
            "train_dates": f"{split['train'][0]}..{split['train'][-1]}",
            "valid_dates": f"{split['valid'][0]}..{split['valid'][-1]}",
            "test_dates": f"{split['test'][0]}..{split['test'][-1]}",
            "train_rows": len(train), "valid_rows": len(valid), "source": settings.source,
            "negatives_per_request": settings.negatives_per_request,
        })
        mlflow.log_metric("best_iteration", model.best_iteration or 0)
        for name, curve in model.evals_result.items():
            for step, value in enumerate(curve["ndcg@10"]):
                mlflow.log_metric(f"{name}_ndcg_at_10", value, step=step)
        mlflow.log_dict({"features": model_features(), "versions": feature_versions()},
                        "features.json")

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, curve in model.evals_result.items():
            ax.plot(curve["ndcg@10"], label=name)
        ax.set(xlabel="boosting round", ylabel="NDCG@10 (XGBoost)", title="Learning curve")
        ax.legend()
        log_figure(fig, "plots/learning_curve.png")
        imp = model.feature_importance()
        fig, ax = plt.subplots(figsize=(6, 6))
        imp.iloc[::-1].plot.barh(ax=ax)
        ax.set(title="Feature importance (total gain)")
        fig.tight_layout()
        log_figure(fig, "plots/feature_importance.png")

        X = feature_matrix(valid.head(50))
        sig = infer_signature(pd.DataFrame(X, columns=model_features()), model.score(valid.head(50)))
        info = mlflow.xgboost.log_model(
            model.model, name="model", signature=sig, registered_model_name=MODEL_NAME,
            model_format="ubj",
        )
    return {"model_uri": info.model_uri, "model_version": str(info.registered_model_version),
            "best_iteration": model.best_iteration}


def load_ranker(model_uri: str) -> Any:
    """An :class:`~models.xgb.XGBoostRanker` around a model logged by :func:`train_model`."""
    import mlflow

    from models.xgb import XGBoostRanker

    ranker = XGBoostRanker(device="cpu")
    ranker.model = mlflow.xgboost.load_model(model_uri)
    return ranker


def score_models(settings: Settings, rows: pd.DataFrame, model_uri: str,
                 champion_uri: str | None) -> dict[str, np.ndarray]:
    """Scores of every contender on ``rows``: the new model, champion, baselines, oracle."""
    from models.baselines import PopularityRanker, RandomRanker
    from pipeline.sources import get_source

    scores = {
        "xgboost": load_ranker(model_uri).score(rows),
        "popularity": PopularityRanker().score(rows),
        "random": RandomRanker(settings.seed).score(rows),
    }
    if champion_uri and champion_uri != model_uri:
        scores["champion"] = load_ranker(champion_uri).score(rows)
    oracle = get_source(settings).oracle(rows["user_id"].to_numpy(), rows["item_id"].to_numpy())
    if oracle is not None:
        scores["oracle"] = oracle
    return scores


def should_promote(table: pd.DataFrame, metric: str = METRICS[0]) -> tuple[bool, str]:
    """The promotion gate (pure): the model (row ``xgboost``) must beat both baselines on
    ``metric`` and do at least as well as the champion (row ``champion``, when there is one)."""
    ours = float(table.loc["xgboost", metric])
    baseline = float(max(table.loc["popularity", metric], table.loc["random", metric]))
    has_champion = "champion" in table.index
    champion = float(table.loc["champion", metric]) if has_champion else float("-inf")
    promoted = ours > baseline and ours >= champion
    reason = (f"{metric} {ours:.4f} vs best baseline {baseline:.4f}"
              + (f", champion {champion:.4f}" if has_champion else ", no champion before"))
    return promoted, reason


def evaluate(settings: Settings, split: dict[str, list[str]], run_id: str,
             trained: dict[str, Any]) -> dict[str, Any]:
    """Held-out metrics of every contender, logged to MLflow; promote the model if it wins.

    The new model becomes the champion only if it beats both baselines on NDCG@10 and does at
    least as well as the current champion on the same rows.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    from pipeline.landing import require_valid
    from pipeline.metrics import ranking_metrics
    from pipeline.tracking import champion_version, configure, log_figure, promote

    require_valid(settings, [dt.date.fromisoformat(d) for d in split["test"]],
                  "evaluation on the test dates")
    configure(settings)
    rows = eval_rows(_read(settings, split["test"]))
    champ = champion_version(settings)
    champ_uri = f"models:/{champ.name}/{champ.version}" if champ else None
    model_uri = trained["model_uri"]
    scores = score_models(settings, rows, model_uri, champ_uri)
    table = pd.DataFrame({
        name: ranking_metrics(rows["group"].to_numpy(), rows["label"].to_numpy(), s,
                              K_NDCG, K_MAP, K_RECALL, seed=settings.seed)
        for name, s in scores.items()
    }).T
    table.index.name = "model"
    promoted, reason = should_promote(table)
    if promoted:
        promote(settings, trained["model_version"], reason)

    with mlflow.start_run(run_id=run_id):
        for model, row in table.iterrows():
            for m in METRICS:
                mlflow.log_metric(f"test_{model}_{m.replace('@', '_at_')}", float(row[m]))
        mlflow.log_metric("test_groups", int(table["groups"].iloc[0]))
        mlflow.set_tag("promoted", str(promoted))
        mlflow.set_tag("promotion_reason", reason)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "evaluation.csv"
            table.to_csv(path)
            mlflow.log_artifact(str(path))
        fig, axes = plt.subplots(1, len(METRICS), figsize=(12, 4))
        for ax, m in zip(axes, METRICS, strict=True):
            table[m].plot.bar(ax=ax, color="tab:blue")
            ax.set(title=m, xlabel="")
        fig.suptitle("Held-out metrics: model, baselines, oracle")
        fig.tight_layout()
        log_figure(fig, "plots/metrics.png")
    log.info("evaluation on %s:\n%s", split["test"], table.to_string())
    return {"metrics": json.loads(table.to_json(orient="index")), "promoted": promoted,
            "reason": reason, "model_uri": model_uri, "model_version": trained["model_version"]}
