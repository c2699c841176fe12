"""The driver of a data-parallel fit: what a torchrun worker needs to build the neural ranker
again (:func:`model_spec`), and the fit that runs the training loop on torchrun workers
(:func:`fit_torchrun`, through :func:`models.ddp.launch`) and takes back rank 0's model and
report. The per-worker loop is :mod:`models.neural.loop`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.base import TrainingSet, TrainReport

if TYPE_CHECKING:
    from models.neural import NeuralRanker


def model_spec(ranker: NeuralRanker) -> dict[str, Any]:
    """What a torchrun worker needs to build ``ranker`` again (see :func:`models.ddp.main`)."""
    kwargs = {k: ranker.params[k] for k in ("epochs", "lr", "finetune", "lr_scale",
                                             "batch_groups", "patience", "device", "seed",
                                             "stream", "drop_features", "unbiased")}
    return {"family": f"{type(ranker).__module__}:{type(ranker).__qualname__}",
            "kwargs": {**kwargs, "config": asdict(ranker.config)}}


def fit_torchrun(ranker: NeuralRanker, data: TrainingSet) -> TrainReport:
    """Train ``ranker`` on ``ranker.ddp``'s torchrun workers; take the trained network and its
    preparation (vocabulary, standardization, features) from rank 0's saved model."""
    import json

    from models.ddp import launch

    cfg = ranker.ddp
    threads = max(1, (ranker.params["threads"] or len(os.sched_getaffinity(0))) // cfg.procs)
    spec = {**model_spec(ranker), "data": {k: getattr(data, k) for k in (
        "train_paths", "valid_paths", "pretrained", "checkpoint_dir", "negatives")}}
    if cfg.nnodes > 1 and data.checkpoint_dir is None:
        raise ValueError("training on several hosts needs a checkpoint folder on storage "
                         "every host shares (the train task's: RANKLINE_HOME)")
    with contextlib.ExitStack() as stack:
        if data.checkpoint_dir is not None:  # shared with the other hosts' workers
            folder = Path(data.checkpoint_dir) / ranker.family / "torchrun"
            stack.callback(shutil.rmtree, folder, ignore_errors=True)
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if data.pretrained is not None:  # where every host's workers read it
            folder.mkdir(parents=True, exist_ok=True)
            spec["data"]["pretrained"] = shutil.copyfile(data.pretrained,
                                                         folder / "encoder.pt")
        job = (f"{Path(data.checkpoint_dir).name}-{ranker.family}" if data.checkpoint_dir
               else f"rankline-{ranker.family}")
        launch(spec, folder, cfg, threads, job)
        trained = type(ranker).from_file(folder / "model.pt")
        raw = json.loads((folder / "report.json").read_text())
    ranker.config, ranker.vocab, ranker.net = trained.config, trained.vocab, trained.net
    ranker.mean, ranker.std, ranker.features = trained.mean, trained.std, trained.features
    return TrainReport(**raw)
