"""Model families by name: the one place that knows which classes exist.

``RANKLINE_MODELS`` names families from :data:`FAMILIES`; training builds them with
:func:`build`, and scoring loads any logged model with :func:`load_ranker`, which reads the family
from the model's MLflow metadata.
"""

from __future__ import annotations

import importlib
from typing import Any

from models.base import ModelFamily

FAMILIES: dict[str, str] = {
    "xgboost": "models.xgb:XGBoostRanker",
    "neural": "models.neural:NeuralRanker",
    "neural_scratch": "models.neural:NeuralScratchRanker",
}
"""Family name -> ``module:class`` (imported on first use: torch only when asked for)."""
CONTROLS: dict[str, str] = {"neural": "neural_scratch"}
"""Family -> its control (the same architecture without what the family adds), compared side by
side in the demo summary."""
PROBE = "xgboost"
"""The family that chooses a log's training rows (how many sampled negatives, position
debiasing) on the validation dates for every family: deterministic, and quick on a few dates."""


class UnknownFamily(ValueError):
    """A family name the registry does not know."""


def family_class(name: str) -> type[ModelFamily]:
    """The class of family ``name``."""
    try:
        module, cls = FAMILIES[name].split(":")
    except KeyError:
        raise UnknownFamily(f"unknown model family {name!r}; known: {sorted(FAMILIES)} "
                            "(RANKLINE_MODELS)") from None
    return getattr(importlib.import_module(module), cls)


def build(name: str, settings: Any, **overrides: Any) -> ModelFamily:
    """A new, untrained model of family ``name`` configured from ``settings`` (constructor
    arguments in ``overrides`` winning)."""
    return family_class(name).from_settings(settings, **overrides)


def model_metadata(model_uri: str) -> dict[str, Any]:
    """The ``family`` and ``features`` a model was logged with (see ``ModelFamily.log_model``)."""
    import mlflow

    meta = mlflow.models.get_model_info(model_uri).metadata or {}
    if "family" not in meta:
        raise UnknownFamily(f"{model_uri} was not logged by rankline's model contract (no family "
                            "in its metadata): retrain it (rankline run-dag train)")
    return meta


def load_ranker(model_uri: str, threads: int | None = None) -> ModelFamily:
    """The model at ``model_uri``, whatever its family, its feature contract checked, using
    ``threads`` CPU threads."""
    meta = model_metadata(model_uri)
    return family_class(meta["family"]).load(model_uri, meta).set_threads(threads)
