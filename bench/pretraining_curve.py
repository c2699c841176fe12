"""When does pre-training pay? A data-efficiency curve on MovieLens-100K, pre-trained against scratch.

    OMP_NUM_THREADS=2 .venv/bin/python bench/pretraining_curve.py [--seeds 1,2,3] \\
        [--fractions 0.1,0.25,0.5,1.0] [--threads 2]

The field's case for pre-training a sequence encoder is data efficiency: the encoder sees more
than the labelled set it is fine-tuned on. Here, on the leave-one-out split of
``bench/movielens_topn.py`` (each user's last rating is the test item, the one before it the
validation item):

* **pre-training** (:func:`models.sequence.pretrain`, rankline's weekly job, its own early
  stopping on held-out training windows) reads every user's whole history before the split,
  once per seed;
* **fine-tuning set**: a fraction of the users (drawn per seed; the same users for both arms),
  every window of their training history; only those users' validation items choose the epoch
  (they are the labelled data);
* ``pre-trained``: the pre-trained encoder fine-tuned on that set; ``scratch``: the same network
  from random weights on the same set. Same objective (full-softmax next item), same learning
  rate, same epoch budget (``--epochs``, patience ``--patience`` on the fraction's validation
  NDCG@10).

Both arms are judged on every user's test item (full ranking over all items, earlier items
masked, :mod:`models.topn`), so the comparison is paired over the same 943 users. Per fraction:
the mean NDCG@10 of each arm over seeds, and pre-trained minus scratch with its 95% paired
bootstrap interval over users (per-user NDCG@10 averaged over seeds). The curve is plotted and,
with ``--mlflow URI``, logged to MLflow with the table. Last line:
``pre-trained - scratch ndcg@10 at <smallest fraction> of users: <mean> [<low>, <high>]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from movielens_topn import K, Split, catalog_scores, evaluate, stage, train, windows  # noqa: E402


def curve_rows(split: Split, seed: int, fractions: list[float], args) -> dict:
    """{(arm, fraction): per-user test NDCG@10} of one seed, and each fit's note."""
    import torch

    from models.sequence import EncoderConfig, ItemVocab, build_encoder, pretrain

    cfg = EncoderConfig(max_len=args.max_len)
    train_ids = split.train_ids()
    vocab = ItemVocab(np.concatenate(train_ids))

    def full(enc, phase: str) -> np.ndarray:
        return catalog_scores(split, enc, vocab, phase)

    t0 = time.perf_counter()
    ckpt = pretrain(windows(train_ids, cfg.max_len + 1), cfg, epochs=args.pretrain_epochs,
                    batch_size=args.batch_size, lr=args.lr, seed=seed, device="cpu",
                    patience=args.patience)
    stage(f"seed {seed}: pre-trained on {len(split.users)} users' histories in "
          f"{time.perf_counter() - t0:.0f}s (epoch {ckpt.info['best_epoch'] + 1} kept)")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(split.users))
    out: dict = {}
    for f in fractions:
        chosen = np.sort(order[:max(1, round(f * len(split.users)))])
        wins = windows([train_ids[u] for u in chosen], cfg.max_len + 1)

        def valid_fn(enc, chosen=chosen) -> float:
            per = evaluate(split, full(enc, "valid"), "valid")[f"ndcg@{K}"].to_numpy()
            return float(per[chosen].mean())

        for arm in ("scratch", "pre-trained"):
            if arm == "scratch":
                torch.manual_seed(seed)
                enc = build_encoder(len(vocab), cfg)
                start = None
            else:
                enc = ckpt.encoder()
                start = valid_fn(enc)
            _, curve, best = train(enc, vocab, wins, epochs=args.epochs, lr=args.lr,
                                   batch_size=args.batch_size, seed=seed, valid_fn=valid_fn,
                                   patience=args.patience, last=None,
                                   name=f"seed {seed} {f:.0%} {arm}", start_valid=start)
            out[arm, f] = evaluate(split, full(enc, "test"), "test")[f"ndcg@{K}"].to_numpy()
            out["note", arm, f] = f"epoch {best}/{len(curve)}"
    return out


def plot(table: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    fr = [r["fraction"] for r in table]
    for arm in ("scratch", "pre-trained"):
        a.plot(fr, [r[arm] for r in table], marker="o", label=arm)
    a.set(xscale="log", xlabel="share of users fine-tuned on", ylabel="test NDCG@10",
          title="ML-100K: data efficiency")
    a.legend()
    d = np.array([r["diff"] for r in table])
    b.errorbar(fr, d[:, 0], yerr=[d[:, 0] - d[:, 1], d[:, 2] - d[:, 0]], marker="o", capsize=4)
    b.axhline(0, color="grey", lw=0.8)
    b.set(xscale="log", xlabel="share of users fine-tuned on",
          title="pre-trained - scratch (95% paired interval)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--fractions", default="0.1,0.25,0.5,1.0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pretrain-epochs", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=40, help="epoch budget of both arms")
    ap.add_argument("--patience", type=int, default=10,
                    help="epochs without a better validation NDCG@10 before stopping (long: a "
                         "small fraction's validation is noisy and scratch starts slowly)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "pretraining_curve.png")
    ap.add_argument("--mlflow", default="", help="tracking URI to log the curve to (none: skip)")
    args = ap.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    from models.metrics import paired_bootstrap
    from pipeline.sources.movielens import ratings

    seeds = [int(s) for s in args.seeds.split(",")]
    fractions = sorted(float(f) for f in args.fractions.split(","))
    split = Split(ratings())
    stage(f"ML-100K: {len(split.users)} users, {len(split.items)} items; seeds {seeds}, "
          f"fractions {fractions}")
    runs = [curve_rows(split, s, fractions, args) for s in seeds]
    table = []
    print(f"\n{'users':>6s} {'scratch':>8s} {'pre-trained':>11s}  pre-trained - scratch "
          f"(95% paired bootstrap over {len(split.users)} users, seed mean)   epochs kept")
    for f in fractions:
        per = {arm: np.mean([r[arm, f] for r in runs], axis=0) for arm in ("scratch",
                                                                          "pre-trained")}
        mean, low, high = paired_bootstrap(per["pre-trained"] - per["scratch"], args.bootstrap,
                                           0.95, 0)
        verdict = "no difference" if low <= 0 <= high else ("better" if low > 0 else "worse")
        notes = "; ".join(f"s{s}: {r['note', 'scratch', f]} vs {r['note', 'pre-trained', f]}"
                          for s, r in zip(seeds, runs, strict=True))
        print(f"{f:6.0%} {per['scratch'].mean():8.4f} {per['pre-trained'].mean():11.4f}  "
              f"{mean:+.4f} [{low:+.4f}, {high:+.4f}] ({verdict})   {notes}")
        table.append({"fraction": f, "scratch": float(per["scratch"].mean()),
                      "pre-trained": float(per["pre-trained"].mean()),
                      "diff": (mean, low, high)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    png = plot(table, args.out)
    stage(f"curve plotted to {png}")
    if args.mlflow:
        import mlflow

        mlflow.set_tracking_uri(args.mlflow)
        mlflow.set_experiment("rankline-bench")
        with mlflow.start_run(run_name="pretraining data-efficiency curve"):
            mlflow.log_params({"seeds": args.seeds, "fractions": args.fractions,
                               "epochs": args.epochs, "lr": args.lr})
            for r in table:
                step = int(round(r["fraction"] * 100))
                mlflow.log_metric("ndcg10_scratch", r["scratch"], step=step)
                mlflow.log_metric("ndcg10_pretrained", r["pre-trained"], step=step)
                mlflow.log_metric("ndcg10_diff", r["diff"][0], step=step)
            mlflow.log_artifact(str(png))
        stage(f"logged to MLflow at {args.mlflow}")
    low_f = table[0]
    mean, low, high = low_f["diff"]
    print(f"pre-trained - scratch ndcg@10 at {low_f['fraction']:.0%} of users: "
          f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]")


if __name__ == "__main__":
    main()
