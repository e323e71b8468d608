"""The method's pieces on small known cases: speculative verification keeps the target's
distribution, Δ matches a hand computation, τ* comes back from a planted relation."""

import math

import numpy as np
import pytest
from scipy import stats

from hybrid_policy.families.adahi.deviation import ActionDeviation, DeviationConfig
from hybrid_policy.families.adahi.speculative import rejection_prob, total_variation, verify
from hybrid_policy.families.adahi.threshold import (
    EPS, Costs, ThresholdError, auroc, check_tau, derive_tau, fit, rejection_bound,
)


class TableStep:
    """A two-level code distribution given as tables: ``probs(prefix)`` like a PolicyStep."""

    def __init__(self, level0: np.ndarray, level1: np.ndarray) -> None:
        self.level0, self.level1 = level0, level1  # [K], [K, K] (row: level-0 code)

    def probs(self, prefix: tuple[int, ...]) -> np.ndarray:
        return self.level0 if not prefix else self.level1[prefix[0]]

    def probs_batch(self, prefixes: list[tuple[int, ...]]) -> np.ndarray:
        return np.stack([self.probs(p) for p in prefixes])

    def joint(self) -> np.ndarray:
        return (self.level0[:, None] * self.level1).ravel()

    def sample(self, rng: np.random.Generator) -> tuple[int, int]:
        c0 = rng.choice(len(self.level0), p=self.level0)
        return int(c0), int(rng.choice(len(self.level0), p=self.level1[c0]))


def _dirichlet(rng, k, shape=()):
    return rng.dirichlet(np.ones(k) * 0.7, size=shape)


def test_verified_codes_are_distributed_as_the_target():
    rng = np.random.default_rng(7)
    k = 4
    draft = TableStep(_dirichlet(rng, k), _dirichlet(rng, k, (k,)))
    target = TableStep(_dirichlet(rng, k), _dirichlet(rng, k, (k,)))
    n = 40_000
    counts = np.zeros(k * k)
    rejected = 0
    for _ in range(n):
        codes = draft.sample(rng)
        v = verify(draft, target, codes, rng)
        counts[v.codes[0] * k + v.codes[1]] += 1
        rejected += not v.accepted
    p = target.joint()
    chi2 = stats.chisquare(counts, p * n)
    assert chi2.pvalue > 1e-3, (counts / n, p)
    # the draft's own distribution is far from the target's, so the test has power
    assert stats.chisquare(counts, draft.joint() * n).pvalue < 1e-12
    # the rejection rate is the exact level-wise rejection probability, which is at least
    # the TV distance of the joint distributions
    r = rejection_prob(draft, target, levels=2)
    assert rejected / n == pytest.approx(r, abs=4 * math.sqrt(r * (1 - r) / n))
    assert r >= total_variation(p, draft.joint()) - 1e-12


def test_identical_distributions_always_accept():
    rng = np.random.default_rng(0)
    step = TableStep(_dirichlet(rng, 5), _dirichlet(rng, 5, (5,)))
    for _ in range(500):
        codes = step.sample(rng)
        v = verify(step, step, codes, rng)
        assert v.accepted and v.codes == codes and v.level_tv == (0.0, 0.0)


def test_rejection_logs_the_tv_of_each_level_reached():
    draft = TableStep(np.array([1.0, 0.0]), np.array([[0.5, 0.5], [0.5, 0.5]]))
    target = TableStep(np.array([0.0, 1.0]), np.array([[0.5, 0.5], [0.1, 0.9]]))
    v = verify(draft, target, (0, 1), np.random.default_rng(0))
    assert not v.accepted and v.accepted_levels == 0 and v.codes[0] == 1
    assert v.level_tv == (1.0,)  # rejected at level 0: level 1 of the draft's path not reached


def test_deviation_matches_a_hand_computation():
    dev = ActionDeviation(np.array([0.5, 1.0, 2.0, 1.0]), DeviationConfig(beta=0.25))
    # d(1) = mean(|0.2-0.0|/0.5, |0.0-0.5|/1, |1.0-0.0|/2, 0) = mean(0.4, 0.5, 0.5, 0) = 0.35
    assert dev.update(np.array([0.2, 0.0, 1.0, 0.3]), np.array([0.0, 0.5, 0.0, 0.3])) \
        == pytest.approx(0.35)
    # d(2) = mean(0.2, 0, 0, 0.2) = 0.1; Δ(2) = 0.25 * 0.35 + 0.75 * 0.1 = 0.1625
    assert dev.update(np.array([0.1, 0.0, 0.0, 0.2]), np.array([0.0, 0.0, 0.0, 0.0])) \
        == pytest.approx(0.1625)
    dev.reset()  # a new episode starts from its own first step
    assert dev.update(np.zeros(4), np.zeros(4)) == 0.0
    with pytest.raises(ValueError, match="beta must be in"):
        DeviationConfig(beta=1.0)


def test_threshold_recovers_a_planted_relation():
    rng = np.random.default_rng(3)
    a, b = 0.45, 0.08
    delta = rng.uniform(0.0, 1.5, 4000)
    r = np.clip(a + b * np.log(delta + EPS) + rng.normal(0, 0.02, delta.size), 0, 1)
    rejected = rng.random(delta.size) < r
    f = fit(delta, r, rejected)
    assert f.intercept == pytest.approx(a, abs=0.01) and f.slope == pytest.approx(b, abs=0.005)
    assert f.spearman > 0.9 and f.auroc > 0.55  # sampled outcomes are noisy labels
    costs = Costs(verify_ms=6.0, control_period_ms=40.0, rejection_error=0.5, quality_weight=2.0)
    # budget = 6 / (2 * 40 * 0.5) = 0.15; τ* = exp((0.15 - a) / b) - ε
    assert costs.rejection_budget == pytest.approx(0.15)
    r_mean = float(r.mean())
    assert rejection_bound(costs, r_mean) == (pytest.approx(0.15), "link")
    tau = derive_tau(f, 0.15)
    assert tau == pytest.approx(math.exp((0.15 - a) / b) - EPS, rel=0.1)
    # a dearer link raises τ*, a dearer mistake lowers it ...
    slow, dear = Costs(12.0, 40.0, 0.5), Costs(6.0, 40.0, 1.0)
    assert derive_tau(f, rejection_bound(slow, r_mean)[0]) > tau
    assert derive_tau(f, rejection_bound(dear, r_mean)[0]) < tau
    # ... until the quality bound (the mean rejection) caps it
    r_star, bound = rejection_bound(Costs(60.0, 40.0, 0.5), r_mean)
    assert (r_star, bound) == (r_mean, "quality")
    assert derive_tau(f, r_star) == pytest.approx(math.exp((r_mean - a) / b) - EPS, rel=0.1)
    # a calibration whose draft alone held the verified success lifts the quality bound
    assert rejection_bound(Costs(60.0, 40.0, 0.5), None) == (1.0, "link")  # budget 1.5
    assert rejection_bound(Costs(6.0, 40.0, 0.5), None) == (pytest.approx(0.15), "link")
    assert derive_tau(f, rejection_bound(Costs(60.0, 40.0, 0.5), None)[0]) > derive_tau(f, r_star)


def test_the_quality_bound_is_lifted_only_when_the_draft_alone_holds():
    from hybrid_policy.families.adahi.calibration import Samples, draft_alone

    def samples(hybrid, alone):
        return Samples([], [], [], [], [], [], hybrid, alone)

    assert draft_alone(samples([True, True, False, True], [True, True, True, False])) == {
        "episodes": 4, "hybrid_successes": 3, "draft_only_successes": 3,
        "quality_bound": "lifted"}
    assert draft_alone(samples([True] * 4, [True, True, True, False]))["quality_bound"] == "kept"
    assert draft_alone(samples([False] * 4, [False] * 4))["quality_bound"] == "lifted"


def test_threshold_refuses_a_useless_signal():
    rng = np.random.default_rng(0)
    delta = rng.uniform(0, 1, 500)
    f = fit(delta, 0.5 - 0.1 * np.log(delta + EPS), rng.random(500) < 0.5)
    with pytest.raises(ThresholdError, match="does not predict rejection"):
        derive_tau(f, 0.2)
    with pytest.raises(ThresholdError, match="distinct finite"):
        fit(np.ones(10), np.ones(10), np.ones(10, bool))


def test_auroc_of_a_perfect_and_a_useless_score():
    labels = np.array([0, 0, 1, 1], bool)
    assert auroc(np.array([0.1, 0.2, 0.3, 0.4]), labels) == 1.0
    assert auroc(np.array([1.0, 1.0, 1.0, 1.0]), labels) == 0.5


@pytest.mark.parametrize("bad", [-0.1, float("inf"), float("nan")])
def test_tau_must_be_finite_and_non_negative(bad):
    with pytest.raises(ThresholdError, match="finite number >= 0"):
        check_tau(bad)
