"""The choice of a log's training rows on its validation dates: which candidates are tried, the
rule that keeps one, and the whole choice on a tiny synthetic split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.row_choice import Candidate, candidates, pick, resolve
from pipeline.settings import Settings


def test_candidates_start_with_the_simplest_and_add_debiasing_only_with_positions(tmp_path):
    s = Settings(home=tmp_path)
    plain = [Candidate(0), Candidate(5, "popularity"), Candidate(5, "uniform")]
    assert candidates(s, has_positions=False) == plain
    assert candidates(s, has_positions=True) == [*plain, Candidate(0, unbiased=True)]
    fixed = Settings(home=tmp_path, negatives_per_request=3, negative_source="uniform",
                     unbiased=False)
    assert candidates(fixed, has_positions=True) == [Candidate(3, "uniform")]
    assert candidates(Settings(home=tmp_path, unbiased=True, negative_sources="uniform"),
                      True) == [Candidate(0, "uniform", True), Candidate(5, "uniform", True)]
    assert Candidate(0, unbiased=True).name == "0 negatives, debiased"
    assert Candidate(5, "uniform").name == "5 uniform negatives"


def test_another_candidate_is_kept_only_with_a_paired_interval_above_zero():
    rng = np.random.default_rng(0)
    base = rng.random(400)
    names = ["0 negatives", "5 negatives"]
    better = {names[0]: base, names[1]: base + 0.05 + rng.normal(0, 0.01, 400)}
    kept, reason = pick(better, names, 500, 0.95, 0)
    assert kept == "5 negatives" and "5 negatives - 0 negatives: +0.05" in reason
    noise = {names[0]: base, names[1]: base + 0.01 + np.tile([0.3, -0.3], 200)}
    kept, reason = pick(noise, names, 500, 0.95, 0)
    assert kept == "0 negatives" and "no evidence" in reason
    worse = {names[0]: base, names[1]: base - 0.1}
    assert pick(worse, names, 500, 0.95, 0)[0] == "0 negatives"


@pytest.mark.parametrize("given", [{}, {"negatives_per_request": 5, "unbiased": False}])
def test_resolve_records_the_choice_and_the_training_set_keeps_it(settings, ingested, given):
    from pipeline.training import training_set, write_training_rows

    s = settings.model_copy(update=given)
    d1, d2 = (d.isoformat() for d in ingested[1:])  # rows read features of the day before
    split = {"train": [d1], "valid": [d2], "test": [d2]}
    write_training_rows(s, split)
    chosen = resolve(s, split)
    assert chosen.negatives_per_request in ((5,) if given else s.negative_counts)
    assert chosen.unbiased is (False if given else chosen.unbiased)
    assert isinstance(chosen.unbiased, bool)
    assert len(list((s.work_dir / "row_choice").glob("*.json"))) == 1
    assert chosen.negative_source in ("popularity", "uniform")
    rows = training_set(chosen, split).read("train")
    kept = rows[rows["is_negative"]].groupby("request_id").size()
    assert kept.max() == chosen.negatives_per_request if chosen.negatives_per_request else \
        kept.empty
    assert resolve(s, split) == chosen  # read back from the record
    record = json.loads(next((s.work_dir / "row_choice").glob("*.json")).read_text())["choice"]
    if not given:  # the groups compared, each with a click, fewer than the rows
        assert 0 < record["groups"] <= (rows_valid := training_set(chosen, split).read("valid"))[
            "request_id"].nunique() < len(rows_valid)
