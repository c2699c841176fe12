"""The neural ranker: a sequence encoder's user state and item embeddings with the dense
features, into a ranking head trained listwise on the request groups.

Two families share the architecture: ``neural`` starts from a pre-trained encoder checkpoint
(:mod:`models.sequence`; frozen, or fine-tuned with a lower learning rate) and
``neural_scratch``, the control, starts from random weights and learns the same data.

Each row must carry ``seq``: the user's item ids up to the day before the row (oldest first,
the ``user_sequence`` feature view), besides ``item_id`` and the dense model features. Loss:
ListNet (softmax cross-entropy against the gains ``2^label - 1`` of the group); early stopping
on the validation groups' NDCG@10; a checkpoint every epoch when the training set names a
folder (weights, optimizer, sampler and RNG state), which the next fit of the same settings and
data resumes: an Airflow retry of a killed task continues where it stopped. Training runs in the
calling process, or data-parallel on torchrun workers (``ddp``: :mod:`models.ddp`), the same
loop (:meth:`NeuralRanker.train_loop`) on every rank. Saved through MLflow as a pyfunc model
whose artifact holds the weights, the item vocabulary and the dense features' standardization.

This package holds the two families (:class:`NeuralRanker`, :class:`NeuralScratchRanker`), whose
methods call its modules: :mod:`~models.neural.network` (the torch module, its scoring step,
scoring rows), :mod:`~models.neural.rows` (rows into tensors), :mod:`~models.neural.loop` (the
per-process training loop), :mod:`~models.neural.launch` (the torchrun driver),
:mod:`~models.neural.checkpoint` (checkpoints and resuming) and :mod:`~models.neural.flavor`
(the saved file and the MLflow pyfunc model, :class:`NeuralPyfunc`). Importing it imports no
torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from models.base import ModelFamily, TrainingSet, TrainReport
from models.ddp import DdpConfig, Worker
from models.neural import checkpoint, flavor, launch, loop, network
from models.neural.flavor import NeuralPyfunc
from models.neural.loop import LoopState
from models.neural.network import build_network, scoring_step
from models.neural.rows import Prepared, RowStats, seen_items, standardization
from models.propensity import Examination
from models.sequence import EncoderConfig, ItemVocab, resolve_device

__all__ = ["LoopState", "NeuralPyfunc", "NeuralRanker", "NeuralScratchRanker", "Prepared",
           "RowStats", "build_network", "scoring_step", "seen_items", "standardization"]


class NeuralRanker(ModelFamily):
    """Sequence encoder + ranking head, fine-tuned from a pre-trained encoder."""

    family = "neural"
    needs_pretrained = True
    init: ClassVar[str] = "pretrained"

    def __init__(self, *, epochs: int = 8, lr: float = 2e-3, finetune: str = "lower_lr",
                 lr_scale: float = 0.1, batch_groups: int = 128, patience: int = 2,
                 config: EncoderConfig | dict[str, Any] | None = None, device: str = "auto",
                 seed: int = 0, threads: int | None = None, ddp: DdpConfig | None = None,
                 stream: bool = False, drop_features: Sequence[str] = (),
                 unbiased: bool = False) -> None:
        super().__init__(drop_features)
        if finetune not in ("frozen", "lower_lr"):
            raise ValueError(f"finetune must be frozen or lower_lr, not {finetune!r}")
        self.params: dict[str, Any] = {
            "epochs": epochs, "lr": lr, "finetune": finetune, "lr_scale": lr_scale,
            "batch_groups": batch_groups, "patience": patience, "device": resolve_device(device),
            "seed": seed, "init": self.init, "drop_features": list(drop_features),
            "unbiased": unbiased}
        self.config = EncoderConfig(**config) if isinstance(config, dict) else (
            config or EncoderConfig())
        self.ddp = ddp or DdpConfig()
        """How training is spread over processes (one: in this process)."""
        self.params["stream"] = self.stream = stream
        """Read the training rows one partition (date) at a time, every epoch, in a random
        order, batches drawn within a partition: memory bounded by a partition's rows."""
        self.examination: Examination | None = None
        """With ``unbiased``: the position bias estimated from the training rows; each click's
        gain in the loss is weighted by its inverse propensity."""
        self.vocab: ItemVocab | None = None
        self.net: Any = None
        self.mean = self.std = np.zeros(0, dtype=np.float32)
        self.set_threads(threads)

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> NeuralRanker:
        return cls(**{
            "epochs": settings.neural_epochs, "lr": settings.neural_lr,
            "finetune": settings.finetune, "lr_scale": settings.finetune_lr_scale,
            "config": EncoderConfig(dim=settings.embed_dim, max_len=settings.seq_len),
            "device": settings.device, "seed": settings.seed,
            "threads": settings.family_threads, "ddp": settings.ddp,
            "stream": settings.stream_rows, "drop_features": settings.dropped_features,
            "unbiased": bool(settings.unbiased), **overrides})

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Step sizes, batch and fine-tuning (the encoder's shape is the checkpoint's)."""
        space = {"lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
                 "batch_groups": trial.suggest_categorical("batch_groups", [64, 128, 256])}
        if cls.init == "pretrained":
            space["lr_scale"] = trial.suggest_float("lr_scale", 0.02, 1.0, log=True)
            space["finetune"] = trial.suggest_categorical("finetune", ["lower_lr", "frozen"])
        return space

    @classmethod
    def search_grid(cls) -> dict[str, list[Any]]:
        """Step size by batch, and (pre-trained) by how the encoder is fine-tuned."""
        grid: dict[str, list[Any]] = {"lr": [1e-3, 3e-3], "batch_groups": [64, 256]}
        if cls.init == "pretrained":
            grid |= {"lr_scale": [0.1], "finetune": ["lower_lr", "frozen"]}
        return grid

    def set_threads(self, n: int | None) -> NeuralRanker:
        import torch

        if n:
            torch.set_num_threads(n)  # per process: the task's worker slot
        self.params["threads"] = n
        return self

    # -- building -----------------------------------------------------------------------------
    def initial_network(self, data: TrainingSet, train: pd.DataFrame | np.ndarray) -> Any:
        """The network before the first step: the checkpoint's encoder (``neural``) or random
        weights over the training rows' items (``neural_scratch``; ``train``: the rows, or the
        item ids they hold, :func:`seen_items`)."""
        return network.initial_network(self, data, train)

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, data: TrainingSet) -> TrainReport:
        """Train in this process, or on torchrun workers when :attr:`ddp` says so."""
        if self.ddp.distributed:
            report = launch.fit_torchrun(self, data)
        else:
            report = self.train_loop(data, Worker.single(self.params["device"]))
        if (ck := checkpoint.checkpoint_path(data, self.family)) is not None:
            ck.unlink(missing_ok=True)  # trained: a rerun trains afresh
        return report

    def train_loop(self, data: TrainingSet, worker: Worker) -> TrainReport:
        """The training loop of one process (:func:`models.neural.loop.train_loop`): every
        rank draws the same global batches and trains on its shard of each, gradients
        averaged by DDP; a checkpoint after every epoch when ``data`` names a folder."""
        return loop.train_loop(self, data, worker)

    # -- scoring ------------------------------------------------------------------------------
    def score(self, rows: pd.DataFrame, batch: int = 65_536) -> np.ndarray:
        return network.score(self, rows, batch)

    # -- MLflow -------------------------------------------------------------------------------
    def signature_input(self, example: pd.DataFrame) -> pd.DataFrame:
        return flavor.signature_input(example)

    def _save(self, path: Path) -> Path:
        return flavor.save(self, path)

    @classmethod
    def from_file(cls, path: Path) -> NeuralRanker:
        """A model saved by :meth:`_save` (a checkpoint, or the MLflow artifact)."""
        return flavor.from_file(path)

    def _log_flavor(self, name: str, signature: Any, metadata: dict[str, Any],
                    registered_model_name: str | None) -> Any:
        return flavor.log_flavor(self, name, signature, metadata, registered_model_name)

    @classmethod
    def _load_flavor(cls, model_uri: str, metadata: Any) -> NeuralRanker:
        return flavor.load_flavor(model_uri)


class NeuralScratchRanker(NeuralRanker):
    """The control: the same network and training, from random weights, and blind to the
    pre-trained encoder's score feature, so nothing of pre-training reaches it (with the
    feature, the "scratch" network would learn from the encoder after all)."""

    family = "neural_scratch"
    needs_pretrained = False
    init: ClassVar[str] = "scratch"
    blind: ClassVar[tuple[str, ...]] = ("od_encoder_score",)
