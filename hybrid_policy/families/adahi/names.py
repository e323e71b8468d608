"""The draft/target modes by name and the thresholds the skipping ones need, without torch.

Graph descriptions, the launch file and argument parsing check thresholds here;
``modes`` builds the per-step logic from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hybrid_policy.errors import HybridPolicyError

MODE_NAMES = ("draft_only", "target_only", "hybrid", "adahi", "uncertainty_skip", "random_skip")
# Modes that skip verification by a threshold, and the field of ``Thresholds`` each uses.
THRESHOLD_OF = {"adahi": "tau", "uncertainty_skip": "uncertainty_tau",
                "random_skip": "random_skip"}
NEEDS_THRESHOLDS = tuple(THRESHOLD_OF)
# A threshold parameter set to this value means "not given: take it from the calibration".
FROM_CALIBRATION = -1.0


class ThresholdError(HybridPolicyError, ValueError):
    pass


def check_tau(tau: float) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) \
            or tau < 0:
        raise ThresholdError(f"threshold τ must be a finite number >= 0, got {tau!r}")
    return float(tau)


@dataclass(frozen=True)
class Thresholds:
    """Calibrated thresholds (``hybrid-policy calibrate``): τ* on Δ, and for the comparison
    modes the entropy threshold and skip probability that skip as often as ADAHI did."""

    tau: float
    uncertainty_tau: float
    random_skip: float

    def __post_init__(self) -> None:
        check_tau(self.tau)
        check_tau(self.uncertainty_tau)
        if not 0.0 <= self.random_skip <= 1.0:
            raise HybridPolicyError(f"random skip rate must be in [0, 1], got {self.random_skip}")
