"""SASRec and BERT4Rec from ``rectools`` on the leave-one-out split of ``movielens_topn.py``.

Runs inside the peers' own virtual environment (``rectools`` 0.19 pins pandas < 3 and numpy < 2,
so it is never a rankline dependency); ``bench/movielens_topn.py`` creates that environment from
the registry, writes the split and starts this script:

    <peers venv>/bin/python bench/peers_rectools.py --data split.csv --out peers.json \\
        [--models sasrec,bert4rec] [--seeds 1,2,3] [--epochs 25,50,75,100,150] [--threads 1]

``split.csv`` holds every rating as ``user`` (0-based, the bench's user order), ``item``
(the item id) and ``order`` (its place in the user's time order). The last item of each user is
the test item, the one before it the validation item. Both models train with the full softmax
over the catalog (SASRec+ in the field's terms: RecSys 2023), 64 factors, 2 blocks, 2 heads,
sequences of the last ``--max-len`` items (50; the bench passes its own). The number of epochs
is chosen on the validation item (the checkpoints of ``--epochs``, trained on with
``fit_partial``), judged by the bench's own
evaluator (``models.topn.list_metrics``, imported from the repository: numpy and pandas only);
at every checkpoint the model also recommends each user's top 10 for the test item, reading every
item before it (the validation item too) as its input sequence, items the user already rated
left out; the lists of the checkpoint chosen on validation are kept. The model is not refit on
the validation item, as rankline's encoder rows are not. Writes, per model: the parameters, the
epochs chosen per seed, the validation NDCG@10 curve and the test lists (one per user, in user
order).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
K = 10
COMMON = {"n_factors": 64, "n_blocks": 2, "n_heads": 2, "session_max_len": 50,
          "dropout_rate": 0.2, "lr": 1e-3, "batch_size": 128, "loss": "softmax"}


def build(name: str, seed: int, epochs: int):  # noqa: ANN201 - rectools' model
    from pytorch_lightning import seed_everything
    from rectools.models import BERT4RecModel, SASRecModel

    seed_everything(seed, workers=True)
    cls = {"sasrec": SASRecModel, "bert4rec": BERT4RecModel}[name]
    return cls(**COMMON, epochs=epochs, deterministic=True, verbose=0,
               recommend_n_threads=1, item_net_block_types=_id_items())


def _id_items():  # noqa: ANN202
    from rectools.models.nn.item_net import IdEmbeddingsItemNet

    return (IdEmbeddingsItemNet,)  # the split has no item features


def dataset(split: pd.DataFrame, drop_last: int):  # noqa: ANN201 - rectools' Dataset
    """Every user's ratings but the last ``drop_last``, in time order (datetimes made from the
    order, so rectools keeps the bench's order, ties included)."""
    from rectools.dataset import Dataset

    keep = split[split["order"] < split.groupby("user")["order"].transform("max") + 1 - drop_last]
    return Dataset.construct(pd.DataFrame({
        "user_id": keep["user"].to_numpy(), "item_id": keep["item"].to_numpy(),
        "weight": 1.0,
        "datetime": pd.Timestamp("2000-01-01") + pd.to_timedelta(keep["order"], unit="s")}))


def top_lists(model, data, users: np.ndarray) -> list[list[int]]:  # noqa: ANN001
    """Each user's top ``K`` (viewed items left out), in ``users`` order."""
    rec = model.recommend(users=users, dataset=data, k=K, filter_viewed=True)
    rec = rec.sort_values(["user_id", "rank"])
    by_user = rec.groupby("user_id")["item_id"].apply(list)
    return [list(map(int, by_user.get(u, []))) for u in users]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--models", default="sasrec,bert4rec")
    ap.add_argument("--seeds", default="1")
    ap.add_argument("--epochs", default="25,50,75,100,150")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-len", type=int, default=50, help="items of a sequence read (as ours)")
    args = ap.parse_args()
    COMMON["session_max_len"] = args.max_len
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    import torch

    from models.topn import list_metrics

    torch.set_num_threads(args.threads)
    split = pd.read_csv(args.data)
    users = np.sort(split["user"].unique())
    last = split.sort_values("order").groupby("user")["item"].agg(list)
    target = {"valid": np.array([last[u][-2] for u in users]),
              "test": np.array([last[u][-1] for u in users])}
    data = {"valid": dataset(split, 2), "test": dataset(split, 1)}
    checkpoints = [int(e) for e in args.epochs.split(",")]
    out: dict = {}
    for name in args.models.split(","):
        res = out[name] = {"params": COMMON, "epochs": {}, "valid_curve": {}, "test": {}}
        for seed in (int(s) for s in args.seeds.split(",")):
            t0 = time.perf_counter()
            model, done, curve, tests = build(name, seed, checkpoints[0]), 0, {}, {}
            for epochs in checkpoints:
                model.fit_partial(data["valid"], min_epochs=epochs - done,
                                  max_epochs=epochs - done)
                done = epochs
                lists = top_lists(model, data["valid"], users)
                curve[epochs] = float(list_metrics(lists, target["valid"], K)[f"ndcg@{K}"].mean())
                tests[epochs] = top_lists(model, data["test"], users)
                print(f"[peers] {name} seed {seed}: {epochs} epochs, valid NDCG@10 "
                      f"{curve[epochs]:.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)
            best = max(curve, key=lambda e: (curve[e], -e))
            res["epochs"][seed], res["valid_curve"][seed] = best, curve
            res["test"][seed] = tests[best]
            print(f"[peers] {name} seed {seed}: {best} epochs chosen", flush=True)
    args.out.write_text(json.dumps(out))


if __name__ == "__main__":
    main()
