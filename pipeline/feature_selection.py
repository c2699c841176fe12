"""Two-stage feature selection: a proposal of features to leave out, logged to MLflow.

``rankline select-features`` proposes; ``RANKLINE_DROP_FEATURES`` accepts (every family then
treats those features as missing: no tree splits on them, a network sees them always missing).

- **Stage 1, shadow features** (:func:`shadow_screen`): next to every feature, a copy of it
  shuffled across the rows (its *shadow*: the same values, so the same number of split points,
  and no relation to the label). XGBoost's ranker (whatever the family: the settings' XGBoost
  parameters, clicks as logged, early stopping on the validation rows with their own shadows; if
  no feature passes, the one with the largest gain is kept) is trained ``repeats`` times on
  features + shadows, each time with other shuffles; a feature survives when its total gain
  beats every shadow's (the best-gaining shadow: Boruta's rule) in every repeat. A continuous
  noise feature offers many split points and so gains something by chance; its shadow offers
  exactly as many, so the shadows set the bar that chance reaches. (Beating only its own shadow
  lets pure noise through half the time per repeat: measured, one of four noise columns won all
  three repeats.)
- **Stage 2, backward elimination** (:func:`backward_eliminate`): from the survivors, least
  important first, a feature is left out when the family's validation NDCG@10 without it is at
  least the best so far minus ``tolerance``.
- **Report** (:func:`select_features`): the family trained on the selected features, on all of
  them, and on random subsets of the selected set's size; validation NDCG@10 and held-out
  NDCG@10 with paired bootstrap intervals over the held-out groups.

Both stages look at training and validation dates only; the held-out dates are for the report.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.selection import (
    Progress,
    family_defaults,
    fit_family,
    held_out_ndcg,
    job_run,
    prepare_split,
    subsample_groups,
)
from pipeline.settings import Settings

log = logging.getLogger(__name__)

SHADOW = "shadow:"


def with_shadows(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``x`` with a shuffled copy of each column appended (each column its own shuffle)."""
    shadows = np.column_stack([rng.permutation(col) for col in x.T]) if x.shape[1] else x
    return np.hstack([x, shadows]).astype(np.float32)


def shadow_screen(train: tuple[np.ndarray, np.ndarray, np.ndarray],
                  valid: tuple[np.ndarray, np.ndarray, np.ndarray], names: Sequence[str],
                  model: Any, repeats: int = 3, seed: int = 0) -> pd.DataFrame:
    """Stage 1: ``(X, y, qid)`` of the training and validation rows, the features' ``names``
    and an :class:`models.xgb.XGBoostRanker` whose settings to train with. Returns one row per
    feature: mean total gain, its own shadow's mean, the repeats in which it beat the best
    shadow (``wins``), and ``keep`` (won all)."""
    import xgboost

    if repeats < 1:
        raise ValueError(f"the shadow screen needs at least one repeat, not {repeats}")
    rng = np.random.default_rng(seed)
    n = len(names)
    gains, shadow_gains = np.zeros((repeats, n)), np.zeros((repeats, n))
    for r in range(repeats):
        xt, xv = with_shadows(train[0], rng), with_shadows(valid[0], rng)
        params = model.fit_params(early_stopping=True, valid_set="validation_0")
        params["random_state"] = seed + r
        ranker = xgboost.XGBRanker(**params)
        ranker.fit(xt, train[1], qid=train[2], eval_set=[(xv, valid[1])], eval_qid=[valid[2]],
                   verbose=False)
        gain = ranker.get_booster().get_score(importance_type="total_gain")
        row = np.array([gain.get(f"f{i}", 0.0) for i in range(2 * n)])
        gains[r], shadow_gains[r] = row[:n], row[n:]
        log.info("shadow screen: repeat %d/%d, %d of %d features beat the best shadow", r + 1,
                 repeats, int((row[:n] > row[n:].max()).sum()), n)
    wins = (gains > shadow_gains.max(1, keepdims=True)).sum(0)
    return pd.DataFrame({"gain": gains.mean(0), "shadow_gain": shadow_gains.mean(0),
                         "wins": wins, "keep": wins == repeats},
                        index=pd.Index(list(names), name="feature"))


def backward_eliminate(candidates: Sequence[str], others: Sequence[str],
                       score: Callable[[tuple[str, ...]], float],
                       tolerance: float = 0.0) -> tuple[list[str], list[dict[str, Any]]]:
    """Stage 2: ``candidates`` ordered least important first; ``others``: the features stage 1
    already left out; ``score(dropped)`` the validation NDCG@10 with ``dropped`` left out.
    Returns the features kept and the steps (feature tried, score, whether it went)."""
    dropped = tuple(others)
    best = score(dropped)
    steps = [{"feature": None, "score": best, "dropped": True}]
    kept = list(candidates)
    for feature in candidates:
        if len(kept) == 1:
            break  # a ranker needs a feature
        value = score((*dropped, feature))
        gone = value >= best - tolerance
        steps.append({"feature": feature, "score": value, "dropped": bool(gone)})
        log.info("backward elimination: without %s %.4f (best %.4f): %s", feature, value, best,
                 "left out" if gone else "kept")
        if gone:
            dropped, best = (*dropped, feature), max(best, value)
            kept.remove(feature)
    return kept, steps


def select_features(settings: Settings, as_of: dt.date, family: str,
                    fraction: float = 0.25, repeats: int = 3, tolerance: float = 0.0,
                    random_subsets: int = 3) -> dict[str, Any]:
    """Both stages on ``fraction`` of the split's training groups, then the report; all logged
    to one MLflow run (tag ``rankline.job=select-features``). Returns the proposal."""
    import mlflow

    from feature_store.definitions import model_features
    from models.metrics import paired_bootstrap
    from models.xgb import XGBoostRanker, query_ids
    from pipeline.tracking import log_figure
    from pipeline.training import _read, eval_rows

    names = model_features()
    seed = settings.seed
    with job_run(settings, "select-features", f"select features {family}") as run, \
            tempfile.TemporaryDirectory() as tmp:
        split, data = prepare_split(settings, as_of, run.info.run_id, [family], Path(tmp))
        data = subsample_groups(data, fraction, seed, Path(tmp))
        screen_model = XGBoostRanker.from_settings(settings, drop_features=(), unbiased=False)
        arrays = {}
        for part in ("train", "valid"):
            rows = data.read(part, ["label", *names])
            arrays[part] = (screen_model.matrix(rows), rows["label"].to_numpy(),
                            query_ids(rows))
        screen = shadow_screen(arrays["train"], arrays["valid"], names, screen_model,
                               repeats, seed)
        survivors = screen[screen["keep"]].sort_values("gain").index.tolist()
        if not survivors:  # nothing beat the shadows: keep the strongest, a ranker needs one
            log.warning("no feature beat the best shadow in every repeat; keeping the one "
                        "with the largest gain, %s", screen["gain"].idxmax())
            survivors = [screen["gain"].idxmax()]
            screen.loc[survivors[0], "keep"] = True
        base = {**family_defaults(settings, family)}
        progress = Progress("select features", len(survivors) + 1, "fits")

        def score(dropped: tuple[str, ...]) -> float:
            value = fit_family(settings, family, data, seed,
                               {**base, "drop_features": dropped})[1]
            progress.step(f"{len(names) - len(dropped)} features: valid {value:.4f}")
            return value

        others = screen[~screen["keep"]].index.tolist()
        kept, steps = backward_eliminate(survivors, others, score, tolerance)
        dropped = [n for n in names if n not in kept]

        # the report: selected vs all vs random subsets of the same size, held-out dates
        test = eval_rows(_read(settings, split["test"]))
        rng = np.random.default_rng(seed)
        contenders = {"selected": tuple(dropped), "all": ()}
        for i in range(random_subsets):
            subset = set(rng.choice(names, size=len(kept), replace=False))
            contenders[f"random{i}"] = tuple(n for n in names if n not in subset)
        valid, held = {}, {}
        for name, drop in contenders.items():
            model, valid[name] = fit_family(settings, family, data, seed,
                                            {**base, "drop_features": drop})
            held[name] = held_out_ndcg(test, model.score(test), seed)
        held["random"] = pd.concat([held[f"random{i}"] for i in range(random_subsets)],
                                   axis=1).mean(1)
        valid["random"] = float(np.mean([valid[f"random{i}"] for i in range(random_subsets)]))
        intervals = {}
        for other in ("all", "random"):
            diff = (held["selected"] - held[other]).to_numpy()
            mean, low, high = paired_bootstrap(diff, settings.gate_bootstrap,
                                               settings.gate_confidence, seed)
            intervals[other] = {"mean": mean, "low": low, "high": high,
                                "conclusion": "better" if low > 0 else
                                "worse" if high < 0 else "no difference"}
        proposal = {
            "family": family, "kept": kept, "dropped": dropped, "fraction": fraction,
            "stage1": {"survivors": survivors, "screened_out": others, "repeats": repeats},
            "stage2": steps, "groups": int(len(held["selected"])),
            "valid_ndcg@10": {k: float(v) for k, v in valid.items()},
            "test_ndcg@10": {k: float(v.mean()) for k, v in held.items()},
            "selected_minus": intervals, "confidence": settings.gate_confidence,
            "accept": f"RANKLINE_DROP_FEATURES={','.join(dropped)}",
        }
        with mlflow.start_run(run_id=run.info.run_id):  # the job's run, now
            mlflow.log_params({"family": family, "fraction": fraction, "repeats": repeats,
                               "tolerance": tolerance, "as_of": as_of.isoformat(),
                               "kept_features": len(kept)})
            mlflow.log_metrics({f"{part}_{k}_ndcg_at_10": v
                                for part in ("valid", "test")
                                for k, v in proposal[f"{part}_ndcg@10"].items()})
            mlflow.log_dict(proposal, "selection/proposal.json")
            with tempfile.TemporaryDirectory() as out:
                screen.to_csv(Path(out) / "stage1.csv")
                mlflow.log_artifact(str(Path(out) / "stage1.csv"), "selection")
            log_figure(selection_figure(screen, steps), "selection/stages.png")
    return {**proposal, "run_id": run.info.run_id}


def selection_figure(screen: pd.DataFrame, steps: list[dict[str, Any]]) -> Any:
    """Stage 1: each feature's gain against its shadow's; stage 2: validation NDCG@10 as
    features are tried out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(13, max(4, 0.25 * len(screen))),
                               width_ratios=[3, 2])
    order = screen.sort_values("gain")
    y = np.arange(len(order))
    a.barh(y - 0.2, order["gain"], 0.4, label="feature", color=np.where(order["keep"], "C0",
                                                                        "lightgrey"))
    a.barh(y + 0.2, order["shadow_gain"], 0.4, label="its shadow", color="C3")
    a.set_yticks(y, order.index, fontsize=7)
    a.set(xscale="symlog", xlabel="total gain (mean over repeats)",
          title="Stage 1: features against their shuffled shadows (grey: screened out)")
    a.legend()
    labels = ["start", *[s["feature"] for s in steps[1:]]]
    b.plot(range(len(steps)), [s["score"] for s in steps], "o-", color="C0")
    for i, s in enumerate(steps[1:], 1):
        b.plot(i, s["score"], "o", color="C2" if s["dropped"] else "C3")
    b.set_xticks(range(len(steps)), labels, rotation=70, fontsize=7)
    b.set(ylabel="validation NDCG@10",
          title="Stage 2: without each feature (green: left out, red: kept)")
    fig.tight_layout()
    return fig
