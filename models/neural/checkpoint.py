"""Training that survives a kill: the neural ranker's checkpoint after every epoch and the fit
that resumes it. The checkpoint (one file, replaced atomically; rank 0 writes) holds the
network, the optimizer, the batch sampler's RNG, every rank's torch RNG, the curves and the
early-stopping state, with the fingerprint of the settings and data it belongs to
(:func:`fingerprint`): only the same settings on the same data resume it. torch is imported
inside the functions.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.base import TrainingSet, files_of
from models.ddp import Worker
from models.neural.launch import model_spec

if TYPE_CHECKING:
    from models.neural import NeuralRanker
    from models.neural.loop import LoopState

log = logging.getLogger(__name__)


def rng_state(device: str) -> dict[str, Any]:
    """This process's torch RNG states: the CPU's, and the GPU's when it trains on one."""
    import torch

    cuda = device.startswith("cuda")
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if cuda else None}


def set_rng_state(state: dict[str, Any], device: str) -> None:
    import torch

    torch.set_rng_state(state["cpu"])
    if state["cuda"] is not None and device.startswith("cuda"):
        torch.cuda.set_rng_state(state["cuda"])


def checkpoint_path(data: TrainingSet, family: str) -> Path | None:
    """Where ``family``'s checkpoint of a fit on ``data`` lives (None: ``data`` names no
    checkpoint folder)."""
    return (None if data.checkpoint_dir is None
            else Path(data.checkpoint_dir) / family / "resume.pt")


def fingerprint(ranker: NeuralRanker, data: TrainingSet) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the model's settings, its rows' files
    (names, sizes, times: a rewritten date is other data) and the encoder's bytes."""
    encoder = (hashlib.sha256(Path(data.pretrained).read_bytes()).hexdigest()
               if data.pretrained is not None else None)
    return {"spec": model_spec(ranker), "train": files_of(data.train_paths),
            "valid": files_of(data.valid_paths), "negatives": data.negatives,
            "negative_source": data.negative_source,
            "encoder": encoder}


def save_checkpoint(ranker: NeuralRanker, path: Path, data: TrainingSet, worker: Worker,
                    opt: Any, rng: np.random.Generator, st: LoopState) -> None:
    """After an epoch: the network, the optimizer, the batch sampler's RNG, every rank's
    torch RNG, the curves and the early-stopping state (atomically; rank 0 writes)."""
    import torch

    rngs = worker.gather(rng_state(worker.device))
    if not worker.is_main:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"fingerprint": fingerprint(ranker, data), "world": worker.world,
                "net": {k: v.cpu() for k, v in ranker.net.state_dict().items()},
                "opt": opt.state_dict(), "rng": rng.bit_generator.state, "torch_rng": rngs,
                "loop": asdict(st)}, tmp)
    os.replace(tmp, path)


def resume(ranker: NeuralRanker, path: Path, data: TrainingSet, worker: Worker, opt: Any,
           rng: np.random.Generator) -> LoopState | None:
    """The loop state of the checkpoint at ``path``, with the network, optimizer and RNGs
    restored from it; None (start afresh) when there is none, it is another model's or
    it cannot be loaded. Every rank resumes the same epoch or none does."""
    import torch

    from models.neural.loop import LoopState  # here: the loop module imports this one

    raw, why = None, "none"
    if path.exists():
        raw = torch.load(path, map_location="cpu", weights_only=False)
        if raw["fingerprint"] != fingerprint(ranker, data):
            raw, why = None, "of other settings or data"
    epochs = worker.gather(raw["loop"]["epoch"] if raw is not None else -1)
    if raw is None or len(set(epochs)) > 1:
        if path.exists():
            log.warning("%s: the checkpoint %s is %s: training afresh", ranker.family, path,
                        why if raw is None else f"seen at other epochs by the ranks {epochs}")
        return None
    try:
        ranker.net.load_state_dict(raw["net"])
        opt.load_state_dict(raw["opt"])
    except (RuntimeError, ValueError, KeyError) as e:  # the same on every rank: same file
        log.warning("%s: the checkpoint %s does not load (%s): training afresh",
                    ranker.family, path, e)
        return None
    rng.bit_generator.state = raw["rng"]
    if raw["world"] == worker.world:
        set_rng_state(raw["torch_rng"][worker.rank], worker.device)
    else:  # other ranks: dropout draws cannot continue; the rest does
        torch.manual_seed(ranker.params["seed"] + worker.rank + 7919 * raw["loop"]["epoch"])
    st = LoopState(**raw["loop"])
    st.resumed_at = st.epoch
    log.info("%s: resuming after epoch %d from %s", ranker.family, st.epoch - 1, path)
    return st
