"""The neural ranker's training loop, the same on every process (:func:`train_loop`): the rows
read whole or one partition at a time, listwise steps on the request groups, early stopping on
the validation groups' NDCG@10, a checkpoint every epoch (:mod:`models.neural.checkpoint`);
and where the loop is after an epoch (:class:`LoopState`). The driver that starts it on
torchrun workers is :mod:`models.neural.launch`. torch is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from models.base import TrainingSet, TrainReport
from models.ddp import Worker
from models.metrics import ranking_metrics
from models.neural.checkpoint import checkpoint_path, resume, save_checkpoint
from models.neural.network import scoring_step
from models.neural.rows import Prepared, RowStats, prepare, seen_items, squash, standardization
from models.propensity import examination
from models.sequence import length_batches

if TYPE_CHECKING:
    from models.neural import NeuralRanker

log = logging.getLogger(__name__)


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


def prepare_rows(ranker: NeuralRanker, rows: pd.DataFrame,
                 x: np.ndarray | None = None) -> Prepared:
    """:func:`~models.neural.rows.prepare` with ``ranker``'s standardization, vocabulary and
    examination (``x``: the rows' feature matrix, if at hand)."""
    return prepare(rows, ranker.matrix(rows) if x is None else x, ranker.mean, ranker.std,
                   ranker.vocab, ranker.config.max_len, ranker.examination)


def train_loop(ranker: NeuralRanker, data: TrainingSet, worker: Worker) -> TrainReport:
    """The training loop of one process: every rank reads the rows and draws the same
    global batches; each trains on its :meth:`~models.ddp.Worker.shard` of each, with
    gradients averaged by DDP. Each rank's loss is its groups' loss summed over the global
    batch size times the world size, so the averaged gradient is the global batch's mean
    one: N processes follow one process's trajectory at the same global batch
    (``batch_groups``). Rank 0 scores the validation groups; its NDCG@10 decides early
    stopping on every rank. With ``data.checkpoint_dir``, a checkpoint after every epoch
    (:func:`~models.neural.checkpoint.save_checkpoint`), which a new call resumes."""
    import torch

    from feature_store.definitions import feature_spec

    device = worker.device
    rng = np.random.default_rng(ranker.params["seed"])
    valid = data.read("valid") if data.valid_paths and worker.is_main else None
    if ranker.params["unbiased"]:  # every rank estimates the same, from the same rows
        cols = ["position", "item_id", "label"]
        logged = pd.concat([pd.read_parquet(p, columns=cols) for p in data.train_paths])
        ranker.examination = examination(logged["position"].to_numpy(),
                                         logged["item_id"].to_numpy(),
                                         logged["label"].to_numpy() >= 1)
        del logged
    if ranker.stream:  # one partition at a time: statistics first, in one pass
        stats = RowStats()
        for i in range(len(data.train_paths)):
            stats.add(squash(ranker.matrix(part := data.partition(i))),
                      seen_items(part) if ranker.init == "scratch" else None)
            del part
        ranker.mean, ranker.std, n_rows = *stats.mean_std(), stats.rows
        ranker.net = ranker.initial_network(data, stats.items()).to(device)
        whole = None
    else:
        train = data.read("train")
        ranker.net = ranker.initial_network(data, train).to(device)
        x = ranker.matrix(train)
        ranker.mean, ranker.std = standardization(squash(x))
        whole, n_rows = prepare_rows(ranker, train, x), len(train)
        del train, x

    enc_params = list(ranker.net.encoder.parameters())
    head_params = list(ranker.net.head.parameters())
    lr = ranker.params["lr"]
    if ranker.init == "pretrained" and ranker.params["finetune"] == "frozen":
        for p in enc_params:
            p.requires_grad_(False)
        groups = [{"params": head_params, "lr": lr}]
    else:
        scale = ranker.params["lr_scale"] if ranker.init == "pretrained" else 1.0
        groups = [{"params": head_params, "lr": lr}, {"params": enc_params, "lr": lr * scale}]
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    step = worker.wrap(scoring_step(ranker.net))
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda")
           else contextlib.nullcontext())
    torch.manual_seed(ranker.params["seed"] + worker.rank)  # dropout: its own draws per rank

    st = LoopState(curves={"train_loss": [], "valid_ndcg@10": []})
    ck = checkpoint_path(data, ranker.family)
    if ck is not None:
        st = resume(ranker, ck, data, worker, opt, rng) or st
    t0 = time.perf_counter() - st.seconds
    bg = ranker.params["batch_groups"]
    for epoch in range(st.epoch, ranker.params["epochs"] if not st.stopped else st.epoch):
        step.train()
        loss_sum, n, seen = 0.0, 0, 0
        t_epoch = time.perf_counter()
        # every rank reads the same partitions in the same order and draws the same batches
        for part in ([whole] if whole is not None else (
                prepare_rows(ranker, data.partition(i))
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
                torch.nn.utils.clip_grad_norm_(ranker.net.parameters(), 1.0)
                opt.step()
                loss_sum += float(local.detach())
                n += 1
                seen += int(mask.sum())
        st.train_seconds += time.perf_counter() - t_epoch
        loss_sum, seen = worker.sum([loss_sum, float(seen)])
        st.seen += int(seen)
        st.curves["train_loss"].append(loss_sum / max(n, 1))
        ndcg = (ranking_metrics(valid["request_id"].to_numpy(), valid["label"].to_numpy(),
                                ranker.score(valid), seed=ranker.params["seed"])["ndcg@10"]
                if valid is not None else -st.curves["train_loss"][-1])
        ndcg = worker.broadcast(ndcg) if data.valid_paths else ndcg
        st.curves["valid_ndcg@10"].append(ndcg)
        if ranker.on_step is not None and worker.world == 1:
            ranker.on_step(epoch, ndcg)
        log.info("%s epoch %d: loss %.4f, valid NDCG@10 %.4f, %.0f rows/s", ranker.family,
                 epoch, st.curves["train_loss"][-1], ndcg,
                 st.seen / (time.perf_counter() - t0))
        if ndcg > st.best:
            st.best, st.best_epoch, st.bad = ndcg, epoch, 0
            st.best_state = {k: v.detach().cpu().clone()
                             for k, v in ranker.net.state_dict().items()}
        else:
            st.bad += 1
            st.stopped = st.bad >= ranker.params["patience"]
        st.epoch, st.seconds = epoch + 1, time.perf_counter() - t0
        if ck is not None:
            save_checkpoint(ranker, ck, data, worker, opt, rng, st)
        if st.stopped:
            break
    ranker.net.load_state_dict(st.best_state)
    ranker.net.eval()
    ranker.features = feature_spec()
    spread = rank_spread(ranker.net, worker)
    if not data.valid_paths:
        st.curves.pop("valid_ndcg@10")
    seconds = time.perf_counter() - t0
    metrics = {"fit_seconds": seconds, "rows_per_s": st.seen / seconds,
               "train_seconds": st.train_seconds,
               "train_rows_per_s": st.seen / max(st.train_seconds, 1e-9),
               "rows": n_rows, "items": len(ranker.vocab) - 1, "processes": worker.world,
               "resumed_at_epoch": st.resumed_at, "rank_param_spread": spread}
    if worker.time_allreduce:
        metrics["allreduce_seconds"] = worker.allreduce_seconds
    return TrainReport(step="epoch", curves=st.curves, best_step=st.best_epoch,
                       params={**ranker.params, **asdict(ranker.config)}, metrics=metrics)


def rank_spread(net: Any, worker: Worker) -> float:
    """Largest difference between the ranks' parameter digests (0: identical weights)."""
    if worker.world == 1:
        return 0.0
    digest = np.array([[float(p.double().sum()), float(p.double().square().sum())]
                       for p in net.state_dict().values()])
    return float(np.max(np.ptp(np.stack(worker.gather(digest)), axis=0)))
