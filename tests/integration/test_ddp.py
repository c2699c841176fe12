"""Training across processes for real: torchrun DDP workers on gloo (this machine has no GPU)
against the same model trained in one process, and training tasks (torch and XGBoost) SIGKILLed
mid-run, then resumed from their checkpoints to the uninterrupted run's model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="make install puts torch in the venv")

from models.base import TrainingSet  # noqa: E402
from models.ddp import DdpConfig, WorkerFailed  # noqa: E402
from models.neural import NeuralRanker, NeuralScratchRanker  # noqa: E402
from models.sequence import EncoderConfig  # noqa: E402
from tests.unit.test_model_contract import tiny_rows  # noqa: E402

pytestmark = pytest.mark.integration

BATCH = 32
CONFIG = {"dim": 16, "layers": 1, "heads": 2, "max_len": 12, "dropout": 0.0}
"""No dropout: N processes draw other dropout masks than one, and the test compares steps."""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> TrainingSet:
    """Three training partitions (as three dates) and one validation partition."""
    root = tmp_path_factory.mktemp("rows")
    paths: dict[str, list[Path]] = {"train": [], "valid": []}
    total = 0
    for i, (part, n, seed) in enumerate([("train", 100, 1), ("train", 100, 11),
                                         ("train", 100, 12), ("valid", 60, 2)]):
        folder = root / part / f"date={i}"
        folder.mkdir(parents=True)
        rows = tiny_rows(n, seed).assign(request_id=lambda r, i=i: r["request_id"] + 1000 * i)
        rows.to_parquet(folder / "part-0.parquet")
        paths[part].append(folder)
        if part == "train":  # every batch holds a group for each of 2 ranks
            relevant = int((rows.groupby("request_id")["label"].max() > 0).sum())
            assert relevant % BATCH != 1, relevant
            total += relevant
    assert total % BATCH != 1, total  # the same for the three read as one
    return TrainingSet(tuple(paths["train"]), tuple(paths["valid"]))


def model(procs: int, epochs: int = 3, stream: bool = False) -> NeuralScratchRanker:
    """One thread per process: a thread pool's other summation order alone moves the
    trajectory of these tiny models by 1e-4 over a few epochs (measured)."""
    return NeuralScratchRanker(epochs=epochs, patience=epochs, batch_groups=BATCH, lr=3e-3,
                               config=EncoderConfig(**CONFIG), device="cpu", seed=3, threads=procs,
                               ddp=DdpConfig(procs=procs), stream=stream)


def with_checkpoints(data: TrainingSet, folder: Path) -> TrainingSet:
    return TrainingSet(data.train_paths, data.valid_paths, None, folder)


def seen_by_the_loss(name: str, value: torch.Tensor) -> torch.Tensor:
    """``value`` without the parts the loss has no gradient for: the last layer's bias adds one
    constant to every score (a softmax over a group ignores it), and the attention's key bias
    adds one constant to every key's logit. Their gradients are float noise, which Adam scales
    to full-size steps: they follow no trajectory, in one process or in two."""
    if name == "head.5.bias":
        return value[:0]
    if name.endswith("self_attn.in_proj_bias"):
        d = CONFIG["dim"]
        return torch.cat([value[:d], value[2 * d:]])
    return value


@pytest.mark.parametrize("stream", [False, True], ids=["frame", "streamed"])
def test_two_processes_follow_one_process_at_the_same_global_batch(data, tmp_path, stream):
    """Also with the rows streamed a partition at a time: every rank reads the same one.
    Streamed, the trajectory is chaotic enough that one process alone ends 5e-4 apart from
    itself with another thread count (measured): there the loss and the scores are compared,
    the weights only across the ranks."""
    one, two = model(1, stream=stream), model(2, stream=stream)
    r1 = one.fit(data)
    r2 = two.fit(with_checkpoints(data, tmp_path))
    assert r2.metrics["processes"] == 2 and r1.metrics["processes"] == 1
    assert r2.metrics["rank_param_spread"] == 0.0  # the ranks end with identical weights
    np.testing.assert_allclose(r2.curves["train_loss"], r1.curves["train_loss"], rtol=1e-4)
    assert r1.curves["train_loss"][-1] < r1.curves["train_loss"][0]
    if not stream:
        for (name, a), b in zip(one.net.state_dict().items(), two.net.state_dict().values(),
                                strict=True):
            a, b = seen_by_the_loss(name, a), seen_by_the_loss(name, b)
            # float noise: Adam turns a gradient element near zero into a full-size step, so
            # one weight in hundreds can end 2e-5 apart (measured: 1 of 512 in the encoder's
            # first feed-forward layer); a rank that trained on other rows ends far further
            torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4,
                                       msg=lambda m, name=name: f"{name}: {m}")
    rows = tiny_rows(20, 9)
    s1, s2 = one.score(rows), two.score(rows)
    np.testing.assert_allclose(s2 - s2.mean(), s1 - s1.mean(), atol=1e-3 if stream else 1e-5)
    assert not (tmp_path / "neural_scratch" / "resume.pt").exists()  # trained: nothing to resume


def test_a_failing_worker_fails_the_driver_with_its_error(data):
    bad = NeuralRanker(epochs=1, config=EncoderConfig(**CONFIG), device="cpu",
                       ddp=DdpConfig(procs=2))  # the neural family needs an encoder: none given
    with pytest.raises(WorkerFailed, match=r"rank \d failed: ValueError: .*pretrain task"):
        bad.fit(data)


TASK = """
import json, sys
from pathlib import Path
from models.base import TrainingSet
from tests.integration import test_ddp
a = json.loads(sys.argv[1])
data = TrainingSet(tuple(map(Path, a["train"])), tuple(map(Path, a["valid"])), None,
                   Path(a["checkpoints"]))
getattr(test_ddp, a["build"])(*a["args"]).fit(data)
"""


def kill_after_checkpoint(build: str, args: list, data: TrainingSet, folder: Path,
                          checkpoint: Path, after: int = 0) -> int:
    """Run ``build(*args).fit`` as a task process, SIGKILL it once ``checkpoint`` holds more
    than ``after`` steps, and check that no process it started outlives it; return how many
    it had started."""
    import psutil

    spec = json.dumps({"build": build, "args": args,
                       "train": [str(p) for p in data.train_paths],
                       "valid": [str(p) for p in data.valid_paths], "checkpoints": str(folder)})
    root = Path(__file__).resolve().parents[2]
    task = subprocess.Popen([sys.executable, "-c", TASK, spec], cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root)})
    deadline = time.monotonic() + 120
    while steps(checkpoint) <= after:
        assert task.poll() is None, f"the task ended ({task.returncode}) before a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.02)
    children = [psutil.Process(p.pid) for p in psutil.Process(task.pid).children(recursive=True)]
    task.send_signal(signal.SIGKILL)
    task.wait()
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"processes outlived the killed task: {alive}"
    return len(children)


def steps(checkpoint: Path) -> int:
    """Epochs (torch) or rounds (XGBoost) a checkpoint holds; 0 when there is none yet."""
    import pickle

    if not checkpoint.exists():
        return 0
    if checkpoint.suffix == ".pt":
        return torch.load(checkpoint, weights_only=False)["loop"]["epoch"]
    return pickle.loads(checkpoint.read_bytes())["rounds"]


def test_a_torch_training_killed_twice_resumes_to_the_uninterrupted_result(data, tmp_path):
    """First a worker is killed (the driver fails, naming the kill), then the whole task (its
    torchrun and workers die with it); each rerun resumes the last checkpoint."""
    import threading

    import psutil

    epochs = 15
    whole = model(2, epochs)
    whole.fit(with_checkpoints(data, tmp_path / "whole"))

    ck = tmp_path / "killed"
    resume = ck / "neural_scratch" / "resume.pt"
    failure: list[BaseException] = []

    def fit() -> None:
        try:
            model(2, epochs).fit(with_checkpoints(data, ck))
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread
            failure.append(e)

    run = threading.Thread(target=fit)
    run.start()
    deadline = time.monotonic() + 120
    while steps(resume) < 1 and time.monotonic() < deadline and run.is_alive():
        time.sleep(0.02)
    rank1 = [p for p in psutil.Process().children(recursive=True)
             if p.environ().get("RANK") == "1" and "models.ddp" in p.cmdline()]
    assert len(rank1) == 1, rank1
    rank1[0].send_signal(signal.SIGKILL)
    run.join(120)
    assert failure and isinstance(failure[0], WorkerFailed), failure
    assert "local rank 1 was killed by SIGKILL" in str(failure[0])
    first = steps(resume)
    assert 1 <= first < epochs, first

    started = kill_after_checkpoint("model", [2, epochs], data, ck, resume, after=first)
    assert started >= 3  # torchrun and its 2 workers, all gone with the task
    done = steps(resume)
    assert first < done < epochs, done

    resumed = model(2, epochs)
    report = resumed.fit(with_checkpoints(data, ck))
    assert report.metrics["resumed_at_epoch"] >= done
    assert len(report.curves["train_loss"]) == epochs
    for (name, a), b in zip(whole.net.state_dict().items(), resumed.net.state_dict().values(),
                            strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5, msg=name)


ROUNDS = 150


def booster(every: int) -> Any:
    from models.xgb import XGBoostRanker

    # no early stop within the rounds, but its state (best round) carried through the resume
    return XGBoostRanker(n_estimators=ROUNDS, early_stopping_rounds=ROUNDS,
                         early_stopping_min_delta=0.0, device="cpu", n_jobs=1,
                         checkpoint_rounds=every, max_depth=8)


@pytest.fixture(scope="module")
def bigger(tmp_path_factory) -> TrainingSet:
    """Rows enough for boosting to take seconds, so the kill lands mid-run."""
    root = tmp_path_factory.mktemp("xgb-rows")
    for part, (n, seed) in {"train": (8_000, 5), "valid": (300, 6)}.items():
        (root / part).mkdir()
        tiny_rows(n, seed).drop(columns="seq").to_parquet(root / part / "part-0.parquet")
    return TrainingSet((root / "train",), (root / "valid",))


def test_an_xgboost_task_killed_mid_run_resumes_to_the_uninterrupted_result(bigger, tmp_path):
    whole = booster(10)
    full = whole.fit(with_checkpoints(bigger, tmp_path / "whole"))
    assert not (tmp_path / "whole" / "xgboost" / "resume.pkl").exists()

    ck = tmp_path / "killed"
    resume = ck / "xgboost" / "resume.pkl"
    kill_after_checkpoint("booster", [10], bigger, ck, resume)
    done = steps(resume)
    assert 10 <= done < ROUNDS, done

    resumed = booster(10)
    report = resumed.fit(with_checkpoints(bigger, ck))
    assert report.metrics["resumed_at_round"] >= done
    assert report.best_step == full.best_step
    np.testing.assert_allclose(report.curves["valid_ndcg@10"], full.curves["valid_ndcg@10"],
                               atol=1e-6)
    rows = tiny_rows(50, 7)
    np.testing.assert_allclose(resumed.score(rows), whole.score(rows), atol=1e-5)
