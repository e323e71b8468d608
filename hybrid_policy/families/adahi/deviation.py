"""Action deviation Δ(t): how far the draft's proposal strays from what the draft itself
expects, smoothed over time.

Computed on the robot from what the robot has: the draft's code distribution ``q`` for
this step and the codes ``ĉ_t`` it sampled. With ``dec`` the tokenizer's decoder and
``σ`` the per-dimension action scale of the task's demonstrations,

    d(t) = (1/D) Σ_d |dec(ĉ_t)_d − E_{c∼q}[dec(c)]_d| / σ_d
    Δ(t) = β Δ(t−1) + (1 − β) d(t),        Δ(first step) = d(first step)

``d`` is large when the sampled proposal lands far, in action units, from the mass of the
draft's own distribution: the draft is spread over distinct actions (a decision point:
approach vs contact, grasp vs wait) and the sample is one of the unlikely ones. There the
target disagrees most, and a rejection changes the executed action most. When the draft's
codes all decode to nearly the same action, ``d`` is small and a rejection would change
little. Dividing by ``σ_d`` counts gripper and position dimensions alike. The EMA keeps
Δ high for a few steps after a spike, so the steps around a decision point are verified
too. Calibration measures how well Δ predicts rejection (Spearman ρ, AUROC) before τ* is
derived from it; docs/method.md has the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DeviationConfig:
    beta: float = 0.2  # EMA factor: weight of the previous Δ

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta < 1.0:
            raise ValueError(f"deviation beta must be in [0, 1), got {self.beta}")


def instantaneous(proposal: np.ndarray, expected: np.ndarray, scale: np.ndarray) -> float:
    """d(t): the proposal's per-dimension-normalised distance from the draft's expectation."""
    return float(np.mean(np.abs(proposal - expected) / scale))


class ActionDeviation:
    """Per-episode EMA state of Δ(t)."""

    def __init__(self, scale: np.ndarray, cfg: DeviationConfig = DeviationConfig()) -> None:
        self.scale = np.maximum(np.asarray(scale, dtype=np.float64), 1e-6)
        self.cfg = cfg
        self._delta: float | None = None

    def reset(self) -> None:
        self._delta = None

    def update(self, proposal: np.ndarray, expected: np.ndarray) -> float:
        """Fold this step's proposal into Δ and return Δ(t)."""
        d = instantaneous(np.asarray(proposal, np.float64), np.asarray(expected, np.float64),
                          self.scale)
        b = self.cfg.beta
        self._delta = d if self._delta is None else b * self._delta + (1.0 - b) * d
        return self._delta
