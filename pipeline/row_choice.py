"""What a log's training rows hold, chosen on its validation dates: how many sampled negatives
each request keeps, where they come from, and whether clicks are position-debiased.

Neither has one right answer. Sampled negatives (items the request never showed) teach a ranker
to put shown items above unshown ones, which helps where the refresh ranks unshown candidates
and hurts where it crowds out the signal of which shown item was chosen (a sparse click log with
a few slots a page: the ranker learned to tell sampled items from shown ones and nothing else).
Debiasing helps where position drove the clicks and costs variance where it did not. So each is
decided per log, as the held-out evaluation judges (:func:`models.base.judged`: impressions only,
a group per user and date): the probe family (:data:`models.registry.PROBE`) is fitted on the
last :data:`PROBE_DATES` training dates once per candidate and scored on the validation groups.
The simplest candidate (no negatives, clicks as logged) is kept unless another one's mean
NDCG@10 is higher with a paired bootstrap interval over the validation groups above zero.

The sources are popular items (the items' recent clicks: hard negatives, since a ranker cannot
win by putting the popular first) and every item alike (easy ones, which teach what a shown item
looks like). A sampled negative weighs as much as a shown one: XGBoost's ranking objectives
weigh groups, not rows, so their count (0 included) is how much they say, and the count is
chosen.

A setting given explicitly (``RANKLINE_NEGATIVES_PER_REQUEST``, ``RANKLINE_NEGATIVE_SOURCE``,
``RANKLINE_UNBIASED``) is not chosen. The choice is recorded per split
(``work/row_choice/<first>_<last>.json``, an overwrite on rerun) and in the DAG run's MLflow run
(``rows.*`` params, metrics and tag), and every family of the split trains with it
(:func:`resolve`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.settings import Settings

log = logging.getLogger(__name__)

PROBE_DATES = 3
"""Training dates the probe fits on (the last of the split's): enough to rank candidates, a
third of the demo's training window in time."""


@dataclass(frozen=True)
class RowChoice:
    """The training rows chosen for a split, and on what evidence."""

    negatives: int
    unbiased: bool
    reason: str
    scores: dict[str, float]
    """Mean validation NDCG@10 per candidate (empty when nothing was left to choose)."""
    groups: int
    """Validation groups the candidates were compared on."""
    source: str = "popularity"
    """Where the kept negatives come from (moot with 0 of them)."""

    def apply(self, settings: Settings) -> Settings:
        """``settings`` with the choice filled in (what every family of the split trains on)."""
        return settings.model_copy(update={"negatives_per_request": self.negatives,
                                           "negative_source": self.source,
                                           "unbiased": self.unbiased})


@dataclass(frozen=True)
class Candidate:
    """One way to build the training rows."""

    negatives: int
    source: str = "popularity"
    unbiased: bool = False

    @property
    def name(self) -> str:
        """``0 negatives``, ``5 popularity negatives``, ``0 negatives, debiased``."""
        kind = f" {self.source}" if self.negatives else ""
        return f"{self.negatives}{kind} negatives" + (", debiased" if self.unbiased else "")


def candidates(settings: Settings, has_positions: bool) -> list[Candidate]:
    """The candidates to try, the simplest first: every count of ``RANKLINE_NEGATIVE_CHOICES``
    (or the fixed one) from every source of ``RANKLINE_NEGATIVE_SOURCES`` (or the fixed one),
    with clicks as logged; and when the logs have positions and ``RANKLINE_UNBIASED`` is unset,
    the fewest negatives debiased (from the first source)."""
    fixed = settings.negatives_per_request
    counts = [fixed] if fixed is not None else list(settings.negative_counts)
    sources = settings.negative_source_choices
    unbiased = [settings.unbiased] if settings.unbiased is not None else [False]
    out = [Candidate(k, src, u) for u in unbiased for k in counts
           for src in (sources if k else sources[:1])]
    if has_positions and settings.unbiased is None:
        out.append(Candidate(counts[0], sources[0], True))
    return out


def pick(per_group: dict[str, np.ndarray], names: list[str], n_resamples: int,
         confidence: float, seed: int) -> tuple[str, str]:
    """The candidate kept (pure): ``names[0]`` (the simplest) unless the best mean's paired
    interval against it is above zero; and a one-line reason naming the figures."""
    from models.metrics import paired_bootstrap

    base = names[0]
    best = max(names, key=lambda n: (float(np.mean(per_group[n])), -names.index(n)))
    n = len(per_group[base])
    means = ", ".join(f"{name} {np.mean(per_group[name]):.4f}" for name in names)
    if best == base:
        return base, f"{base}: the best mean ({means}; {n:,} validation groups)"
    mean, low, high = paired_bootstrap(per_group[best] - per_group[base], n_resamples,
                                       confidence, seed)
    iv = f"{best} - {base}: {mean:+.4f} [{low:+.4f}, {high:+.4f}] over {n:,} validation groups"
    if low > 0:
        return best, f"{best}: {iv} ({means})"
    return base, f"{base}: the simplest, no evidence for another ({iv}; {means})"


def has_positions(paths: list[Path]) -> bool:
    """Whether the impressions of the first training partition were logged at more than one
    position (what position debiasing needs)."""
    import pandas as pd

    rows = pd.read_parquet(paths[0], columns=["position", "is_negative"])
    shown = rows.loc[~rows["is_negative"].to_numpy(bool), "position"].dropna()
    return shown.nunique() > 1


def choose(settings: Settings, split: dict[str, list[str]]) -> RowChoice:
    """Fit the probe family once per candidate and keep one (the module's docstring)."""
    from models.base import TrainingSet
    from models.metrics import per_group_metrics
    from models.registry import PROBE, build
    from pipeline.training import partition_paths

    train = partition_paths(settings, split["train"][-PROBE_DATES:])
    valid = partition_paths(settings, split["valid"])
    cands = candidates(settings, has_positions(list(train)))
    if len(cands) == 1:
        (c,) = cands
        return RowChoice(c.negatives, c.unbiased, f"{c.name}: as set", {}, 0, c.source)
    rows = TrainingSet(train, valid).read("valid")
    groups, labels = rows["request_id"].to_numpy(), rows["label"].to_numpy()
    per_group, names = {}, []
    for c in cands:
        name = c.name
        model = build(PROBE, settings.model_copy(update={"unbiased": c.unbiased}))
        model.set_threads(settings.n_threads)
        model.fit(TrainingSet(train, valid, negatives=c.negatives, negative_source=c.source))
        per_group[name] = per_group_metrics(groups, labels, model.score(rows),
                                            seed=settings.seed)["ndcg@10"].to_numpy(float)
        names.append(name)
        log.info("row choice %s: validation NDCG@10 %.4f over %d groups", name,
                 per_group[name].mean(), len(per_group[name]))
    kept, reason = pick(per_group, names, settings.gate_bootstrap, settings.gate_confidence,
                        settings.seed)
    c = cands[names.index(kept)]
    return RowChoice(c.negatives, c.unbiased, reason,
                     {n: float(per_group[n].mean()) for n in names}, len(per_group[names[0]]),
                     c.source)


def _record_path(settings: Settings, split: dict[str, list[str]]) -> Path:
    return settings.work_dir / "row_choice" / f"{split['train'][0]}_{split['test'][-1]}.json"


def _key(settings: Settings, split: dict[str, list[str]]) -> dict[str, Any]:
    """What a recorded choice depends on besides the rows: a change makes it stale."""
    return {"split": split, "negatives_per_request": settings.negatives_per_request,
            "negative_choices": list(settings.negative_counts),
            "negative_sources": list(settings.negative_source_choices),
            "unbiased": settings.unbiased,
            "seed": settings.seed, "probe_dates": PROBE_DATES}


def resolve(settings: Settings, split: dict[str, list[str]], run_id: str | None = None,
            fresh: bool = False) -> Settings:
    """``settings`` with the split's row choice applied: the recorded one, or (``fresh``, none
    recorded, or recorded under other settings) a new :func:`choose`, recorded and, with
    ``run_id``, logged to that MLflow run."""
    path = _record_path(settings, split)
    key = _key(settings, split)
    record = json.loads(path.read_text()) if path.exists() and not fresh else None
    if record is not None and record.get("key") == key:
        return RowChoice(**record["choice"]).apply(settings)
    choice = choose(settings, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"key": key, "choice": asdict(choice)}, indent=1))
    tmp.replace(path)
    log.info("training rows: %s", choice.reason)
    if run_id is not None:
        _log(settings, run_id, choice)
    return choice.apply(settings)


def _log(settings: Settings, run_id: str, choice: RowChoice) -> None:
    import mlflow

    from models.registry import PROBE
    from pipeline.tracking import configure

    configure(settings)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_params({"rows.negatives_per_request": choice.negatives,
                           "rows.negative_source": choice.source,
                           "rows.position_debiased": choice.unbiased,
                           "rows.probe": f"{PROBE} on {PROBE_DATES} training dates"})
        mlflow.log_metrics({"rows_choice_groups": choice.groups, **{
            "rows_valid_ndcg_at_10." + name.replace(" ", "_").replace(",", ""): v
            for name, v in choice.scores.items()}})
        mlflow.set_tag("rows.choice", choice.reason)
