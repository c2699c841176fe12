"""Data-parallel torch training in two layers: the worker's view of the process group, and the
driver that starts the workers with ``torchrun``.

**The worker** (:class:`Worker`): a training loop asks it its rank and world size, wraps its
module in ``DistributedDataParallel`` (:meth:`Worker.wrap`), takes its share of each global
batch (:meth:`Worker.shard`), and sums, broadcasts or gathers the few values the ranks must
agree on (epoch losses, the validation metric that decides early stopping, RNG states for a
checkpoint). One process (:meth:`Worker.single`) is the same loop with every collective a no-op.

**The driver** (:func:`launch`) runs ``python -m torch.distributed.run`` as a child process:
``--standalone --nproc_per_node N`` on one host, or ``--nnodes`` with a c10d rendezvous at
``rdzv_endpoint`` across hosts (each host runs the command the driver logs, with the same
spec file on shared storage). Each worker runs :func:`main`: it builds the model family named in
the spec, calls its ``train_loop(data, worker)``, and rank 0 writes the trained model and the
report into the spec's folder. torchrun gets ``--max-restarts 0``: restarting is the caller's
(Airflow's retries), and a restarted loop resumes from its checkpoint. A worker that raises
writes its traceback beside the spec; the driver raises :class:`WorkerFailed` with it, or with
the exit signal of a worker that was killed.

Backend ``auto``: NCCL when the workers train on CUDA, gloo otherwise. Every process started
here dies with its parent (``PR_SET_PDEATHSIG``), so an Airflow task killed mid-run leaves no
worker behind to race its retry.
"""

from __future__ import annotations

import collections
import ctypes
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DdpConfig:
    """How a family's torch training is spread over processes (``RANKLINE_DDP_*``)."""

    procs: int = 1
    """Worker processes per host (1 with ``nnodes`` 1: train in the calling process)."""
    nnodes: int = 1
    """Hosts; above 1 every host runs the logged torchrun command (rendezvous below)."""
    rdzv_endpoint: str = ""
    """``host:port`` of the c10d rendezvous when ``nnodes`` > 1."""
    rdzv_id: str = ""
    """The rendezvous's job id (empty: the training run's folder name)."""
    backend: str = "auto"
    """``auto`` (NCCL on CUDA, gloo without), ``nccl`` or ``gloo``."""
    time_allreduce: bool = False
    """Time the gradient all-reduce (synchronously: no overlap with the backward pass; for
    the benchmark's compute/communication split)."""

    @property
    def distributed(self) -> bool:
        return self.procs > 1 or self.nnodes > 1


class WorkerFailed(RuntimeError):
    """A torchrun worker failed; the message holds its error (or the signal that killed it)."""


try:  # looked up here: loading a library between fork and exec can deadlock a threaded parent
    _PRCTL: Any = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None


def _die_with_parent() -> None:
    """In a child before exec: SIGKILL it when its parent dies (Linux; elsewhere a no-op)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Worker:
    """One training process's place in the process group (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"
    time_allreduce: bool = False
    allreduce_seconds: float = field(default=0.0, init=False)
    """Time in the gradient all-reduce so far (when ``time_allreduce``)."""

    @classmethod
    def single(cls, device: str = "cpu") -> Worker:
        return cls(device=device)

    @classmethod
    def from_env(cls, device: str, backend: str = "auto", time_allreduce: bool = False) -> Worker:
        """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ...)."""
        import torch
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.startswith("cuda"):
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
        if backend == "auto":
            backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
        return cls(dist.get_rank(), dist.get_world_size(), local, device, time_allreduce)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: np.ndarray) -> np.ndarray:
        """This rank's contiguous share of a global batch (the shares differ by at most 1)."""
        return np.array_split(batch, self.world)[self.rank] if self.world > 1 else batch

    def wrap(self, module: Any) -> Any:
        """``module`` in DistributedDataParallel (itself in one process)."""
        if self.world == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        cuda = self.device.startswith("cuda")
        ddp = DistributedDataParallel(module, device_ids=[self.local_rank] if cuda else None)
        if self.time_allreduce:
            ddp.register_comm_hook(self, _timed_allreduce)
        return ddp

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over the ranks."""
        if self.world == 1:
            return list(values)
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return t.cpu().tolist()

    def broadcast(self, value: float) -> float:
        """Rank 0's ``value`` on every rank."""
        if self.world == 1:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self._comm_device)
        dist.broadcast(t, 0)
        return float(t.item())

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, by rank (picklable objects; small ones)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    @property
    def _comm_device(self) -> str:
        return self.device if self.device.startswith("cuda") else "cpu"

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def _timed_allreduce(worker, bucket):  # noqa: ANN001, ANN202 - DDP checks: none or GradBucket
    """DDP communication hook: the default mean all-reduce, blocking, its time counted."""
    import torch
    import torch.distributed as dist

    t0 = time.perf_counter()
    buf = bucket.buffer()
    buf.div_(worker.world)
    dist.all_reduce(buf)
    worker.allreduce_seconds += time.perf_counter() - t0
    fut: torch.futures.Future = torch.futures.Future()
    fut.set_result(buf)
    return fut


# -- the driver ---------------------------------------------------------------------------------
def torchrun_command(spec_path: Path, cfg: DdpConfig, job: str) -> list[str]:
    """The torchrun command line that runs :func:`main` on ``spec_path`` (``job``: the
    rendezvous id unless ``cfg.rdzv_id`` names one)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(cfg.procs),
           "--max-restarts", "0"]
    if cfg.nnodes > 1:
        if not cfg.rdzv_endpoint:
            raise ValueError(f"training on {cfg.nnodes} hosts needs a rendezvous: set "
                             "RANKLINE_DDP_RDZV_ENDPOINT=host:port (a host every node reaches)")
        cmd += ["--nnodes", str(cfg.nnodes), "--rdzv-backend", "c10d",
                "--rdzv-endpoint", cfg.rdzv_endpoint,
                "--rdzv-id", cfg.rdzv_id or job]
    else:
        cmd += ["--standalone"]
    return [*cmd, "-m", "models.ddp", str(spec_path)]


def launch(spec: dict[str, Any], folder: Path, cfg: DdpConfig, threads: int | None,
           job: str = "rankline") -> None:
    """Run a family's ``train_loop`` on ``cfg.procs`` torchrun workers per host; return when
    rank 0 has written ``model.pt`` and ``report.json`` into ``folder``. ``spec``: ``family``
    (``module:Class``), ``kwargs`` of its constructor, ``data`` (the TrainingSet's fields).
    ``threads``: torch threads of each worker. Raises :class:`WorkerFailed`."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in (*folder.glob("error-rank*.txt"), folder / "model.pt", folder / "report.json"):
        stale.unlink(missing_ok=True)
    spec_path = folder / "spec.json"
    spec = {**spec, "out": str(folder), "backend": cfg.backend,
            "time_allreduce": cfg.time_allreduce, "threads": threads}
    spec_path.write_text(json.dumps(spec, indent=1, default=str))
    cmd = torchrun_command(spec_path, cfg, job)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads or 1),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH")]))}
    log.info("training on %d process(es) x %d host(s): %s", cfg.procs, cfg.nnodes, " ".join(cmd))
    tail: collections.deque[str] = collections.deque(maxlen=30)
    first: re.Match[str] | None = None  # torchrun's first observed failure: the root cause
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, preexec_fn=_die_with_parent)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            log.info("[torchrun] %s", line.rstrip())
            tail.append(line.rstrip())
            first = first or FAILED.search(line)
        code = proc.wait()
    except BaseException:  # interrupted (a task timeout, SIGTERM): no worker outlives us
        proc.kill()
        proc.wait()
        raise
    if code == 0 and (folder / "model.pt").exists():
        return
    raise WorkerFailed(_failure(folder, code, first, tail))


FAILED = re.compile(r"failed \(exitcode: (-?\d+)\) local_rank: (\d+)")
"""torchrun's line for the first worker it saw fail."""

RETRY = ("The training resumes from its last epoch checkpoint when the task is retried "
         "(Airflow's retries, or airflow tasks clear).")


def _failure(folder: Path, code: int, first: re.Match[str] | None, tail: Any) -> str:
    """What failed: the first failed worker's error (its traceback, which it wrote beside the
    spec), or the signal that killed it; the other workers' errors then are consequences (a
    peer's connection reset), named after it."""
    errors = {int(p.stem.removeprefix("error-rank")): p.read_text()
              for p in sorted(folder.glob("error-rank*.txt"))}
    if first is not None and int(first[1]) < 0:
        try:
            how = signal.Signals(-int(first[1])).name
        except ValueError:
            how = f"signal {-int(first[1])}"
        then = "".join(f"\n  then rank {r}: {t.strip().splitlines()[-1]}"
                       for r, t in errors.items())
        return (f"torch training worker local rank {first[2]} was killed by {how} (out of "
                f"memory? killed by hand or by the host?); the others stopped with it.{then}\n"
                + RETRY)
    if errors:
        rank = int(first[2]) if first is not None and int(first[2]) in errors else min(errors)
        text = errors[rank]
        return (f"torch training worker rank {rank} failed: {text.strip().splitlines()[-1]}"
                f"\n{text}")
    return (f"torchrun exited with {code} and no worker reported an error: a worker could not "
            f"start or was killed. {RETRY} torchrun's last lines:\n" + "\n".join(tail))


def _import(path: str) -> Any:
    import importlib

    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def main(spec_path: str) -> None:
    """A torchrun worker: train the spec's family on this rank; rank 0 writes the outputs."""
    _die_with_parent()
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"rank {rank} %(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = None
    try:
        from models.base import TrainingSet

        model = _import(spec["family"])(**spec["kwargs"])
        model.set_threads(spec["threads"])
        worker = Worker.from_env(model.params["device"], spec["backend"],
                                 spec["time_allreduce"])
        d = spec["data"]
        data = TrainingSet(tuple(map(Path, d["train_paths"])), tuple(map(Path, d["valid_paths"])),
                           Path(d["pretrained"]) if d["pretrained"] else None,
                           Path(d["checkpoint_dir"]) if d["checkpoint_dir"] else None,
                           d.get("negatives"))
        report = model.train_loop(data, worker)
        if worker.is_main:
            tmp = out / f"model.pt.{os.getpid()}.tmp"
            model._save(tmp)
            (out / "report.json").write_text(json.dumps(asdict(report), default=float))
            os.replace(tmp, out / "model.pt")
    except BaseException:
        (out / f"error-rank{rank}.txt").write_text(traceback.format_exc())
        raise
    finally:
        if worker is not None:
            worker.close()


if __name__ == "__main__":
    main(sys.argv[1])
