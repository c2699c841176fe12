"""The neural ranker: a sequence encoder's user state and item embeddings with the dense
features, into a ranking head trained listwise on the request groups.

Two families share the architecture: ``neural`` starts from a pre-trained encoder checkpoint
(:mod:`models.sequence`; frozen, or fine-tuned with a lower learning rate) and
``neural_scratch``, the control, starts from random weights and learns the same data.

Each row must carry ``seq``: the user's item ids up to the day before the row (oldest first,
the ``user_sequence`` feature view), besides ``item_id`` and the dense model features. Loss:
ListNet (softmax cross-entropy against the gains ``2^label - 1`` of the group); early stopping
on the validation groups' NDCG@10; a checkpoint every epoch when the training set names a
folder. Saved through MLflow as a pyfunc model whose artifact holds the weights, the item
vocabulary and the dense features' standardization.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import mlflow.pyfunc
import numpy as np
import pandas as pd

from feature_store.compute import feature_matrix
from feature_store.definitions import SEQ, model_features
from models.base import ModelFamily, TrainingSet, TrainReport, requirements
from models.metrics import ranking_metrics
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


class NeuralRanker(ModelFamily):
    """Sequence encoder + ranking head, fine-tuned from a pre-trained encoder."""

    family = "neural"
    needs_pretrained = True
    init: ClassVar[str] = "pretrained"
    blind: ClassVar[tuple[str, ...]] = ()
    """Model features this family treats as always missing."""

    def __init__(self, *, epochs: int = 8, lr: float = 2e-3, finetune: str = "lower_lr",
                 lr_scale: float = 0.1, batch_groups: int = 128, patience: int = 2,
                 config: EncoderConfig | None = None, device: str = "auto", seed: int = 0,
                 threads: int | None = None) -> None:
        super().__init__()
        if finetune not in ("frozen", "lower_lr"):
            raise ValueError(f"finetune must be frozen or lower_lr, not {finetune!r}")
        self.params: dict[str, Any] = {
            "epochs": epochs, "lr": lr, "finetune": finetune, "lr_scale": lr_scale,
            "batch_groups": batch_groups, "patience": patience, "device": resolve_device(device),
            "seed": seed, "init": self.init}
        self.config = config or EncoderConfig()
        self.vocab: ItemVocab | None = None
        self.net: Any = None
        self.mean = self.std = np.zeros(0, dtype=np.float32)
        self.set_threads(threads)

    @classmethod
    def from_settings(cls, settings: Any) -> NeuralRanker:
        return cls(epochs=settings.neural_epochs, lr=settings.neural_lr,
                   finetune=settings.finetune, lr_scale=settings.finetune_lr_scale,
                   config=EncoderConfig(dim=settings.embed_dim, max_len=settings.seq_len),
                   device=settings.device, seed=settings.seed, threads=settings.family_threads)

    def set_threads(self, n: int | None) -> NeuralRanker:
        import torch

        if n:
            torch.set_num_threads(n)  # per process: the task's worker slot
        self.params["threads"] = n
        return self

    # -- building -----------------------------------------------------------------------------
    def initial_network(self, data: TrainingSet, train: pd.DataFrame) -> Any:
        """The network before the first step: the checkpoint's encoder (``neural``) or random
        weights over the training rows' items (``neural_scratch``)."""
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
        seen = [np.asarray(s, dtype=np.int64) for s in train[SEQ] if s is not None and len(s)]
        self.vocab = ItemVocab(np.concatenate([train["item_id"].to_numpy(np.int64), *seen]))
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
        """The model feature matrix of ``rows``, the :attr:`blind` columns set to missing."""
        x = feature_matrix(rows)
        if self.blind:
            x[:, [model_features().index(name) for name in self.blind]] = np.nan
        return x

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
        import torch

        from feature_store.definitions import feature_spec

        device = self.params["device"]
        rng = np.random.default_rng(self.params["seed"])
        train = data.read("train")
        valid = data.read("valid") if data.valid_paths else None
        self.net = self.initial_network(data, train).to(device)
        x = self._features(train)
        squashed = self._squash(x)
        with warnings.catch_warnings():  # an all-missing column (a blind one): mean 0, std 1
            warnings.simplefilter("ignore", RuntimeWarning)
            self.mean = np.nan_to_num(np.nanmean(squashed, 0)).astype(np.float32)
            self.std = np.nan_to_num(np.nanstd(squashed, 0), nan=1.0).astype(np.float32) + 1e-3
        tr = self._groups(train)
        dense = torch.from_numpy(self._dense(train, x))
        gains = torch.from_numpy(2.0 ** train["label"].to_numpy(np.float32) - 1)
        items = torch.from_numpy(tr["item"])
        keep = (gains[torch.from_numpy(np.where(tr["index"] < 0, 0, tr["index"]))]
                * torch.from_numpy(tr["index"] >= 0)).sum(1) > 0  # groups with a relevant row
        group_ids = np.flatnonzero(keep.numpy())
        seq_lengths = (tr["seq"][group_ids] != 0).sum(1)

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
        amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda"
               else contextlib.nullcontext())

        curves: dict[str, list[float]] = {"train_loss": [], "valid_ndcg@10": []}
        best, best_state, best_epoch, bad = -np.inf, None, 0, 0
        t0, seen = time.perf_counter(), 0
        bg = self.params["batch_groups"]
        for epoch in range(self.params["epochs"]):
            self.net.train()
            total, n = 0.0, 0
            for batch in length_batches(seq_lengths, bg, rng):
                g = group_ids[batch]
                idx = torch.from_numpy(tr["index"][g])
                valid_slot = idx >= 0
                safe = idx.clamp(min=0)
                seq = torch.from_numpy(tr["seq"][g]).to(device)
                args = (items[safe].to(device), dense[safe].to(device))
                gain = (gains[safe] * valid_slot).to(device)
                mask = valid_slot.to(device)
                with amp:
                    scores = self.net(self.net.encoder.user_state(seq), *args).float()
                scores = scores.masked_fill(~mask, -1e4)
                target = gain / gain.sum(1, keepdim=True)
                loss = -(target * torch.log_softmax(scores, 1)).sum(1).mean()
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
                opt.step()
                total += float(loss.detach())
                n += 1
                seen += int(mask.sum())
            curves["train_loss"].append(total / max(n, 1))
            ndcg = (ranking_metrics(valid["request_id"].to_numpy(), valid["label"].to_numpy(),
                                    self.score(valid), seed=self.params["seed"])["ndcg@10"]
                    if valid is not None else -curves["train_loss"][-1])
            curves["valid_ndcg@10"].append(ndcg)
            if data.checkpoint_dir is not None:
                self._save(Path(data.checkpoint_dir) / self.family / f"epoch={epoch}.pt")
            log.info("%s epoch %d: loss %.4f, valid NDCG@10 %.4f, %.0f rows/s", self.family,
                     epoch, curves["train_loss"][-1], ndcg, seen / (time.perf_counter() - t0))
            if ndcg > best:
                best, best_epoch, bad = ndcg, epoch, 0
                best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            else:
                bad += 1
                if bad >= self.params["patience"]:
                    break
        self.net.load_state_dict(best_state)
        self.net.eval()
        self.features = feature_spec()
        if valid is None:
            curves.pop("valid_ndcg@10")
        seconds = time.perf_counter() - t0
        return TrainReport(step="epoch", curves=curves, best_step=best_epoch,
                           params={**self.params, **asdict(self.config)},
                           metrics={"fit_seconds": seconds, "rows_per_s": seen / seconds,
                                    "rows": len(train), "items": len(self.vocab) - 1})

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
        model = cls(**params, config=EncoderConfig(**raw["config"]), device="cpu")
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
