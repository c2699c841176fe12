"""Off-policy estimators (models/ope) against the obp package's on the same arrays."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from models import ope


def _log(seed: int = 0, n: int = 4000, n_actions: int = 6, slots: int = 3) -> dict:
    """A logged slate bandit: every round shows ``slots`` positions, each filled by an action
    drawn from a logging distribution; the evaluated policy has its own distribution."""
    rng = np.random.default_rng(seed)
    logging_p = rng.dirichlet(np.ones(n_actions), size=(n, slots))  # (n, slots, actions)
    target_p = rng.dirichlet(np.ones(n_actions) * 0.5, size=(n, slots))
    action = np.array([[rng.choice(n_actions, p=logging_p[i, s]) for s in range(slots)]
                       for i in range(n)])
    ctr = rng.uniform(0.02, 0.4, size=(n_actions, slots))
    reward = (rng.random((n, slots)) < ctr[action, np.arange(slots)]).astype(int)
    rounds = np.repeat(np.arange(n), slots)
    pos = np.tile(np.arange(slots), n)
    a = action.ravel()
    return {"reward": reward.ravel(), "action": a, "position": pos, "round": rounds,
            "pscore": logging_p[rounds, pos, a], "target": target_p[rounds, pos, a],
            # obp's action_dist: (n_rounds, n_actions, len_list), one row per logged slot
            "action_dist": np.transpose(target_p, (0, 2, 1))[rounds].copy(),
            "truth": float((target_p * ctr.T[None]).sum(axis=2).mean())}


def test_ips_and_snips_agree_with_obp():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from obp.ope import InverseProbabilityWeighting as ObpIps
        from obp.ope import SelfNormalizedInverseProbabilityWeighting as ObpSnips
    d = _log()
    args = {"reward": d["reward"], "action": d["action"], "position": d["position"],
            "pscore": d["pscore"], "action_dist": d["action_dist"]}
    ours_ips = ope.ips(d["reward"], d["target"], d["pscore"])
    ours_snips = ope.snips(d["reward"], d["target"], d["pscore"])
    assert ours_ips == pytest.approx(ObpIps().estimate_policy_value(**args), rel=1e-12)
    assert ours_snips == pytest.approx(ObpSnips().estimate_policy_value(**args), rel=1e-12)
    # and both land near the evaluated policy's true click rate
    est = ope.estimate(d["reward"], d["target"], d["pscore"], d["round"], self_normalised=True)
    assert est.low < d["truth"] < est.high
    assert est.groups == 4000 and est.value == pytest.approx(ours_snips)


def test_the_logging_policy_evaluates_to_its_own_click_rate():
    d = _log(seed=1)
    # target == logging: every weight 1, both estimators are the plain mean
    assert ope.ips(d["reward"], d["pscore"], d["pscore"]) == pytest.approx(d["reward"].mean())
    assert ope.snips(d["reward"], d["pscore"], d["pscore"]) == pytest.approx(d["reward"].mean())


def test_bad_propensities_say_what_is_wrong():
    with pytest.raises(ValueError, match=r"propensities must lie in \(0, 1\]"):
        ope.ips(np.array([1.0]), np.array([0.5]), np.array([0.0]))
    with pytest.raises(ValueError, match="shapes differ"):
        ope.snips(np.array([1.0]), np.array([0.5, 0.5]), np.array([0.5]))


def test_nan_propensities_are_refused():
    with pytest.raises(ValueError, match="finite"):
        ope.ips(np.array([1.0, 0.0]), np.array([0.5, 0.5]), np.array([0.5, np.nan]))
