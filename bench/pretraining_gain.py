"""Does pre-training help? ``neural`` (fine-tuned from the pre-trained encoder) against
``neural_scratch`` (the same network from random weights), on the same data, over seeds.

    .venv/bin/python bench/pretraining_gain.py [--seeds 1,2,3] [--home var]

Needs a home where the demo ran (``make demo``): it reads that home's labelled rows, split and
encoder (the newest logged encoder whose data ends before the first training date, as the train
DAG picks it), and trains both families once per seed in this process (nothing is logged to
MLflow). Every model is scored on the same held-out groups (the test dates' impressions, as the
train DAG's evaluation does). Per seed and pooled (the per-group difference averaged over
seeds), it prints the mean NDCG@10 difference with its 95% paired bootstrap interval over groups
and the number of groups; a difference whose interval holds 0 is "no difference". It also prints
each fit's training rate (rows/s) and wall time. Last line:
``fine-tuned - scratch ndcg@10 (<n> seeds, pooled): <mean> [<low>, <high>] over <groups> groups``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--home", type=Path, default=ROOT / "var")
    ap.add_argument("--bootstrap", type=int, default=2000)
    args = ap.parse_args()
    os.environ["RANKLINE_HOME"] = str(args.home.resolve())

    from feature_store import io
    from models.metrics import paired_bootstrap, per_group_metrics
    from models.registry import family_class
    from pipeline.pretraining import ARTIFACT, encoder_path, newest_encoder
    from pipeline.settings import load_settings
    from pipeline.tracking import configure
    from pipeline.training import eval_rows, rows_dir, split_dates, training_set

    settings = load_settings()
    dates = io.list_dates(rows_dir(settings), "rows")
    if not dates:
        raise SystemExit(f"no labelled rows under {rows_dir(settings)}: run `make demo` first")
    split = {k: [d.isoformat() for d in v] for k, v in split_dates(settings, dates[-1]).items()}
    end = dt.date.fromisoformat(split["train"][0]) - dt.timedelta(days=1)
    configure(settings)
    found = newest_encoder(settings, end)
    if found is None:
        raise SystemExit(f"no encoder with data up to {end} in {settings.home}: run `make demo`")
    seeds = [int(s) for s in args.seeds.split(",")]
    test = eval_rows(io.read_dates(rows_dir(settings), "rows",
                                   [dt.date.fromisoformat(d) for d in split["test"]]))
    groups, labels = test["group"].to_numpy(), test["label"].to_numpy()
    print(f"split {split['train'][0]}..{split['test'][-1]}; encoder of run {found[0]} (data up "
          f"to {found[1]}); {len(test):,} held-out rows", flush=True)

    ndcg: dict[tuple[str, int], np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        enc = encoder_path({"uri": f"runs:/{found[0]}/{ARTIFACT}"}, Path(tmp))
        data = training_set(settings, split, pretrained=enc)
        for seed in seeds:
            for family in ("neural", "neural_scratch"):
                model = family_class(family).from_settings(settings.model_copy(update={"seed":
                                                                                        seed}))
                t0 = time.perf_counter()
                report = model.fit(data)
                pg = per_group_metrics(groups, labels, model.score(test), seed=settings.seed)
                ndcg[family, seed] = pg["ndcg@10"].to_numpy()
                print(f"seed {seed} {family:15s} ndcg@10 {ndcg[family, seed].mean():.4f}  "
                      f"best epoch {report.best_step}  {report.metrics['rows_per_s']:,.0f} rows/s"
                      f"  {time.perf_counter() - t0:.0f} s", flush=True)

    def line(diff: np.ndarray) -> str:
        mean, low, high = paired_bootstrap(diff, args.bootstrap, 0.95, settings.seed)
        verdict = "no difference" if low <= 0 <= high else ("better" if low > 0 else "worse")
        return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}] over {len(diff):,} groups ({verdict})"

    diffs = [ndcg["neural", s] - ndcg["neural_scratch", s] for s in seeds]
    for seed, diff in zip(seeds, diffs, strict=True):
        print(f"seed {seed}: fine-tuned - scratch ndcg@10: {line(diff)}")
    print(f"fine-tuned - scratch ndcg@10 ({len(seeds)} seeds, pooled): "
          f"{line(np.mean(diffs, axis=0))}")


if __name__ == "__main__":
    main()
