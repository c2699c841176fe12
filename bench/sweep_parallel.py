"""A sweep of 2 parallel mapped trials against 1 at a time, through Airflow's scheduler.

Run after ``make demo``, with nothing else running (it starts Airflow for ``var/`` twice):

    .venv/bin/python bench/sweep_parallel.py [--trials 6]

Each round starts the scheduler with ``RANKLINE_SWEEP_PARALLEL`` = 1, then 2 (read when the
DAG is parsed), triggers the ``sweep`` DAG for XGBoost with the random sampler (seeded per
trial index: both rounds train the same parameters) and times the trial phase: from the first
``trial`` task's start to the last one's end. Each trial trains with the cores divided among
the trials running at once (``RANKLINE_THREADS`` / parallel). Prints the rounds, their trial
states (pruning depends on the order trials finish in, so the rounds may prune differently),
and last ``ratio sweep time parallel=2/parallel=1: <x>`` (the goal: about 0.5).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=6)
    args = ap.parse_args()
    os.environ.setdefault("RANKLINE_HOME", os.path.abspath("var"))

    from pipeline import services
    from pipeline.orchestrate import Scheduler
    from pipeline.settings import get_settings

    spans = {}
    for parallel in (1, 2):
        os.environ["RANKLINE_SWEEP_PARALLEL"] = str(parallel)
        get_settings.cache_clear()
        s = get_settings()
        sched = Scheduler(s, services.free_port(), lambda line: print(line, flush=True))
        sched.start()
        try:
            sched.set_paused("sweep", False)
            run_id = sched.trigger("sweep", {"family": "xgboost", "trials": args.trials,
                                             "sampler": "random"})
            total = sched.wait_run("sweep", run_id, timeout=7200)
            trials = [t for t in sched.task_instances("sweep", run_id) if t["task_id"] == "trial"]
        finally:
            sched.stop()
        start = min(dt.datetime.fromisoformat(t["start_date"]) for t in trials)
        end = max(dt.datetime.fromisoformat(t["end_date"]) for t in trials)
        spans[parallel] = (end - start).total_seconds()
        busy = sum(t.get("duration") or 0 for t in trials)
        print(f"parallel={parallel}: {len(trials)} trials in {spans[parallel]:.0f} s (the run "
              f"{total:.0f} s; trial tasks busy {busy:.0f} s in all, "
              f"{s.n_threads // parallel} thread(s) each)", flush=True)
    print(f"ratio sweep time parallel=2/parallel=1: {spans[2] / spans[1]:.2f}")


if __name__ == "__main__":
    main()
