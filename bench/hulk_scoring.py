"""Where the nightly refresh spends its time, against the raw XGBoost scoring limit.

Run after ``make demo`` (it reads the demo's features, raw clicks and champion from ``var/``):

    .venv/bin/python bench/hulk_scoring.py [--users 5000]

For one chunk of users it times each stage of :func:`pipeline.hulk.refresh` — candidate
generation, the feature join, scoring, top-k — and, as the peer measured in the same run, raw
``Booster.inplace_predict`` on the already-built float32 matrix of the same rows (the limit the
scoring stage can reach on this machine). Prints rows/s per stage and the ratios.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5000, help="users in the chunk")
    parser.add_argument("--repeat", type=int, default=3, help="best of N timings")
    args = parser.parse_args()

    from feature_store.compute import feature_matrix, join_features
    from feature_store.definitions import WINDOW_DAYS, W
    from feature_store.offline import feature_dates, read_views
    from pipeline import io, steps
    from pipeline.hulk import candidates, co_clicks, popularity, top_k
    from pipeline.settings import get_settings
    from pipeline.training import load_ranker

    s = get_settings()
    as_of = feature_dates(s.offline_dir)[-1]
    views = read_views(s.offline_dir, as_of)
    ranker = load_ranker(steps.champion_uri(s)["model_uri"])
    booster = ranker.model.get_booster()
    pop = popularity(views["item"])
    items = views["item"][["item_id"]].assign(category=views["item"]["i_category"].astype("int64"))
    recent = io.read_dates(s.raw_dir, "clicks", io.window(as_of, WINDOW_DAYS), ["user_id", "item_id"],
                           missing_ok=True)
    purchased = io.read_dates(s.raw_dir, "purchases", io.list_dates(s.raw_dir, "purchases"),
                              ["user_id", "item_id"])
    neighbours = co_clicks(recent)
    active = views["user"].loc[views["user"][f"u_impressions_{W}"] > 0, "user_id"].to_numpy()
    users = active[: args.users]

    def best(fn):  # noqa: ANN001, ANN202
        times, out = [], None
        for _ in range(args.repeat):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        return min(times), out

    t_cand, cand = best(lambda: candidates(users, pop, items, views["user_category"], recent,
                                           neighbours, purchased, s.candidates_per_user))
    t_join, rows = best(lambda: join_features(cand, views))
    t_matrix, X = best(lambda: feature_matrix(rows))
    t_score, scores = best(lambda: ranker.score(rows))
    t_raw, raw = best(lambda: booster.inplace_predict(X))
    t_topk, _ = best(lambda: top_k(rows["user_id"].to_numpy(), rows["item_id"].to_numpy(), scores,
                                   s.top_k))
    assert np.allclose(scores, raw)
    n = len(rows)
    total = t_cand + t_join + t_score + t_topk
    print(f"chunk: {len(users)} users, {n} candidate rows, {X.shape[1]} features, "
          f"{booster.num_boosted_rounds()} trees, as of {as_of}")
    print(f"{'stage':<28}{'seconds':>9}{'rows/s':>12}")
    for name, t in [("candidates", t_cand), ("feature join", t_join),
                    ("  of which matrix build", t_matrix), ("scoring (rankline)", t_score),
                    ("top-k", t_topk), ("all stages", total),
                    ("raw inplace_predict (peer)", t_raw)]:
        print(f"{name:<28}{t:>9.3f}{n / t:>12,.0f}")
    print(f"scoring stage vs raw inplace_predict: {t_raw / t_score:.2f}x of the limit")
    print(f"whole chunk vs raw inplace_predict:   {t_raw / total:.2f}x of the limit "
          f"(scoring is {t_score / total:.0%} of the chunk)")


if __name__ == "__main__":
    main()
