"""Where the nightly refresh spends its time, against the raw XGBoost scoring limit.

Run after ``make demo`` (it reads the demo's features, validated raw events and champion from
``var/``):

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
    from feature_store.offline import feature_dates, read_views
    from models.registry import load_ranker
    from pipeline import steps
    from pipeline.hulk import candidates, refresh_inputs, top_k
    from pipeline.settings import get_settings

    s = get_settings()
    as_of = feature_dates(s.offline_dir)[-1]
    views = read_views(s.offline_dir, as_of)
    ranker = load_ranker(steps.champion_uri(s)["model_uri"], s.n_threads)
    booster = ranker.model.get_booster()
    t = time.perf_counter()
    inputs = refresh_inputs(s, as_of, views)
    t_inputs = time.perf_counter() - t
    users = inputs.users[: args.users]

    def best(fn):  # noqa: ANN001, ANN202
        times, out = [], None
        for _ in range(args.repeat):
            t = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t)
        return min(times), out

    kwargs = inputs.chunk(users)
    t_cand, cand = best(lambda: candidates(**kwargs, per_user=s.candidates_per_user))
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
          f"{booster.num_boosted_rounds()} trees, as of {as_of}, {s.n_threads} thread(s)")
    print(f"inputs for all {len(inputs.users)} users (once per refresh, not in the ratios): "
          f"{t_inputs:.2f}s; consumed tables {','.join(s.consumed_tables)}, "
          f"history {s.history_days} days")
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
