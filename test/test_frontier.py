"""Front statistics: intervals come from the episodes' outcomes and cover at their level."""

import numpy as np
import pytest
from scipy import stats

from hybrid_policy.families.adahi.frontier import (
    FrontPoint, cheapest_at, pareto, point, ratio_interval, wilson,
)
from hybrid_policy.errors import HybridPolicyError


def test_wilson_matches_the_score_test_inversion():
    # the interval's ends are where the score test of p0 has z = ±1.96
    lo, hi = wilson(37, 50)
    z = stats.norm.ppf(0.975)
    for p0 in (lo, hi):
        assert abs(abs(0.74 - p0) / np.sqrt(p0 * (1 - p0) / 50) - z) < 1e-9
    assert wilson(50, 50)[1] == pytest.approx(1.0) and wilson(50, 50)[0] < 1.0  # not degenerate
    assert wilson(0, 50)[0] == pytest.approx(0.0, abs=1e-12) and wilson(0, 50)[1] > 0.0


def test_wilson_covers_the_true_success_rate_at_its_level():
    rng = np.random.default_rng(0)
    for p, n in ((0.95, 300), (0.7, 300), (0.98, 100)):
        hits = 0
        for _ in range(2000):
            lo, hi = wilson(int(rng.binomial(n, p)), n)
            hits += lo <= p <= hi
        assert 0.925 <= hits / 2000 <= 0.975, (p, n, hits / 2000)


def test_uplink_interval_covers_the_true_rate_from_synthetic_episodes():
    # episodes of random length; each step transmits with probability 0.45
    rng = np.random.default_rng(1)
    hits = 0
    for rep in range(300):
        steps = rng.integers(20, 80, size=300)
        tx = rng.binomial(steps, 0.45)
        est, lo, hi = ratio_interval(tx, steps, resamples=500, seed=rep)
        assert lo <= est <= hi
        hits += lo <= 0.45 <= hi
    assert 0.9 <= hits / 300 <= 0.99


def test_a_point_is_computed_from_its_outcomes_and_shrinks_with_episodes():
    rng = np.random.default_rng(2)
    ok = rng.random(300) < 0.9
    steps = rng.integers(30, 60, size=300)
    tx = rng.binomial(steps, 0.5)
    p = point("adahi", 0.05, ok, tx, steps)
    assert p.episodes == 300 and p.success == ok.mean()
    assert p.uplink == pytest.approx(tx.sum() / steps.sum())
    assert p.success_lo < p.success < p.success_hi and p.uplink_lo < p.uplink < p.uplink_hi
    flipped = ok.copy()
    flipped[np.flatnonzero(ok)[:10]] = False  # ten fewer successes: a lower point
    q = point("adahi", 0.05, flipped, tx, steps)
    assert q.success == pytest.approx(p.success - 10 / 300) and q.success_hi < p.success_hi
    small = point("adahi", 0.05, ok[:30], tx[:30], steps[:30])
    assert small.success_hi - small.success_lo > 2 * (p.success_hi - p.success_lo)
    assert small.uplink_hi - small.uplink_lo > 2 * (p.uplink_hi - p.uplink_lo)


def test_bad_outcomes_are_refused():
    with pytest.raises(HybridPolicyError, match="same episodes"):
        point("adahi", 0.1, [True, False], [3], [10, 10])
    with pytest.raises(HybridPolicyError, match="positive denominators"):
        ratio_interval([1, 2], [10, 0])
    with pytest.raises(HybridPolicyError, match="successes"):
        wilson(5, 4)


def _p(mode, success, uplink):
    return FrontPoint(mode, 0.0, 100, success, success, success, uplink, uplink, uplink)


def test_pareto_and_cheapest_point():
    pts = [_p("a", 0.9, 0.5), _p("b", 0.8, 0.6), _p("c", 0.95, 0.7), _p("d", 0.7, 0.3)]
    assert [p.mode for p in pareto(pts)] == ["d", "a", "c"]  # b is beaten by a
    assert cheapest_at(pts, 0.9).mode == "a"
    assert cheapest_at(pts, 0.99) is None


def test_episode_counts_split_a_mode_s_steps_into_its_episodes():
    from hybrid_policy.core.evaluator import StepRecord
    from hybrid_policy.families.adahi.frontier import EpisodeCounts
    from hybrid_policy.core.plan import Plan
    from hybrid_policy.core.protocol import Request

    def rec(step, sent):
        req = Request("act", np.zeros((2, 3), np.float32), 1) if sent else None
        return StepRecord(step, Plan(np.zeros(4, np.float32), req), np.zeros(4), None, 1.0,
                          sent, False)

    counts = EpisodeCounts()
    for name, episode in [("a", [1, 0, 1]), ("b", [0, 0]), ("a", [0, 1])]:
        for i, sent in enumerate(episode):
            counts.on_step(name, rec(i, sent))
    assert counts.tx == {"a": [2, 1], "b": [0]} and counts.steps == {"a": [3, 2], "b": [2]}
    p = counts.point("adahi", 0.1, "a", [True, False])
    assert p.episodes == 2 and p.success == 0.5 and p.uplink == pytest.approx(3 / 5)
