"""Peak memory of training on the demo's rows and on 10x them: one frame of every row (the
default) against the rows streamed one partition at a time (``RANKLINE_STREAM_ROWS``).

Run after ``make demo``:

    .venv/bin/python bench/train_memory.py [--copies 10] [--rounds 20]
    .venv/bin/python bench/train_memory.py --family neural --copies 3  # one epoch each

The 10x set is the demo's training dates written ``--copies`` times (request ids made unique,
only the columns XGBoost reads) under a temporary folder, removed afterwards; validation is the
demo's two validation dates. Every fit runs in a child process of its own, and its peak RSS is
the kernel's (``wait4``'s ``ru_maxrss``), so one fit's memory never hides another's. The same
fixed number of boosting rounds everywhere (early stopping off). Prints each fit's peak RSS,
rows, time and validation NDCG@10, then the growth from 1x to 10x of each, and last the ratio of
the streamed fit's peak to the frame's at 10x.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NEGATIVES = 5
"""Sampled negatives per request the fits keep (by popularity: the rows hold that many from
each source), fixed so every run of the bench trains on the same rows."""

ROOT = Path(__file__).resolve().parents[1]


def split(rows: Path) -> tuple[list[Path], list[Path]]:
    dates = sorted(p for p in rows.glob("date=*") if p.is_dir())
    if len(dates) < 6:
        raise SystemExit(f"{rows}: {len(dates)} dates of training rows; run `make demo` first")
    return dates[:-4], dates[-4:-2]


def copies(train: list[Path], n: int, out: Path, cols: list[str] | None) -> list[Path]:
    """``train`` written ``n`` times under ``out`` (only ``cols``, None: all), request ids
    offset per copy."""
    import pandas as pd

    paths = []
    for path in train:
        rows = pd.read_parquet(path, columns=cols)
        span = int(rows["request_id"].max()) + 1
        for k in range(n):
            dest = out / f"{path.name}-copy{k}"
            dest.mkdir(parents=True)
            rows.assign(request_id=rows["request_id"] + k * span).to_parquet(
                dest / "part-0.parquet")
            paths.append(dest)
    return paths


def child(spec: dict) -> None:
    """One fit, in this process; prints its report as JSON on the last line."""
    from models.base import TrainingSet
    from models.neural import NeuralScratchRanker
    from models.xgb import XGBoostRanker

    data = TrainingSet(tuple(map(Path, spec["train"])), tuple(map(Path, spec["valid"])),
                       negatives=NEGATIVES)
    cores = len(os.sched_getaffinity(0))
    if spec["family"] == "neural":
        model = NeuralScratchRanker(epochs=1, device="cpu", seed=7, threads=cores,
                                    stream=spec["stream"])
    else:
        model = XGBoostRanker(n_estimators=spec["rounds"],
                              early_stopping_rounds=spec["rounds"] + 1, device="cpu", seed=7,
                              n_jobs=cores, stream=spec["stream"])
    t0 = time.perf_counter()
    report = model.fit(data)
    print(json.dumps({"seconds": time.perf_counter() - t0, "rows": report.metrics["rows"],
                      "ndcg": max(report.curves["valid_ndcg@10"])}))


def measure(spec: dict) -> dict:
    """Run :func:`child` in a new process; its report and peak RSS (GiB)."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"the fit failed ({status}): {spec}")
    return {**json.loads(out.strip().splitlines()[-1]), "peak": usage.ru_maxrss / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=Path, default=ROOT / "var/work/rows")
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=20, help="XGBoost's boosting rounds")
    ap.add_argument("--family", choices=["xgboost", "neural"], default="xgboost",
                    help="neural: neural_scratch (the neural network without an encoder to "
                    "pre-train), one epoch")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(json.loads(args.child))

    train, valid = split(args.rows.resolve())
    tmp = Path(tempfile.mkdtemp(prefix="rankline-10x-"))
    try:
        from feature_store.definitions import model_features

        cols = ["request_id", "label", *model_features()] if args.family == "xgboost" else None
        big = copies(train, args.copies, tmp, cols)
        results = {}
        for scale, paths in (("1x", train), (f"{args.copies}x", big)):
            for how in ("frame", "stream"):
                r = measure({"train": [str(p) for p in paths], "valid": [str(p) for p in valid],
                             "rounds": args.rounds, "stream": how == "stream",
                             "family": args.family})
                results[(scale, how)] = r
                print(f"{args.family} {how:6s} {scale:>4s}: peak RSS {r['peak']:6.2f} GiB, "
                      f"{r['rows']:>11,} rows, {r['seconds']:6.1f} s, valid NDCG@10 "
                      f"{r['ndcg']:.4f}", flush=True)
    finally:
        shutil.rmtree(tmp)
    big_scale = f"{args.copies}x"
    for how in ("frame", "stream"):
        grow = results[(big_scale, how)]["peak"] / results[("1x", how)]["peak"]
        print(f"{how}: peak RSS {big_scale}/1x rows: {grow:.2f}")
    ratio = results[(big_scale, "stream")]["peak"] / results[(big_scale, "frame")]["peak"]
    print(f"ratio peak RSS stream/frame at {big_scale}: {ratio:.2f}")


if __name__ == "__main__":
    main()
