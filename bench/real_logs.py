"""rankline on logs nobody tuned it for (``bench/logs.py``): every family against popularity and
random on the same held-out groups, and the gate's decision.

    .venv/bin/python bench/real_logs.py [--logs sparse_clicks,small_ratings,open_bandit]
                                        [--seeds 7,8,9] [--models xgboost,neural]

Each log runs in a process of its own on a temporary home, through the functions the DAGs call
(ingest: acquire, validate, features per date; train: split, pretrain, training rows, the row
choice, one fit per family, evaluate and the gate), with ``RANKLINE_SOURCE=interactions`` and
the log's event labels; splits: sparse clicks 21 dates as 12/3/5, small ratings 75 as 56/7/7,
Open Bandit 7 as 3/1/2 (the day before the first training date gives its features).

Per log and seed it prints the row choice, each contender's held-out NDCG@10, each family's paired
95 % bootstrap interval (1,000 resamples over the held-out (user, day) groups) against random and
against popularity, and each family's gate decision. Per log, over seeds: whether every family
is above random and the best family above popularity on the mean. Last line:
``logs with the best family above popularity on the mean: <n>/<m>``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = dt.date(2026, 1, 1)
SPLITS = {"sparse_clicks": (12, 3, 5), "small_ratings": (56, 7, 7), "open_bandit": (3, 1, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--logs", default=",".join(SPLITS))
    ap.add_argument("--seeds", default="7,8,9", help="RANKLINE_SEED of each run")
    ap.add_argument("--models", default="xgboost,neural", help="RANKLINE_MODELS")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # a child: run this log
    ap.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.home)))
        return
    verdicts = []
    for name in args.logs.split(","):
        results = []
        for seed in args.seeds.split(","):
            home = Path(tempfile.mkdtemp(prefix=f"rankline-{name}-"))
            env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW",
                                                                            "RANKLINE_"))}
            env.update(RANKLINE_SEED=seed, RANKLINE_MODELS=args.models)
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, __file__, "--one", name, "--home", str(home)],
                                 env=env, cwd=ROOT, capture_output=True, text=True)
            if res.returncode:
                print(res.stdout[-2000:], res.stderr[-4000:])
                raise SystemExit(f"{name} seed {seed} failed (home {home})")
            out = json.loads(res.stdout.strip().splitlines()[-1])
            out["seconds"] = time.perf_counter() - t0
            results.append(out)
            report(name, seed, out)
        verdicts.append(summary(name, results))
    print(f"logs with the best family above popularity on the mean: {sum(verdicts)}/"
          f"{len(verdicts)}")


def run_one(name: str, home: Path) -> dict:
    """The pipeline on one log in this process; what :func:`report` prints."""
    import logging

    import mlflow
    import numpy as np
    import pandas as pd

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    import logs

    logging.basicConfig(level=logging.WARNING)
    lake = home / "lake"
    dates, labels, facts = getattr(logs, name)(lake, START)
    train, valid, test = SPLITS[name]
    os.environ.update({
        "RANKLINE_HOME": str(home / "var"), "RANKLINE_SOURCE": "interactions",
        "RANKLINE_SOURCE_URI": str(lake), "RANKLINE_START_DATE": START.isoformat(),
        "RANKLINE_EVENT_LABELS": labels, "RANKLINE_TRAIN_DAYS": str(train),
        "RANKLINE_VALID_DAYS": str(valid), "RANKLINE_TEST_DAYS": str(test)})
    from models.metrics import paired_bootstrap
    from pipeline import steps, tracking
    from pipeline.pretraining import pretrain_encoder
    from pipeline.row_choice import resolve
    from pipeline.settings import get_settings
    from pipeline.training import evaluate, plan_split, train_model, write_training_rows

    s = get_settings()
    for d in dates:
        steps.acquire(s, d)
        steps.validate(s, d)
        steps.features(s, d)
    exp = tracking.configure(s)
    with mlflow.start_run(experiment_id=exp, run_name=f"train {name}") as run:
        run_id = run.info.run_id
    split = plan_split(s, dates[-1])
    encoder = pretrain_encoder(s, split, run_id)
    write_training_rows(s, split)
    chosen = resolve(s, split, run_id, fresh=True)
    trained = [train_model(s, split, run_id, f, encoder) for f in s.model_families]
    evaluate(s, split, run_id, trained)
    tags = mlflow.MlflowClient().get_run(run_id).data.tags
    per = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run_id,
                                                          artifact_path="per_group.csv"))
    per = per.rename(columns=lambda c: c.removeprefix("ndcg@10_"))
    contenders = [c for c in per.columns if c not in ("group", "user_id", "date")]
    intervals = {}
    for f in s.model_families:
        for other in ("random", "popularity"):
            diff = (per[f] - per[other]).to_numpy(float)
            intervals[f"{f} - {other}"] = paired_bootstrap(diff, 1000, 0.95, s.seed)
    return {"facts": facts, "dates": len(dates), "split": [train, valid, test],
            "groups": len(per), "means": {c: float(np.mean(per[c])) for c in contenders},
            "intervals": intervals, "families": s.model_families,
            "rows": tags.get("rows.choice", ""),
            "chosen": [chosen.negatives_per_request, chosen.unbiased],
            "gate": {f: tags.get(f"gate.{f}", "") for f in s.model_families}}


def report(name: str, seed: str, out: dict) -> None:
    facts = ", ".join(f"{k} {v:,.1f}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in out["facts"].items())
    print(f"\n== {name}, seed {seed}: {out['dates']} dates, split {out['split']}, {facts}; "
          f"{out['seconds']:.0f} s")
    print(f"   rows: {out['rows'] or 'as set'}")
    print(f"   held-out NDCG@10 over {out['groups']:,} (user, day) groups: " + ", ".join(
        f"{c} {m:.4f}" for c, m in sorted(out["means"].items(), key=lambda kv: -kv[1])))
    for pair, (mean, low, high) in out["intervals"].items():
        verdict = "better" if low > 0 else "worse" if high < 0 else "no difference"
        print(f"   {pair}: {mean:+.4f} [{low:+.4f}, {high:+.4f}] ({verdict})")
    for family, reason in out["gate"].items():
        print(f"   gate {family}: {reason}")


def summary(name: str, results: list[dict]) -> bool:
    """Per log over seeds: every family above random, the best above popularity (means)."""
    families = results[0]["families"]
    mean = {c: sum(r["means"][c] for r in results) / len(results)
            for c in (*families, "random", "popularity")}
    best = max(families, key=mean.get)
    above_random = all(mean[f] > mean["random"] for f in families)
    above_pop = mean[best] > mean["popularity"]
    print(f"-- {name} over {len(results)} seed(s): " + ", ".join(
        f"{c} {m:.4f}" for c, m in mean.items())
        + f"; every family above random: {'yes' if above_random else 'no'}; best ({best}) "
        f"above popularity: {'yes' if above_pop else 'no'}")
    return above_pop


if __name__ == "__main__":
    main()
