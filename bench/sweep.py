"""A TPE sweep of XGBoost against its defaults: validation NDCG@10, then the held-out dates.

Run after ``make demo`` (the demo's split: 9 training, 2 validation and 2 held-out dates):

    .venv/bin/python bench/sweep.py [--trials 20] [--sampler tpe] [--seeds 2]

The sweep uses the same pieces as the sweep DAG (the family's search space, median pruning on
each round's validation NDCG@10; an in-memory Optuna study, trials one after another in this
process) and never looks at the held-out dates. Then the defaults and the best trial's
parameters are trained again with ``--seeds`` seeds each and scored on the held-out dates'
groups (impressions, best label of the day, as the train DAG evaluates): the paired bootstrap
interval (95 %, 1000 resamples over groups) of best − defaults per seed, and the number of
groups. Prints the sweep's history, then the comparison; last line ``sweep best − defaults on
the held-out dates: <interval> (<conclusion>)``.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--sampler", default="tpe", choices=["tpe", "random"])
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("RANKLINE_HOME", os.path.abspath("var"))

    import numpy as np
    import optuna

    from feature_store import io
    from models.metrics import paired_bootstrap, per_group_metrics
    from models.xgb import XGBoostRanker
    from pipeline.settings import get_settings
    from pipeline.sweep import make_sampler, pruner, pruning_hook
    from pipeline.training import _read, eval_rows, split_dates, training_set

    s = get_settings()
    dates = sorted(io.list_dates(s.work_dir, "rows"))
    if not dates:
        raise SystemExit(f"no training rows under {s.work_dir}/rows: run `make demo` first")
    split = {k: [d.isoformat() for d in v] for k, v in split_dates(s, dates[-1]).items()}
    data = training_set(s, split)
    threads = len(os.sched_getaffinity(0))
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def fit(params: dict, seed: int, trial: optuna.Trial | None = None) -> tuple:
        model = XGBoostRanker.from_settings(s, seed=seed, n_jobs=threads, **params)
        if trial is not None:
            model.on_step = pruning_hook(trial, [])
        report = model.fit(data)
        return model, max(report.curves["valid_ndcg@10"])

    t0 = time.perf_counter()
    _, default_valid = fit({}, s.seed)
    print(f"defaults: valid NDCG@10 {default_valid:.4f} ({time.perf_counter() - t0:.0f} s)",
          flush=True)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(args.sampler, s.seed),
                                pruner=pruner(XGBoostRanker.prune_warmup))
    for i in range(args.trials):
        trial = study.ask()
        params = XGBoostRanker.search_space(trial)
        t1 = time.perf_counter()
        try:
            _, value = fit(params, s.seed, trial)
            study.tell(trial, value)
            state = f"{value:.4f}"
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            state = "pruned"
        print(f"trial {i:2d}: {state:>7s}, best so far {study.best_value:.4f} "
              f"({time.perf_counter() - t1:.0f} s) {params}", flush=True)
    best = study.best_params
    print(f"sweep: {args.trials} trials ({args.sampler}), "
          f"{sum(t.state.name == 'PRUNED' for t in study.trials)} pruned, best valid NDCG@10 "
          f"{study.best_value:.4f} vs defaults {default_valid:.4f} "
          f"({study.best_value - default_valid:+.4f}); {time.perf_counter() - t0:.0f} s")

    rows = eval_rows(_read(s, split["test"]))
    groups, labels = rows["group"].to_numpy(), rows["label"].to_numpy()
    diffs = []
    for seed in range(s.seed, s.seed + args.seeds):
        ndcg = {}
        for name, params in (("defaults", {}), ("best", best)):
            model, _ = fit(params, seed)
            ndcg[name] = per_group_metrics(groups, labels, model.score(rows), seed=seed)["ndcg@10"]
        diff = (ndcg["best"] - ndcg["defaults"]).to_numpy()
        diffs.append(diff)
        mean, low, high = paired_bootstrap(diff, 1000, 0.95, seed)
        print(f"seed {seed}: held-out NDCG@10 best {ndcg['best'].mean():.4f}, defaults "
              f"{ndcg['defaults'].mean():.4f}; best − defaults {mean:+.4f} [{low:+.4f}, "
              f"{high:+.4f}] over {len(diff):,} groups", flush=True)
    mean, low, high = paired_bootstrap(np.mean(diffs, 0), 1000, 0.95, s.seed)
    verdict = ("better" if low > 0 else "worse" if high < 0 else "no difference")
    print(f"sweep best − defaults on the held-out dates: {mean:+.4f} [{low:+.4f}, {high:+.4f}] "
          f"over {len(diffs[0]):,} groups, mean of {args.seeds} seeds ({verdict})")


if __name__ == "__main__":
    main()
