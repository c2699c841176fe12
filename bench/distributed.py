"""Distributed training against one process, on the same rows: torch DDP, then XGBoost on Dask.

Run after ``make demo`` (it trains on the demo's training rows in ``var/work/rows``: every date
but the last four is training, the two before those validation, as the demo's split):

    .venv/bin/python bench/distributed.py [--workers 2] [--repeat 2] [--only ddp|dask]

**torch DDP** (the ``neural_scratch`` family: the neural ranker without the pre-trained encoder
it would need; the same network and loop): ``--epochs`` epochs at the same global batch in one
process with one thread, one process with every core (the fair single-process peer), and
``--workers`` torchrun processes of one thread each over gloo; then the same processes again
with the gradient all-reduce timed (a blocking communication hook, so no overlap with the
backward pass: the compute/communication split). Samples are training rows through forward,
backward and the optimizer step (data loading and validation excluded). Scaling efficiency:
N processes' samples/s over N x one single-thread process's.

XGBoost in one process (every core: the fair single-process peer) against a Dask
``LocalCluster`` of ``--workers`` worker processes sharing the same cores, started and closed by
each fit as the train task does; the same parameters and seed, and the same number of boosting
rounds (``--rounds``, early stopping off: the distributed quantile sketches differ from one
process's, so early stopping stops at other rounds and the times would compare different
work). Prints the fit times (best of ``--repeat``, with and without the cluster's start), the
best validation NDCG@10 side by side, rows per second against the single process's, and last
the time ratio (goal: at most 1.3).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

NEGATIVES = 5
"""Sampled negatives per request the fits keep (by popularity: the rows hold that many from
each source), fixed so every run of the bench trains on the same rows."""

# this file has the name of the `distributed` package: keep its folder off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def split(rows: Path) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """The demo's training and validation dates among the row partitions."""
    dates = sorted(p for p in rows.glob("date=*") if p.is_dir())
    if len(dates) < 6:
        raise SystemExit(f"{rows}: {len(dates)} dates of training rows; run `make demo` first")
    return tuple(dates[:-4]), tuple(dates[-4:-2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=Path, default=Path("var/work/rows"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="best of N fits each")
    ap.add_argument("--rounds", type=int, default=100, help="boosting rounds, both")
    ap.add_argument("--epochs", type=int, default=1, help="torch epochs, every run")
    ap.add_argument("--only", choices=["ddp", "dask"], help="run one of the two parts")
    args = ap.parse_args()
    if args.only != "dask":
        ddp(args)
    if args.only != "ddp":
        dask(args)


def ddp(args: argparse.Namespace) -> None:
    from models.base import TrainingSet
    from models.ddp import DdpConfig
    from models.neural import NeuralScratchRanker

    train, valid = split(args.rows)
    data = TrainingSet(train, valid, negatives=NEGATIVES)
    cores = len(os.sched_getaffinity(0))
    n = args.workers
    runs = {"1 process x 1 thread": (1, 1, False), f"1 process x {cores} threads": (1, cores, False),
            f"{n} processes x 1 thread": (n, n, False),
            f"{n} processes, all-reduce timed": (n, n, True)}
    out = {}
    for name, (procs, threads, timed) in runs.items():
        model = NeuralScratchRanker(epochs=args.epochs, patience=args.epochs + 1, device="cpu",
                                    seed=7, threads=threads,
                                    ddp=DdpConfig(procs=procs, time_allreduce=timed))
        t0 = time.perf_counter()
        report = model.fit(data)
        wall = time.perf_counter() - t0
        m = report.metrics
        out[name] = m
        extra = (f", all-reduce {m['allreduce_seconds']:.1f} s of {m['train_seconds']:.1f} s"
                 if timed else "")
        print(f"ddp {name:28s} wall {wall:6.1f} s, training {m['train_seconds']:6.1f} s, "
              f"{m['train_rows_per_s']:9,.0f} samples/s, valid NDCG@10 "
              f"{max(report.curves['valid_ndcg@10']):.4f}{extra}", flush=True)
    one, best1, many, timed = out.values()
    comm = timed["allreduce_seconds"] / timed["train_seconds"]
    print(f"ddp scaling efficiency {n} processes vs {n} x one 1-thread process: "
          f"{many['train_rows_per_s'] / (n * one['train_rows_per_s']):.2f}")
    print(f"ddp samples/s {n} processes / 1 process x {cores} threads: "
          f"{many['train_rows_per_s'] / best1['train_rows_per_s']:.2f}")
    print(f"ddp compute/communication split: {1 - comm:.0%} compute, {comm:.0%} all-reduce "
          f"({timed['allreduce_seconds']:.1f} s of {timed['train_seconds']:.1f} s)")


def dask(args: argparse.Namespace) -> None:
    from models.base import TrainingSet
    from models.xgb import XGBoostRanker

    train, valid = split(args.rows)
    data = TrainingSet(train, valid, negatives=NEGATIVES)
    cores = len(os.sched_getaffinity(0))
    print(f"rows: {len(train)} training dates ({train[0].name}..{train[-1].name}), "
          f"{len(valid)} validation dates; {cores} cores")
    params = {"n_estimators": args.rounds, "early_stopping_rounds": args.rounds + 1, "seed": 7,
              "device": "cpu"}
    results = {}
    for name, extra in (("single", {"n_jobs": cores}),
                        (f"dask x{args.workers}", {"n_jobs": cores, "dask_workers": args.workers})):
        best = None
        for _ in range(args.repeat):
            model = XGBoostRanker(**params, **extra)
            t0 = time.perf_counter()
            report = model.fit(data)
            wall = time.perf_counter() - t0
            if best is None or wall < best[0]:
                best = (wall, report)
        wall, report = best
        results[name] = (wall, report)
        rounds = len(report.curves["valid_ndcg@10"])
        print(f"{name:10s} fit {wall:7.1f} s (boosting {report.metrics['fit_seconds']:6.1f} s), "
              f"{report.metrics['rows']:,} rows x {rounds} rounds, "
              f"{report.metrics['rows_per_s']:,.0f} rows x rounds/s, best round {report.best_step}, "
              f"valid NDCG@10 {max(report.curves['valid_ndcg@10']):.4f}")
    (single, one), (dask, two) = results.values()
    gap = max(two.curves["valid_ndcg@10"]) - max(one.curves["valid_ndcg@10"])
    print(f"valid NDCG@10 dask - single: {gap:+.4f}")
    print(f"throughput dask/single (rows x rounds per s): "
          f"{two.metrics['rows_per_s'] / one.metrics['rows_per_s']:.2f}")
    print(f"ratio dask/single boosting time: {two.metrics['fit_seconds'] / one.metrics['fit_seconds']:.2f}")
    print(f"ratio dask/single time: {dask / single:.2f}")


if __name__ == "__main__":
    main()
