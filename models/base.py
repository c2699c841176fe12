"""The ranker contract every model family and baseline implements.

A *baseline* (:class:`Ranker`) only scores rows. A *model family* (:class:`ModelFamily`) is also
trained from a :class:`TrainingSet` reference, returns a :class:`TrainReport`, records the feature
definitions it was trained on, and saves and loads itself through MLflow (a real MLflow flavor,
with the family and the feature spec in the logged model's metadata). ``models.registry`` maps
family names to classes; nothing outside ``models/`` names a family.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd


class Ranker(abc.ABC):
    """Scores rows (user, item, features); higher means rank earlier."""

    name: str

    @abc.abstractmethod
    def score(self, rows: pd.DataFrame) -> np.ndarray:
        """One score per row."""


JUDGED_COLUMNS = ["user_id", "item_id", "label", "is_negative"]
"""The columns :func:`judged` reads."""


def judged(rows: pd.DataFrame, keys: Sequence[str] = ("user_id", "date"),
           relevant: bool = False) -> pd.DataFrame:
    """The rows as a ranking of them is judged (pure): impressions only (the sampled negatives
    were never shown, so nothing says how they would have fared), one row per ``keys`` and item
    with the best label it got, and a dense ``group`` per ``keys`` (in order of appearance).
    ``relevant``: only the groups with a relevant row (label >= 1), the ones metrics count.

    The held-out evaluation, early stopping and model selection all judge these groups."""
    keys = list(keys)
    shown = rows[~rows["is_negative"].to_numpy(bool)]
    best = shown.groupby([*keys, "item_id"], sort=False)["label"].transform("max")
    out = shown.assign(label=best.to_numpy()).drop_duplicates([*keys, "item_id"])
    if relevant:
        out = out[out.groupby(keys, sort=False)["label"].transform("max").to_numpy() >= 1]
    return out.assign(group=out.groupby(keys, sort=False).ngroup().to_numpy()
                      ).reset_index(drop=True)


NEGATIVE_SOURCES = ("popularity", "uniform")
"""Where sampled negatives come from; the rows' ``negative_source`` column holds the position
in this tuple plus one (0: a shown item). Rows written without the column hold popularity
negatives only."""


def keep_negatives(rows: pd.DataFrame, n: int, source: str = "popularity") -> pd.DataFrame:
    """``rows`` with at most ``n`` sampled negatives per request, all from ``source``: the first
    ``n`` in row order, a random subset of those written, since rows sit in random order inside
    a request (pure)."""
    neg = rows["is_negative"].to_numpy(bool)
    if not neg.any():
        return rows
    if "negative_source" in rows.columns:
        code = NEGATIVE_SOURCES.index(source) + 1
        other = neg & (rows["negative_source"].to_numpy() != code)
        if other.any():
            rows = rows[~other].reset_index(drop=True)
            neg = rows["is_negative"].to_numpy(bool)
    elif source != "popularity" and n > 0:
        raise ValueError(f"these training rows hold popularity negatives only, not {source}: "
                         "write them again (the train DAG's training_set task, or `rankline "
                         "run-dag train`)")
    rank = rows[neg].groupby("request_id", sort=False).cumcount().to_numpy()
    keep = np.ones(len(rows), dtype=bool)
    keep[np.flatnonzero(neg)[rank >= n]] = False
    return rows[keep].reset_index(drop=True) if not keep.all() else rows


def read_part(path: Path, columns: list[str] | None = None, valid: bool = False,
              negatives: int | None = None, source: str = "popularity") -> pd.DataFrame:
    """One partition (a date's rows) as a training set reads it: validation rows as judged
    (:func:`judged`, one group per user, numbered from 0 in ``request_id``), training rows with
    at most ``negatives`` sampled negatives per request from ``source`` (None: all, of every
    source). ``columns``: only these (with what the reading needs)."""
    if columns is not None:
        need = JUDGED_COLUMNS if valid else ["is_negative"] if negatives is not None else []
        if negatives is not None and "negative_source" in pq_columns(path):
            need = [*need, "negative_source"]
        columns = list(dict.fromkeys(["request_id", *need, *columns]))
    rows = pd.read_parquet(path, columns=columns)
    if valid:
        rows = judged(rows, keys=("user_id",), relevant=True)
        return rows.assign(request_id=rows.pop("group"))
    if negatives is None:
        return rows
    rows = keep_negatives(rows, negatives, source)
    return rows.drop(columns="negative_source") if "negative_source" in rows.columns else rows


def pq_columns(path: Path) -> list[str]:
    """The column names of a Parquet file or folder, from its schema alone."""
    import pyarrow.dataset as ds

    return ds.dataset(path, format="parquet").schema.names


@dataclass(frozen=True)
class TrainingSet:
    """Where the labelled rows of a split are, not the rows themselves: a family reads what it
    needs (all of it here; a shard per worker when training is distributed)."""

    train_paths: tuple[Path, ...]
    valid_paths: tuple[Path, ...] = ()
    pretrained: Path | None = None
    """A pre-trained encoder checkpoint (``models.sequence``) for families that start from one."""
    checkpoint_dir: Path | None = None
    """Where families that train in epochs write a checkpoint after each (None: nowhere)."""

    negatives: int | None = None
    """Sampled negatives kept per request in the training rows (the first ``negatives`` of
    those written, which sit in random order inside a request); None: every one written."""
    negative_source: str = "popularity"
    """Where the kept negatives come from (one of :data:`NEGATIVE_SOURCES`)."""

    def read(self, part: str = "train", columns: list[str] | None = None) -> pd.DataFrame:
        """The rows of ``train`` or ``valid`` (only ``columns`` when given; ``request_id`` is
        always read), sorted by ``request_id`` (a group's rows together).

        Training rows keep :attr:`negatives` sampled negatives per request. Validation rows are
        the groups the held-out evaluation judges (:func:`judged`): impressions only, one row
        per (user, item) and date with its best label, one group (``request_id``) per user and
        date that has a relevant row, so early stopping and model selection see what is ranked,
        not how well sampled negatives are told from shown items (nor groups with no click,
        which would only dilute the early-stopping metric)."""
        paths = {"train": self.train_paths, "valid": self.valid_paths}[part]
        if not paths:
            raise ValueError(f"the training set has no {part} rows")
        frames, groups = [], 0
        for path in paths:
            rows = read_part(path, columns, part == "valid", self.negatives,
                             self.negative_source)
            if part == "valid":  # group ids unique across dates
                rows["request_id"] += groups
                groups += int(rows["request_id"].nunique())
            frames.append(rows)
        rows = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return rows.sort_values("request_id", kind="stable").reset_index(drop=True)

    def partition(self, i: int) -> pd.DataFrame:
        """Training partition ``i`` (one date's rows), with :attr:`negatives` kept."""
        return read_part(self.train_paths[i], negatives=self.negatives,
                         source=self.negative_source)

    def sample(self, n: int = 50) -> pd.DataFrame:
        """The first ``n`` rows of the first validation (else training) partition: an input
        example, without reading the whole set."""
        paths = self.valid_paths or self.train_paths
        return pd.read_parquet(paths[0]).head(n)


@dataclass
class TrainReport:
    """What a fit produced besides the model: curves, the step kept, and plots' data."""

    step: str
    """What one step of the curves is: ``boosting round``, ``epoch``."""
    curves: dict[str, list[float]] = field(default_factory=dict)
    """Per-step values by name, e.g. ``train_ndcg@10``, ``valid_ndcg@10``, ``train_loss``."""
    best_step: int | None = None
    """The step kept (early stopping), 0-based; None when every step was kept."""
    params: dict[str, Any] = field(default_factory=dict)
    """Hyperparameters as trained (logged to MLflow)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Scalars worth logging (rows per second, fit seconds, ...)."""
    importance: pd.Series | None = None
    """Feature importance, largest first, when the family has one."""


def files_of(paths: tuple[Path, ...]) -> list[tuple[str, int, int]]:
    """``(path, size, mtime_ns)`` of every file under ``paths`` (files or folders)."""
    found = []
    for root in map(Path, paths):
        for f in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if f.is_file():
                st = f.stat()
                found.append((str(f), st.st_size, st.st_mtime_ns))
    return found


def requirements(*packages: str) -> list[str]:
    """Pinned pip requirements of a logged model: ``mlflow`` and ``packages`` at the versions
    installed here (stating them spares MLflow inferring them by loading the model again)."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", *packages)]


class FeatureMismatch(ValueError):
    """A model was trained on feature definitions that differ from the current ones."""


def check_features(trained_on: Mapping[str, int], current: Mapping[str, int], what: str) -> None:
    """Raise :class:`FeatureMismatch` naming every feature whose definition differs."""
    problems = []
    for name in sorted(set(trained_on) | set(current)):
        if name not in current:
            problems.append(f"{name} (v{trained_on[name]}) no longer exists")
        elif name not in trained_on:
            problems.append(f"{name} (v{current[name]}) is new")
        elif int(trained_on[name]) != int(current[name]):
            problems.append(f"{name} is v{current[name]} now, the model has v{trained_on[name]}")
    if problems:
        raise FeatureMismatch(
            f"{what} was trained on other feature definitions: " + "; ".join(problems)
            + ". Retrain it on the current features (rankline run-dag train) before scoring.")


class ModelFamily(Ranker):
    """A trainable ranker: fit from a training set, score, save and load through MLflow."""

    family: ClassVar[str]
    """The family's name in ``RANKLINE_MODELS``, the registry and the evaluation table."""
    prune_warmup: ClassVar[int] = 3
    """Steps before a sweep may prune a trial of this family (early steps say little about
    where a fit ends: a lower learning rate starts slower)."""
    needs_pretrained: ClassVar[bool] = False
    """Whether :meth:`fit` starts from ``TrainingSet.pretrained`` (a pre-trained encoder)."""
    blind: ClassVar[tuple[str, ...]] = ()
    """Model features this family always treats as missing."""

    def __init__(self, drop_features: Sequence[str] = ()) -> None:
        from feature_store.definitions import model_features

        if unknown := sorted(set(drop_features) - set(model_features())):
            raise ValueError(f"cannot drop unknown features {unknown} (RANKLINE_DROP_FEATURES); "
                             f"the model features are {', '.join(model_features())}")
        self.dropped: tuple[str, ...] = tuple(dict.fromkeys((*self.blind, *drop_features)))
        """Model features set to missing in every matrix the model sees (:meth:`matrix`): the
        family's :attr:`blind` ones and those a feature selection dropped."""
        self.features: dict[str, int] = {}
        """``{feature name: version}`` the model was trained on (set by :meth:`fit`)."""
        self.on_step: Callable[[int, float], None] | None = None
        """Called after each step (boosting round, epoch) of an in-process fit with the step
        and its validation NDCG@10; what it raises stops the fit (a sweep's pruning)."""

    def matrix(self, rows: pd.DataFrame) -> np.ndarray:
        """The dense feature matrix of ``rows`` (``feature_store.compute.feature_matrix``), the
        :attr:`dropped` columns missing: a tree never splits on them, a network sees them as
        always missing."""
        from feature_store.compute import feature_matrix
        from feature_store.definitions import model_features

        x = feature_matrix(rows)
        if self.dropped:
            x = x.copy()  # a one-row frame's matrix can be a read-only view
            x[:, [model_features().index(name) for name in self.dropped]] = np.nan
        return x

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Constructor arguments a sweep tunes, suggested from an Optuna ``trial`` (the
        family's search space); the rest comes from the settings (:meth:`from_settings`)."""
        raise NotImplementedError(f"{cls.family} declares no search space")

    @classmethod
    def search_grid(cls) -> dict[str, list[Any]]:
        """Values of every parameter of :meth:`search_space` for a grid sweep (each inside
        the space's range): the grid is their product."""
        raise NotImplementedError(f"{cls.family} declares no grid: sweep it with tpe or random")

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.family

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> Self:
        """A new, untrained model configured from rankline's settings (duck-typed: ``models/``
        does not import ``pipeline``), constructor arguments in ``overrides`` winning (a
        sweep's trial or its best parameters)."""

    @abc.abstractmethod
    def fit(self, data: TrainingSet) -> TrainReport:
        """Train on ``data`` (early stopping on its validation rows when present)."""

    @abc.abstractmethod
    def set_threads(self, n: int | None) -> Self:
        """Use ``n`` CPU threads for fitting and scoring from now on (None: the library's
        default)."""

    @abc.abstractmethod
    def _log_flavor(self, name: str, signature: Any, metadata: dict[str, Any],
                    registered_model_name: str | None) -> Any:
        """Log the fitted model with its MLflow flavor; return the ``ModelInfo``."""

    @classmethod
    @abc.abstractmethod
    def _load_flavor(cls, model_uri: str, metadata: Mapping[str, Any]) -> Self:
        """The model logged at ``model_uri`` by :meth:`_log_flavor`."""

    def log_model(self, example: pd.DataFrame, registered_model_name: str | None = None,
                  name: str = "model") -> Any:
        """Log to the active MLflow run (registered under ``registered_model_name``) with a
        signature inferred from ``example`` rows, and the family and feature spec as metadata."""
        from mlflow.models import infer_signature

        signature = infer_signature(self.signature_input(example), self.score(example))
        metadata = {"family": self.family, "features": dict(self.features)}
        return self._log_flavor(name, signature, metadata, registered_model_name)

    def signature_input(self, example: pd.DataFrame) -> pd.DataFrame:
        """The model's inputs as MLflow should describe them: the dense features by default."""
        from feature_store.compute import feature_matrix
        from feature_store.definitions import model_features

        return pd.DataFrame(feature_matrix(example), columns=model_features())

    @classmethod
    def load(cls, model_uri: str, metadata: Mapping[str, Any]) -> Self:
        """Load and check the feature contract: a model trained on other feature definitions
        than the current ones raises :class:`FeatureMismatch` naming them."""
        from feature_store.definitions import feature_spec

        check_features(metadata.get("features") or {}, feature_spec(),
                       f"{cls.family} model {model_uri}")
        model = cls._load_flavor(model_uri, metadata)
        model.features = dict(metadata.get("features") or {})
        return model
