"""The neural ranker's network: the sequence encoder and the ranking head as one torch module
(:func:`build_network`), the module DistributedDataParallel wraps for a training step
(:func:`scoring_step`), the network a fit starts from (:func:`initial_network`) and the
scoring of rows by a trained one (:func:`score`). torch is imported inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from feature_store.definitions import SEQ, model_features
from models.base import TrainingSet
from models.neural.rows import dense, seen_items
from models.sequence import EncoderCheckpoint, EncoderConfig, ItemVocab, build_encoder

if TYPE_CHECKING:
    from models.neural import NeuralRanker


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


def initial_network(ranker: NeuralRanker, data: TrainingSet,
                    train: pd.DataFrame | np.ndarray) -> Any:
    """The network before the first step: the checkpoint's encoder (``neural``) or random
    weights over the training rows' items (``neural_scratch``; ``train``: the rows, or the
    item ids they hold, :func:`~models.neural.rows.seen_items`). Sets ``ranker``'s encoder
    ``config`` (the checkpoint's) and item ``vocab``."""
    import torch

    torch.manual_seed(ranker.params["seed"])
    if ranker.init == "pretrained":
        if data.pretrained is None:
            raise ValueError("the neural family starts from a pre-trained encoder, and the "
                             "training set names none: run the pretrain task first (or "
                             "train neural_scratch)")
        ck = EncoderCheckpoint.load(data.pretrained)
        ranker.config, ranker.vocab = ck.config, ck.vocab
        net = build_network(len(ranker.vocab), 2 * len(model_features()), ranker.config)
        net.encoder.load_state_dict(ck.state)
        return net
    ranker.vocab = ItemVocab(seen_items(train) if isinstance(train, pd.DataFrame) else train)
    return build_network(len(ranker.vocab), 2 * len(model_features()), ranker.config)


def score(ranker: NeuralRanker, rows: pd.DataFrame, batch: int = 65_536) -> np.ndarray:
    """``ranker``'s scores of ``rows``: one user state per distinct sequence holder, then the
    rows ``batch`` at a time."""
    import torch

    if ranker.net is None:
        raise RuntimeError("fit the model before scoring")
    if len(rows) == 0:
        return np.zeros(0, dtype=np.float32)
    ranker.net.eval()
    device = next(ranker.net.parameters()).device
    # one user state per distinct sequence holder: (user, date) when rows span dates
    keys = ["user_id", "date"] if "date" in rows.columns else ["user_id"]
    codes, uniq = pd.factorize(pd.MultiIndex.from_frame(rows[keys]))
    first = pd.Series(codes).drop_duplicates().index.to_numpy()
    seqs = ranker.vocab.pad(list(rows[SEQ].to_numpy()[first]), ranker.config.max_len)
    out = np.empty(len(rows), dtype=np.float32)
    items = ranker.vocab.index(rows["item_id"].to_numpy())
    x = dense(ranker.matrix(rows), ranker.mean, ranker.std)
    with torch.no_grad():
        users = torch.cat([ranker.net.encoder.user_state(torch.from_numpy(seqs[i:i + 4096])
                                                         .to(device))
                           for i in range(0, len(seqs), 4096)])
        for i in range(0, len(rows), batch):
            u = users[torch.from_numpy(codes[i:i + batch]).to(device)]
            s = ranker.net(u, torch.from_numpy(items[i:i + batch]).to(device),
                           torch.from_numpy(x[i:i + batch]).to(device))
            out[i:i + batch] = s.float().cpu().numpy()
    return out
