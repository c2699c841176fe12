"""Real data: MovieLens-100K replayed through the generic interactions shape, end to end.

    .venv/bin/python bench/real_data.py [--days 120] [--train 84] [--valid 14] [--test 21]

Writes the ratings of the first ``--days`` data-set days that have any (a day without ratings
would fail validation, so days are compacted) as one interactions table per logical date
(``event_type=rating``, ``value`` the rating, ``category`` the first genre), then runs
``rankline demo`` on them in a temporary home with ``RANKLINE_SOURCE=interactions``,
``RANKLINE_EVENT_LABELS=value>=3:1,value>=4:2,value>=5:3`` and every interaction counted as
consumed. Prints every contender's held-out NDCG@10 with its paired bootstrap interval against
popularity on the same groups, the gate's decision, and the share of published recommendations
the user had already interacted with. When the gate refuses the model, the refresh is run with
it anyway (into the temporary store) so the consumed share is still measured. Last line:
``consumed share: <x>``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.sources.movielens import RATING_LABELS_SETTING, export_interactions  # noqa: E402

START = dt.date(2026, 1, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=120)
    ap.add_argument("--train", type=int, default=84)
    ap.add_argument("--valid", type=int, default=14)
    ap.add_argument("--test", type=int, default=21)
    ap.add_argument("--consumed", default="impressions,clicks,add_to_cart,purchases",
                    help="RANKLINE_CONSUMED of the refresh (purchases: the old behaviour)")
    ap.add_argument("--negatives", type=int, default=None,
                    help="RANKLINE_NEGATIVES_PER_REQUEST (default: the setting's own default)")
    ap.add_argument("--models", default=None, help="RANKLINE_MODELS (default: the setting's)")
    ap.add_argument("--seed", type=int, default=None, help="RANKLINE_SEED (default: the setting's)")
    ap.add_argument("--reuse", type=Path, help="a temporary folder of an earlier run: report only")
    args = ap.parse_args()
    tmp = args.reuse or Path(tempfile.mkdtemp(prefix="rankline-real-"))
    dates = (export_interactions(tmp / "lake", args.days, START) if not args.reuse else
             [START + dt.timedelta(days=k) for k in range(args.days)])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RANKLINE_"))}
    env.update({
        "RANKLINE_HOME": str(tmp / "var"), "RANKLINE_SOURCE": "interactions",
        "RANKLINE_SOURCE_URI": str(tmp / "lake"), "RANKLINE_START_DATE": START.isoformat(),
        "RANKLINE_EVENT_LABELS": RATING_LABELS_SETTING,
        "RANKLINE_CONSUMED": args.consumed,
        "RANKLINE_DEMO_DAYS": str(len(dates)), "RANKLINE_TRAIN_DAYS": str(args.train),
        "RANKLINE_VALID_DAYS": str(args.valid), "RANKLINE_TEST_DAYS": str(args.test),
        "RANKLINE_CANDIDATES_PER_USER": "300", "RANKLINE_TOP_K": "50",
    })
    if args.negatives is not None:
        env["RANKLINE_NEGATIVES_PER_REQUEST"] = str(args.negatives)
    if args.models:
        env["RANKLINE_MODELS"] = args.models
    if args.seed is not None:
        env["RANKLINE_SEED"] = str(args.seed)
    t0 = time.perf_counter()
    if args.reuse:
        os.environ.update(env)
        from pipeline.settings import get_settings

        report(get_settings(), dates[-1], reuse=True)
        return
    demo = subprocess.run([sys.executable, "-m", "pipeline.cli", "demo"], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    print(f"rankline demo on {len(dates)} MovieLens days: rc {demo.returncode}, "
          f"{time.perf_counter() - t0:.0f} s (home {tmp / 'var'})")
    if "Held-out metrics" not in demo.stdout:
        print(demo.stdout[-3000:], demo.stderr[-3000:])
        raise SystemExit(1)
    os.environ.update(env)
    from pipeline.settings import get_settings

    get_settings.cache_clear()
    report(get_settings(), dates[-1])


def report(s, as_of: dt.date, reuse: bool = False) -> None:  # noqa: ANN001
    import mlflow

    from feature_store import io
    from models.metrics import paired_bootstrap
    from pipeline import steps, tracking
    from pipeline.landing import valid_dates
    from serving.backends import opened
    from serving.client import NAMESPACE
    from serving.codec import decode_recs

    exp = tracking.configure(s)
    runs = mlflow.search_runs([exp], filter_string="tags.`airflow.dag_id` = 'train'")
    run = runs.iloc[0]
    per = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run["run_id"],
                                                          artifact_path="per_group.csv"))
    per = per.rename(columns=lambda c: c.removeprefix("ndcg@10_"))
    models = [c for c in per.columns if c not in ("group", "user_id", "date")]
    print(f"\nheld-out NDCG@10 over {len(per)} (user, day) groups, paired 95% bootstrap "
          "(1,000 resamples over groups) against popularity:")
    for m in models:
        line = f"  {m:<11} {per[m].mean():.4f}"
        if m != "popularity":
            mean, low, high = paired_bootstrap((per[m] - per["popularity"]).to_numpy(), 1000,
                                               0.95, s.seed)
            verdict = "better" if low > 0 else "worse" if high < 0 else "no difference"
            line += f"   {m} - popularity {mean:+.4f} [{low:+.4f}, {high:+.4f}]: {verdict}"
        print(line)
    print(f"gate: promoted={run['tags.promoted']}: {run['tags.promotion_reason']}")

    if tracking.champion_version(s) is None or reuse:  # measure a refresh with this model
        version = tracking.model_versions(s)[0].version  # the newest
        champ = {"model_uri": f"models:/{tracking.MODEL_NAME}/{version}",
                 "model_version": str(version), "model_run_id": run["run_id"]}
        print(f"(refreshing with model version {version}, RANKLINE_CONSUMED={s.consumed})")
        steps.refresh(s, as_of, champ)
    history = io.read_dates(s.raw_dir, "impressions",
                            valid_dates(s, [d for d in io.list_dates(s.raw_dir, "impressions")
                                            if d <= as_of]), ["user_id", "item_id"])
    seen = set(zip(history["user_id"], history["item_id"], strict=True))
    users = np.unique(history["user_id"].to_numpy())  # every user who ever saw an item
    with opened(s, create=False) as store:
        cur = store.current(NAMESPACE)
        values, _ = store.get_many(NAMESPACE, [str(u) for u in users])
    total = consumed = personal = 0
    for u, blob in zip(users, values, strict=True):
        if blob is None:
            continue
        personal += 1
        ids, _ = decode_recs(blob)
        total += len(ids)
        consumed += sum((int(u), int(i)) in seen for i in ids)
    print(f"store version {cur.version}: {personal} users with a personal list, {total} "
          f"recommendations, {consumed} of them already interacted with")
    print(f"consumed share: {consumed / max(total, 1):.4f}")


if __name__ == "__main__":
    main()
