"""How much of the oracle's NDCG@10 can any ranker that reads history reach on the synthetic
marketplace? The oracle sorts by the hidden utility of the request's date, today's shopping
intent included; a ranker knows only what the logs up to yesterday reveal.

    .venv/bin/python bench/oracle_ceiling.py [--users 20000,5000] [--intent-days 3,7]

For each world setting it generates the demo's last ``--history`` days plus the two held-out
dates (2026-01-19/20, as in ``make demo``) and scores the held-out impressions (evaluation groups
as in ``pipeline.training.eval_rows``) by the hidden utility with the intent terms filled in
from: the true intent (the oracle), what the logs up to the day before show (``logs``: the fair
ceiling, :meth:`pipeline.sources.synthetic.SyntheticSource.ceiling`: the intent of the last day
the user was shown anything, which that day's slates reveal, carried to the request's date
through the known phase and the world's transition chances, the intent terms averaged over the
result; the category affinity in expectation under its posterior given the user's logged clicks;
taste, quality and price sensitivity known), the same with the true affinity
(``logs_known_affinity``), nothing (``no_intent``), the true intent of the day before
(``yesterday``), the line of the user's most recent click (``last_click``), and that line mixed
with its successor by the chance that the intent moved on (``last_click_soft``). The scorers
other than ``logs`` know the preferences without the intent terms exactly. Each row prints
NDCG@10 and its share of the oracle's and of the fair ceiling's. The demo summary's
``best/ceiling`` is the best family over ``logs``. Last line: ``ceiling logs/oracle: <x>`` of
the first setting (the demo's).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pipeline.sources.synthetic as syn  # noqa: E402
from models.metrics import ranking_metrics  # noqa: E402
from pipeline.labels import label_impressions  # noqa: E402

END = dt.date(2026, 1, 20)


def ceiling(n_users: int, intent_days: int, history: int, impressions: int) -> dict[str, float]:
    """NDCG@10 of each history-informed scorer on the two held-out dates of one world."""
    syn.INTENT_DAYS = intent_days  # read at call time by the intent functions
    syn._intent_chain.cache_clear()
    syn.make_world.cache_clear()  # the users' intent phases are drawn over INTENT_DAYS
    src = syn.SyntheticSource(n_users=n_users, impressions_per_day=impressions)
    w = src.world
    held_out = [END - dt.timedelta(days=1), END]
    clicks, test, shown = [], [], {}
    for k in range(history + 1, -1, -1):
        d = END - dt.timedelta(days=k)
        f = {t: v.to_pandas() for t, v in src.frames(d).items()}
        shown[d] = np.unique(f["impressions"]["user_id"].to_numpy())
        if d in held_out:
            imp = label_impressions(f["impressions"], f["clicks"], f["add_to_cart"],
                                    f["purchases"])
            test.append(imp.assign(date=d))
        else:
            clicks.append(f["clicks"][["user_id", "item_id", "ts"]].assign(date=d))
    last_item = pd.concat(clicks).sort_values("ts").groupby("user_id")["item_id"].last()
    imp = pd.concat(test)
    rows = (imp.sort_values("label", ascending=False)
            .drop_duplicates(["user_id", "date", "item_id"]).reset_index(drop=True))
    groups = pd.factorize(rows["user_id"].astype(str) + "|" + rows["date"].astype(str))[0]
    u, i, labels = (rows[c].to_numpy() for c in ("user_id", "item_id", "label"))
    base = syn.utility(w, u, i, None)

    def boost(line: np.ndarray) -> np.ndarray:
        return (syn.INTENT_BOOST * (w.item_category[i] == w.line_category[line])
                + syn.LINE_BOOST * (w.item_line[i] == line))

    yesterday = np.empty(len(u), dtype=np.int32)
    for d in held_out:
        sel = (rows["date"] == d).to_numpy()
        yesterday[sel] = src.intents(d - dt.timedelta(days=1))[u[sel]]
    last = last_item.reindex(u).to_numpy()
    known = ~np.isnan(last)
    last_line = w.item_line[np.nan_to_num(last).astype(np.int64)]
    stay = 1 - 1 / intent_days  # chance the intent did not move on since the last click (about)
    # the last day before each held-out date on which the user was shown anything
    last_shown = np.zeros(len(u), dtype=np.int64)
    for d in held_out:
        sel = (rows["date"] == d).to_numpy()
        for day in sorted(x for x in shown if x < d):
            last_shown[sel & np.isin(u, shown[day])] = day.toordinal()
    scorers = {
        "oracle": src.oracle(u, i, rows["request_id"].to_numpy()),
        "logs": src.ceiling(u, i, rows["request_id"].to_numpy(), last_shown, pd.concat(clicks)),
        "logs_known_affinity": src.ceiling(u, i, rows["request_id"].to_numpy(), last_shown),
        "no_intent": base,
        "yesterday": base + boost(yesterday),
        "last_click": base + known * boost(last_line),
        "last_click_soft": base + known * (stay * boost(last_line)
                                           + (1 - stay) * boost(w.line_next[last_line])),
    }
    return {name: ranking_metrics(groups, labels, s)["ndcg@10"] for name, s in scorers.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", default="20000,5000")
    ap.add_argument("--intent-days", default="3,7")
    ap.add_argument("--history", type=int, default=18,
                    help="days of logs before the held-out dates (the demo's: 18)")
    ap.add_argument("--impressions", type=int, default=150_000)
    args = ap.parse_args()
    first = None
    for n_users in (int(x) for x in args.users.split(",")):
        for days in (int(x) for x in args.intent_days.split(",")):
            t0 = time.perf_counter()
            res = ceiling(n_users, days, args.history, args.impressions)
            oracle, fair = res["oracle"], res["logs"]
            first = first or fair / oracle
            print(f"users {n_users:>6}, intent {days} days ({time.perf_counter() - t0:.0f} s): "
                  + ", ".join(f"{k} {v:.4f} ({v / oracle:.3f} of oracle, {v / fair:.3f} of logs)"
                              for k, v in res.items()), flush=True)
    print(f"ceiling logs/oracle: {first:.4f}")


if __name__ == "__main__":
    main()
