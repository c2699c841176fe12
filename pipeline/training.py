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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feature_store import io
from models.metrics import paired_bootstrap
from pipeline.settings import Settings

log = logging.getLogger(__name__)

K_NDCG, K_MAP, K_RECALL = 10, 10, 20
METRICS = (f"ndcg@{K_NDCG}", f"map@{K_MAP}", f"recall@{K_RECALL}")
BEYOND = (f"coverage@{K_NDCG}", f"novelty@{K_NDCG}", f"diversity@{K_NDCG}")
"""Beyond accuracy, of every contender's top 10 per held-out group
(:func:`models.metrics.beyond_accuracy`)."""


def split_dates(settings: Settings, as_of: dt.date) -> dict[str, list[dt.date]]:
    """Train / valid / test dates ending with ``as_of``, oldest first."""
    n = settings.train_days + settings.valid_days + settings.test_days
    days = io.window(as_of, n)
    a, b = settings.train_days, settings.train_days + settings.valid_days
    return {"train": days[:a], "valid": days[a:b], "test": days[b:]}


def rows_dir(settings: Settings) -> Path:
    """Where labelled rows live: ``work/rows/date=D``."""
    return settings.work_dir


def plan_split(settings: Settings, as_of: dt.date) -> dict[str, list[str]]:
    """The split ending with ``as_of`` as ISO dates, after checking that every date it needs
    (and the day before the first: its rows join features from the day before) is valid."""
    from pipeline.landing import require_valid

    split = split_dates(settings, as_of)
    need = [d for dates in split.values() for d in dates]
    require_valid(settings, [need[0] - dt.timedelta(days=1), *need],
                  f"training as of {as_of} ({need[0]}..{need[-1]}, features from the day before: "
                  f"RANKLINE_TRAIN_DAYS={settings.train_days}, RANKLINE_VALID_DAYS="
                  f"{settings.valid_days}, RANKLINE_TEST_DAYS={settings.test_days})")
    return {k: [d.isoformat() for d in v] for k, v in split.items()}


def write_training_rows(settings: Settings, split: dict[str, list[str]]) -> None:
    """Write labelled rows for every date of the split (an overwrite on rerun)."""
    from pipeline.labels import write_rows

    for d in (dt.date.fromisoformat(d) for dates in split.values() for d in dates):
        write_rows(settings.raw_dir, settings.offline_dir, rows_dir(settings), d,
                   settings.negatives, settings.seed)


def build_training_set(settings: Settings, as_of: dt.date) -> dict[str, list[str]]:
    """:func:`plan_split` then :func:`write_training_rows`; return the split as ISO dates."""
    split = plan_split(settings, as_of)
    write_training_rows(settings, split)
    return split


def _read(settings: Settings, dates: list[str]) -> pd.DataFrame:
    return io.read_dates(rows_dir(settings), "rows", [dt.date.fromisoformat(d) for d in dates])


def eval_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Evaluation rows: impressions only, one row per (user, date, item), best label kept, a
    ``group`` per (user, date): :func:`models.base.judged`, as early stopping judges."""
    from models.base import judged

    return judged(rows)


def partition_paths(settings: Settings, dates: list[str]) -> tuple[Path, ...]:
    """The labelled rows' partition folders of ``dates`` (ISO)."""
    return tuple(io.partition_dir(rows_dir(settings), "rows", dt.date.fromisoformat(d))
                 for d in dates)


def training_set(settings: Settings, split: dict[str, list[str]], pretrained: Path | None = None,
                 checkpoint_dir: Path | None = None) -> Any:
    """The :class:`models.base.TrainingSet` reference of a split (the rows' Parquet folders),
    keeping ``RANKLINE_NEGATIVES_PER_REQUEST`` sampled negatives per request from
    ``RANKLINE_NEGATIVE_SOURCE`` (unset: every one written, of every source;
    :func:`pipeline.row_choice.resolve` fills both in)."""
    from models.base import TrainingSet

    return TrainingSet(partition_paths(settings, split["train"]),
                       partition_paths(settings, split["valid"]), pretrained, checkpoint_dir,
                       settings.negatives_per_request, settings.negative_source or "popularity")


def train_model(settings: Settings, split: dict[str, list[str]], run_id: str,
                family: str, encoder: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fit one model family, log it to the DAG run's MLflow run and register it.

    Logged, prefixed by the family: params (``<family>.<param>``), per-step curves
    (``<family>_<curve>``), ``<family>_best_step``, the training report's scalars, the learning
    curve and feature importance plots (``plots/<family>/``), ``features.json`` and the model
    (its MLflow flavor, signature, family and feature spec), registered under
    :data:`pipeline.tracking.MODEL_NAME` with the version tag ``family``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    from feature_store.definitions import feature_spec, feature_versions, model_features
    from models.registry import build
    from pipeline.pretraining import encoder_path
    from pipeline.row_choice import resolve
    from pipeline.tracking import MODEL_NAME, configure, log_figure, tag_version

    configure(settings)
    from pipeline.sweep import best_params

    settings = resolve(settings, split)  # the split's training rows (the training_set task's)

    swept = best_params(settings, family) if settings.sweep_defaults else None
    model = build(family, settings, **(swept["params"] if swept else {}))
    with tempfile.TemporaryDirectory() as tmp:
        pretrained = encoder_path(encoder, Path(tmp)) if model.needs_pretrained else None
        if model.needs_pretrained and pretrained is None:
            raise ValueError(f"{family} starts from a pre-trained encoder and none was given: "
                             "the pretrain task must run before it")
        data = training_set(settings, split, pretrained,
                            settings.home / "checkpoints" / run_id)
        report = model.fit(data)

    with mlflow.start_run(run_id=run_id):
        mlflow.log_params({f"{family}.{k}": v for k, v in report.params.items()})
        mlflow.log_params({
            "train_dates": f"{split['train'][0]}..{split['train'][-1]}",
            "valid_dates": f"{split['valid'][0]}..{split['valid'][-1]}",
            "test_dates": f"{split['test'][0]}..{split['test'][-1]}",
            "source": settings.source, "negatives_per_request": settings.negatives,
            "negative_source": settings.negative_source,
            "position_debiased": settings.unbiased,
        })
        if model.needs_pretrained:
            mlflow.log_param(f"{family}.encoder", encoder["uri"])
        if swept:
            mlflow.log_param(f"{family}.sweep_run", swept["run_id"])
        mlflow.log_metric(f"{family}_best_step", report.best_step or 0)
        mlflow.log_metrics({f"{family}_{k}": float(v) for k, v in report.metrics.items()})
        for name, curve in report.curves.items():
            for step, value in enumerate(curve):
                mlflow.log_metric(f"{family}_{name.replace('@', '_at_')}", value, step=step)
        mlflow.log_dict({"features": model_features(), "versions": feature_versions(),
                         "spec": feature_spec()}, "features.json")

        if report.curves:
            fig, ax = plt.subplots(figsize=(6, 4))
            for name, curve in report.curves.items():
                ax.plot(curve, label=name)
            if report.best_step is not None:
                ax.axvline(report.best_step, color="grey", ls="--", lw=1, label="kept")
            ax.set(xlabel=report.step, title=f"Learning curves: {family}")
            ax.legend()
            log_figure(fig, f"plots/{family}/learning_curve.png")
        if report.importance is not None:
            fig, ax = plt.subplots(figsize=(6, 6))
            report.importance.iloc[::-1].plot.barh(ax=ax)
            ax.set(title=f"Feature importance: {family}")
            fig.tight_layout()
            log_figure(fig, f"plots/{family}/feature_importance.png")

        example = data.sample(50)
        info = model.log_model(example, registered_model_name=MODEL_NAME, name=family)
    version = str(info.registered_model_version)
    tag_version(settings, version, "family", family)
    return {"family": family, "model_uri": info.model_uri, "model_version": version,
            "best_step": report.best_step}


def score_models(settings: Settings, rows: pd.DataFrame, trained: list[dict[str, Any]],
                 champion_uri: str | None) -> dict[str, np.ndarray]:
    """Scores of every contender on ``rows``: each trained family, the champion, the
    baselines and the oracle."""
    from models.baselines import PopularityRanker, RandomRanker
    from models.registry import load_ranker
    from pipeline.sources import get_source

    threads = settings.n_threads
    scores = {t["family"]: load_ranker(t["model_uri"], threads).score(rows) for t in trained}
    scores |= {"popularity": PopularityRanker().score(rows),
               "random": RandomRanker(settings.seed).score(rows)}
    if champion_uri:
        scores[CHAMPION] = load_ranker(champion_uri, threads).score(rows)
    source = get_source(settings)
    oracle = source.oracle(rows["user_id"].to_numpy(), rows["item_id"].to_numpy(),
                           rows["request_id"].to_numpy())
    if oracle is not None:
        scores["oracle"] = oracle
        ceiling = source.ceiling(rows["user_id"].to_numpy(), rows["item_id"].to_numpy(),
                                 rows["request_id"].to_numpy(), *logged_history(settings, rows))
        if ceiling is not None:
            scores["ceiling"] = ceiling
    return scores


def logged_history(settings: Settings, rows: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """What the logs held before the rows' dates, as :meth:`~pipeline.sources.base.DataSource.
    ceiling` reads it: per row, the ordinal of the last date before the row's ``date`` (at most
    ``LONG_WINDOW_DAYS`` before) on which the raw impressions show its user anything (0 when
    none), and the raw clicks (``user_id``, ``item_id``, ``date``) of the ``LONG_WINDOW_DAYS``
    before the earliest row's date up to the day before the latest."""
    from feature_store.definitions import LONG_WINDOW_DAYS

    dates = pd.to_datetime(rows["date"]).dt.date.to_numpy()
    out = np.zeros(len(rows), dtype=np.int64)
    if len(rows) == 0:
        return out, io.read_dates(settings.raw_dir, "clicks", [], ["user_id", "item_id"])
    landed = set(io.list_dates(settings.raw_dir, "impressions"))
    first, end = min(dates), max(dates)
    span = [x for x in (first + dt.timedelta(days=k)
                        for k in range(-LONG_WINDOW_DAYS, (end - first).days)) if x in landed]
    # one read of each day: the (user, day) pairs shown, then each row date's window of them
    shown = io.read_dates(settings.raw_dir, "impressions", span, ["user_id"]).drop_duplicates()
    day = pd.to_datetime(shown["date"]).map(dt.datetime.toordinal).to_numpy(np.int64)
    users = rows["user_id"].to_numpy(np.int64)
    for d in sorted(set(dates)):
        o = d.toordinal()
        inside = (day < o) & (day >= o - LONG_WINDOW_DAYS)
        last = pd.Series(day[inside]).groupby(shown["user_id"].to_numpy()[inside]).max()
        sel = dates == d
        out[sel] = last.reindex(users[sel]).fillna(0).to_numpy(np.int64)
    clicks = io.read_dates(settings.raw_dir, "clicks", span, ["user_id", "item_id"])
    return out, clicks


BASELINES = ("popularity", "random")
CHAMPION = "champion"


@dataclass(frozen=True)
class Interval:
    """Mean per-group difference of NDCG@10 and its paired bootstrap interval."""

    mean: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.mean:+.4f} NDCG@10 [{self.low:+.4f}, {self.high:+.4f}]"


@dataclass(frozen=True)
class ChampionInfo:
    """The model holding the champion alias, as the gate needs to know it.

    ``window`` is its training + validation dates ("YYYY-MM-DD..YYYY-MM-DD", None when its run
    does not say); ``overlap`` whether that window shares a date with the held-out dates (None
    when unknown).
    """

    version: str
    window: str | None = None
    overlap: bool | None = False


@dataclass(frozen=True)
class GateDecision:
    """What the promotion gate decided, and on what evidence."""

    promoted: bool
    reason: str
    groups: int
    challenger: str
    baseline: str | None = None
    vs_baseline: Interval | None = None
    vs_champion: Interval | None = None
    champion: str = "none"
    """``none`` (no champion yet), ``self`` (the champion is this model), ``compared`` (a
    champion trained on other dates), ``overlap`` (trained on some held-out dates) or
    ``unknown`` (its training dates are not recorded)."""

    def metrics(self) -> dict[str, float]:
        """The decision as MLflow metrics (``gate_vs_champion_*`` only when compared)."""
        out: dict[str, float] = {"gate_groups": self.groups}
        for name, iv in (("baseline", self.vs_baseline), ("champion", self.vs_champion)):
            if iv is not None:
                out |= {f"gate_vs_{name}_mean": iv.mean, f"gate_vs_{name}_low": iv.low,
                        f"gate_vs_{name}_high": iv.high}
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for XCom and the return value of :func:`evaluate`)."""
        return asdict(self)


def champion_window(params: dict[str, str], test_dates: list[str]) -> tuple[str | None, bool | None]:
    """The training + validation window of a champion's run and whether it overlaps the held-out
    dates, from the run's ``train_dates`` / ``valid_dates`` params; ``(None, None)`` if absent."""
    try:
        spans = [params[k].split("..") for k in ("train_dates", "valid_dates")]
        bounds = [dt.date.fromisoformat(d) for span in spans for d in span]
    except (KeyError, ValueError):
        return None, None
    start, end = min(bounds), max(bounds)
    tests = [dt.date.fromisoformat(d) for d in test_dates]
    overlap = start <= max(tests) and end >= min(tests)
    return f"{start}..{end}", overlap


def should_promote(per_group: pd.DataFrame, *, challenger: str, min_groups: int,
                   confidence: float, n_resamples: int, seed: int,
                   champion: ChampionInfo | None = None,
                   dates: int | None = None) -> GateDecision:
    """The promotion gate (pure): promote the challenger only on evidence that it is better.

    ``per_group`` holds one held-out group per row (groups with a relevant item, the same rows
    for every contender) and one column of NDCG@10 per contender: the ``challenger`` (a model
    family's name), ``popularity`` and ``random``, and ``champion`` when the champion is a
    different model (other columns, e.g. ``oracle`` or other families, are ignored).
    Differences are paired by group and their mean gets a percentile bootstrap interval over
    groups (:func:`models.metrics.paired_bootstrap`, ``n_resamples``, ``confidence``,
    ``seed``). The challenger is promoted only if all of these hold:

    1. there are at least ``min_groups`` groups (RANKLINE_GATE_MIN_GROUPS);
    2. the interval of challenger - best baseline excludes zero from above (low > 0), the best
       baseline being the one with the higher mean;
    3. when ``champion`` is a different model (a ``champion`` column): the interval of
       challenger - champion has low > 0. Identical models give a zero-width interval at 0 and
       are not promoted.

    Champion-overlap rule: a champion whose training or validation dates overlap the held-out
    dates (``champion.overlap``; or whose dates are unknown) has seen those dates, so the
    comparison favours it. The gate still compares, with the same rule: a challenger that wins
    despite that advantage is promoted (the evidence only gets stronger), otherwise it is not,
    and the reason says the comparison favoured the champion. It does not fall back to the
    baselines alone because an overlap means the champion was trained on dates after the
    challenger's last training date (a backfill of an older date, say): replacing a fresher
    champion needs evidence, not its absence. A champion that is this very model (a rerun of
    the evaluation, no ``champion`` column) is not compared with itself.

    Returns:
        The decision: ``promoted``, a one-line ``reason`` naming the numbers, the group count,
        the best baseline, both intervals and how the champion was treated.
    """
    if challenger not in per_group or not all(b in per_group for b in BASELINES):
        raise ValueError(f"the gate needs columns {challenger!r} and {BASELINES}, got "
                         f"{list(per_group.columns)}")
    if CHAMPION in per_group and champion is None:
        raise ValueError("a 'champion' column needs the champion's ChampionInfo")
    n = len(per_group)
    pct = f"{confidence:.0%}"
    if n == 0:
        return GateDecision(False, f"no held-out group with a relevant item, fewer than "
                            f"RANKLINE_GATE_MIN_GROUPS={min_groups}; not promoted", 0,
                            challenger)

    def interval(other: str) -> Interval:
        diff = per_group[challenger].to_numpy(float) - per_group[other].to_numpy(float)
        return Interval(*paired_bootstrap(diff, n_resamples, confidence, seed))

    baseline = max(BASELINES, key=lambda b: per_group[b].mean())
    vs_base = interval(baseline)
    parts = [f"{challenger} - {baseline}: {vs_base} {pct} paired bootstrap over {n:,} groups"]
    status, vs_champ = "none", None
    if champion is None:
        parts.append("no champion before")
    elif CHAMPION not in per_group:
        status = "self"
        parts.append(f"champion v{champion.version} is this model")
    else:
        vs_champ = interval(CHAMPION)
        if champion.overlap is False:
            status, note = "compared", f"trained {champion.window}" if champion.window else ""
        elif champion.overlap:
            status, note = "overlap", (f"trained {champion.window}, overlapping the held-out "
                                       "dates, which favours it")
        else:
            status, note = "unknown", "training dates unknown, may have seen the held-out dates"
        parts.append(f"{challenger} - champion v{champion.version}"
                     + (f" ({note})" if note else "") + f": {vs_champ}")

    if n < min_groups:
        verdict = (f"not promoted: {n:,} held-out groups are fewer than "
                   f"RANKLINE_GATE_MIN_GROUPS={min_groups}")
        if dates:
            more = int(np.ceil((min_groups - n) / (n / dates)))
            verdict += (f"; at {n / dates:,.1f} groups a held-out date, {more} more date(s) "
                        f"would give enough: RANKLINE_TEST_DAYS={dates + more} once the log "
                        "has them")
    elif vs_base.low <= 0:
        verdict = f"not promoted: no evidence it beats {baseline} (lower bound <= 0)"
    elif vs_champ is not None and vs_champ.low <= 0:
        verdict = "not promoted: no evidence it beats the champion (lower bound <= 0)"
        if status == "overlap":
            verdict += ", which keeps its place: it was trained on later dates than the challenger"
    else:
        verdict = "promoted"
    promoted = verdict == "promoted"
    return GateDecision(promoted, "; ".join([*parts, verdict]), n, challenger, baseline, vs_base,
                        vs_champ, status)


def version_verdict(decision: GateDecision, family: str, chosen: str, mean: float,
                    chosen_mean: float) -> str:
    """What a registered version's ``gate`` tag says (pure): the gate's reason, and for a family
    that passed the gate but lost to a better one, that it is not the champion and why (only
    the best family that passes is promoted)."""
    if not decision.promoted or family == chosen:
        return decision.reason
    return (decision.reason.removesuffix("promoted") + f"passed the gate, not promoted: {chosen} "
            f"passed too with a higher mean NDCG@10 ({chosen_mean:.4f} against {mean:.4f})")


def evaluate(settings: Settings, split: dict[str, list[str]], run_id: str,
             trained: list[dict[str, Any]]) -> dict[str, Any]:
    """Held-out metrics of every contender, logged to MLflow; promote the best family on evidence.

    Every trained family, the baselines, the champion and the oracle are scored on the same
    held-out rows; per-group NDCG@10 feeds the gate (:func:`should_promote`: paired bootstrap
    intervals against the best baseline and the champion, RANKLINE_GATE_MIN_GROUPS /
    _CONFIDENCE / _BOOTSTRAP, seeded by RANKLINE_SEED), once per family. Of the families that
    pass, the one with the highest mean NDCG@10 becomes the champion (each must pass on its own;
    picking the best of those that pass is the only selection). Logged: the metrics table
    (``evaluation.csv``), per-group NDCG@10 (``per_group.csv``), the chosen decision's ``gate_*``
    metrics and ``promoted`` / ``promotion_reason`` / ``promoted_family`` tags, every family's
    ``gate.<family>`` tag and ``gate_<family>_*`` metrics, and plots.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    from feature_store.definitions import L
    from models.metrics import beyond_accuracy, per_group_metrics, summarize
    from pipeline.landing import require_valid
    from pipeline.tracking import champion_version, configure, log_figure, promote, tag_version

    if not trained:
        raise ValueError("no trained model to evaluate (RANKLINE_MODELS is empty?)")
    require_valid(settings, [dt.date.fromisoformat(d) for d in split["test"]],
                  "evaluation on the test dates")
    configure(settings)
    rows = eval_rows(_read(settings, split["test"]))
    champ = champion_version(settings)
    champion = None
    champ_uri = None
    versions = {str(t["model_version"]) for t in trained}
    if champ is not None:
        params = mlflow.MlflowClient().get_run(champ.run_id).data.params if champ.run_id else {}
        window, overlap = champion_window(params, split["test"])
        champion = ChampionInfo(str(champ.version), window, overlap)
        if str(champ.version) not in versions:  # else a rerun: the champion is one of these
            champ_uri = f"models:/{champ.name}/{champ.version}"
    scores = score_models(settings, rows, trained, champ_uri)
    groups, labels = rows["group"].to_numpy(), rows["label"].to_numpy()
    per_group = {name: per_group_metrics(groups, labels, s, K_NDCG, K_MAP, K_RECALL,
                                         seed=settings.seed)
                 for name, s in scores.items()}
    table = pd.DataFrame({name: summarize(pg) for name, pg in per_group.items()}).T
    shown = (rows["item_id"].to_numpy(), rows["i_category"].to_numpy(),
             rows[f"i_impressions_{L}"].to_numpy())
    table = table.join(pd.DataFrame({
        name: beyond_accuracy(groups, *shown, s, K_NDCG, seed=settings.seed)
        for name, s in scores.items()}).T)
    table.index.name = "model"
    ndcg = pd.DataFrame({name: pg[METRICS[0]] for name, pg in per_group.items()})
    if ndcg.isna().any().any():  # cannot happen: same rows, same labels, same groups
        raise RuntimeError("contenders were evaluated on different held-out groups")
    decisions = {t["family"]: should_promote(
        ndcg, challenger=t["family"], min_groups=settings.gate_min_groups,
        confidence=settings.gate_confidence, n_resamples=settings.gate_bootstrap,
        seed=settings.seed, champion=champion, dates=len(split["test"])) for t in trained}
    by_mean = sorted(decisions, key=lambda f: ndcg[f].mean(), reverse=True)
    chosen = next((f for f in by_mean if decisions[f].promoted), by_mean[0])
    decision = decisions[chosen]
    winner = next(t for t in trained if t["family"] == chosen)
    for t in trained:
        tag_version(settings, t["model_version"], "gate",
                    version_verdict(decisions[t["family"]], t["family"], chosen,
                                    float(ndcg[t["family"]].mean()), float(ndcg[chosen].mean())))
    if decision.promoted:
        promote(settings, winner["model_version"], decision.reason)

    with mlflow.start_run(run_id=run_id):
        for model, row in table.iterrows():
            for m in (*METRICS, *BEYOND):
                if np.isfinite(row[m]):
                    mlflow.log_metric(f"test_{model}_{m.replace('@', '_at_')}", float(row[m]))
        mlflow.log_metric("test_groups", int(table["groups"].iloc[0]))
        mlflow.log_metrics(decision.metrics())
        for family, d in decisions.items():
            mlflow.log_metrics({k.replace("gate_", f"gate_{family}_", 1): v
                                for k, v in d.metrics().items()})
        mlflow.set_tags({"promoted": str(decision.promoted),
                         "promotion_reason": decision.reason,
                         "promoted_family": chosen if decision.promoted else "",
                         "gate_baseline": str(decision.baseline),
                         "gate_champion": decision.champion,
                         **{f"gate.{f}": d.reason for f, d in decisions.items()}})
        keys = rows.drop_duplicates("group").set_index("group")[["user_id", "date"]]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "evaluation.csv"
            table.to_csv(path)
            mlflow.log_artifact(str(path))
            path = Path(tmp) / "per_group.csv"
            keys.join(ndcg.add_prefix(f"{METRICS[0]}_"), how="inner").to_csv(path)
            mlflow.log_artifact(str(path))
        fig, axes = plt.subplots(2, len(METRICS), figsize=(12, 8))
        for ax, m in zip(axes.ravel(), (*METRICS, *BEYOND), strict=True):
            table[m].plot.bar(ax=ax, color="tab:blue")
            ax.set(title=m, xlabel="")
        fig.suptitle("Held-out metrics: model families, baselines, champion, oracle (top row: "
                     "accuracy; bottom: coverage, novelty, diversity of each top 10)")
        fig.tight_layout()
        log_figure(fig, "plots/metrics.png")
        log_figure(gate_figure(ndcg, decision, settings.gate_confidence,
                               settings.gate_bootstrap, settings.seed), "plots/gate.png")
    log.info("evaluation on %s:\n%s\ngate: %s", split["test"], table.to_string(),
             "\n".join(f"{f}: {d.reason}" for f, d in decisions.items()))
    return {"metrics": json.loads(table.to_json(orient="index")), "promoted": decision.promoted,
            "reason": decision.reason, "family": chosen, "model_uri": winner["model_uri"],
            "model_version": winner["model_version"], "gate": decision.as_dict()}


def family_comparisons(settings: Settings, per_group: pd.DataFrame,
                       contenders: list[str]) -> list[str]:
    """Summary lines: ``best/oracle ndcg@10: <x>`` (the best trained family's mean over the
    oracle's) and, for each family with a control (``models.registry.CONTROLS``), the paired
    bootstrap interval of family - control over the same held-out groups."""
    from models.registry import CONTROLS, FAMILIES

    ndcg = per_group.rename(columns=lambda c: c.removeprefix(f"{METRICS[0]}_"))
    families = [c for c in contenders if c in FAMILIES and c in ndcg]
    lines = []
    for family in families:
        control = CONTROLS.get(family)
        if control in ndcg:
            iv = Interval(*paired_bootstrap((ndcg[family] - ndcg[control]).to_numpy(float),
                                            settings.gate_bootstrap, settings.gate_confidence,
                                            settings.seed))
            verdict = "better" if iv.low > 0 else "worse" if iv.high < 0 else "no difference"
            lines.append(f"{family} - {control}: {iv} {settings.gate_confidence:.0%} paired "
                         f"bootstrap over {len(ndcg):,} groups: {verdict}")
    if families and "oracle" in ndcg:
        best = max(families, key=lambda f: ndcg[f].mean())
        lines.append(f"best/oracle ndcg@10: {ndcg[best].mean() / ndcg['oracle'].mean():.4f} "
                     f"({best})")
        if "ceiling" in ndcg:
            lines.append(f"best/ceiling ndcg@10: {ndcg[best].mean() / ndcg['ceiling'].mean():.4f}"
                         f" ({best}; the ceiling: the expected utility given the logs up to the "
                         f"day before, {ndcg['ceiling'].mean() / ndcg['oracle'].mean():.4f} of "
                         "the oracle)")
    return lines


def gate_figure(ndcg: pd.DataFrame, decision: GateDecision, confidence: float,
                n_resamples: int, seed: int) -> Any:
    """Mean NDCG@10 of every contender with its bootstrap interval over groups (left) and the
    gate's paired differences (right)."""
    import matplotlib.pyplot as plt

    from models.metrics import bootstrap_means, percentile_interval

    order = ndcg.mean().sort_values().index
    means = ndcg[order].mean().to_numpy()
    low, high = (percentile_interval(bootstrap_means(ndcg[order].to_numpy(), n_resamples, seed),
                                     confidence) if len(ndcg) else (means, means))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), width_ratios=(3, 2))
    y = np.arange(len(order))
    left.errorbar(means, y, xerr=[means - low, high - means], fmt="o", capsize=4)
    left.set(yticks=y, yticklabels=list(order), xlabel=f"mean NDCG@{K_NDCG}",
             title=f"Held-out NDCG@{K_NDCG}, {confidence:.0%} bootstrap over "
                   f"{len(ndcg):,} groups")
    diffs = {f"{decision.challenger} - {decision.baseline}": decision.vs_baseline,
             f"{decision.challenger} - champion": decision.vs_champion}
    diffs = {k: v for k, v in diffs.items() if v is not None}
    for i, iv in enumerate(diffs.values()):
        right.errorbar([iv.mean], [i], xerr=[[iv.mean - iv.low], [iv.high - iv.mean]], fmt="o",
                       capsize=4, color="tab:green" if iv.low > 0 else "tab:red")
    right.axvline(0, color="grey", lw=1, ls="--")
    right.set(yticks=range(len(diffs)), yticklabels=list(diffs), ylim=(-0.5, max(len(diffs), 1) - 0.5),
              xlabel=f"paired difference of NDCG@{K_NDCG}",
              title=f"Paired differences: {'promoted' if decision.promoted else 'not promoted'}")
    fig.tight_layout()
    return fig
