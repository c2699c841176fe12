"""Blending policies judged by simulation: the synthetic marketplace plays the days after the demo
with each policy's lists as what its users are shown.

Run after ``make demo`` (it reads the demo's champion, features and logs):

    .venv/bin/python bench/blending.py [--days 7] [--seeds 3] [--nightly] [--pools ...]

What it does:

1. The refresh's inputs as of the demo's last date, every user's pooled candidates
   (``--pools``, by default popular, category, co-clicks, new items and embedding) scored once by the
   champion, as the hulk refresh does (:func:`pipeline.hulk.scored_pools`).
2. For each policy (``merged``: the k best by score, today's refresh; ``fixed``: equal shares;
   ``greedy``: posterior means; ``thompson``: posterior draws; each blended list in
   ``RANKLINE_BLEND_ORDER``, and Thompson in the other order too) and each seed, the
   marketplace plays ``--days`` days: each day every policy's lists are built from the
   outcomes it logged on the days before (its own bandit loop: impressions carry their pool,
   rewards as :data:`models.blending.REWARDS`; on top of the refresh's own posteriors, the
   demo's ``user_pool`` view as of the refresh date), then the day's requests show each user the
   first ``slots_per_request`` items of their list (the popularity list for a user without
   one). The requests and the users' dice depend on (date, seed) only, so the policies meet
   the same users with the same dice: a paired comparison. Candidates and scores stay those of
   the refresh date all week (one refresh, played for a week), or with ``--nightly`` the
   refresh runs every night on the demo's own dates (the last ``--days`` of them are played,
   each after a refresh as of the night before, its features and ``user_pool`` view from the
   demo's logs), as production refreshes: a policy's lists are never stale, and what a bandit
   learns is only what its own outcomes add.
3. Per policy: clicks, add-to-carts and purchases per user with a request (mean and spread over
   the seeds), the pools' shares of the shown slots, Thompson − each other policy per seed,
   and Thompson − merged and − fixed with a 95 % paired bootstrap interval over user-days
   (one group per user and day of each seed: every policy met the same requests);
   new items (first seen within ``RANKLINE_NEW_ITEM_DAYS``): their share of the shown slots
   and their clicks per impression; new users (the bandit's: fewer logged impressions on the
   blended pools than ``RANKLINE_BLEND_PRIOR_STRENGTH`` in the ``user_pool`` view of the
   day's refresh, :func:`models.blending.new_users`): purchases per user, and the share of
   them whose page showed every pool they had candidates from. In score order Thompson is also
   played with new users' lists in the other order (``thompson/new-by-...``), the cost or
   gain of ``RANKLINE_BLEND_NEW_USER_ORDER``.
4. Off-policy, from the logging policy's logs of the first simulated day alone: IPS and SNIPS
   of each policy's clicks per request (propensities: P(the slate holds the item)), and IPS
   with the position-based model's examination ratio (estimated from the same logs), against
   the simulated value.
5. The cost of blending in the refresh: the blend of every user's list against the merged
   top-k, on the same scored candidates, with the posteriors of the last simulated day; and the
   refresh time with it against today's (inputs + scoring, measured once, plus each).

Last line: ``ratio purchases/user thompson/merged: <x>``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from dataclasses import dataclass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--nightly", action="store_true",
                    help="refresh every night before a played day (the demo's dates: the "
                    "last --days of them are played), instead of one refresh played for "
                    "--days days after the demo")
    ap.add_argument("--pools",
                    default="popular:100,category:100,co_clicks:100,new_items:30,embedding:100",
                    help="RANKLINE_POOLS of the simulated refresh")
    args = ap.parse_args()
    os.environ.setdefault("RANKLINE_HOME", os.path.abspath("var"))
    os.environ["RANKLINE_POOLS"] = args.pools

    import numpy as np
    import pandas as pd

    from feature_store import io
    from feature_store.offline import read_views
    from models.blending import REWARDS, Pooled, new_users, pool_totals, posteriors_from_totals, rank_by_score
    from models.registry import load_ranker
    from pipeline.hulk import pool_totals as logged_totals
    from pipeline.hulk import refresh_inputs, scored_pools, top_k
    from pipeline.landing import valid_dates
    from pipeline.settings import get_settings
    from pipeline.sources import get_source
    from pipeline.steps import champion_uri

    s = get_settings()
    if s.source != "synthetic":
        raise SystemExit("the simulation needs the synthetic marketplace (RANKLINE_SOURCE)")
    dates = valid_dates(s, io.list_dates(s.raw_dir, "impressions"))
    if not dates:
        raise SystemExit(f"no validated dates under {s.raw_dir}: run `make demo` first")
    if args.days < 1 or args.seeds < 1:
        raise SystemExit("--days and --seeds must be at least 1")
    if args.nightly:  # a refresh each night before a played day, the last played day last
        nights, plays = dates[-args.days - 1:-1], dates[-args.days:]
        if len(dates) < args.days + 1 or any(
                p != n + dt.timedelta(days=1) for n, p in zip(nights, plays, strict=True)):
            raise SystemExit(f"--nightly --days {args.days} needs the demo's last "
                             f"{args.days + 1} dates validated and consecutive: "
                             f"{[str(d) for d in dates[-args.days - 1:]]}")
    else:  # one refresh as of the demo's last date, played for the days after it
        nights = [dates[-1]]
        plays = [dates[-1] + dt.timedelta(days=d) for d in range(1, args.days + 1)]
    as_of = nights[0]
    champ = champion_uri(s)
    ranker = load_ranker(champ["model_uri"], s.n_threads)
    source = get_source(s)
    names = list(s.pool_sizes)
    empty = pd.DataFrame({"user_id": [], "pool": [], "reward": []})

    @dataclass
    class Night:
        """One refresh: every user's pools scored by the champion, ready to blend."""

        as_of: dt.date
        prepared: Pooled
        merged: pd.DataFrame  # the k best by score, each item's (best) pool
        fallback: np.ndarray
        n_avail: pd.Series  # pools with candidates, per user
        base: pd.DataFrame  # the user_pool view's totals (the refresh's posteriors)
        new_items: np.ndarray
        fresh: np.ndarray  # new users: fewer logged impressions than the prior's strength
        t_shared: float
        t_prepare: float
        t_merged: float
        n_scored: int

        def posteriors(self, outcomes: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
            both = pd.concat([self.base, pool_totals(outcomes)], ignore_index=True)
            both = both.groupby(["user_id", "pool"], as_index=False)[
                ["reward", "impressions"]].sum()
            return posteriors_from_totals(both, names, s.blend_prior_strength)

    def refresh(night: dt.date) -> Night:
        if s.encoder_features:
            from pipeline.pretraining import embed_dates

            embed_dates(s, [night])
        t0 = time.perf_counter()
        views = read_views(s.offline_dir, night)
        inputs = refresh_inputs(s, night, views)
        parts = list(scored_pools(s, inputs, views, ranker))
        t_shared = time.perf_counter() - t0
        pooled = pd.concat([p for p, _ in parts], ignore_index=True)
        scored = pd.concat([r for _, r in parts], ignore_index=True)
        del parts
        pooled["pool"] = pooled["pool"].astype(pd.CategoricalDtype(names))
        # within each pool the champion's order (as the refresh blends)
        c = rank_by_score(pooled.merge(scored, on=["user_id", "item_id"]), names)
        t1 = time.perf_counter()
        prepared = Pooled.of(c, names, s.top_k)
        t_prepare = time.perf_counter() - t1
        t1 = time.perf_counter()
        merged = top_k(scored["user_id"].to_numpy(), scored["item_id"].to_numpy(),
                       scored["score"].to_numpy(), s.top_k)
        t_merged = time.perf_counter() - t1
        # the pool of each merged item: its best pool (as the blend would keep it)
        merged = merged.merge(prepared.cands[["user_id", "item_id", "pool"]],
                              on=["user_id", "item_id"], how="left")
        merged["rank"] = merged.groupby("user_id").cumcount().to_numpy()
        # the logging policy's outcomes on its pools of the same names
        base = logged_totals(s, night, prepared.users)
        post, priors = posteriors_from_totals(base, names, s.blend_prior_strength)
        return Night(night, prepared, merged, inputs.pop.head(s.top_k).index.to_numpy(),
                     pd.Series((prepared.available > 0).sum(axis=1), index=prepared.users),
                     base,
                     # first seen in the items table within RANKLINE_NEW_ITEM_DAYS
                     inputs.new_items["item_id"].to_numpy(),
                     # new users: the bandit's as of the refresh (the prior outweighs the logs)
                     prepared.users[new_users(prepared.users, post, priors)],
                     t_shared, t_prepare, t_merged, len(scored))

    cur = refresh(as_of)
    print(f"as of {as_of}: {len(cur.prepared.users):,} users, {cur.n_scored:,} candidates scored "
          f"({cur.t_shared:.1f} s with the inputs), pools {s.pool_sizes}, k={s.top_k}, "
          f"{source.slots} slots per request; {len(cur.new_items)} new items (first seen in "
          f"{s.new_item_days} days); {int(cur.base['impressions'].sum()):,} logged impressions "
          f"in the user_pool view, {len(cur.fresh):,} new users (fewer than "
          f"{s.blend_prior_strength:g} of them); "
          + (f"a refresh every night, {nights[0]} .. {nights[-1]}" if args.nightly
             else f"one refresh played {plays[0]} .. {plays[-1]}"), flush=True)

    weights = np.array([0.0, REWARDS["click"], REWARDS["add_to_cart"], REWARDS["purchase"]])
    # label: (policy, order of the blended list, order of a new user's)
    order, new_order = s.blend_order, s.blend_new_user_order
    other = "even" if order == "score" else "score"
    other_new = "even" if new_order == "score" else "score"
    specs = {"merged": ("merged", "", ""), "fixed": ("fixed", order, new_order),
             "greedy": ("greedy", order, new_order),
             "thompson": ("thompson", order, new_order),
             f"thompson/{other}": ("thompson", other, other)}
    if order == "score":  # in even order every user's list is interleaved evenly anyway
        specs[f"thompson/new-by-{other_new}"] = ("thompson", order, other_new)
    policies = list(specs)
    rows, shares, first_lists = [], {}, {}
    user_days: dict[tuple[int, int], dict[str, pd.Series]] = {}  # purchases per user
    logged: dict[tuple[int, str], list[pd.DataFrame]] = {
        (seed, p): [] for seed in range(args.seeds) for p in policies}
    for day, date in enumerate(plays, start=1):
        if args.nightly and cur.as_of != nights[day - 1]:
            del cur
            cur = refresh(nights[day - 1])
            print(f"night {cur.as_of}: {cur.n_scored:,} candidates scored in {cur.t_shared:.1f} s",
                  flush=True)
        for seed in range(args.seeds):
            for policy in policies:
                if policy == "merged":
                    lists = cur.merged
                else:
                    own = logged[seed, policy]
                    post, priors = cur.posteriors(pd.concat(own, ignore_index=True) if own
                                                else empty)
                    lists, _ = cur.prepared.blend(post, priors, k=s.top_k,
                                                policy=specs[policy][0], seed=s.seed + seed,
                                                date=date, min_slots=s.blend_min_slots,
                                                fixed=s.fixed_shares, order=specs[policy][1],
                                                new_user_order=specs[policy][2])
                if seed == 0 and day == 1:
                    first_lists[policy] = (lists, cur.fallback)
                played = source.play(date, lists, cur.fallback, seed=seed)
                grade = (played["clicked"].to_numpy(dtype=int) + played["carted"].to_numpy(
                    dtype=int) + played["bought"].to_numpy(dtype=int))
                personal = played["pool"].notna().to_numpy()
                logged[seed, policy].append(pd.DataFrame({
                    "user_id": played["user_id"].to_numpy()[personal],
                    "pool": played["pool"].astype(str).to_numpy()[personal],
                    "reward": weights[grade[personal]]}))
                users = played["user_id"].nunique()
                is_new_item = np.isin(played["item_id"].to_numpy(), cur.new_items)
                is_new_user = np.isin(played["user_id"].to_numpy(), cur.fresh)
                nu = played[is_new_user & personal]
                pools_seen = nu.groupby("user_id")["pool"].nunique()
                rows.append({"seed": seed, "day": day, "policy": policy, "users": users,
                             "requests": played["request"].nunique(),
                             "clicks": played["clicked"].sum(), "carts": played["carted"].sum(),
                             "purchases": played["bought"].sum(),
                             "new_item_shown": int(is_new_item.sum()),
                             "new_item_clicks": int(played["clicked"].to_numpy()[
                                 is_new_item].sum()),
                             "shown": len(played),
                             "new_users": int(played.loc[is_new_user, "user_id"].nunique()),
                             "new_user_purchases": int(played["bought"].to_numpy()[
                                 is_new_user].sum()),
                             "new_users_all_pools": int((pools_seen >= cur.n_avail.reindex(
                                 pools_seen.index).fillna(0).to_numpy()).sum()),
                             "new_users_personal": len(pools_seen)})
                user_days.setdefault((seed, day), {})[policy] = played.groupby("user_id")[
                    "bought"].sum()
                sh = played.loc[personal, "pool"].astype(str).value_counts()
                shares[policy] = sh.add(shares.get(policy, pd.Series(dtype=float)),
                                        fill_value=0)
    done = pd.DataFrame(rows)
    for seed in range(args.seeds):
        last = done[done["seed"] == seed].groupby("policy")[["purchases", "users"]].sum()
        print(f"seed {seed}: purchases/user " + ", ".join(
            f"{p} {last.loc[p, 'purchases'] / last.loc[p, 'users']:.4f}" for p in policies),
            flush=True)

    df = pd.DataFrame(rows)
    per = df.groupby(["policy", "seed"])[["clicks", "carts", "purchases", "users"]].sum()
    for col in ("clicks", "carts", "purchases"):
        per[f"{col}/user"] = per[col] / per["users"]
    print(f"\nper user with a request, {args.days} days x {args.seeds} seeds "
          "(mean ± sd over seeds):")
    print(f"{'policy':>10s}  {'clicks/user':>16s}  {'carts/user':>16s}  {'purchases/user':>16s}"
          "  pools' share of the personal slots")
    for p in policies:
        g = per.loc[p]
        share = (shares[p] / shares[p].sum()).reindex(names, fill_value=0)
        print(f"{p:>10s}  " + "  ".join(
            f"{g[f'{c}/user'].mean():.4f} ± {g[f'{c}/user'].std(ddof=1) if len(g) > 1 else 0:.4f}"
            for c in ("clicks", "carts", "purchases")) + "  " + ", ".join(
            f"{n} {v:.2f}" for n, v in share.items()))
    print("\nnew items and new users (all seeds and days):")
    print(f"{'policy':>10s}  {'new items: share of slots':>26s}  {'their clicks/shown':>18s}  "
          f"{'new users: purchases/user':>25s}  {'new users shown all their pools':>31s}")
    tot = df.groupby("policy")[["new_item_shown", "new_item_clicks", "shown", "new_users",
                                "new_user_purchases", "new_users_all_pools",
                                "new_users_personal"]].sum()
    for p in policies:
        t = tot.loc[p]
        print(f"{p:>10s}  {t['new_item_shown'] / t['shown']:26.4f}  "
              f"{t['new_item_clicks'] / max(t['new_item_shown'], 1):18.4f}  "
              f"{t['new_user_purchases'] / max(t['new_users'], 1):25.4f}  "
              f"{t['new_users_all_pools'] / max(t['new_users_personal'], 1):31.2f}")
    # does the bandit's learning pay as the week goes on? Thompson − merged day by day
    daily = df.groupby(["policy", "day", "seed"])[["purchases", "users"]].sum()
    daily = (daily["purchases"] / daily["users"]).unstack("policy")
    gap = (daily["thompson"] - daily["merged"]).groupby("day")
    print("thompson − merged by day (mean over seeds): " + ", ".join(
        f"day {d} {v:+.4f}" for d, v in gap.mean().items()))
    if args.days > 7:  # and week by week, per seed (purchases over users, summed over the week)
        weekly = df.assign(week=(df["day"] - 1) // 7 + 1).groupby(
            ["policy", "week", "seed"])[["purchases", "users"]].sum()
        weekly = (weekly["purchases"] / weekly["users"]).unstack("policy")
        for against in ("merged", "fixed"):
            for week, g in (weekly["thompson"] - weekly[against]).groupby("week"):
                print(f"thompson − {against}, week {week}: {g.mean():+.4f} (per seed "
                      f"{', '.join(f'{x:+.4f}' for x in g)}; sd "
                      f"{g.std(ddof=1) if len(g) > 1 else float('nan'):.4f})")
    pu = per["purchases/user"].unstack("policy")
    for against in ("merged", "fixed", "greedy", *policies[4:]):
        d = pu["thompson"] - pu[against]
        spread = d.std(ddof=1) if len(d) > 1 else float("nan")
        verdict = ("thompson better" if d.min() > 0 and d.mean() > spread
                   else "thompson worse" if d.max() < 0 and -d.mean() > spread
                   else "no difference beyond the spread over seeds")
        print(f"thompson − {against}: purchases/user {d.mean():+.4f} (per seed "
              f"{', '.join(f'{x:+.4f}' for x in d)}; sd {spread:.4f}): {verdict}")

    # paired over groups: a user-day is one group (every policy met the same requests), its
    # purchases under Thompson minus under the other policy
    from models.metrics import paired_bootstrap

    ud = pd.concat([pd.DataFrame(v).fillna(0) for v in user_days.values()], ignore_index=True)
    for against in ("merged", "fixed"):
        m, lo, hi = paired_bootstrap((ud["thompson"] - ud[against]).to_numpy(), seed=s.seed)
        print(f"thompson − {against}: purchases per user-day {m:+.4f} [{lo:+.4f}, {hi:+.4f}] "
              f"(95 % paired bootstrap over {len(ud):,} user-days, {args.seeds} seeds)")

    # off-policy: each policy's clicks per request on the first day, from the logging policy's
    # logs of that day alone (its impressions' propensities), against the simulation
    from models.ope import estimate

    day1 = plays[0]
    frames = source.frames(day1)
    imp = frames["impressions"].to_pandas()
    clicked = imp["event_id"].isin(frames["clicks"].column("impression_id").to_numpy())
    n_req = imp["request_id"].nunique()
    print(f"\noff-policy, {day1}: the logging policy's {len(imp):,} impressions of {n_req:,} "
          f"requests (click rate per request {clicked.sum() / n_req:.4f}); target slates: each "
          f"policy's first {source.slots} items; propensities: P(slate holds the item)")
    from models.propensity import examination

    exam = examination(imp["position"].to_numpy(), imp["item_id"].to_numpy(),
                       clicked.to_numpy())
    theta0 = 1.0 / exam.inverse_propensity(imp["position"].to_numpy(), floor=1e-3)
    print(f"examination by position estimated from the day's logs (PBM): "
          f"{np.round(exam.theta[:6], 3).tolist()} ... (planted: p ** -0.6)")
    print(f"{'policy':>10s}  {'simulated':>9s}  {'IPS':>26s}  {'SNIPS':>9s}  "
          f"{'IPS x examination':>26s}")
    for policy in policies:
        lists, fallback = first_lists[policy]
        slate = lists[lists["rank"] < source.slots]
        with_list = np.isin(imp["user_id"], slate["user_id"].unique())
        cold = pd.DataFrame({"user_id": imp.loc[~with_list, "user_id"].unique()})
        cold = cold.merge(pd.DataFrame({"item_id": fallback[:source.slots]}), how="cross")
        cold["rank"] = np.tile(np.arange(min(source.slots, len(fallback))), len(cold) // max(
            min(source.slots, len(fallback)), 1))
        target = pd.concat([slate[["user_id", "item_id", "rank"]], cold], ignore_index=True)
        hit = imp[["user_id", "item_id"]].merge(
            target.drop_duplicates(["user_id", "item_id"]).assign(_t=1.0), how="left",
            on=["user_id", "item_id"])
        w_target = hit["_t"].fillna(0.0).to_numpy()
        theta_e = 1.0 / exam.inverse_propensity(hit["rank"].to_numpy(dtype=float) + 1,
                                                floor=1e-3)
        r = clicked.to_numpy(dtype=float)
        est = estimate(r, w_target, imp["propensity"].to_numpy(), imp["request_id"].to_numpy())
        # per request: IPS sums over a request's slots; the estimator's value is per logged slot
        slots_per_req = len(imp) / n_req
        w = w_target / imp["propensity"].to_numpy()
        snips = source.slots * (r * w).sum() / max(w.sum(), 1e-12)
        sim = df[(df["policy"] == policy) & (df["seed"] == 0) & (df["day"] == 1)]
        truth = sim["clicks"].sum() / max(int(sim["requests"].sum()), 1)
        # the position-based model: the item examined at its target slot, not its logged one
        pbm = estimate(r, w_target * np.where(w_target > 0, theta_e, 0.0),
                       imp["propensity"].to_numpy() * theta0, imp["request_id"].to_numpy())
        print(f"{policy:>10s}  {truth:9.4f}  {est.value * slots_per_req:.4f} "
              f"[{est.low * slots_per_req:.4f}, {est.high * slots_per_req:.4f}]  {snips:9.4f}"
              f"  {pbm.value * slots_per_req:.4f} [{pbm.low * slots_per_req:.4f}, "
              f"{pbm.high * slots_per_req:.4f}]  (largest weight {pbm.max_weight:.0f})")

    # the cost of blending in the refresh (the last night's), on the last day's posteriors
    post, priors = cur.posteriors(pd.concat(logged[0, "thompson"], ignore_index=True))
    t1 = time.perf_counter()
    cur.prepared.blend(post, priors, k=s.top_k, policy="thompson", seed=s.seed,
                       date=plays[-1], min_slots=s.blend_min_slots, order=order,
                       new_user_order=new_order)
    t_blend = time.perf_counter() - t1 + cur.t_prepare
    print(f"refresh cost: inputs + scoring {cur.t_shared:.1f} s; merged top-k "
          f"{cur.t_merged:.2f} s; thompson blend {t_blend:.2f} s ({len(post):,} posteriors); "
          f"refresh time blended/merged: "
          f"{(cur.t_shared + t_blend) / (cur.t_shared + cur.t_merged):.2f}")
    ratio = pu["thompson"].mean() / pu["merged"].mean()
    print(f"ratio purchases/user thompson/merged: {ratio:.4f}")


if __name__ == "__main__":
    main()
