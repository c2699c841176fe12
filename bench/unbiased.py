"""Position-debiased training against the biased default, and the best configuration against
the oracle, on the demo's held-out dates.

Run after ``make demo`` (one CPU-heavy job at a time):

    .venv/bin/python bench/unbiased.py [--families xgboost] [--seeds 2] [--drop a,b,...]

1. The examination curve the position-based click model estimates from the training rows
   (``models.propensity``) against the one the synthetic marketplace plants (``p ** -0.6``).
2. Each family trained as the train DAG trains it (the demo's split, early stopping on the
   validation dates) with clicks as logged and with ``unbiased=True``, ``--seeds`` seeds each;
   held-out NDCG@10 on the same groups, the paired bootstrap interval (95 %, 1000 resamples
   over groups) of unbiased - biased per seed and pooled over seeds, and the number of groups.
3. The best configuration: the newest sweep's parameters (if a sweep ran), the features left
   out by ``--drop`` (a ``rankline select-features`` proposal) and debiasing, against the
   oracle. Last line: ``best configuration / oracle ndcg@10: <x>``.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="xgboost")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--drop", default="", help="features to leave out in the best configuration")
    args = ap.parse_args()
    os.environ.setdefault("RANKLINE_HOME", os.path.abspath("var"))

    import tempfile
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from feature_store import io
    from models.metrics import paired_bootstrap
    from models.propensity import examination
    from pipeline.selection import (
        family_defaults,
        fit_family,
        held_out_ndcg,
        job_run,
        prepare_split,
    )
    from pipeline.settings import get_settings
    from pipeline.sources import get_source
    from pipeline.training import _read, eval_rows

    s = get_settings()
    dates = sorted(io.list_dates(s.work_dir, "rows"))
    if not dates:
        raise SystemExit(f"no training rows under {s.work_dir}/rows: run `make demo` first")
    tmp = Path(tempfile.mkdtemp())
    with job_run(s, "bench", "bench unbiased") as run:
        split, data = prepare_split(s, dates[-1], run.info.run_id, args.families.split(","), tmp)
    logged = data.read("train", ["position", "item_id", "label"])
    e = examination(logged["position"].to_numpy(), logged["item_id"].to_numpy(),
                    logged["label"].to_numpy() >= 1)
    planted = (np.arange(len(e.theta)) + e.first) ** -0.6
    print("position:  " + " ".join(f"{e.first + k:5d}" for k in range(len(e.theta))))
    print("estimated: " + " ".join(f"{t:5.3f}" for t in e.theta))
    print("planted:   " + " ".join(f"{t:5.3f}" for t in planted))
    print(f"estimated / planted at the last position: {e.theta[-1] / planted[-1]:.2f}",
          flush=True)

    test = eval_rows(_read(s, split["test"]))
    oracle = get_source(s).oracle(test["user_id"].to_numpy(), test["item_id"].to_numpy(),
                                  test["request_id"].to_numpy())
    oracle_ndcg = held_out_ndcg(test, oracle, s.seed)
    print(f"oracle: held-out NDCG@10 {oracle_ndcg.mean():.4f} over {len(oracle_ndcg):,} groups")
    best_ratio = None
    for family in args.families.split(","):
        base = family_defaults(s, family)
        diffs, means = [], {}
        for seed in range(s.seed, s.seed + args.seeds):
            ndcg = {}
            for unbiased in (False, True):
                t0 = time.perf_counter()
                model, valid = fit_family(s, family, data, seed, {"unbiased": unbiased})
                ndcg[unbiased] = held_out_ndcg(test, model.score(test), seed)
                means.setdefault(unbiased, []).append(ndcg[unbiased].mean())
                print(f"{family} seed {seed} {'unbiased' if unbiased else 'biased':>8}: valid "
                      f"{valid:.4f}, held-out {ndcg[unbiased].mean():.4f} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
            diff = (ndcg[True] - ndcg[False]).to_numpy()
            diffs.append(diff)
            m, lo, hi = paired_bootstrap(diff, 1000, 0.95, seed)
            print(f"{family} seed {seed}: unbiased - biased {m:+.4f} [{lo:+.4f}, {hi:+.4f}] over "
                  f"{len(diff):,} groups", flush=True)
        m, lo, hi = paired_bootstrap(np.mean(diffs, 0), 1000, 0.95, s.seed)
        verdict = "better" if lo > 0 else "worse" if hi < 0 else "no difference"
        print(f"{family}: unbiased - biased on the held-out dates {m:+.4f} [{lo:+.4f}, {hi:+.4f}]"
              f" over {len(diffs[0]):,} groups, mean of {args.seeds} seeds ({verdict})")

        drop = tuple(f for f in args.drop.split(",") if f)
        best_unbiased = lo > 0  # debiasing joins the best configuration only on evidence
        model, valid = fit_family(s, family, data, s.seed,
                                  {**base, "drop_features": drop, "unbiased": best_unbiased})
        best = held_out_ndcg(test, model.score(test), s.seed)
        ratio = best.mean() / oracle_ndcg.mean()
        print(f"{family} best configuration (sweep parameters {base or 'none'}, "
              f"{len(drop)} features left out, unbiased={best_unbiased}): held-out "
              f"{best.mean():.4f}, {ratio:.3f} of the oracle; defaults "
              f"{pd.Series(means[False]).mean() / oracle_ndcg.mean():.3f}")
        best_ratio = ratio if best_ratio is None else max(best_ratio, ratio)
    print(f"best configuration / oracle ndcg@10: {best_ratio:.3f}")


if __name__ == "__main__":
    main()
