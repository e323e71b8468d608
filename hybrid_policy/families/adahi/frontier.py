"""Closed-loop fronts of skipping modes: success against uplink transmissions per step,
each point with 95% intervals computed from its episodes' outcomes.

A point is one skip setting (a threshold on Δ or on the entropy, or a skip probability) run
for many episodes. Its success rate gets the Wilson score interval of a binomial proportion
(well behaved near 0 and 1, where success rates of good policies sit). Its transmissions per
step are a ratio of per-episode sums (transmissions / steps; episodes differ in length), so
its interval is a percentile bootstrap over episodes, resampling whole episodes as the unit
that is independent. ``bench/frontier.py`` draws the fronts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from scipy import stats

from hybrid_policy.errors import HybridPolicyError

LEVEL = 0.95


def wilson(successes: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a success probability from ``successes`` out of ``n``."""
    if n < 1 or not 0 <= successes <= n:
        raise HybridPolicyError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float],
                   level: float = LEVEL, resamples: int = 2000, seed: int = 0
                   ) -> tuple[float, float, float]:
    """Σ num / Σ den over episodes and its percentile-bootstrap interval (episodes
    resampled with replacement)."""
    num = np.asarray(numerators, float)
    den = np.asarray(denominators, float)
    if num.shape != den.shape or num.ndim != 1 or len(num) < 1 or np.any(den <= 0):
        raise HybridPolicyError("ratio_interval needs two equal-length 1-D sequences of "
                                "episodes with positive denominators")
    rng = np.random.default_rng(seed)
    idx = rng.integers(len(num), size=(resamples, len(num)))
    boot = num[idx].sum(1) / den[idx].sum(1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(boot, [tail, 1 - tail])
    return float(num.sum() / den.sum()), float(lo), float(hi)


@dataclass(frozen=True)
class FrontPoint:
    mode: str  # adahi, uncertainty_skip, random_skip (or an end point: hybrid, draft_only)
    knob: float  # the threshold (or skip probability) the point was run at
    episodes: int
    success: float
    success_lo: float
    success_hi: float
    uplink: float  # uplink transmissions (= server operations) per step
    uplink_lo: float
    uplink_hi: float

    def as_dict(self) -> dict:
        return asdict(self)


def point(mode: str, knob: float, success: Sequence[bool], transmissions: Sequence[int],
          steps: Sequence[int]) -> FrontPoint:
    """A front point from its episodes: success flags, transmissions and steps per episode."""
    ok = np.asarray(success, bool)
    if not (len(ok) == len(transmissions) == len(steps)) or len(ok) == 0:
        raise HybridPolicyError(f"{mode}: success, transmissions and steps must list the same "
                                f"episodes (got {len(ok)}, {len(transmissions)}, {len(steps)})")
    lo, hi = wilson(int(ok.sum()), len(ok))
    up, up_lo, up_hi = ratio_interval(transmissions, steps)
    return FrontPoint(mode, float(knob), len(ok), float(ok.mean()), lo, hi, up, up_lo, up_hi)


def pareto(points: Sequence[FrontPoint]) -> list[FrontPoint]:
    """The points no other point beats on both axes (more success, fewer transmissions),
    by transmissions."""
    keep = [p for p in points if not any(
        (q.success >= p.success and q.uplink <= p.uplink)
        and (q.success > p.success or q.uplink < p.uplink) for q in points)]
    return sorted(keep, key=lambda p: p.uplink)


def cheapest_at(points: Sequence[FrontPoint], min_success: float) -> FrontPoint | None:
    """The point with the fewest transmissions whose success is at least ``min_success``."""
    ok = [p for p in points if p.success >= min_success]
    return min(ok, key=lambda p: p.uplink) if ok else None


class EpisodeCounts:
    """Transmissions and steps per episode of each mode, counted from the evaluator's
    ``on_step`` hook (a record with ``step == 0`` opens an episode): what a front point's
    transmission interval is computed from."""

    def __init__(self) -> None:
        self.tx: dict[str, list[int]] = defaultdict(list)
        self.steps: dict[str, list[int]] = defaultdict(list)

    def on_step(self, name: str, rec: Any) -> None:
        if rec.step == 0:
            self.tx[name].append(0)
            self.steps[name].append(0)
        self.tx[name][-1] += rec.plan.request is not None
        self.steps[name][-1] += 1

    def point(self, mode: str, knob: float, name: str, success: Sequence[bool]) -> FrontPoint:
        """The front point of the mode run as ``name``, given its episodes' successes."""
        return point(mode, knob, success, self.tx[name], self.steps[name])
