"""Model selection with evidence: samplers compared, learning curves, time-series CV.

Each is a command (``rankline sweep compare``, ``rankline learning-curve``, ``rankline cv``)
that trains in this process and logs one MLflow run (tag ``rankline.job``) with its table and
plot:

- :func:`compare_samplers`: ``repeats`` small sweeps per sampler on the same objective (the
  family's validation NDCG@10 over a fraction of the training groups), their best-seen traces,
  and a two-sided Mann-Whitney U test on the best values found and on the area under the
  best-seen curve (mean of the trace). Every sweep has its own seed (sampler ``i``, repeat
  ``r``: ``seed + 1000 i + r``): the test needs independent samples, and TPE's first trials,
  drawn at random, would otherwise repeat the random sampler's. Sweeps here run without
  pruning: the samplers alone are compared.
- :func:`learning_curve`: validation and held-out NDCG@10 of each family trained on a growing
  fraction of the training groups (whole groups, sampled per seed), several seeds each.
- :func:`cross_validate`: rolling origins: ``folds`` splits whose held-out windows are
  consecutive and do not overlap (the newest ending with ``as_of``); every family and the
  baselines are scored on each fold's held-out groups; mean and spread over the folds.

Families start from the parameters ``train`` would use (the newest adopted sweep's, with
``RANKLINE_SWEEP_DEFAULTS``), except in cross-validation, which uses the settings' (a sweep
tuned on later dates would leak older folds' held-out dates); a family that starts from a
pre-trained encoder gets one per split (reused, or pre-trained into a child run of the job's).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.settings import Settings

log = logging.getLogger(__name__)

JOB_TAG = "rankline.job"
ALPHA = 0.05
"""Significance level of the sampler comparison's tests."""


class Progress:
    """Periodic log lines with the rate and the time left of ``total`` units of work."""

    def __init__(self, what: str, total: int, unit: str) -> None:
        self.what, self.total, self.unit, self.done = what, total, unit, 0
        self.t0 = time.perf_counter()

    def step(self, detail: str, n: int = 1) -> None:
        self.done += n
        spent = time.perf_counter() - self.t0
        rate = self.done / spent if spent else 0.0
        eta = (self.total - self.done) / rate if rate else float("nan")
        log.info("%s: %d/%d %s (%.1f %s/min, ETA %.0fs): %s", self.what, self.done, self.total,
                 self.unit, rate * 60, self.unit, eta, detail)


@contextlib.contextmanager
def job_run(settings: Settings, job: str, name: str,
            tags: dict[str, str] | None = None) -> Iterator[Any]:
    """An MLflow run of a selection job in the settings' experiment (tag ``rankline.job``),
    not active while the job works (pre-training an encoder logs into it by its id), ended
    FINISHED, or FAILED when the job raises."""
    import mlflow

    from pipeline.tracking import configure

    exp_id = configure(settings)  # first: the client takes the tracking URI it sets
    client = mlflow.MlflowClient()
    run = client.create_run(exp_id, run_name=name,
                            tags={JOB_TAG: job, **(tags or {})})
    try:
        yield run
    except BaseException:
        client.set_terminated(run.info.run_id, "FAILED")
        raise
    client.set_terminated(run.info.run_id, "FINISHED")


def family_defaults(settings: Settings, family: str) -> dict[str, Any]:
    """The constructor arguments ``train`` would give ``family`` beyond the settings: the
    newest sweep's best parameters (with ``RANKLINE_SWEEP_DEFAULTS``), else none."""
    from pipeline.sweep import best_params

    swept = best_params(settings, family) if settings.sweep_defaults else None
    return dict(swept["params"]) if swept else {}


def prepare_split(settings: Settings, as_of: dt.date, run_id: str, families: Sequence[str],
                  tmp: Path) -> tuple[dict[str, list[str]], Any]:
    """The split as of ``as_of`` (dates checked, labelled rows written: an overwrite) and its
    :class:`models.base.TrainingSet`, with an encoder under ``tmp`` when a family needs one."""
    from models.registry import family_class
    from pipeline.pretraining import encoder_path, pretrain_encoder
    from pipeline.row_choice import resolve
    from pipeline.training import build_training_set, training_set

    split = build_training_set(settings, as_of)
    chosen = resolve(settings, split, fresh=True)  # the rows keep the chosen negatives
    pretrained = None
    if needing := [f for f in families if family_class(f).needs_pretrained]:
        only = settings.model_copy(update={"models": ",".join(needing),
                                           "encoder_features": False})
        # an encoder pre-trained here logs into a run of its own under the job's (a job of
        # several splits pre-trains one per split); the train DAG may reuse it, like any
        with job_run(settings, "encoder", f"encoder as of {as_of}",
                     {"mlflow.parentRunId": run_id}) as child:
            pretrained = encoder_path(pretrain_encoder(only, split, child.info.run_id), tmp)
    return split, training_set(chosen, split, pretrained)


def subsample_groups(data: Any, fraction: float, seed: int, dst: Path,
                     rows: pd.DataFrame | None = None) -> Any:
    """``data`` with its training rows cut to about ``fraction`` of their groups (whole
    requests, at least one), drawn with ``seed``, written under ``dst``; ``rows``: the training
    rows when already read."""
    from dataclasses import replace

    if not 0 < fraction <= 1:
        raise ValueError(f"a fraction of the training groups is in (0, 1], not {fraction}")
    if fraction == 1:
        return data
    rows = data.read("train") if rows is None else rows
    groups = rows["request_id"].unique()
    rng = np.random.default_rng(seed)
    keep = groups[rng.random(len(groups)) < fraction]
    if len(keep) == 0:
        keep = groups[rng.integers(len(groups), size=1)]
    dst.mkdir(parents=True, exist_ok=True)
    path = dst / f"train-{fraction:g}-{seed}.parquet"
    rows[rows["request_id"].isin(keep)].to_parquet(path, index=False)
    return replace(data, train_paths=(path,))


def fit_family(settings: Settings, family: str, data: Any, seed: int,
               params: dict[str, Any] | None = None) -> tuple[Any, float]:
    """``family`` fitted on ``data`` with ``seed`` and ``params``; returns the model and its
    best validation NDCG@10."""
    from models.registry import build

    model = build(family, settings, **{**(params or {}), "seed": seed})
    report = model.fit(data)
    return model, max(report.curves["valid_ndcg@10"])


def held_out_ndcg(rows: pd.DataFrame, scores: np.ndarray, seed: int) -> pd.Series:
    """Per-group NDCG@10 of ``scores`` on evaluation rows (:func:`pipeline.training.eval_rows`)."""
    from models.metrics import per_group_metrics

    return per_group_metrics(rows["group"].to_numpy(), rows["label"].to_numpy(), scores,
                             seed=seed)["ndcg@10"]


# -- samplers compared ---------------------------------------------------------------------------
def mann_whitney(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test of ``a`` against ``b``: ``(U of a, p)`` (SciPy's
    ``mannwhitneyu``: exact for small samples without ties, else the normal approximation with
    the tie correction)."""
    from scipy.stats import mannwhitneyu

    res = mannwhitneyu(np.asarray(a, float), np.asarray(b, float), alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


def verdict(names: tuple[str, str], a: Sequence[float], b: Sequence[float], u: float,
            p: float, alpha: float = ALPHA) -> str:
    """``"<a> beat <b>"`` when ``p < alpha`` (the winner: ``a`` when its U, the pairs it
    wins, exceeds half of all pairs), else ``"no significant difference"``."""
    if p >= alpha:
        return "no significant difference"
    win, lose = names if u > len(a) * len(b) / 2 else names[::-1]
    return f"{win} beat {lose}"


def best_seen(values: Sequence[float]) -> np.ndarray:
    """The best value found after each trial."""
    return np.maximum.accumulate(np.asarray(values, float))


def run_sweep(objective: Any, space: Any, sampler: Any, trials: int) -> list[float]:
    """``trials`` trials of an in-memory study: ``space(trial)`` suggests parameters,
    ``objective(params)`` scores them (higher is better). Returns each trial's value."""
    import optuna

    study = optuna.create_study(direction="maximize", sampler=sampler)
    values = []
    for _ in range(trials):
        trial = study.ask()
        value = float(objective(space(trial)))
        study.tell(trial, value)
        values.append(value)
    return values


def compare_traces(traces: dict[str, np.ndarray]) -> dict[str, Any]:
    """The tests of two samplers' best-seen traces (``repeats x trials`` each): on the best
    value found (the trace's end) and on the area under the trace (its mean)."""
    (na, ta), (nb, tb) = traces.items()
    out: dict[str, Any] = {"samplers": [na, nb], "repeats": len(ta), "trials": ta.shape[1]}
    for what, a, b in (("best", ta[:, -1], tb[:, -1]), ("auc", ta.mean(1), tb.mean(1))):
        u, p = mann_whitney(a, b)
        out[what] = {"u": u, "p": p, "median": [float(np.median(a)), float(np.median(b))],
                     "conclusion": verdict((na, nb), a, b, u, p)}
    return out


def traces_figure(traces: dict[str, np.ndarray], result: dict[str, Any], title: str) -> Any:
    """Best-seen traces (median, 25-75 % band, each repeat faint) and the best values found."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, box) = plt.subplots(1, 2, figsize=(11, 4), width_ratios=[2, 1])
    for i, (name, t) in enumerate(traces.items()):
        x = np.arange(1, t.shape[1] + 1)
        for row in t:
            ax.plot(x, row, color=f"C{i}", alpha=0.15, lw=0.8)
        ax.plot(x, np.median(t, 0), color=f"C{i}", lw=2, label=f"{name} (median)")
        ax.fill_between(x, *np.percentile(t, [25, 75], 0), color=f"C{i}", alpha=0.25)
    ax.set(xlabel="trial", ylabel="best validation NDCG@10 so far", title=title)
    ax.legend()
    box.boxplot([t[:, -1] for t in traces.values()], tick_labels=list(traces))
    box.set(title=f"best found: p={result['best']['p']:.3g}", ylabel="validation NDCG@10")
    fig.tight_layout()
    return fig


def compare_samplers(settings: Settings, as_of: dt.date, family: str,
                     samplers: tuple[str, str] = ("tpe", "random"), repeats: int = 10,
                     trials: int = 10, fraction: float = 0.25) -> dict[str, Any]:
    """``repeats`` sweeps of ``trials`` trials per sampler of ``family`` on ``fraction`` of the
    split's training groups (validation NDCG@10, no pruning); the traces, the tests, the plot,
    logged to one MLflow run. Returns :func:`compare_traces`'s result with ``run_id``."""
    import mlflow

    from models.registry import family_class
    from pipeline.sweep import make_sampler

    if len(samplers) != 2 or samplers[0] == samplers[1]:
        raise ValueError(f"compare two different samplers, not {list(samplers)}")
    if repeats < 4 or trials < 1:  # with 3 against 3, no two-sided p falls below 0.1
        raise ValueError(f"compare with at least 4 repeats (10 or more to detect a real "
                         f"difference) of 1 trial or more, not {repeats} of {trials}")
    for name in samplers:
        make_sampler(name, 0, family)  # an unknown sampler, or a family without a grid
    cls, base = family_class(family), family_defaults(settings, family)
    with job_run(settings, "sweep-compare", f"sweep compare {family}") as run, \
            tempfile.TemporaryDirectory() as tmp:
        _, data = prepare_split(settings, as_of, run.info.run_id, [family], Path(tmp))
        data = subsample_groups(data, fraction, settings.seed, Path(tmp))

        def objective(params: dict[str, Any]) -> float:
            return fit_family(settings, family, data, settings.seed, {**base, **params})[1]

        progress = Progress(f"sweep compare {family}", 2 * repeats * trials, "trials")
        values: dict[str, list[list[float]]] = {s: [] for s in samplers}
        for r in range(repeats):
            for i, name in enumerate(samplers):
                found = run_sweep(objective, cls.search_space,
                                  make_sampler(name, settings.seed + 1000 * i + r, family),
                                  trials)
                values[name].append(found)
                progress.step(f"{name} repeat {r}: best {max(found):.4f}", trials)
        traces = {s: np.array([best_seen(v) for v in vs]) for s, vs in values.items()}
        result = compare_traces(traces)
        with mlflow.start_run(run_id=run.info.run_id):  # the job's run, now
            mlflow.log_params({"family": family, "samplers": ",".join(samplers),
                               "repeats": repeats, "trials": trials, "fraction": fraction,
                               "as_of": as_of.isoformat()})
            mlflow.log_metrics({"mw_p_best": result["best"]["p"], "mw_p_auc": result["auc"]["p"],
                                **{f"median_best_{s}": m for s, m in
                                   zip(samplers, result["best"]["median"], strict=True)}})
            mlflow.log_dict({**result, "values": values}, "compare/result.json")
            from pipeline.tracking import log_figure

            log_figure(traces_figure(traces, result, f"{family}: {repeats} sweeps of {trials} "
                                     f"trials per sampler"), "compare/best_seen.png")
    return {**result, "run_id": run.info.run_id}


# -- learning curves -----------------------------------------------------------------------------
def learning_curve(settings: Settings, as_of: dt.date, families: Sequence[str],
                   fractions: Sequence[float] = (0.05, 0.1, 0.25, 0.5, 1.0),
                   seeds: int = 3) -> pd.DataFrame:
    """Validation and held-out NDCG@10 of each family trained on each fraction of the
    training groups, ``seeds`` draws (and model seeds) each; logged with a plot. Returns one
    row per (family, fraction, seed)."""
    import mlflow

    from pipeline.training import _read, eval_rows

    fractions = sorted(set(fractions))
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions of the training groups are in (0, 1], not {fractions}")
    with job_run(settings, "learning-curve", f"learning curve {','.join(families)}") as run, \
            tempfile.TemporaryDirectory() as tmp:
        split, data = prepare_split(settings, as_of, run.info.run_id, families, Path(tmp))
        rows = data.read("train")
        test = eval_rows(_read(settings, split["test"]))
        progress = Progress("learning curve", len(families) * len(fractions) * seeds, "fits")
        out = []
        for seed in range(settings.seed, settings.seed + seeds):
            for fraction in fractions:
                part = subsample_groups(data, fraction, seed, Path(tmp), rows)
                n = len(rows) if fraction == 1 else len(pd.read_parquet(
                    part.train_paths[0], columns=["request_id"]))
                for family in families:
                    model, valid = fit_family(settings, family, part, seed,
                                              family_defaults(settings, family))
                    held = held_out_ndcg(test, model.score(test), seed)
                    out.append({"family": family, "fraction": fraction, "seed": seed,
                                "train_rows": n, "valid_ndcg@10": valid,
                                "test_ndcg@10": float(held.mean()), "test_groups": len(held)})
                    progress.step(f"{family} on {fraction:.0%} (seed {seed}): valid "
                                  f"{valid:.4f}, held-out {held.mean():.4f}")
                if part is not data:
                    part.train_paths[0].unlink()
        table = pd.DataFrame(out)
        with mlflow.start_run(run_id=run.info.run_id):  # the job's run, now
            mlflow.log_params({"families": ",".join(families), "seeds": seeds,
                               "fractions": ",".join(f"{f:g}" for f in fractions),
                               "as_of": as_of.isoformat()})
            _log_table(table, "learning_curve/table.csv")
            from pipeline.tracking import log_figure

            log_figure(curve_figure(table), "learning_curve/ndcg.png")
    return table


def curve_figure(table: pd.DataFrame) -> Any:
    """NDCG@10 against the training fraction per family: mean line, min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, col, title in zip(axes, ("valid_ndcg@10", "test_ndcg@10"),
                              ("validation dates", "held-out dates"), strict=True):
        for i, (family, part) in enumerate(table.groupby("family", sort=False)):
            stats = part.groupby("fraction")[col].agg(["mean", "min", "max"])
            ax.plot(stats.index, stats["mean"], "o-", color=f"C{i}", label=family)
            ax.fill_between(stats.index, stats["min"], stats["max"], color=f"C{i}", alpha=0.2)
        ax.set(xscale="log", xlabel="fraction of the training groups", ylabel="NDCG@10",
               title=f"Learning curve: {title}")
        ax.legend()
    fig.tight_layout()
    return fig


def _log_table(table: pd.DataFrame, path: str) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / Path(path).name
        table.to_csv(file, index=False)
        mlflow.log_artifact(str(file), str(Path(path).parent))


# -- time-series cross-validation ----------------------------------------------------------------
def fold_origins(settings: Settings, as_of: dt.date, folds: int) -> list[dt.date]:
    """The ``as_of`` of each fold, oldest first: each fold's held-out window
    (``RANKLINE_TEST_DAYS`` dates) ends where the next one's starts."""
    if folds < 1:
        raise ValueError(f"cross-validation needs at least one fold, not {folds}")
    step = dt.timedelta(days=settings.test_days)
    return [as_of - step * k for k in range(folds - 1, -1, -1)]


def cross_validate(settings: Settings, as_of: dt.date, families: Sequence[str],
                   folds: int = 3) -> pd.DataFrame:
    """Rolling-origin cross-validation: per fold, each family trained on the fold's training
    dates (early stopping on its validation dates) and scored with the baselines (and the
    oracle, on synthetic logs) on its held-out groups. Logged with a plot; returns one row per
    (fold, contender) with the mean NDCG@10 and the paired difference to popularity."""
    import mlflow

    from models.baselines import PopularityRanker, RandomRanker
    from pipeline.sources import get_source
    from pipeline.training import _read, eval_rows

    origins = fold_origins(settings, as_of, folds)
    out = []
    with job_run(settings, "cv", f"cv {','.join(families)}") as run, \
            tempfile.TemporaryDirectory() as tmp:
        progress = Progress("cross-validation", folds * len(families), "fits")
        for k, origin in enumerate(origins):
            split, data = prepare_split(settings, origin, run.info.run_id, families,
                                        Path(tmp) / str(k))
            test = eval_rows(_read(settings, split["test"]))
            scores = {"popularity": PopularityRanker().score(test),
                      "random": RandomRanker(settings.seed).score(test)}
            oracle = get_source(settings).oracle(test["user_id"].to_numpy(),
                                                 test["item_id"].to_numpy(),
                                                 test["request_id"].to_numpy())
            if oracle is not None:
                scores["oracle"] = oracle
            for family in families:
                # the settings' parameters: a sweep tuned on later dates would leak the
                # older folds' held-out dates into their models
                model, _ = fit_family(settings, family, data, settings.seed)
                scores[family] = model.score(test)
                progress.step(f"fold {k} ({split['test'][0]}..{split['test'][-1]}): {family}")
            ndcg = {name: held_out_ndcg(test, s, settings.seed) for name, s in scores.items()}
            for name, per_group in ndcg.items():
                out.append({"fold": k, "test_dates": f"{split['test'][0]}..{split['test'][-1]}",
                            "model": name, "ndcg@10": float(per_group.mean()),
                            "minus_popularity": float((per_group - ndcg["popularity"]).mean()),
                            "groups": len(per_group)})
        table = pd.DataFrame(out)
        with mlflow.start_run(run_id=run.info.run_id):  # the job's run, now
            mlflow.log_params({"families": ",".join(families), "folds": folds,
                               "as_of": as_of.isoformat()})
            stats = cv_summary(table)
            mlflow.log_metrics({f"cv_{m}_ndcg_at_10_{k}": float(v) for m, row in stats.iterrows()
                                for k, v in row[["mean", "std"]].items()})
            _log_table(table, "cv/folds.csv")
            from pipeline.tracking import log_figure

            log_figure(cv_figure(table), "cv/ndcg.png")
    return table


def cv_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per contender over the folds: mean, standard deviation, min and max of NDCG@10, and
    the mean paired difference to popularity."""
    by = table.groupby("model", sort=False)
    stats = by["ndcg@10"].agg(["mean", "std", "min", "max"])
    stats["minus_popularity"] = by["minus_popularity"].mean()
    stats["folds"] = by.size()
    return stats.sort_values("mean", ascending=False)


def cv_figure(table: pd.DataFrame) -> Any:
    """NDCG@10 of every contender in every fold, with the mean over folds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wide = table.pivot(index="test_dates", columns="model", values="ndcg@10")
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, model in enumerate(wide.columns):
        ax.plot(range(len(wide)), wide[model], "o-", color=f"C{i}", label=model)
        ax.axhline(wide[model].mean(), color=f"C{i}", ls=":", lw=1)
    ax.set_xticks(range(len(wide)), wide.index, rotation=15)
    ax.set(xlabel="held-out dates (fold)", ylabel="NDCG@10",
           title="Rolling-origin cross-validation (dotted: mean over folds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
