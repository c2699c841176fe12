"""Boosting that survives a kill: a checkpoint every N rounds, and the fit that resumes it;
and the callback that reports each round to a sweep (:class:`StepHook`).

The checkpoint (one pickle, replaced atomically) holds the booster so far, the evaluation
history, and the early-stopping callback's state (its best scores and the rounds since the
best), so a resumed fit continues exactly where the killed one was: XGBoost numbers the resumed
rounds after the loaded booster's, and with no row or column sampling (rankline's parameters)
the trees of round k do not depend on the process that grew them. On Dask the callback runs on
every worker; rank 0 writes. Imported only where XGBoost trains (it imports xgboost).
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import xgboost
from xgboost.callback import EarlyStopping, TrainingCallback

log = logging.getLogger(__name__)

EARLY_STATE = ("stopping_history", "best_scores", "current_rounds", "maximize")


class RoundCheckpoints(TrainingCallback):
    """After every ``every`` rounds but the ``last``, write the booster, the evaluation history
    (``before``: the rounds of the checkpoint this fit resumed) and ``early``'s state to
    ``path``. Placed after the early-stopping callback: the round that stops is not written."""

    def __init__(self, path: Path, every: int, last: int, fingerprint: dict[str, Any],
                 early: EarlyStopping | None, before: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.path, self.every, self.last = Path(path), every, last
        self.fingerprint, self.early, self.before = fingerprint, early, before or {}

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        rounds = model.num_boosted_rounds()
        if (rounds % self.every or rounds >= self.last  # the last round: the fit ends anyway
                or xgboost.collective.get_rank() != 0):
            return False
        history = {data: {metric: [*self.before.get(data, {}).get(metric, []), *values]
                          for metric, values in metrics.items()}
                   for data, metrics in evals_log.items()}
        state = {"fingerprint": self.fingerprint, "rounds": rounds,
                 "booster": bytes(model.save_raw("ubj")), "history": history,
                 "attrs": model.attributes(),
                 "early": ({k: getattr(self.early, k) for k in EARLY_STATE}
                           if self.early is not None else None)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(pickle.dumps(state))
        os.replace(tmp, self.path)
        return False


def resume(path: Path, fingerprint: dict[str, Any], early: EarlyStopping | None,
           ) -> tuple[xgboost.Booster | None, int, dict[str, Any]]:
    """``(booster, rounds done, evaluation history)`` of the checkpoint at ``path``, with
    ``early``'s state restored from it; ``(None, 0, {})`` when there is none, or it is of other
    parameters or data (then training starts afresh)."""
    if not path.exists():
        return None, 0, {}
    state = pickle.loads(path.read_bytes())
    if state["fingerprint"] != fingerprint:
        log.warning("the XGBoost checkpoint %s is of other parameters or data: training "
                    "afresh", path)
        return None, 0, {}
    booster = xgboost.Booster()
    booster.load_model(bytearray(state["booster"]))
    booster.set_attr(**state["attrs"])
    if early is not None and state["early"] is not None:
        for k, v in state["early"].items():
            setattr(early, k, v)
    log.info("resuming XGBoost after round %d from %s", state["rounds"], path)
    return booster, state["rounds"], state["history"]


class StepHook(TrainingCallback):
    """Calls ``hook(round, validation NDCG@10)`` after each boosting round (in one process:
    the hook is not shipped to Dask workers); what it raises stops the fit."""

    def __init__(self, hook: Any) -> None:
        super().__init__()
        self.hook = hook

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        self.hook(model.num_boosted_rounds() - 1, float(evals_log["validation_1"]["ndcg@10"][-1]))
        return False
