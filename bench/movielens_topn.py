"""Top-N on MovieLens-100K under the standard sequential protocol, rankline against same-run anchors.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 \\
        .venv/bin/python bench/movielens_topn.py [--seeds 1,2] [--threads 1]

Protocol: each user's ratings sorted by time (ties in the file's order, as RecBole's), the last
one is the test item, the one before it the validation item, the rest training. Every row is a
full ranking over all 1,682 items with the user's earlier items masked, judged by
:mod:`models.topn` (NDCG@10 and Recall@10 over users, ties scored by their expectation).
Hyperparameters, epochs and the encoder that ranks the refresh row are chosen on the validation
item only; the test item is used once.

Rows, all on the same split, through the same evaluator:

* anchors: popularity (training interaction counts), ItemKNN (``implicit`` cosine item-item),
  BPR and ALS (``implicit`` 0.7.3), each tuned on a small grid on the validation item, then
  refit with the chosen setting on every interaction before the test item (training plus the
  validation item: the strongest fair version; the encoder, not refit, reads that item as
  input) and scored once per seed.
* peers (``--peers``, default ``sasrec,bert4rec``): SASRec and BERT4Rec from ``rectools`` 0.19,
  both with the full-softmax loss, their epochs chosen on the validation item, not refit (they
  read the validation item as input, as the encoder does), once per seed
  (``bench/peers_rectools.py`` says how).
  ``rectools`` pins pandas < 3 and numpy < 2, so they run in a virtual environment of their own
  (``--peers-venv``, default ``var/peers-venv``), created from the registry on first use
  (``rectools[torch]==0.19.0`` with the local CPU ``torch==2.13.0``), never a rankline
  dependency. Their top-10 lists go through the same evaluator (``list_metrics``).
* ``encoder scratch``: the SASRec-style encoder of :mod:`models.sequence`, full-softmax
  next-item objective, trained from random weights on every window of the training history
  (sequences cut into ``max_len + 1`` windows so no target is lost), epochs picked on the
  validation item's NDCG@10 (patience ``--patience``), at most ``--epochs + --ft-epochs``;
  its batch size (used by both encoder rows) chosen on the validation item from
  ``--batch-sizes`` with the first seed, as the anchors' grids are (the peers keep
  ``rectools``' batch of 128 and have their epochs chosen).
* ``encoder pre-trained+fine-tuned``: :func:`models.sequence.pretrain` (rankline's weekly
  pre-training, its own early stopping on held-out training windows, never the validation
  item) on the same windows for at most ``--epochs``, then fine-tuned for at most
  ``--ft-epochs`` at ``--ft-lr`` on each user's latest window with the loss on its last
  ``--ft-last`` targets only (the positions top-N asks about: the next item after a long
  history); the fine-tuning epoch (0: none) is picked on the validation item. Same data, same
  epoch budget as scratch: the difference is the two-stage schedule.
* ``rankline refresh``: what the nightly refresh would publish, emulated with the functions it
  calls (:func:`pipeline.hulk.user_signals`, :func:`~pipeline.hulk.co_clicks`,
  :func:`~pipeline.hulk.candidates`, :func:`~pipeline.hulk.top_k`) on every rating before the
  test item (clicks = ratings >= 3 as in the MovieLens source, every rating consumed,
  popularity = the baseline's 3/2/1 engagement over all of it rather than a 7-day window, which
  a leave-one-out split has not), ``--candidates`` per user ranked by the encoder chosen on the
  validation item, top ``--top-k`` published. Its candidates cap its recall: the share of test
  items inside the pools is printed.

Neural rows (and BPR/ALS, whose fits are seeded) run once per seed; the table shows the mean and
each seed. Paired 95% bootstrap intervals over users (per-user NDCG@10 averaged over seeds):
pre-trained+fine-tuned minus scratch, rankline's best row minus each peer, and rankline's best
row minus the best anchor (best by test mean, as the goal is stated; the peers are anchors).
Last line: ``ratio ndcg@10 rankline/best-anchor: <x>``.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

T0 = time.perf_counter()
K = 10


def stage(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {msg}", flush=True)


# ---------------------------------------------------------------- data and split

class Split:
    """Leave-one-out by time: item columns, per-user sequences, targets and masks."""

    def __init__(self, ratings: pd.DataFrame) -> None:
        r = ratings.sort_values(["user_id", "timestamp"], kind="stable")  # ties: file order
        self.items = np.unique(r["item_id"].to_numpy())
        self.users = np.unique(r["user_id"].to_numpy())
        col = np.searchsorted(self.items, r["item_id"].to_numpy())
        bounds = np.r_[0, np.flatnonzero(np.diff(r["user_id"].to_numpy())) + 1, len(r)]
        self.ids = [r["item_id"].to_numpy()[a:b] for a, b in zip(bounds[:-1], bounds[1:],
                                                                  strict=True)]
        self.cols = [col[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        self.ratings = [r["rating"].to_numpy()[a:b] for a, b in zip(bounds[:-1], bounds[1:],
                                                                    strict=True)]
        if min(len(c) for c in self.cols) < 3:
            raise SystemExit("a user has fewer than 3 ratings: no train/valid/test split")
        self.frame = r

    def train_ids(self) -> list[np.ndarray]:
        return [s[:-2] for s in self.ids]

    def history(self, phase: str) -> list[np.ndarray]:
        """Item ids before the target of ``phase`` (the encoder's input)."""
        return [s[:-2] if phase == "valid" else s[:-1] for s in self.ids]

    def seen(self, phase: str) -> list[np.ndarray]:
        """Columns to mask for ``phase``: every earlier item."""
        return [c[:-2] if phase == "valid" else c[:-1] for c in self.cols]

    def target(self, phase: str) -> np.ndarray:
        return np.array([c[-2] if phase == "valid" else c[-1] for c in self.cols])

    def matrix(self, phase: str):  # -> scipy.sparse.csr_matrix
        """Binary users x items matrix of the interactions a ``phase`` model may fit on."""
        from scipy.sparse import csr_matrix

        seen = self.seen(phase)
        rows = np.repeat(np.arange(len(seen)), [len(s) for s in seen])
        m = csr_matrix((np.ones(len(rows), np.float32), (rows, np.concatenate(seen))),
                       shape=(len(self.users), len(self.items)))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m


def evaluate(split: Split, scores: np.ndarray, phase: str) -> pd.DataFrame:
    from models.topn import score_metrics

    return score_metrics(scores, split.target(phase), split.seen(phase), K)


# ---------------------------------------------------------------- anchors

def popularity(m) -> np.ndarray:
    counts = np.asarray(m.sum(0)).ravel().astype(np.float64)
    return np.broadcast_to(counts, m.shape)


def fit_implicit(kind: str, params: dict, m, seed: int) -> np.ndarray:
    """Full scores of one ``implicit`` model fit on the binary matrix ``m``."""
    from implicit.als import AlternatingLeastSquares
    from implicit.bpr import BayesianPersonalizedRanking
    from implicit.nearest_neighbours import CosineRecommender

    if kind == "ItemKNN":
        model = CosineRecommender(K=params["K"], num_threads=1)
        model.fit(m, show_progress=False)
        return np.asarray((m @ model.similarity).todense(), dtype=np.float64)
    if kind == "BPR":
        model = BayesianPersonalizedRanking(num_threads=1, random_state=seed, **params)
    else:
        model = AlternatingLeastSquares(num_threads=1, random_state=seed, **params)
    model.fit(m, show_progress=False)
    return np.asarray(model.user_factors, np.float64) @ np.asarray(model.item_factors,
                                                                   np.float64).T


GRIDS = {  # each best value of the first runs sat at a grid edge: the grids reach past it
    "ItemKNN": [{"K": k} for k in (5, 10, 20, 50, 100, 200, 400)],
    "BPR": [{"factors": f, "learning_rate": lr, "regularization": 0.01, "iterations": it}
            for f, lr, it in itertools.product((32, 64, 128), (0.003, 0.01, 0.03), (50, 150))],
    "ALS": [{"factors": f, "regularization": reg, "alpha": a, "iterations": 15}
            for f, reg, a in itertools.product((16, 32, 64, 128), (0.001, 0.01, 0.1),
                                               (0.25, 1.0, 5.0))],
}


# ---------------------------------------------------------------- the encoder

def windows(seqs: list[np.ndarray], length: int) -> list[np.ndarray]:
    """Every sequence cut from its end into windows of ``length`` items overlapping by one, so
    every item but the first is a target exactly once."""
    out = []
    for s in seqs:
        end = len(s)
        while end >= 2:
            out.append(s[max(0, end - length):end])
            end -= length - 1
    return out


def train(enc, vocab, seqs: list[np.ndarray], *, epochs: int, lr: float, batch_size: int,
          seed: int, valid_fn, patience: int, last: int | None, name: str,
          start_valid: float | None = None) -> tuple[dict, list[float], int]:
    """Full-softmax next-item training on ``seqs`` (windows), keeping the epoch whose
    ``valid_fn(enc)`` (validation NDCG@10) is best. ``last``: only the last ``last`` targets of
    each row count. ``start_valid``: the untrained state's value, as epoch 0 (fine-tuning)."""
    import torch

    from models.sequence import next_item_epoch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    L = enc.cfg.max_len
    win = vocab.pad([s[-(L + 1):] for s in seqs], L + 1)
    x_all, y_all = torch.from_numpy(win[:, :-1]), torch.from_numpy(win[:, 1:])
    if last is not None:
        y_all[:, :-last] = 0
    lengths = (win[:, :-1] != 0).sum(1)
    opt = torch.optim.AdamW(enc.parameters(), lr=lr, weight_decay=0.01)
    curve: list[float] = []
    best_state = {k: v.detach().clone() for k, v in enc.state_dict().items()}
    best, best_epoch, bad = (-np.inf, 0, 0) if start_valid is None else (start_valid, 0, 0)
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        loss, _ = next_item_epoch(enc, opt, x_all, y_all, lengths, batch_size, rng)
        v = valid_fn(enc)
        curve.append(v)
        if v > best:
            best, best_epoch, bad = v, epoch, 0
            best_state = {k: t.detach().clone() for k, t in enc.state_dict().items()}
        else:
            bad += 1
        logging.getLogger("bench").debug("%s epoch %d loss %.4f valid %.4f", name, epoch,
                                         loss, v)
        if bad >= patience:
            break
    stage(f"  {name}: {len(curve)} epochs in {time.perf_counter() - t0:.0f}s, kept epoch "
          f"{best_epoch} (valid ndcg@10 {best:.4f})")
    enc.load_state_dict(best_state)
    return best_state, curve, best_epoch


def catalog_scores(split: Split, enc, vocab, phase: str) -> np.ndarray:
    """The encoder's next-item scores of every item column for ``phase`` (items never in its
    vocabulary stay at -inf)."""
    from models.sequence import item_scores

    s = item_scores(enc, split.history(phase), vocab)
    out = np.full((len(s), len(split.items)), -np.inf)
    out[:, np.searchsorted(split.items, vocab.ids)] = s[:, 1:]
    return out


def scratch(split: Split, seed: int, args, batch_size: int) -> tuple[Any, list[float], int]:
    """The encoder trained from random weights on every window of the training history, its
    epoch kept by the validation item's NDCG@10: ``(encoder, validation curve, epoch kept)``."""
    import torch

    from models.sequence import EncoderConfig, ItemVocab, build_encoder

    cfg = EncoderConfig(max_len=args.max_len)
    train_ids = split.train_ids()
    vocab = ItemVocab(np.concatenate(train_ids))
    torch.manual_seed(seed)
    enc = build_encoder(len(vocab), cfg)
    _, curve, best = train(
        enc, vocab, windows(train_ids, cfg.max_len + 1), epochs=args.epochs + args.ft_epochs,
        lr=args.lr, batch_size=batch_size, seed=seed,
        valid_fn=lambda e: float(evaluate(split, catalog_scores(split, e, vocab, "valid"),
                                          "valid")[f"ndcg@{K}"].mean()),
        patience=args.patience, last=None, name=f"seed {seed} scratch, batch {batch_size}")
    return enc, curve, best


def encoder_rows(split: Split, seed: int, args) -> dict[str, dict]:
    """Scratch and pre-trained+fine-tuned encoders of one seed: valid/test scores and info."""
    from models.retrieval import item_index
    from models.sequence import (
        EncoderConfig,
        ItemVocab,
        pretrain,
        user_states,
    )
    from pipeline.pools import EncoderSpace

    cfg = EncoderConfig(max_len=args.max_len)
    train_ids = split.train_ids()
    wins = windows(train_ids, cfg.max_len + 1)
    vocab = ItemVocab(np.concatenate(train_ids))
    col_of_row = np.searchsorted(split.items, vocab.ids)  # vocabulary rows -> item columns

    def full(enc, phase: str) -> np.ndarray:
        return catalog_scores(split, enc, vocab, phase)

    def valid_fn(enc) -> float:
        return float(evaluate(split, full(enc, "valid"), "valid")[f"ndcg@{K}"].mean())

    def space(enc) -> EncoderSpace:
        """The encoder as the refresh's embedding pool searches it (users as row indexes)."""
        weights = enc.items.weight.detach().float().numpy()[1:]
        return EncoderSpace(user_ids=np.arange(len(split.users)),
                            states=user_states(enc, vocab, split.history("test")),
                            item_ids=split.items[col_of_row],
                            index=item_index(weights, args.exact_up_to, args.threads))

    out = {}
    enc, curve, best = scratch(split, seed, args, args.batch_size)
    out["encoder scratch"] = {"valid": full(enc, "valid"), "test": full(enc, "test"),
                              "space": space(enc), "info": f"epoch {best}/{len(curve)}"}

    t0 = time.perf_counter()
    ckpt = pretrain(wins, cfg, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    seed=seed, device="cpu", patience=args.patience)
    assert np.array_equal(ckpt.item_ids, vocab.ids)
    stage(f"  seed {seed} pretrain: {len(ckpt.info['curves']['pretrain_loss'])} epochs in "
          f"{time.perf_counter() - t0:.0f}s, kept epoch {ckpt.info['best_epoch'] + 1} "
          f"(held-out training windows)")
    enc = ckpt.encoder()
    v0 = valid_fn(enc)
    _, curve, best = train(enc, vocab, train_ids, epochs=args.ft_epochs, lr=args.ft_lr,
                           batch_size=args.batch_size, seed=seed, valid_fn=valid_fn,
                           patience=args.patience, last=args.ft_last,
                           name=f"seed {seed} fine-tune (pre-trained: valid {v0:.4f})",
                           start_valid=v0)
    out["encoder pre-trained+fine-tuned"] = {
        "valid": full(enc, "valid"), "test": full(enc, "test"), "space": space(enc),
        "info": f"pretrain epoch {ckpt.info['best_epoch'] + 1}, fine-tune epoch {best}/"
                f"{len(curve)}"}
    return out


# ---------------------------------------------------------------- the refresh row

def refresh_lists(split: Split, scores: np.ndarray, per_user: int, top_k: int,
                  pools: pd.DataFrame | None = None) -> tuple[list[np.ndarray], pd.DataFrame]:
    """What the refresh would publish for every user as of just before the test item: the
    candidates of :func:`pipeline.hulk.candidates` ranked by ``scores`` (item columns)."""
    from pipeline import hulk

    if pools is None:
        pools = refresh_pools(split, per_user)
    u = pools["user_id"].to_numpy()
    c = np.searchsorted(split.items, pools["item_id"].to_numpy())
    top = hulk.top_k(u, pools["item_id"].to_numpy(), scores[u, c], top_k)
    top["col"] = np.searchsorted(split.items, top["item_id"].to_numpy())
    by_user = dict(tuple(top.groupby("user_id", sort=False)["col"]))
    return [by_user.get(i, pd.Series(dtype=np.int64)).to_numpy() for i in
            range(len(split.users))], pools


def refresh_pools(split: Split, per_user: int, encoder: Any = None) -> pd.DataFrame:
    """Candidates per user (row index as ``user_id``) from the refresh's default pools:
    popular, category and co-clicks, and with ``encoder`` (a
    :class:`pipeline.pools.EncoderSpace`) the embedding pool."""
    import datetime as dt

    from feature_store.definitions import W
    from pipeline import hulk
    from pipeline.sources.movielens import RATING_LABELS, dimensions

    hist = split.seen("test")
    rows = np.repeat(np.arange(len(hist)), [len(h) for h in hist])
    ev = pd.DataFrame({"user_id": rows, "item_id": split.items[np.concatenate(hist)]})
    ev["value"] = np.concatenate([r[:-1] for r in split.ratings]).astype(float)
    label = RATING_LABELS.labels(ev)
    # the baseline's engagement: purchase 3 (rating 5), cart 2 (>= 4), click 1 (>= 3)
    eng = pd.Series((label >= 3) * 3 + (label >= 2) * 2 + (label >= 1) * 1.0).groupby(
        ev["item_id"].to_numpy()).sum()
    pop = eng.reindex(split.items, fill_value=0.0).sort_values(ascending=False, kind="stable")
    items, _ = dimensions()
    items = items[["item_id", "category"]].astype("int64")
    day = dt.date(1998, 1, 1)
    clicks = ev.loc[label >= 1, ["user_id", "item_id"]].assign(date=day)
    empty_view = pd.DataFrame({"user_id": np.empty(0, np.int64), "category": np.empty(0, np.int64),
                               f"uc_clicks_{W}": np.empty(0, np.float64)})
    # no click is in the 7-day window: affinity and clicked items come from the whole history
    affinity, user_clicks = hulk.user_signals(empty_view, clicks, items,
                                              day + dt.timedelta(days=1))
    neighbours = hulk.co_clicks(clicks[["user_id", "item_id"]])
    consumed = ev[["user_id", "item_id"]]
    return hulk.candidates(np.arange(len(split.users)), pop, items, affinity, user_clicks,
                           neighbours, consumed, per_user, encoder)


# ---------------------------------------------------------------- peers

PEERS_REQUIREMENTS = ("rectools[torch]==0.19.0", "torch==2.13.0")


def peers_python(venv: Path) -> Path:
    """The peers' interpreter: ``venv``, created and filled from the registry when it lacks
    ``rectools`` (about a minute; the local CPU build of torch)."""
    import subprocess

    py = venv / "bin" / "python"
    if py.exists() and subprocess.run([py, "-c", "import rectools"],
                                      capture_output=True).returncode == 0:
        return py
    stage(f"creating the peers' environment {venv} ({', '.join(PEERS_REQUIREMENTS)})")
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)],
                   check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", *PEERS_REQUIREMENTS], check=True)
    return py


def peer_rows(split: Split, seeds: list[int], args: argparse.Namespace) -> dict[str, dict]:
    """The peers' rows (the table's shape): their lists scored by ``list_metrics``."""
    import json
    import subprocess
    import tempfile

    from models.topn import list_metrics

    py = peers_python(Path(args.peers_venv))
    with tempfile.TemporaryDirectory(prefix="rankline-peers-") as tmp:
        data, out = Path(tmp) / "split.csv", Path(tmp) / "peers.json"  # the peers have no pyarrow
        pd.DataFrame({"user": np.repeat(np.arange(len(split.ids)), [len(s) for s in split.ids]),
                      "item": np.concatenate(split.ids),
                      "order": np.concatenate([np.arange(len(s)) for s in split.ids])}
                     ).to_csv(data, index=False)
        subprocess.run([py, str(ROOT / "bench" / "peers_rectools.py"), "--data", str(data),
                        "--out", str(out), "--models", args.peers,
                        "--seeds", ",".join(map(str, seeds)), "--epochs", args.peer_epochs,
                        "--threads", str(args.threads), "--max-len", str(args.max_len)],
                       check=True, cwd=tmp)
        found = json.loads(out.read_text())
    targets, rows = split.target("test"), {}
    for name, res in found.items():
        label = {"sasrec": "SASRec (rectools)", "bert4rec": "BERT4Rec (rectools)"}[name]
        valid = [res["valid_curve"][s][str(res["epochs"][s])] for s in res["epochs"]]
        rows[label] = {"valid": float(np.mean(valid)), "test": {
            int(s): list_metrics([np.searchsorted(split.items, np.asarray(lst, dtype=np.int64))
                                  for lst in lists], targets, K)
            for s, lists in res["test"].items()},
            "info": "softmax, epochs " + ", ".join(f"s{s}={e}" for s, e in res["epochs"].items())}
        stage(f"{label}: valid {rows[label]['valid']:.4f}")
    return rows


# ---------------------------------------------------------------- report

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2", help="seeds of the neural rows (and BPR/ALS fits)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (BLAS: set the env)")
    ap.add_argument("--epochs", type=int, default=20, help="pre-training epochs at most")
    ap.add_argument("--ft-epochs", type=int, default=10, help="fine-tuning epochs at most")
    ap.add_argument("--patience", type=int, default=6)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--ft-lr", type=float, default=3e-4)
    ap.add_argument("--ft-last", type=int, default=10, help="targets per user fine-tuned on")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="the encoders' batch size (default: chosen from --batch-sizes)")
    ap.add_argument("--batch-sizes", default="32,64",
                    help="the grid the encoders' batch size is chosen from on the validation "
                         "item (the first seed's scratch encoder, as the anchors' grids)")
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--candidates", type=int, default=300, help="refresh candidates per user")
    ap.add_argument("--top-k", type=int, default=50, help="refresh list length")
    ap.add_argument("--exact-up-to", type=int, default=100_000,
                    help="the embedding pool's exact search up to this many items, HNSW above "
                         "(RANKLINE_EXACT_RETRIEVAL_UP_TO)")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="one grid point per anchor (smoke)")
    ap.add_argument("--peers", default="sasrec,bert4rec",
                    help="rectools peers (sasrec, bert4rec; empty: none)")
    ap.add_argument("--peers-venv", default=str(ROOT / "var" / "peers-venv"),
                    help="the peers' own virtual environment (created when missing)")
    ap.add_argument("--peer-epochs", default="25,50,75,100,150",
                    help="epochs at which the peers are judged on the validation item")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every training epoch")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("bench").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    # implicit 0.7.3's item-item fit converts its own COO product and warns about it
    warnings.filterwarnings("ignore", message="Method expects CSR input")

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    from models.metrics import paired_bootstrap
    from models.topn import list_metrics
    from pipeline.sources.movielens import ratings

    split = Split(ratings())
    stage(f"ML-100K: {len(split.users)} users, {len(split.items)} items, "
          f"{len(split.frame):,} ratings; threads {args.threads}, seeds {seeds}")
    m_train, m_trval = split.matrix("valid"), split.matrix("test")
    cold = np.isin(split.target("test"), np.unique(np.concatenate(split.seen("valid"))),
                   invert=True).sum()
    stage(f"split: {m_train.nnz:,} training interactions; {cold} test items never in training")

    # rows[name] = {"valid": float, "test": {seed: per-user frame}, "info": str}
    rows: dict[str, dict] = {}
    rows["popularity"] = {"valid": evaluate(split, popularity(m_train), "valid")[
        f"ndcg@{K}"].mean(), "test": {0: evaluate(split, popularity(m_trval), "test")},
        "info": "training counts"}
    stage(f"popularity: valid {rows['popularity']['valid']:.4f}")
    for kind, grid in GRIDS.items():
        grid = grid[:1] if args.quick else grid
        t0 = time.perf_counter()
        tried = [(float(evaluate(split, fit_implicit(kind, p, m_train, seeds[0]), "valid")[
            f"ndcg@{K}"].mean()), i) for i, p in enumerate(grid)]
        v, i = max(tried)
        params = grid[i]
        fit_seeds = [seeds[0]] if kind == "ItemKNN" else seeds
        rows[kind] = {"valid": v, "info": ", ".join(f"{k}={x}" for k, x in params.items()),
                      "test": {s: evaluate(split, fit_implicit(kind, params, m_trval, s), "test")
                               for s in fit_seeds}}
        stage(f"{kind}: {len(grid)} settings in {time.perf_counter() - t0:.0f}s, best {params} "
              f"valid {v:.4f}")

    peers = peer_rows(split, seeds, args) if args.peers else {}
    rows.update(peers)

    if args.batch_size is None:
        grid = [int(b) for b in args.batch_sizes.split(",")][:1 if args.quick else None]
        t0 = time.perf_counter()
        tried = {b: max(scratch(split, seeds[0], args, b)[1]) for b in grid}
        args.batch_size = max(grid, key=lambda b: (tried[b], -grid.index(b)))
        stage(f"encoder batch size: {len(grid)} settings in {time.perf_counter() - t0:.0f}s, "
              f"best {args.batch_size} (valid " + ", ".join(
                  f"{b}: {v:.4f}" for b, v in tried.items()) + ")")
    enc_valid: dict[str, list[float]] = {}
    enc_scores: dict[tuple[str, int], np.ndarray] = {}
    enc_spaces: dict[tuple[str, int], Any] = {}
    for seed in seeds:
        stage(f"encoders, seed {seed}")
        res = encoder_rows(split, seed, args)
        for name, r in res.items():
            row = rows.setdefault(name, {"valid": 0.0, "test": {}, "info": ""})
            v = float(evaluate(split, r["valid"], "valid")[f"ndcg@{K}"].mean())
            enc_valid.setdefault(name, []).append(v)
            row["valid"] = float(np.mean(enc_valid[name]))
            row["test"][seed] = evaluate(split, r["test"], "test")
            row["info"] = "; ".join(filter(None, [row["info"], f"s{seed}: {r['info']}"]))
            enc_scores[name, seed] = r["test"]
            enc_spaces[name, seed] = r["space"]

    ranker = max(enc_valid, key=lambda n: np.mean(enc_valid[n]))
    stage(f"refresh emulation: {args.candidates} candidates/user, ranked by {ranker} "
          "(best on validation)")
    targets = split.target("test")
    full_row = rows[ranker]["test"]
    for label, with_encoder in (("3 pools", False), ("4 pools", True)):
        name = f"rankline refresh ({label}, {args.candidates} cand., {ranker.split()[-1]})"
        rows[name] = {"valid": float("nan"), "test": {}, "info": ""}
        hits, secs = [], []
        for seed in seeds:
            space = enc_spaces[ranker, seed] if with_encoder else None
            t = time.perf_counter()
            pools = refresh_pools(split, args.candidates, space)
            secs.append(time.perf_counter() - t)
            cols = np.searchsorted(split.items, pools["item_id"].to_numpy())
            u = pools["user_id"].to_numpy()
            hit = np.zeros(len(split.users), bool)
            hit[u[cols == targets[u]]] = True
            hits.append(hit.mean())
            lists, _ = refresh_lists(split, enc_scores[ranker, seed], args.candidates,
                                     args.top_k, pools)
            rows[name]["test"][seed] = list_metrics(lists, targets, K)
        ratio = (np.mean([f[f"ndcg@{K}"].mean() for f in rows[name]["test"].values()])
                 / np.mean([f[f"ndcg@{K}"].mean() for f in full_row.values()]))
        rows[name]["info"] = (f"test item in pool {np.mean(hits):.3f}, pools built in "
                              f"{np.mean(secs):.1f}s, {ratio:.3f} of the full ranking's NDCG@10")
        stage(f"refresh, {label}: test item inside the candidates for {np.mean(hits):.1%} of "
              f"users (the row's recall ceiling at any k); NDCG@10 {ratio:.3f} of {ranker} "
              f"ranking the whole catalog; candidates in {np.mean(secs):.1f}s for "
              f"{len(split.users)} users")

    # ---- the table
    anchors = ["popularity", "ItemKNN", "BPR", "ALS", *peers]
    ours = [n for n in rows if n not in anchors]

    def per_user(n: str, metric: str = f"ndcg@{K}") -> np.ndarray:
        return np.mean([f[metric].to_numpy() for f in rows[n]["test"].values()], axis=0)

    print(f"\nML-100K top-N, leave-one-out by time, full ranking over {len(split.items)} items, "
          f"earlier items masked; {len(split.users)} users; test NDCG@{K}/Recall@{K} "
          f"(mean over seeds {seeds} where seeded; valid = validation NDCG@{K}, mean)")
    head = f"{'row':44s} {'valid':>7s} {'NDCG@10':>8s} {'Rec@10':>7s}  per seed NDCG@10"
    print(head)
    print("-" * len(head))
    for n in anchors + ours:
        r = rows[n]
        ps = "  ".join(f"s{s}={f[f'ndcg@{K}'].mean():.4f}" for s, f in r["test"].items() if s)
        valid = "-" if np.isnan(r["valid"]) else f"{r['valid']:.4f}"
        print(f"{n:44s} {valid:>7s} {per_user(n).mean():8.4f} "
              f"{per_user(n, f'recall@{K}').mean():7.4f}  {ps or '-'}   [{r['info']}]")

    def line(diff: np.ndarray) -> str:
        mean, low, high = paired_bootstrap(diff, args.bootstrap, 0.95, 0)
        verdict = "no difference" if low <= 0 <= high else ("better" if low > 0 else "worse")
        return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}] over {len(diff)} users ({verdict})"

    print(f"\npaired 95% bootstrap over users ({args.bootstrap} resamples):")
    ft, sc = "encoder pre-trained+fine-tuned", "encoder scratch"
    for seed in seeds:
        d = rows[ft]["test"][seed][f"ndcg@{K}"] - rows[sc]["test"][seed][f"ndcg@{K}"]
        print(f"  seed {seed}: pre-trained+fine-tuned - scratch: {line(d.to_numpy())}")
    print(f"  pre-trained+fine-tuned - scratch (seed mean): {line(per_user(ft) - per_user(sc))}")
    best_ours = max(ours, key=lambda n: per_user(n).mean())
    best_anchor = max(anchors, key=lambda n: per_user(n).mean())
    for peer in peers:
        print(f"  rankline best ({best_ours}) - {peer}: "
              f"{line(per_user(best_ours) - per_user(peer))}")
    print(f"  rankline best ({best_ours}) - best anchor ({best_anchor}): "
          f"{line(per_user(best_ours) - per_user(best_anchor))}")
    best, anchor = per_user(best_ours).mean(), per_user(best_anchor).mean()
    goal = best >= 0.070 and all(best > per_user(a).mean() for a in anchors)
    print(f"goal (rankline best >= 0.070 and above every anchor): {'met' if goal else 'NOT met'}")
    stage("done")
    print(f"ratio ndcg@10 rankline/best-anchor: {best / anchor:.4f}")


if __name__ == "__main__":
    main()
