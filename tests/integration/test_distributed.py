"""Distributed training on real engines on this machine: XGBoost on a real Dask cluster (worker
processes on 127.0.0.1), against the same model trained in one process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.base import TrainingSet
from models.xgb import XGBoostRanker, _count, _partition, query_offsets
from tests.unit.test_model_contract import tiny_rows

pytestmark = pytest.mark.integration


def partitioned(root: Path, parts: dict[str, list[tuple[int, int]]]) -> TrainingSet:
    """A training set of one directory per (date-like) partition, request ids unique across
    them, as the train DAG writes them."""
    paths: dict[str, list[Path]] = {}
    for i, (part, specs) in enumerate(parts.items()):
        for j, (n, seed) in enumerate(specs):
            path = root / part / f"date={j}"
            path.mkdir(parents=True)
            rows = tiny_rows(n, seed).sample(frac=1.0, random_state=seed)  # not sorted on disk
            rows["request_id"] += 100_000 * (10 * i + j)
            rows.to_parquet(path / "part-0.parquet")
            paths.setdefault(part, []).append(path)
    return TrainingSet(tuple(paths["train"]), tuple(paths.get("valid", ())))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> TrainingSet:
    return partitioned(tmp_path_factory.mktemp("rows"), {
        "train": [(500, 1), (500, 4), (500, 5), (500, 6)], "valid": [(150, 2), (150, 3)]})


def best_valid(report) -> float:
    return max(report.curves["valid_ndcg@10"])


def test_partitions_keep_queries_whole_sorted_and_distinct(data):
    counts = np.array([_count(p) for p in data.train_paths])
    offsets = query_offsets(counts[:, 0])
    parts = [_partition(p, int(o), 0.5, 7) for p, o in zip(data.train_paths, offsets, strict=True)]
    qid = np.concatenate([part["_qid"].to_numpy() for part in parts])
    # one id per query, ids sorted across the partitions taken in order, none shared
    assert np.all(np.diff(qid) >= 0)
    assert len(np.unique(qid)) == counts[:, 0].sum() == len(np.unique(np.concatenate(
        [pd.read_parquet(p, columns=["request_id"])["request_id"] for p in data.train_paths])))
    assert sum(len(part) for part in parts) == counts[:, 1].sum()
    for part in parts:  # every query's rows sit together and share the sample flag
        assert part.groupby("_qid")["_sample"].nunique().max() == 1
    share = np.mean([part.groupby("_qid")["_sample"].first().mean() for part in parts])
    assert 0.35 < share < 0.65, share


def test_dask_two_workers_reach_the_single_process_model(data):
    params = {"n_estimators": 80, "seed": 3, "device": "cpu"}
    single = XGBoostRanker(**params, n_jobs=1)
    one = single.fit(data)
    dask = XGBoostRanker(**params, n_jobs=2, dask_workers=2)
    two = dask.fit(data)
    assert two.metrics["dask_workers"] == 2 and two.metrics["rows"] == one.metrics["rows"]
    assert two.params["device"] == "cpu" and two.params["dask_threads"] == 2
    # the importance survives the named columns of the Dask path
    assert two.importance.sum() > 0 and two.importance.index[0] == one.importance.index[0]
    assert abs(best_valid(two) - best_valid(one)) <= 0.005, (best_valid(two), best_valid(one))
    # the result is an ordinary XGBRanker: it scores (and logs) as a single-process model does
    test = tiny_rows(40, 9)
    s1, s2 = single.score(test), dask.score(test)
    assert s2.shape == (len(test),) and np.corrcoef(s1, s2)[0, 1] > 0.9


def test_a_running_cluster_is_used_by_its_address(data):
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.worker.daemon": False}), LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None) as cluster:
        model = XGBoostRanker(n_estimators=30, seed=3, device="cpu",
                              dask_scheduler=cluster.scheduler_address)
        report = model.fit(data)
        with Client(cluster) as client:  # still up: not ours to close
            assert len(client.scheduler_info()["workers"]) == 2
    assert report.metrics["dask_workers"] == 2 and best_valid(report) > 0.9


def test_streamed_partitions_reach_the_in_memory_model(data):
    """One partition at a time into XGBoost's external-memory matrix: the same queries and
    rows, so the same model within quantization, never more than a partition in a batch."""
    frame = XGBoostRanker(device="cpu", n_jobs=1).fit(data)
    stream = XGBoostRanker(device="cpu", n_jobs=1, stream=True).fit(data)
    assert stream.metrics["rows"] == frame.metrics["rows"] == 4 * 500 * 8
    assert stream.metrics["largest_batch"] == 500 * 8  # a partition, not the set
    assert abs(best_valid(stream) - best_valid(frame)) <= 0.005
