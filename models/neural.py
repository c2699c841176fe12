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
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import mlflow.pyfunc
import numpy as np
import pandas as pd

from feature_store.compute import feature_matrix
from feature_store.definitions import SEQ, model_features
from models.base import ModelFamily, TrainingSet, TrainReport, files_of, requirements
from models.ddp import DdpConfig, Worker
from models.metrics import ranking_metrics
from models.propensity import Examination, examination
from models.sequence import (
    EncoderCheckpoint,
    EncoderConfig,
    ItemVocab,
    build_encoder,
    length_batches,
    resolve_device,
)

log = logging.getLogger(__name__)


def build_network(n_items: int, n_dense: int, cfg: EncoderConfig) -> Any:
    """Encoder + ranking head as one :class:`torch.nn.Module`."""
    import torch
    from torch import nn

    class RankNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = build_encoder(n_items, cfg)
            d = cfg.dim
            self.head = nn.Sequential(nn.Linear(3 * d + n_dense, 128), nn.ReLU(),
                                      nn.Dropout(cfg.dropout), nn.Linear(128, 64), nn.ReLU(),
                                      nn.Linear(64, 1))

        def forward(self, user: torch.Tensor, items: torch.Tensor,
                    dense: torch.Tensor) -> torch.Tensor:
            """Scores of items ``[B, M]`` for user states ``[B, d]`` (a request's rows), or of
            items ``[N]`` for one user state per row ``[N, d]``."""
            e = self.encoder.items(items)
            u = user if user.dim() == e.dim() else user.unsqueeze(-2).expand_as(e)
            x = torch.cat([u, e, u * e, dense], -1)
            return self.head(x).squeeze(-1) + (u * e).sum(-1)

    return RankNet()


def scoring_step(net: Any) -> Any:
    """``net`` behind one ``forward(seq, items, dense)``: the user state and the scores in one
    module call, which DistributedDataParallel wraps."""
    from torch import nn

    class Step(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, seq: Any, items: Any, dense: Any) -> Any:
            return self.net(self.net.encoder.user_state(seq), items, dense)

    return Step()


@dataclass
class LoopState:
    """Where the training loop is after ``epoch`` epochs (what a checkpoint resumes)."""

    epoch: int = 0
    curves: dict[str, list[float]] = field(default_factory=dict)
    best: float = -np.inf
    best_epoch: int = 0
    best_state: dict[str, Any] | None = None
    bad: int = 0
    stopped: bool = False
    seen: int = 0
    seconds: float = 0.0
    train_seconds: float = 0.0
    """Time in the batch loop (forward, backward, all-reduce, step): not data loading nor
    validation."""
    resumed_at: int = 0
    """Epochs done when this call resumed from a checkpoint (0: it did not)."""


@dataclass
class Prepared:
    """A set of training rows as tensors: ``index`` ``[groups, width]`` row of each slot (-1:
    none), ``seq`` each group's padded history, per row ``items``, ``dense``, ``gains`` and
    (debiased training) inverse-propensity ``weights``; the groups trained on (``group_ids``,
    with a relevant row) and their ``seq_lengths``."""

    index: np.ndarray
    seq: np.ndarray
    items: Any
    dense: Any
    gains: Any
    group_ids: np.ndarray
    seq_lengths: np.ndarray
    weights: Any = None


def _rng_state(device: str) -> dict[str, Any]:
    """This process's torch RNG states: the CPU's, and the GPU's when it trains on one."""
    import torch

    cuda = device.startswith("cuda")
    return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if cuda else None}


def _set_rng_state(state: dict[str, Any], device: str) -> None:
    import torch

    torch.set_rng_state(state["cpu"])
    if state["cuda"] is not None and device.startswith("cuda"):
        torch.cuda.set_rng_state(state["cuda"])


def seen_items(rows: pd.DataFrame) -> np.ndarray:
    """Every item id in ``rows``: the rows' items and their users' histories."""
    seen = [np.asarray(s, dtype=np.int64) for s in rows[SEQ] if s is not None and len(s)]
    return np.unique(np.concatenate([rows["item_id"].to_numpy(np.int64), *seen]))


def standardization(squashed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std of ``squashed`` features, missing values ignored (an
    all-missing column, a blind one: mean 0, std 1)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nan_to_num(np.nanmean(squashed, 0)).astype(np.float32)
        std = np.nan_to_num(np.nanstd(squashed, 0), nan=1.0).astype(np.float32) + 1e-3
    return mean, std


class RowStats:
    """:func:`standardization` and :func:`seen_items` accumulated one partition at a time."""

    def __init__(self) -> None:
        self.sum = self.sumsq = self.count = 0.0
        self.rows = 0
        self.seen: list[np.ndarray] = []

    def add(self, squashed: np.ndarray, items: np.ndarray | None) -> None:
        x = squashed.astype(np.float64)
        self.sum = self.sum + np.nansum(x, 0)
        self.sumsq = self.sumsq + np.nansum(x * x, 0)
        self.count = self.count + (~np.isnan(x)).sum(0)
        self.rows += len(x)
        if items is not None:
            self.seen = [np.unique(np.concatenate([*self.seen, items]))]

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        count = np.maximum(self.count, 1)
        mean = np.where(self.count > 0, self.sum / count, 0.0)
        var = np.maximum(self.sumsq / count - mean ** 2, 0.0)
        std = np.where(self.count > 0, np.sqrt(var), 1.0)
        return mean.astype(np.float32), std.astype(np.float32) + 1e-3

    def items(self) -> np.ndarray:
        return self.seen[0] if self.seen else np.zeros(0, dtype=np.int64)


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
        import torch

        torch.manual_seed(self.params["seed"])
        if self.init == "pretrained":
            if data.pretrained is None:
                raise ValueError("the neural family starts from a pre-trained encoder, and the "
                                 "training set names none: run the pretrain task first (or "
                                 "train neural_scratch)")
            ck = EncoderCheckpoint.load(data.pretrained)
            self.config, self.vocab = ck.config, ck.vocab
            net = build_network(len(self.vocab), 2 * len(model_features()), self.config)
            net.encoder.load_state_dict(ck.state)
            return net
        self.vocab = ItemVocab(seen_items(train) if isinstance(train, pd.DataFrame) else train)
        return build_network(len(self.vocab), 2 * len(model_features()), self.config)

    # -- data ---------------------------------------------------------------------------------
    @staticmethod
    def _squash(x: np.ndarray) -> np.ndarray:
        """``sign(x) * log1p(|x|)``: counts span orders of magnitude, which a tree ignores and an
        MLP does not (standardized raw counts leave most rows near one value)."""
        return np.sign(x) * np.log1p(np.abs(x))

    def _dense(self, rows: pd.DataFrame, x: np.ndarray | None = None) -> np.ndarray:
        """Squashed, standardized dense features of ``rows`` (``x``: their feature matrix, if
        at hand); missing values become the mean (0), plus one 0/1 column per feature that
        says it was missing (so the network sees 2 x the features)."""
        x = self._squash(self._features(rows) if x is None else x)
        missing = np.isnan(x)
        z = np.nan_to_num(np.clip((x - self.mean) / self.std, -8, 8), nan=0.0)
        return np.concatenate([z, missing], 1).astype(np.float32)

    def _features(self, rows: pd.DataFrame) -> np.ndarray:
        """The model feature matrix of ``rows``, the :attr:`dropped` columns missing."""
        return self.matrix(rows)

    def _groups(self, rows: pd.DataFrame) -> dict[str, np.ndarray]:
        """Padded per-request arrays: row index, item rows, labels, and each request's seq."""
        req = rows["request_id"].to_numpy()
        codes, first = pd.factorize(req)[0], ~pd.Series(req).duplicated().to_numpy()
        size = np.bincount(codes)
        width = int(size.max())
        order = np.argsort(codes, kind="stable")
        slot = np.arange(len(rows)) - np.repeat(np.cumsum(size) - size, size)
        index = np.full((len(size), width), -1, dtype=np.int64)
        index[codes[order], slot] = order
        seqs = rows[SEQ].to_numpy()[np.flatnonzero(first)]
        return {"index": index, "seq": self.vocab.pad(list(seqs), self.config.max_len),
                "item": self.vocab.index(rows["item_id"].to_numpy())}

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, data: TrainingSet) -> TrainReport:
        """Train in this process, or on torchrun workers when :attr:`ddp` says so."""
        if self.ddp.distributed:
            report = self._fit_torchrun(data)
        else:
            report = self.train_loop(data, Worker.single(self.params["device"]))
        if (ck := self._checkpoint_path(data)) is not None:
            ck.unlink(missing_ok=True)  # trained: a rerun trains afresh
        return report

    def _spec(self) -> dict[str, Any]:
        """What a torchrun worker needs to build this model again (see :func:`models.ddp.main`)."""
        kwargs = {k: self.params[k] for k in ("epochs", "lr", "finetune", "lr_scale",
                                               "batch_groups", "patience", "device", "seed",
                                               "stream", "drop_features", "unbiased")}
        return {"family": f"{type(self).__module__}:{type(self).__qualname__}",
                "kwargs": {**kwargs, "config": asdict(self.config)}}

    def _fit_torchrun(self, data: TrainingSet) -> TrainReport:
        import json

        from models.ddp import launch

        cfg = self.ddp
        threads = max(1, (self.params["threads"] or len(os.sched_getaffinity(0))) // cfg.procs)
        spec = {**self._spec(), "data": {k: getattr(data, k) for k in (
            "train_paths", "valid_paths", "pretrained", "checkpoint_dir", "negatives")}}
        if cfg.nnodes > 1 and data.checkpoint_dir is None:
            raise ValueError("training on several hosts needs a checkpoint folder on storage "
                             "every host shares (the train task's: RANKLINE_HOME)")
        with contextlib.ExitStack() as stack:
            if data.checkpoint_dir is not None:  # shared with the other hosts' workers
                folder = Path(data.checkpoint_dir) / self.family / "torchrun"
                stack.callback(shutil.rmtree, folder, ignore_errors=True)
            else:
                folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            if data.pretrained is not None:  # where every host's workers read it
                folder.mkdir(parents=True, exist_ok=True)
                spec["data"]["pretrained"] = shutil.copyfile(data.pretrained,
                                                             folder / "encoder.pt")
            job = (f"{Path(data.checkpoint_dir).name}-{self.family}" if data.checkpoint_dir
                   else f"rankline-{self.family}")
            launch(spec, folder, cfg, threads, job)
            trained = type(self).from_file(folder / "model.pt")
            raw = json.loads((folder / "report.json").read_text())
        self.config, self.vocab, self.net = trained.config, trained.vocab, trained.net
        self.mean, self.std, self.features = trained.mean, trained.std, trained.features
        return TrainReport(**raw)

    def train_loop(self, data: TrainingSet, worker: Worker) -> TrainReport:
        """The training loop of one process: every rank reads the rows and draws the same
        global batches; each trains on its :meth:`~models.ddp.Worker.shard` of each, with
        gradients averaged by DDP. Each rank's loss is its groups' loss summed over the global
        batch size times the world size, so the averaged gradient is the global batch's mean
        one: N processes follow one process's trajectory at the same global batch
        (``batch_groups``). Rank 0 scores the validation groups; its NDCG@10 decides early
        stopping on every rank. With ``data.checkpoint_dir``, a checkpoint after every epoch
        (:meth:`_checkpoint`), which a new call resumes."""
        import torch

        from feature_store.definitions import feature_spec

        device = worker.device
        rng = np.random.default_rng(self.params["seed"])
        valid = data.read("valid") if data.valid_paths and worker.is_main else None
        if self.params["unbiased"]:  # every rank estimates the same, from the same rows
            cols = ["position", "item_id", "label"]
            logged = pd.concat([pd.read_parquet(p, columns=cols) for p in data.train_paths])
            self.examination = examination(logged["position"].to_numpy(),
                                           logged["item_id"].to_numpy(),
                                           logged["label"].to_numpy() >= 1)
            del logged
        if self.stream:  # one partition at a time: statistics first, in one pass
            stats = RowStats()
            for i in range(len(data.train_paths)):
                stats.add(self._squash(self._features(part := data.partition(i))),
                          seen_items(part) if self.init == "scratch" else None)
                del part
            self.mean, self.std, n_rows = *stats.mean_std(), stats.rows
            self.net = self.initial_network(data, stats.items()).to(device)
            whole = None
        else:
            train = data.read("train")
            self.net = self.initial_network(data, train).to(device)
            x = self._features(train)
            self.mean, self.std = standardization(self._squash(x))
            whole, n_rows = self._prepare(train, x), len(train)
            del train, x

        enc_params = list(self.net.encoder.parameters())
        head_params = list(self.net.head.parameters())
        lr = self.params["lr"]
        if self.init == "pretrained" and self.params["finetune"] == "frozen":
            for p in enc_params:
                p.requires_grad_(False)
            groups = [{"params": head_params, "lr": lr}]
        else:
            scale = self.params["lr_scale"] if self.init == "pretrained" else 1.0
            groups = [{"params": head_params, "lr": lr}, {"params": enc_params, "lr": lr * scale}]
        opt = torch.optim.AdamW(groups, weight_decay=0.01)
        step = worker.wrap(scoring_step(self.net))
        amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda")
               else contextlib.nullcontext())
        torch.manual_seed(self.params["seed"] + worker.rank)  # dropout: its own draws per rank

        st = LoopState(curves={"train_loss": [], "valid_ndcg@10": []})
        ck = self._checkpoint_path(data)
        if ck is not None:
            st = self._resume(ck, data, worker, opt, rng) or st
        t0 = time.perf_counter() - st.seconds
        bg = self.params["batch_groups"]
        for epoch in range(st.epoch, self.params["epochs"] if not st.stopped else st.epoch):
            step.train()
            loss_sum, n, seen = 0.0, 0, 0
            t_epoch = time.perf_counter()
            # every rank reads the same partitions in the same order and draws the same batches
            for part in ([whole] if whole is not None else (
                    self._prepare(data.partition(i))
                    for i in rng.permutation(len(data.train_paths)))):
                for batch in length_batches(part.seq_lengths, bg, rng):
                    if len(batch) < worker.world:  # a share for every rank, or nobody steps
                        continue
                    g = part.group_ids[worker.shard(batch)]
                    idx = torch.from_numpy(part.index[g])
                    valid_slot = idx >= 0
                    safe = idx.clamp(min=0)
                    seq = torch.from_numpy(part.seq[g]).to(device)
                    gain = (part.gains[safe] * valid_slot).to(device)
                    mask = valid_slot.to(device)
                    with amp:
                        scores = step(seq, part.items[safe].to(device),
                                      part.dense[safe].to(device)).float()
                    scores = scores.masked_fill(~mask, -1e4)
                    target = gain / gain.sum(1, keepdim=True)
                    if part.weights is not None:  # each click counted 1/propensity times
                        target = target * part.weights[safe].to(device)
                    local = -(target * torch.log_softmax(scores, 1)).sum() / len(batch)
                    opt.zero_grad()
                    (local * worker.world).backward()  # DDP averages over the ranks
                    torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
                    opt.step()
                    loss_sum += float(local.detach())
                    n += 1
                    seen += int(mask.sum())
            st.train_seconds += time.perf_counter() - t_epoch
            loss_sum, seen = worker.sum([loss_sum, float(seen)])
            st.seen += int(seen)
            st.curves["train_loss"].append(loss_sum / max(n, 1))
            ndcg = (ranking_metrics(valid["request_id"].to_numpy(), valid["label"].to_numpy(),
                                    self.score(valid), seed=self.params["seed"])["ndcg@10"]
                    if valid is not None else -st.curves["train_loss"][-1])
            ndcg = worker.broadcast(ndcg) if data.valid_paths else ndcg
            st.curves["valid_ndcg@10"].append(ndcg)
            if self.on_step is not None and worker.world == 1:
                self.on_step(epoch, ndcg)
            log.info("%s epoch %d: loss %.4f, valid NDCG@10 %.4f, %.0f rows/s", self.family,
                     epoch, st.curves["train_loss"][-1], ndcg,
                     st.seen / (time.perf_counter() - t0))
            if ndcg > st.best:
                st.best, st.best_epoch, st.bad = ndcg, epoch, 0
                st.best_state = {k: v.detach().cpu().clone()
                                 for k, v in self.net.state_dict().items()}
            else:
                st.bad += 1
                st.stopped = st.bad >= self.params["patience"]
            st.epoch, st.seconds = epoch + 1, time.perf_counter() - t0
            if ck is not None:
                self._checkpoint(ck, data, worker, opt, rng, st)
            if st.stopped:
                break
        self.net.load_state_dict(st.best_state)
        self.net.eval()
        self.features = feature_spec()
        spread = self._rank_spread(worker)
        if not data.valid_paths:
            st.curves.pop("valid_ndcg@10")
        seconds = time.perf_counter() - t0
        metrics = {"fit_seconds": seconds, "rows_per_s": st.seen / seconds,
                   "train_seconds": st.train_seconds,
                   "train_rows_per_s": st.seen / max(st.train_seconds, 1e-9),
                   "rows": n_rows, "items": len(self.vocab) - 1, "processes": worker.world,
                   "resumed_at_epoch": st.resumed_at, "rank_param_spread": spread}
        if worker.time_allreduce:
            metrics["allreduce_seconds"] = worker.allreduce_seconds
        return TrainReport(step="epoch", curves=st.curves, best_step=st.best_epoch,
                           params={**self.params, **asdict(self.config)}, metrics=metrics)

    def _prepare(self, rows: pd.DataFrame, x: np.ndarray | None = None) -> Prepared:
        """Training tensors of ``rows`` (``x``: their feature matrix, if at hand): the padded
        groups, and the groups with a relevant row, with their history lengths."""
        import torch

        tr = self._groups(rows)
        gains = torch.from_numpy(2.0 ** rows["label"].to_numpy(np.float32) - 1)
        weights = None if self.examination is None else torch.from_numpy(
            self.examination.inverse_propensity(rows["position"].to_numpy()).astype(np.float32))
        keep = (gains[torch.from_numpy(np.where(tr["index"] < 0, 0, tr["index"]))]
                * torch.from_numpy(tr["index"] >= 0)).sum(1) > 0
        group_ids = np.flatnonzero(keep.numpy())
        return Prepared(index=tr["index"], seq=tr["seq"], items=torch.from_numpy(tr["item"]),
                        dense=torch.from_numpy(self._dense(rows, x)), gains=gains,
                        group_ids=group_ids, seq_lengths=(tr["seq"][group_ids] != 0).sum(1),
                        weights=weights)

    # -- checkpoints --------------------------------------------------------------------------
    def _checkpoint_path(self, data: TrainingSet) -> Path | None:
        return (None if data.checkpoint_dir is None
                else Path(data.checkpoint_dir) / self.family / "resume.pt")

    def _fingerprint(self, data: TrainingSet) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: the model's settings, its rows' files
        (names, sizes, times: a rewritten date is other data) and the encoder's bytes."""
        encoder = (hashlib.sha256(Path(data.pretrained).read_bytes()).hexdigest()
                   if data.pretrained is not None else None)
        return {"spec": self._spec(), "train": files_of(data.train_paths),
                "valid": files_of(data.valid_paths), "negatives": data.negatives,
                "negative_source": data.negative_source,
                "encoder": encoder}

    def _checkpoint(self, path: Path, data: TrainingSet, worker: Worker, opt: Any,
                    rng: np.random.Generator, st: LoopState) -> None:
        """After an epoch: the network, the optimizer, the batch sampler's RNG, every rank's
        torch RNG, the curves and the early-stopping state (atomically; rank 0 writes)."""
        import torch

        rngs = worker.gather(_rng_state(worker.device))
        if not worker.is_main:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"fingerprint": self._fingerprint(data), "world": worker.world,
                    "net": {k: v.cpu() for k, v in self.net.state_dict().items()},
                    "opt": opt.state_dict(), "rng": rng.bit_generator.state, "torch_rng": rngs,
                    "loop": asdict(st)}, tmp)
        os.replace(tmp, path)

    def _resume(self, path: Path, data: TrainingSet, worker: Worker, opt: Any,
                rng: np.random.Generator) -> LoopState | None:
        """The loop state of the checkpoint at ``path``, with the network, optimizer and RNGs
        restored from it; None (start afresh) when there is none, it is another model's or
        it cannot be loaded. Every rank resumes the same epoch or none does."""
        import torch

        raw, why = None, "none"
        if path.exists():
            raw = torch.load(path, map_location="cpu", weights_only=False)
            if raw["fingerprint"] != self._fingerprint(data):
                raw, why = None, "of other settings or data"
        epochs = worker.gather(raw["loop"]["epoch"] if raw is not None else -1)
        if raw is None or len(set(epochs)) > 1:
            if path.exists():
                log.warning("%s: the checkpoint %s is %s: training afresh", self.family, path,
                            why if raw is None else f"seen at other epochs by the ranks {epochs}")
            return None
        try:
            self.net.load_state_dict(raw["net"])
            opt.load_state_dict(raw["opt"])
        except (RuntimeError, ValueError, KeyError) as e:  # the same on every rank: same file
            log.warning("%s: the checkpoint %s does not load (%s): training afresh",
                        self.family, path, e)
            return None
        rng.bit_generator.state = raw["rng"]
        if raw["world"] == worker.world:
            _set_rng_state(raw["torch_rng"][worker.rank], worker.device)
        else:  # other ranks: dropout draws cannot continue; the rest does
            torch.manual_seed(self.params["seed"] + worker.rank + 7919 * raw["loop"]["epoch"])
        st = LoopState(**raw["loop"])
        st.resumed_at = st.epoch
        log.info("%s: resuming after epoch %d from %s", self.family, st.epoch - 1, path)
        return st

    def _rank_spread(self, worker: Worker) -> float:
        """Largest difference between the ranks' parameter digests (0: identical weights)."""
        if worker.world == 1:
            return 0.0
        digest = np.array([[float(p.double().sum()), float(p.double().square().sum())]
                           for p in self.net.state_dict().values()])
        return float(np.max(np.ptp(np.stack(worker.gather(digest)), axis=0)))

    # -- scoring ------------------------------------------------------------------------------
    def score(self, rows: pd.DataFrame, batch: int = 65_536) -> np.ndarray:
        import torch

        if self.net is None:
            raise RuntimeError("fit the model before scoring")
        if len(rows) == 0:
            return np.zeros(0, dtype=np.float32)
        self.net.eval()
        device = next(self.net.parameters()).device
        # one user state per distinct sequence holder: (user, date) when rows span dates
        keys = ["user_id", "date"] if "date" in rows.columns else ["user_id"]
        codes, uniq = pd.factorize(pd.MultiIndex.from_frame(rows[keys]))
        first = pd.Series(codes).drop_duplicates().index.to_numpy()
        seqs = self.vocab.pad(list(rows[SEQ].to_numpy()[first]), self.config.max_len)
        out = np.empty(len(rows), dtype=np.float32)
        items = self.vocab.index(rows["item_id"].to_numpy())
        dense = self._dense(rows)
        with torch.no_grad():
            users = torch.cat([self.net.encoder.user_state(torch.from_numpy(seqs[i:i + 4096])
                                                           .to(device))
                               for i in range(0, len(seqs), 4096)])
            for i in range(0, len(rows), batch):
                u = users[torch.from_numpy(codes[i:i + batch]).to(device)]
                s = self.net(u, torch.from_numpy(items[i:i + batch]).to(device),
                             torch.from_numpy(dense[i:i + batch]).to(device))
                out[i:i + batch] = s.float().cpu().numpy()
        return out

    # -- MLflow -------------------------------------------------------------------------------
    def signature_input(self, example: pd.DataFrame) -> pd.DataFrame:
        cols = pd.DataFrame(feature_matrix(example), columns=model_features())
        return cols.assign(item_id=example["item_id"].to_numpy(np.int64),
                           seq=[list(map(int, s)) if s is not None else []
                                for s in example[SEQ]])

    def _save(self, path: Path) -> Path:
        import torch

        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state": {k: v.cpu() for k, v in self.net.state_dict().items()},
                    "item_ids": self.vocab.ids, "config": asdict(self.config),
                    "mean": self.mean, "std": self.std, "params": self.params,
                    "features": self.features, "family": self.family}, path)
        return path

    @classmethod
    def from_file(cls, path: Path) -> NeuralRanker:
        """A model saved by :meth:`_save` (a checkpoint, or the MLflow artifact)."""
        import torch

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

    def _log_flavor(self, name: str, signature: Any, metadata: dict[str, Any],
                    registered_model_name: str | None) -> Any:
        with tempfile.TemporaryDirectory() as tmp:
            path = self._save(Path(tmp) / "model.pt")
            return mlflow.pyfunc.log_model(
                name=name, python_model=NeuralPyfunc(), artifacts={"model": str(path)},
                signature=signature, metadata=metadata,
                registered_model_name=registered_model_name,
                pip_requirements=requirements("torch", "pandas", "numpy"))

    @classmethod
    def _load_flavor(cls, model_uri: str, metadata: Any) -> NeuralRanker:
        return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().ranker


class NeuralScratchRanker(NeuralRanker):
    """The control: the same network and training, from random weights, and blind to the
    pre-trained encoder's score feature, so nothing of pre-training reaches it (with the
    feature, the "scratch" network would learn from the encoder after all)."""

    family = "neural_scratch"
    needs_pretrained = False
    init: ClassVar[str] = "scratch"
    blind: ClassVar[tuple[str, ...]] = ("od_encoder_score",)


class NeuralPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper: ``predict`` scores rows (dense features, ``item_id``, ``seq``)."""

    def load_context(self, context: Any) -> None:
        self.ranker = NeuralRanker.from_file(Path(context.artifacts["model"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        return self.ranker.score(model_input)
