"""The neural ranker on disk and in MLflow: the file that holds a trained model (:func:`save`,
:func:`from_file`: the weights, the item vocabulary, the dense features' standardization, the
settings), and the pyfunc model whose artifact is that file (:class:`NeuralPyfunc`,
:func:`log_flavor`, :func:`load_flavor`). MLflow pickles the pyfunc class by reference: models
logged before this package existed name ``models.neural.NeuralPyfunc``, which the package
re-exports. torch is imported inside the functions.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from feature_store.compute import feature_matrix
from feature_store.definitions import SEQ, model_features
from models.base import requirements
from models.neural.network import build_network
from models.sequence import EncoderConfig, ItemVocab

if TYPE_CHECKING:
    from models.neural import NeuralRanker


def signature_input(example: pd.DataFrame) -> pd.DataFrame:
    """The model's inputs as MLflow describes them: the dense features, ``item_id`` and
    ``seq`` (the user's item ids)."""
    cols = pd.DataFrame(feature_matrix(example), columns=model_features())
    return cols.assign(item_id=example["item_id"].to_numpy(np.int64),
                       seq=[list(map(int, s)) if s is not None else []
                            for s in example[SEQ]])


def save(ranker: NeuralRanker, path: Path) -> Path:
    """Write ``ranker`` (trained) to ``path``, which :func:`from_file` reads back."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": {k: v.cpu() for k, v in ranker.net.state_dict().items()},
                "item_ids": ranker.vocab.ids, "config": asdict(ranker.config),
                "mean": ranker.mean, "std": ranker.std, "params": ranker.params,
                "features": ranker.features, "family": ranker.family}, path)
    return path


def from_file(path: Path) -> NeuralRanker:
    """A model saved by :func:`save` (a checkpoint, or the MLflow artifact), of the family it
    was saved from."""
    import torch

    from models.neural import NeuralRanker, NeuralScratchRanker  # the package imports this one

    raw = torch.load(path, map_location="cpu", weights_only=False)
    cls = {c.family: c for c in (NeuralRanker, NeuralScratchRanker)}[raw["family"]]
    params = {k: raw["params"][k] for k in ("epochs", "lr", "finetune", "lr_scale",
                                             "batch_groups", "patience", "seed")}
    model = cls(**params, config=EncoderConfig(**raw["config"]), device="cpu",
                drop_features=raw["params"].get("drop_features", ()),
                unbiased=raw["params"].get("unbiased", False))
    model.vocab, model.mean, model.std = ItemVocab(raw["item_ids"]), raw["mean"], raw["std"]
    model.net = build_network(len(model.vocab), 2 * len(model.mean), model.config)
    model.net.load_state_dict(raw["state"])
    model.net.eval()
    model.features = dict(raw["features"])
    return model


def log_flavor(ranker: NeuralRanker, name: str, signature: Any, metadata: dict[str, Any],
               registered_model_name: str | None) -> Any:
    """Log ``ranker`` to the active MLflow run as a :class:`NeuralPyfunc` model whose artifact
    is its :func:`save` file; return the ``ModelInfo``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = save(ranker, Path(tmp) / "model.pt")
        return mlflow.pyfunc.log_model(
            name=name, python_model=NeuralPyfunc(), artifacts={"model": str(path)},
            signature=signature, metadata=metadata,
            registered_model_name=registered_model_name,
            pip_requirements=requirements("torch", "pandas", "numpy"))


def load_flavor(model_uri: str) -> NeuralRanker:
    """The ranker of the model :func:`log_flavor` logged at ``model_uri``."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().ranker


class NeuralPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper: ``predict`` scores rows (dense features, ``item_id``, ``seq``)."""

    def load_context(self, context: Any) -> None:
        self.ranker = from_file(Path(context.artifacts["model"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        return self.ranker.score(model_input)
