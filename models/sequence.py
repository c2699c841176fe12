"""Self-supervised pre-training of a sequence encoder on users' interaction sequences.

The encoder is SASRec-style: item embeddings plus learned positions, a causal Transformer, and
the hidden state at each position predicts the next item by a dot product with the item
embeddings. No labels are needed: the objective is next-item prediction with a sampled softmax
(the true next item against ``negatives`` items drawn uniformly from the vocabulary, shared by the
batch). The checkpoint (:class:`EncoderCheckpoint`) holds the weights, the item vocabulary and the
configuration, so the ranker of :mod:`models.neural` can start from it.

Inputs are plain sequences of item ids (oldest first); :class:`ItemVocab` maps ids to rows of
the embedding table (0 is padding and every id the vocabulary does not know).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """``auto`` is ``cuda`` when torch sees a GPU, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class ItemVocab:
    """Item ids <-> embedding rows; row 0 is padding and unknown items."""

    def __init__(self, item_ids: np.ndarray) -> None:
        self.ids = np.unique(np.asarray(item_ids, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ids) + 1

    def index(self, item_ids: np.ndarray) -> np.ndarray:
        """Rows of ``item_ids`` (0 for ids not in the vocabulary)."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        if len(self.ids) == 0:
            return np.zeros(item_ids.shape, dtype=np.int64)
        pos = np.clip(np.searchsorted(self.ids, item_ids), 0, len(self.ids) - 1)
        return np.where(self.ids[pos] == item_ids, pos + 1, 0).astype(np.int64)

    def pad(self, seqs: Sequence[Sequence[int] | np.ndarray | None], max_len: int) -> np.ndarray:
        """Left-padded ``[len(seqs), max_len]`` rows of the last ``max_len`` items of each."""
        out = np.zeros((len(seqs), max_len), dtype=np.int64)
        for r, seq in enumerate(seqs):
            if seq is None or len(seq) == 0:
                continue
            idx = self.index(np.asarray(seq, dtype=np.int64)[-max_len:])
            out[r, max_len - len(idx):] = idx
        return out


class NotEnoughSequences(ValueError):
    """No sequence to pre-train on (every one has fewer than two items)."""


FULL_SOFTMAX_ITEMS = 50_000
"""Largest vocabulary pre-trained with a full softmax by default (above it: sampled)."""


@dataclass(frozen=True)
class EncoderConfig:
    """Shape of the encoder (part of every checkpoint)."""

    dim: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 50
    dropout: float = 0.2


def build_encoder(n_items: int, cfg: EncoderConfig) -> Any:
    """A new :class:`torch.nn.Module` encoder for a vocabulary of ``n_items`` rows."""
    import torch
    from torch import nn

    class SeqEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cfg = cfg
            self.items = nn.Embedding(n_items, cfg.dim, padding_idx=0)
            self.positions = nn.Embedding(cfg.max_len, cfg.dim)
            layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, 2 * cfg.dim, cfg.dropout,
                                               batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(cfg.dim)
            self.drop = nn.Dropout(cfg.dropout)
            nn.init.normal_(self.items.weight, std=cfg.dim ** -0.5)
            with torch.no_grad():
                self.items.weight[0].zero_()

        def forward(self, seq: torch.Tensor, offset: int = 0) -> torch.Tensor:
            """Hidden state at every position of left-padded ``seq`` ``[B, L]`` -> ``[B, L, d]``;
            ``offset``: the position of column 0 (columns cut from the left, see :func:`trim`)."""
            length = seq.shape[1]
            pos = torch.arange(offset, offset + length, device=seq.device)
            x = self.items(seq) * math.sqrt(self.cfg.dim) + self.positions(pos)[None]
            # causal, and padded keys hidden; every position may attend itself, so a padded
            # query never has every key masked (its output would be NaN, and NaN reaches the
            # next layer through zero attention weights)
            causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=seq.device), 1)
            mask = (causal[None] | (seq == 0)[:, None, :]) & ~torch.eye(
                length, dtype=torch.bool, device=seq.device)[None]
            mask = mask.repeat_interleave(self.cfg.heads, 0)
            h = self.blocks(self.drop(x), mask=mask)
            return self.norm(h)

        def user_state(self, seq: torch.Tensor) -> torch.Tensor:
            """The representation of each sequence: the hidden state at its last position
            (computed without the columns that are padding in every row: the same result)."""
            first = trim(seq)
            return self(seq[:, first:], first)[:, -1]

    return SeqEncoder()


def user_states(enc: Any, vocab: ItemVocab, sequences: Sequence[np.ndarray | None],
                batch_size: int = 2048, device: str = "cpu") -> np.ndarray:
    """The encoder's state (:meth:`user_state`) of each sequence of item ids, oldest first:
    ``[len(sequences), d]`` float32, in eval mode; sequences of similar length are batched
    together so padding costs little (the result does not depend on the batching)."""
    import torch

    enc = enc.to(device).eval()
    lengths = np.array([0 if s is None else min(len(s), enc.cfg.max_len) for s in sequences])
    order = np.argsort(lengths, kind="stable")
    out = np.zeros((len(sequences), enc.cfg.dim), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            seq = torch.from_numpy(vocab.pad([sequences[i] for i in idx], enc.cfg.max_len))
            out[idx] = enc.user_state(seq.to(device)).float().cpu().numpy()
    return out


def item_scores(model: EncoderCheckpoint | Any, sequences: Sequence[np.ndarray | None],
                vocab: ItemVocab | None = None, batch_size: int = 2048,
                device: str = "cpu") -> np.ndarray:
    """Next-item scores of every vocabulary row for each sequence, for full ranking (top-N).

    The score is the objective's logit: the sequence's :func:`user_states` row dotted with the
    item embeddings. ``model`` is an :class:`EncoderCheckpoint` or an encoder module (then
    ``vocab`` is required). Returns ``[len(sequences), len(vocab)]`` float32: column ``r`` is
    the item ``vocab.ids[r - 1]``; column 0 (padding and unknown ids) is ``-inf``.
    """
    if isinstance(model, EncoderCheckpoint):
        vocab = vocab or model.vocab
        enc = model.encoder()
    elif vocab is None:
        raise ValueError("item_scores of an encoder module needs its vocab")
    else:
        enc = model
    device = resolve_device(device)
    states = user_states(enc, vocab, sequences, batch_size, device)
    weights = enc.items.weight.detach().float().cpu().numpy()
    scores = states @ weights.T
    scores[:, 0] = -np.inf
    return scores


def length_batches(lengths: np.ndarray, batch_size: int,
                   rng: np.random.Generator) -> list[np.ndarray]:
    """Index batches of about equal sequence length, in random order: a random permutation cut
    into chunks of 32 batches, each chunk sorted by length and cut into batches. Short histories
    then share batches, and :func:`trim` cuts their common padding."""
    perm = rng.permutation(len(lengths))
    chunk = batch_size * 32
    batches = []
    for start in range(0, len(perm), chunk):
        part = perm[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def trim(seq: Any) -> int:
    """The first column of left-padded ``seq`` that holds an item in some row (the last column
    when none does): the columns before it are padding everywhere, and since no real position
    attends a padded one, cutting them changes no real position's output, only the cost."""
    used = (seq != 0).any(0)
    return int(used.int().argmax()) if bool(used.any()) else seq.shape[1] - 1


@dataclass
class EncoderCheckpoint:
    """A pre-trained encoder: weights, vocabulary, configuration and what it was trained on."""

    state: dict[str, Any]
    item_ids: np.ndarray
    config: EncoderConfig
    info: dict[str, Any]

    @property
    def vocab(self) -> ItemVocab:
        return ItemVocab(self.item_ids)

    def encoder(self) -> Any:
        """A new encoder module holding these weights."""
        enc = build_encoder(len(self.vocab), self.config)
        enc.load_state_dict(self.state)
        return enc

    def item_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """``(item ids, [n, d] float32 embeddings)`` of the vocabulary (padding row dropped)."""
        return self.item_ids, self.state["items.weight"][1:].float().numpy()

    def user_states(self, sequences: Sequence[np.ndarray | None], batch_size: int = 2048,
                    device: str = "cpu") -> np.ndarray:
        """``[len(sequences), d]`` float32 states of sequences (see :func:`user_states`)."""
        return user_states(self.encoder(), self.vocab, sequences, batch_size,
                           resolve_device(device))

    def save(self, path: Path) -> Path:
        import torch

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state": self.state, "item_ids": self.item_ids,
                    "config": asdict(self.config), "info": self.info}, path)
        return path

    @classmethod
    def load(cls, path: Path) -> EncoderCheckpoint:
        import torch

        raw = torch.load(Path(path), map_location="cpu", weights_only=False)
        return cls(raw["state"], np.asarray(raw["item_ids"]), EncoderConfig(**raw["config"]),
                   raw["info"])


def pretrain(sequences: Sequence[np.ndarray], cfg: EncoderConfig | None = None, *,
             epochs: int = 20, batch_size: int = 256, lr: float = 2e-3,
             negatives: int | None = None,
             seed: int = 0, device: str = "auto", valid_share: float = 0.1,
             patience: int = 6) -> EncoderCheckpoint:
    """Pre-train an encoder on ``sequences`` (one array of item ids per user, oldest first).

    Next-item objective: the cross-entropy of a softmax over the whole vocabulary when
    ``negatives`` is None and the vocabulary has at most :data:`FULL_SOFTMAX_ITEMS` items (the
    stronger objective, and cheap at that size), else a sampled softmax against ``negatives``
    (default 1024) items drawn uniformly and shared by the batch. The last ``valid_share`` of
    users (at least one) are held out and their last item scored by full ranking each epoch:
    its cross-entropy over the whole vocabulary picks the epoch kept (early stopping with
    ``patience``; smoother than the hit rate @10, also logged, which on a few thousand users
    moves by noise). The patience is 6 by default: on sparse logs the held-out loss sits at
    popularity's level for several epochs before item-to-item structure emerges, and a patience
    of 3 stopped on that plateau (measured on the synthetic marketplace). The checkpoint's
    ``info`` holds the loss, held-out loss and hit-rate
    curves, samples per second and the epoch kept.
    """
    import torch

    cfg = cfg or EncoderConfig()
    device = resolve_device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    seqs = [np.asarray(s, dtype=np.int64) for s in sequences if len(s) >= 2]
    if not seqs:
        raise NotEnoughSequences("no sequence has two items or more: nothing to pre-train on")
    vocab = ItemVocab(np.concatenate(seqs))
    order = rng.permutation(len(seqs))
    n_valid = max(1, int(len(seqs) * valid_share)) if len(seqs) > 1 else 0
    valid = [seqs[i] for i in order[:n_valid]]
    train = [seqs[i] for i in order[n_valid:]] or valid
    # every training sequence as (input, target) windows of max_len + 1 items
    windows = vocab.pad([s[-(cfg.max_len + 1):] for s in train], cfg.max_len + 1)
    x_all, y_all = torch.from_numpy(windows[:, :-1]), torch.from_numpy(windows[:, 1:])
    lengths = (windows[:, :-1] != 0).sum(1)
    v_in = torch.from_numpy(vocab.pad([s[:-1] for s in valid], cfg.max_len))
    v_target = torch.from_numpy(vocab.index(np.array([s[-1] for s in valid])))

    full = negatives is None and len(vocab) - 1 <= FULL_SOFTMAX_ITEMS
    negatives = negatives or 1024
    enc = build_encoder(len(vocab), cfg).to(device)
    opt = torch.optim.AdamW(enc.parameters(), lr=lr, weight_decay=0.01)
    curves: dict[str, list[float]] = {"pretrain_loss": [], "pretrain_valid_loss": [],
                                      "pretrain_valid_hr@10": []}
    best, best_state, best_epoch, bad = np.inf, None, 0, 0
    t0, seen = time.perf_counter(), 0
    for epoch in range(epochs):
        loss, targets = next_item_epoch(enc, opt, x_all, y_all, lengths, batch_size, rng,
                                        negatives=None if full else negatives, device=device)
        seen += targets
        # no held-out user (one sequence): the training loss decides
        v_loss, hr = _held_out(enc, v_in, v_target, device) if n_valid else (loss, 0.0)
        curves["pretrain_loss"].append(loss)
        curves["pretrain_valid_loss"].append(v_loss)
        curves["pretrain_valid_hr@10"].append(hr)
        log.info("pretrain epoch %d: loss %.4f, held-out loss %.4f, HR@10 %.4f, %.0f samples/s",
                 epoch, curves["pretrain_loss"][-1], v_loss, hr, seen / (time.perf_counter() - t0))
        if v_loss < best:
            best, best_epoch, bad = v_loss, epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in enc.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    seconds = time.perf_counter() - t0
    info = {"curves": curves, "best_epoch": best_epoch, "samples_per_s": seen / seconds,
            "seconds": seconds, "users": len(seqs), "items": len(vocab) - 1,
            "events": int(sum(len(s) for s in seqs)),
            "negatives": "full" if full else negatives}
    return EncoderCheckpoint(best_state, vocab.ids, cfg, info)


def next_item_epoch(enc: Any, opt: Any, x_all: Any, y_all: Any, lengths: np.ndarray,
                    batch_size: int, rng: np.random.Generator, *, negatives: int | None = None,
                    device: str = "cpu") -> tuple[float, int]:
    """One training epoch of the next-item objective: ``x_all`` ``[n, L]`` left-padded inputs,
    ``y_all`` the next item at each position (0: no target), batched by :func:`length_batches`
    of ``lengths``. A softmax over the whole vocabulary when ``negatives`` is None, else against
    ``negatives`` uniform samples shared by the batch; bf16 autocast on CUDA. Returns the mean
    batch loss and the number of targets trained on."""
    import torch
    from torch.nn import functional

    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda"
           else contextlib.nullcontext())
    enc.train()
    total, batches, seen = 0.0, 0, 0
    for batch in length_batches(lengths, batch_size, rng):
        idx = torch.from_numpy(batch)
        first = trim(x_all[idx])  # short histories: cut the all-padding columns
        x, y = x_all[idx, first:].to(device), y_all[idx, first:].to(device)
        mask = y > 0
        if not mask.any():
            continue
        with amp:
            h = enc(x, first)[mask]                            # [N, d]
            pos = y[mask]
            w = enc.items.weight
            if negatives is None:  # every item but padding
                logits = (h @ w[1:].T).float()
                loss = functional.cross_entropy(logits, pos - 1)
            else:
                neg = torch.randint(1, len(w), (negatives,), device=device)
                logits = torch.cat([(h * w[pos]).sum(-1, keepdim=True), h @ w[neg].T], 1)
                # a sampled negative equal to the target is not a negative
                logits[:, 1:] = logits[:, 1:].masked_fill(neg[None] == pos[:, None], -1e4)
                loss = functional.cross_entropy(logits.float(), torch.zeros(
                    len(pos), dtype=torch.long, device=device))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(enc.parameters(), 1.0)
        opt.step()
        total += float(loss.detach())
        batches += 1
        seen += int(mask.sum())
    return total / max(batches, 1), seen


def _held_out(enc: Any, seq: Any, target: Any, device: str, k: int = 10) -> tuple[float, float]:
    """``(cross-entropy, hit rate @k)`` of held-out next items under a full ranking over the
    vocabulary (seen items included; targets the vocabulary does not know count as misses and
    are left out of the cross-entropy)."""
    import torch
    from torch.nn import functional

    enc.eval()
    with torch.no_grad():
        h = enc.user_state(seq.to(device))
        scores = (h @ enc.items.weight.T).float()
        scores[:, 0] = -torch.inf
        top = scores.topk(min(k, scores.shape[1] - 1), dim=1).indices.cpu()
        known = target > 0
        loss = (functional.cross_entropy(scores[known.to(device)], target[known].to(device))
                if bool(known.any()) else torch.tensor(float("nan")))
    hits = (top == target[:, None]).any(1) & known
    return float(loss), float(hits.float().mean())
